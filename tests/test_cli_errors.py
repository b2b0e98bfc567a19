"""Issue 14, finding 12: every CLI failure is one `error:` line, never a traceback.

Each case runs the real command (`python -m controller.cli` or `python -m agent`) in a subprocess on
bad input made in tmp_path: it must exit non-zero (2 where the input is at fault), print no traceback
and exactly one `error:` line holding the key words.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protocol.packing import pack_files
from protocol.proc import free_port

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "agent" / "backends" / "data" / "probe.tflite"  # a real, small .tflite
GOLDEN = ROOT / "tests" / "data" / "golden_record_litert_cpu.json"


def _env(**extra) -> dict:
    """This environment without FLEETBENCH_* settings (a developer's token or broker must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETBENCH_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(env, COLUMNS="200", **extra)


def _results_doc(**change) -> dict:
    record = json.loads(GOLDEN.read_text())
    outcome = {"job_id": record["job_id"], "attempt": 1, "ok": True, "record": record, "agent_id": "a"}
    doc = {"format": "fleetbench-results", "schema_version": record["schema_version"], "bundle_id": "b", "run_id": "r",
           "agent_id": "a", "finished_at": record["finished_at"], "outcomes": [outcome]}  # fmt: skip
    for path, value in change.items():  # "stats.p50_ms" -> the record's field
        *parents, leaf = path.split(".")
        target = record
        for p in parents:
            target = target[p]
        target[leaf] = value
    return doc


def _make_inputs(tmp: Path) -> None:
    """Every bad input the cases name, in ``tmp``."""
    np.savez(tmp / "strings.npz", x=np.array(["a", "b", "c"]), y=np.array([0, 1, 0]))
    np.savez(tmp / "unlabelled.npz", x=np.zeros((10, 2), np.float32))
    (tmp / "random.tflite").write_bytes(np.random.default_rng(0).bytes(4096))
    good = PROBE.read_bytes()
    (tmp / "truncated.tflite").write_bytes(good[: len(good) // 2])
    (tmp / "empty.tflite").write_bytes(b"")
    (tmp / "dir.tflite").mkdir()
    (tmp / "latin1.yaml").write_bytes(b"name: caf\xe9\nmodels: [{id: m}]\n")
    specs = {
        "shape.yaml": "name: s\nmodels:\n  - path: m.tflite\n    input_shape: abc\n",
        "cal.yaml": "name: s\nmodels:\n  - path: m.tflite\n    calibration_size: x\n",
        "attempts.yaml": "name: s\nmax_attempts: x\nmodels:\n  - path: m.tflite\n",
        "variants.yaml": "name: s\nvariants: 5\nmodels:\n  - path: m.tflite\n",
        "models.yaml": "name: s\nmodels: 5\n",
        "stored.yaml": "name: s\nmodels:\n  - id: digits-cnn\n",
        "missing-model.yaml": "name: s\nmodels:\n  - path: nowhere/m.tflite\n",
        "not-yaml.yaml": "models: [\n",
        "corrupt-model.yaml": "name: s\nmodels:\n  - path: random.tflite\n",
    }
    for name, text in specs.items():
        (tmp / name).write_text(text)
    (tmp / "budgets-latin1.yaml").write_bytes(b"\xff\xfe budgets")
    (tmp / "garbage.json").write_bytes(b"\x89PNG\r\n")
    (tmp / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp / "tampered-stats.json").write_text(json.dumps(_results_doc(**{"stats.p50_ms": "fast"})))
    (tmp / "tampered-time.json").write_text(json.dumps(_results_doc(finished_at="yesterday")))
    (tmp / "tampered-outcomes.json").write_text(json.dumps(dict(_results_doc(), outcomes="all good")))
    # agent side
    sha = "0" * 64
    no_uri = {"format": "fleetbench-bundle", "schema_version": 1, "jobs": [
        {"job_id": "j", "artifact": {"sha256": sha, "size_bytes": 1, "filename": "m.tflite"}}]}  # fmt: skip
    (tmp / "no-uri.fbb").write_bytes(pack_files({"bundle.json": json.dumps(no_uri).encode(), f"artifacts/{sha}": b"x"}))
    (tmp / "jobs-not-objects.fbb").write_bytes(pack_files({"bundle.json": json.dumps(
        {"format": "fleetbench-bundle", "schema_version": 1, "jobs": [5]}).encode()}))  # fmt: skip
    (tmp / "list.fbb").write_bytes(pack_files({"bundle.json": b"[1, 2]"}))
    (tmp / "not-a-tar.fbb").write_bytes(b"not a tar at all")
    (tmp / "bad.json").write_text("{")
    (tmp / "unknown-key.json").write_text(json.dumps({"brokr": "redis://x"}))
    (tmp / "wrong-type.json").write_text(json.dumps({"broker": 5}))
    (tmp / "config-latin1.json").write_bytes(b'{"agent_id": "caf\xe9"}')


def _run(argv, tmp_path, *, module="controller.cli", data_dir=True, env=None, timeout=240):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{probe}", str(PROBE)) for a in argv]
    extra = ["--data-dir", str(tmp_path / "fb")] if data_dir and "--data-dir" not in argv else []
    return subprocess.run([sys.executable, "-m", module, *argv, *extra], capture_output=True, text=True,
                          timeout=timeout, env=env or _env(), cwd=tmp_path)  # fmt: skip


def _assert_one_line(r, code, words, tmp_path):
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert (r.returncode == code) if code else (r.returncode != 0), (r.returncode, out)
    assert out.count("error:") == 1, out
    line = next(ln for ln in out.splitlines() if "error:" in ln)
    assert words.replace("{tmp}", str(tmp_path)) in " ".join(out.split()), line


@pytest.mark.parametrize("argv, words", [
    (["bundle", "some-model", "-o", "{tmp}/no/such/dir/lab.fbb"], "-o {tmp}/no/such/dir/lab.fbb: the folder"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/b.yaml", "--junit", "{tmp}/missing/r.xml"], "--junit {tmp}/missing/r.xml: the folder"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/b.yaml", "--report", "{tmp}/missing/r.html"], "--report"),
    (["results", "--db", "foo://u:pw@x"], "foo://u:***@x is not a database URL"),
    (["models", "--db", "notaurl"], "notaurl is not a database URL"),
])  # fmt: skip
def test_bad_paths_and_urls_are_one_line(tmp_path, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "controller.cli", *argv, "--data-dir", str(tmp_path / "fb")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert words.replace("{tmp}", str(tmp_path)) in " ".join(out.split()) and out.count("error:") == 1, out


DEAD = "http://127.0.0.1:{dead}"

#: (argv, exit code or 0 for any non-zero, key words of the error line); --data-dir is added.
CONTROLLER_CASES = [
    # usage errors: one line too, not a box
    (["nosuchcmd"], 2, "No such command 'nosuchcmd'"),
    (["convert"], 2, "Missing argument 'model'"),
    (["results", "--limit", "abc"], 2, "Invalid value for '--limit'"),
    # models: missing, corrupt, truncated, a directory, empty, a data set of strings, brackets in the name
    (["convert", "{tmp}/nosuch.tflite"], 1, "nosuch.tflite: no such file"),
    (["convert", "{tmp}/m[x].tflite"], 1, "m[x].tflite: no such file"),
    (["convert", "{tmp}/random.tflite"], 1, "not a TFLite flatbuffer"),
    (["convert", "{tmp}/truncated.tflite"], 1, "corrupt or truncated"),
    (["convert", "{tmp}/dir.tflite"], 1, "a directory, but not a TensorFlow SavedModel"),
    (["convert", "{tmp}/empty.tflite"], 1, "the file is empty"),
    (["convert", "{probe}", "--data", "{tmp}/strings.npz"], 1, "a data set's inputs are numbers"),
    (["convert", "{probe}", "--input-shape", "abc"], 2, "--input-shape must be integers"),
    (["convert", "{probe}", "--resize", "big"], 2, "--resize must look like 224x224"),
    (["convert", "{probe}", "--broker", "foo://u:pw@x"], 2, "foo://u:***@x is not a broker URL"),
    (["convert", "{probe}", "--qat-epochs", "0"], 2, "--qat-epochs must be 1 or more"),
    (["convert", "{probe}", "--qat-lr", "5"], 2, "--qat-lr must be between 0 and 1"),
    (["convert", "{probe}", "--max-accuracy-drop", "150"], 2, "--max-accuracy-drop is in points of top-1 accuracy"),
    (["convert", "{probe}", "--fidelity-target-db", "-3"], 2, "--fidelity-target-db is an SNR in dB above 0"),
    (["convert", "{probe}", "--train-samples", "-1"], 2, "--train-samples must be 0 or more"),
    (["convert", "{probe}", "--data", "{tmp}/unlabelled.npz", "--train-samples", "2"], 1, "a training split needs labels"),
    (["quant-report", "nosuch"], 1, "no stored model matches 'nosuch'"),
    (["quant-report", "m", "--variant", "openvino-fp16"], 1, "no per-layer report for openvino-fp16"),
    (["quant-report", "m", "--format", "xml"], 2, "--format must be table or json"),
    # sweep specs
    (["sweep", "{tmp}/shape.yaml"], 2, "models[0].input_shape: a list of whole numbers"),
    (["sweep", "{tmp}/cal.yaml"], 2, "models[0].calibration_size: 'x' is not a whole number"),
    (["sweep", "{tmp}/attempts.yaml"], 2, "max_attempts: 'x' is not a whole number"),
    (["sweep", "{tmp}/variants.yaml"], 2, "variants: a list of names, e.g. [tflite-fp32, openvino-int8]"),
    (["sweep", "{tmp}/models.yaml"], 2, "models: a list"),
    (["sweep", "{tmp}/latin1.yaml"], 2, "not UTF-8 text"),
    (["sweep", "{tmp}/not-yaml.yaml"], 2, "the sweep spec is not valid YAML: while parsing a flow node"),
    (["sweep", "{tmp}/corrupt-model.yaml"], 1, "random.tflite: not a TFLite flatbuffer"),
    (["sweep", "{tmp}/nosuch.yaml"], 2, "cannot read the sweep spec"),
    (["sweep", "{tmp}/missing-model.yaml"], 2, "does not exist"),
    (["sweep", "{tmp}/stored.yaml", "--broker", "foo://u:pw@x"], 1, "foo://u:***@x is not a broker URL"),
    (["sweep", "{tmp}/stored.yaml", "--controller", DEAD, "--detach"], 1, "no API token: set FLEETBENCH_TOKEN"),
    # brokers
    (["status", "--broker", "foo://x"], 1, "cannot reach the broker foo://x"),
    (["fleet", "--broker", "foo://u:pw@x"], 2, "foo://u:***@x is not a broker URL"),
    (["worker", "--broker", "foo://x"], 2, "foo://x is not a broker URL"),
    # a controller that is not there, or no token for it
    (["results", "--controller", DEAD], 1, "no API token: set FLEETBENCH_TOKEN"),
    (["status", "--controller", DEAD], 1, "no API token"),
    (["fleet", "--controller", DEAD], 1, "no API token"),
    # stored things that are not there
    (["results", "nosuch"], 1, "no sweep matches 'nosuch'"),
    (["results", "--limit", "0"], 2, "--limit must be at least 1"),
    (["results", "--format", "xml"], 2, "--format must be table, csv or json"),
    (["status", "nosuch"], 1, "no sweep matches 'nosuch'"),
    (["variants", "nosuch"], 1, "no stored model matches 'nosuch'"),
    (["bundle", "nosuch", "-o", "{tmp}/b.fbb"], 1, "no stored model matches 'nosuch'"),
    (["compare", "a", "b"], 2, "no sweep matches 'a'"),
    (["baseline", "set", "a", "--tag", "a b"], 2, "a tag has no spaces"),
    (["baseline", "set", "a", "--tag", "t"], 2, "no sweep matches 'a'"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/nosuch.yaml"], 2, "cannot read the budgets file"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/budgets-latin1.yaml"], 2, "not UTF-8 text"),
    (["artifacts", "list", "--db", "foo://"], 2, "is not a database URL"),
    (["regressions", "--since", "last tuesday"], 2, "--since must be a date like 2026-12-01"),
    (["dashboard", "--host", "0.0.0.0"], 2, "refusing to serve the dashboard on 0.0.0.0 without a token"),
    (["regressions", "--metric", "speed"], 2, "unknown metric(s) speed; known: p50_ms"),
    (["regressions", "--threshold", "5"], 2, "--threshold is a relative change between 0 and 1"),
    (["regressions", "ack", "7", "--note", "known"], 2, "no change point 7; `fleetbench regressions` lists them"),
    (["regressions", "webhook", "ftp://hooks.example/x"], 2, "the webhook must be an http:// or https:// URL"),
    (["demo", "--threads", "-1"], 2, "threads must be >= 0"),
    (["models", "--data-dir", "{tmp}/random.tflite"], 2, "cannot use {tmp}/random.tflite as the data directory"),
    (["artifacts", "verify", "--data-dir", "{tmp}/random.tflite"], 2, "--data-dir or FLEETBENCH_HOME"),
    (["dashboard", "--port", "abc"], 2, "Invalid value for '--port'"),
    (["serve"], 2, "set FLEETBENCH_API_TOKENS"),
    # results files: missing, not JSON, something else, tampered with
    (["import", "{tmp}/nosuch.json"], 1, "not a readable results file"),
    (["import", "{tmp}/garbage.json"], 1, "not a readable results file"),
    (["import", "{tmp}/other.json"], 1, "not a fleetbench results file"),
    (["import", "{tmp}/tampered-stats.json"], 1, "JobOutcome.record.stats.p50_ms: expected a number, got str"),
    (["import", "{tmp}/tampered-time.json"], 1, "JobOutcome.record.finished_at: 'yesterday' is not an ISO 8601 time"),
    (["import", "{tmp}/tampered-outcomes.json"], 1, "JobOutcome: expected an object"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, words", CONTROLLER_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_fleetbench_bad_input_is_one_line(tmp_path, argv, code, words):
    _make_inputs(tmp_path)
    dead = str(free_port())  # nothing listens there
    r = _run([a.replace("{dead}", dead) for a in argv], tmp_path)
    _assert_one_line(r, code, words.replace("{dead}", dead), tmp_path)


@pytest.mark.parametrize("argv, words", [
    (["results", "--controller", DEAD], "cannot reach the controller at http://127.0.0.1:{dead}"),
    (["status", "--controller", DEAD], "cannot reach the controller"),
    (["fleet", "--controller", DEAD], "cannot reach the controller"),
    (["sweep", "{tmp}/stored.yaml", "--controller", DEAD, "--detach"], "cannot reach the controller"),
    (["upload", "{probe}", "--controller", DEAD], "cannot reach the controller"),
    (["upload", "{tmp}/nosuch.tflite", "--controller", DEAD], "cannot read"),
    (["upload", "{probe}", "--controller", DEAD, "--data-dir", "{tmp}"], "No such option: --data-dir"),
])  # fmt: skip
def test_a_dead_controller_is_one_line(tmp_path, argv, words):
    _make_inputs(tmp_path)
    dead = str(free_port())
    r = _run([a.replace("{dead}", dead) for a in argv], tmp_path, data_dir=False, env=_env(FLEETBENCH_TOKEN="t"))
    _assert_one_line(r, 0, words.replace("{dead}", dead), tmp_path)


@pytest.fixture(scope="module")
def live_controller(tmp_path_factory):
    """A real `fleetbench serve` on a free port, whose user token is `right` and agent token `agent`."""
    import urllib.request

    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = _env(FLEETBENCH_API_TOKENS="right", FLEETBENCH_AGENT_TOKENS="agent")
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", str(port), "--data-dir", str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fleetbench serve exited: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} did not answer")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("argv, token, words", [
    (["results"], "wrong", "answered 401"),
    (["status"], "wrong", "(check FLEETBENCH_TOKEN)"),
    (["fleet"], "wrong", "answered 401"),
    (["upload", "{probe}"], "wrong", "answered 401"),
    (["results"], "agent", "answered 403"),
])  # fmt: skip
def test_a_wrong_token_is_one_line(live_controller, tmp_path, argv, token, words):
    r = _run([*argv, "--controller", live_controller], tmp_path, data_dir=False, env=_env(FLEETBENCH_TOKEN=token))
    _assert_one_line(r, 1, words, tmp_path)
    if token == "wrong":
        assert "wrong" not in r.stdout + r.stderr


#: (argv of `python -m agent`, exit code, key words)
AGENT_CASES = [
    (["--nosuch"], 2, "unrecognized arguments: --nosuch"),
    (["--visibility-timeout", "abc"], 2, "invalid float value: 'abc'"),
    (["run-bundle"], 2, "the following arguments are required: bundle"),
    (["--broker", "foo://x"], 2, "the broker must be a redis:// or rediss:// URL"),
    (["--broker", "redis://10.1.2.3:6379/0"], 2, "without a password"),
    (["--broker", "redis://127.0.0.1:1/0", "--visibility-timeout", "10", "--job-time-limit", "100"], 2, "visibility timeout"),
    (["--config", "{tmp}/nosuch.json"], 1, "cannot read agent config"),
    (["--config", "{tmp}/bad.json"], 1, "is not valid JSON"),
    (["--config", "{tmp}/unknown-key.json"], 1, "unknown key(s) brokr"),
    (["--config", "{tmp}/wrong-type.json"], 1, "`broker` must be a string, not int"),
    (["--config", "{tmp}/config-latin1.json"], 1, "is not UTF-8 text"),
    (["run-bundle", "{tmp}/nosuch.fbb"], 2, "nosuch.fbb: no such file"),
    (["run-bundle", "{tmp}"], 2, "not a file"),
    (["run-bundle", "{tmp}/not-a-tar.fbb"], 2, "not a readable fleetbench bundle"),
    (["run-bundle", "{tmp}/list.fbb"], 2, "not a fleetbench bundle"),
    (["run-bundle", "{tmp}/jobs-not-objects.fbb"], 2, "a job in its bundle.json is int"),
    (["run-bundle", "{tmp}/no-uri.fbb"], 2, "artifact m.tflite has no `uri`"),
    (["run-bundle", "{tmp}/no-uri.fbb", "--out", "{tmp}/missing/r.json"], 2, "--out {tmp}/missing/r.json: the folder"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, words", AGENT_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_agent_bad_input_is_one_line(tmp_path, argv, code, words):
    _make_inputs(tmp_path)
    r = _run(argv, tmp_path, module="agent", data_dir=False)
    _assert_one_line(r, code, words, tmp_path)


def test_fleetbench_agent_start_bad_broker_is_one_line(tmp_path):
    r = _run(["agent", "start", "--broker", "foo://x"], tmp_path, data_dir=False)
    _assert_one_line(r, 2, "the broker must be a redis:// or rediss:// URL", tmp_path)


BOOM = "raise RuntimeError('kaput [x] at redis://u:s3cret@host')"


@pytest.mark.parametrize("module, patch", [
    ("controller.cli", "import controller.cli as m\ndef boom(**kw): {boom}\nm.app = boom\nm.main()"),
    ("agent.cli", "import sys, agent.cli as m\ndef boom(argv): {boom}\nm._main = boom\nsys.exit(m.main([]))"),
])  # fmt: skip
def test_an_unexpected_exception_is_one_line_unless_debugging(tmp_path, module, patch):
    code = patch.replace("{boom}", BOOM)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out and out.count("error:") == 1, out
    assert "RuntimeError: kaput [x] at redis://u:***@host; run with FLEETBENCH_DEBUG=1 for the traceback" in out, out
    assert "s3cret" not in out
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(FLEETBENCH_DEBUG="1"),
                       timeout=120)  # fmt: skip
    assert r.returncode != 0 and "Traceback" in r.stderr and "RuntimeError: kaput" in r.stderr, r.stderr
