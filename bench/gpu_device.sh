#!/usr/bin/env bash
# The litert:gpu check, as run on a lent NVIDIA H100 machine (Python 3.12, numpy,
# no network, no celery): the agent's GPU probe, then bench/fidelity.py and
# bench/litert_ab.py on MobileNetV2 fp32, and energy per inference from NVML
# beside latency (bench/nvml_energy.py). Figures: docs/benchmarks.md.
#
# Prepare here, in the repo root (ignored paths .whl/ and .gl/):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_27_x86_64 -d .whl ai-edge-litert==2.3.0 backports.strenum ml_dtypes nvidia-ml-py
#   pip wheel --no-deps -w .whl .
#   fleetbench convert mobilenetv2.keras --variants tflite-fp32 ...   # copy the artifact to
#       .whl/mobilenetv2_fp32.tflite
#   (cd .gl && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
# Run there with .whl and .gl carried:  bash bench/gpu_device.sh
# The NVIDIA Vulkan ICD needs the GLVND/GLX libraries too: with libvulkan1 alone
# the loader reports "Found no drivers" and the agent says litert:gpu is unavailable.
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
test -d /tmp/site/ai_edge_litert || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
M=.whl/mobilenetv2_fp32.tflite
python3 -m agent --probe 2>"$OUT/probe_stderr.txt" | tee "$OUT/probe.txt"
python3 bench/fidelity.py litert $M --capability litert:gpu --threads 1 --rounds 3 --iterations 1000 --out "$OUT" 2>>"$OUT/stderr.txt"
for n in 1000 5000; do
  python3 bench/fidelity.py litert $M --capability litert:gpu --threads 1 --rounds 3 --iterations $n \
      --min-duration 0 --tag=_n$n --out "$OUT" 2>>"$OUT/stderr.txt"
done
python3 bench/fidelity.py litert $M --capability litert:cpu --threads 16 --rounds 2 --iterations 300 --out "$OUT" 2>>"$OUT/stderr.txt"
python3 bench/litert_ab.py $M --accelerator gpu --blocks 8 --per-block 2000 2>>"$OUT/stderr.txt" | tee "$OUT/ab.txt"
# Energy per inference from NVML (total energy where the GPU has it, else sampled power), litert:gpu beside litert:cpu
python3 bench/nvml_energy.py $M --rounds 3 --min-duration 5 --out "$OUT" 2>>"$OUT/stderr.txt" | tee "$OUT/nvml_energy.md"
