/*
 * A real TFLite external delegate for tests: the same entry points as the
 * Edge TPU or a vendor NPU/FPGA delegate (tflite_plugin_create_delegate /
 * tflite_plugin_destroy_delegate), loaded with load_delegate() by LiteRT or
 * tflite-runtime. It claims no nodes, so the model still runs on the CPU
 * kernels, but the runtime really loads the library, passes the options and
 * calls Prepare on the graph.
 *
 * Options:
 *   marker=PATH   append one line to PATH each time Prepare is called
 *   fail=create   return NULL from create (as a delegate whose device is absent)
 *   fail=prepare  return an error from Prepare
 *
 * Build: cc -shared -fPIC -o libpassthrough_delegate.so passthrough_delegate.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef struct TfLiteContext TfLiteContext;

/* Layout of TfLiteDelegate from tensorflow/lite/core/c/common.h. */
typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

typedef struct {
  char marker[4096];
  int fail_prepare;
} State;

static TfLiteStatus Prepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  (void)context;
  State* state = (State*)delegate->data_;
  if (state->marker[0]) {
    FILE* f = fopen(state->marker, "a");
    if (f) {
      fputs("prepare\n", f);
      fclose(f);
    }
  }
  return state->fail_prepare ? kTfLiteError : kTfLiteOk;
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*)) {
  State* state = (State*)calloc(1, sizeof(State));
  TfLiteDelegate* delegate = (TfLiteDelegate*)calloc(1, sizeof(TfLiteDelegate));
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i], "marker") == 0) {
      strncpy(state->marker, values[i], sizeof(state->marker) - 1);
    } else if (strcmp(keys[i], "fail") == 0 && strcmp(values[i], "create") == 0) {
      if (report_error) report_error("passthrough delegate: no device attached (fail=create)");
      free(state);
      free(delegate);
      return NULL;
    } else if (strcmp(keys[i], "fail") == 0 && strcmp(values[i], "prepare") == 0) {
      state->fail_prepare = 1;
    }
  }
  delegate->data_ = state;
  delegate->Prepare = Prepare;
  delegate->flags = 1; /* kTfLiteDelegateFlagsAllowDynamicTensors: it claims no nodes, so any graph is fine */
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (!delegate) return;
  free(delegate->data_);
  free(delegate);
}
