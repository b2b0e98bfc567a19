"""The controller's HTTP API: tokens, uploads with limits, artifact downloads, and a sweep over real HTTP."""

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from controller.api import Tokens, create_app
from controller.config import Paths

USER, AGENT = "user-secret-1", "agent-secret-1"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api(tmp_path):
    paths = Paths.resolve(tmp_path / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    app = create_app(paths, paths.db_url(), None, Tokens({USER}, {AGENT}), max_upload_bytes=200_000, run_scheduler=False)
    with TestClient(app) as client:
        yield client


def _h(token):
    return {"Authorization": f"Bearer {token}"}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_health_needs_no_token_and_everything_else_does(api):
    assert api.get("/api/v1/health").json()["ok"] is True
    for path in ("/api/v1/sweeps", "/api/v1/results", "/api/v1/fleet", "/api/v1/artifacts/" + "0" * 64):
        r = api.get(path)
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        assert api.get(path, headers=_h("wrong")).status_code == 401


def test_agent_tokens_may_only_download_artifacts(api):
    r = api.get("/api/v1/results", headers=_h(AGENT))
    assert r.status_code == 403 and "only download artifacts" in r.json()["detail"]


def test_upload_model_then_download_it_as_an_agent(api, tiny_model):
    body = tiny_model["path"].read_bytes()
    r = api.post("/api/v1/models", params={"filename": "tiny.tflite", "name": "tiny"}, content=body, headers=_h(USER))
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["kind"] == "tflite" and m["size_bytes"] == len(body)
    got = api.get(f"/api/v1/artifacts/{m['model_id']}", headers=_h(AGENT))
    assert got.status_code == 200 and got.content == body
    assert [x["name"] for x in api.get("/api/v1/models", headers=_h(USER)).json()["models"]] == ["tiny"]


@pytest.mark.parametrize(
    "filename, body, status, words",
    [
        ("model.tflite", b"x" * 300_000, 413, "at most 200,000"),
        ("model.tflite", b"not a flatbuffer at all, just text" * 10, 422, "model.tflite"),
        ("model.pt", b"whatever", 415, ".keras"),
        ("model.tflite", b"", 400, "empty"),
    ],
)
def test_bad_uploads_get_clear_answers(api, filename, body, status, words):
    r = api.post("/api/v1/models", params={"filename": filename}, content=body, headers=_h(USER))
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_dataset_upload_is_checked(api):
    ok = api.post("/api/v1/datasets", content=_npz(x=np.zeros((5, 2)), y=np.arange(5)), headers=_h(USER))
    assert ok.status_code == 201 and ok.json()["samples"] == 5
    no_x = api.post("/api/v1/datasets", content=_npz(y=np.arange(5)), headers=_h(USER))
    assert no_x.status_code == 422 and "'x'" in no_x.json()["detail"]
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    r = api.post("/api/v1/datasets", content=pickled.getvalue(), headers=_h(USER))
    assert r.status_code == 422 and "pickle" in r.json()["detail"].lower()


@pytest.mark.parametrize("sha, status", [("abc", 422), ("F" * 64, 422), ("f" * 64, 404)])
def test_artifact_names_are_checked(api, sha, status):
    assert api.get(f"/api/v1/artifacts/{sha}", headers=_h(AGENT)).status_code == status


def test_sweeps_need_a_broker(api):
    r = api.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "x"}]}}, headers=_h(USER))
    assert r.status_code == 503 and "--broker" in r.json()["detail"]


def test_openapi_spec_lists_the_routes(api):
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/models", "/api/v1/datasets", "/api/v1/sweeps", "/api/v1/sweeps/{ref}", "/api/v1/jobs",
              "/api/v1/results", "/api/v1/fleet", "/api/v1/artifacts/{sha256}"):  # fmt: skip
        assert p in paths


def test_api_without_user_tokens_refuses_to_start(tmp_path):
    with pytest.raises(ValueError, match="user token"):
        create_app(Paths.resolve(tmp_path), "sqlite://", None, Tokens(set(), {AGENT}))


@pytest.mark.slow
def test_sweep_over_http_with_an_agent_downloading_artifacts(clean_redis_url, tmp_path, tiny_model):
    """`fleetbench serve` + an agent that shares no disk with it + the CLI with --controller."""
    from controller.embedded import LocalAgent
    from protocol.proc import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FLEETBENCH_API_TOKENS=USER, FLEETBENCH_AGENT_TOKENS=AGENT, FLEETBENCH_TOKEN=USER,
               FLEETBENCH_DISABLE_GPU_PROBE="1", PYTHONUNBUFFERED="1")  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", str(port), "--broker", clean_redis_url,
                               "--data-dir", str(tmp_path / "controller")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    cache = tmp_path / "agent-cache"
    os.environ.update(FLEETBENCH_AGENT_TOKEN=AGENT, FLEETBENCH_AGENT_CACHE=str(cache))
    agent = LocalAgent(clean_redis_url, f"http-{uuid.uuid4().hex[:6]}", tmp_path / "agent.log", ("litert:cpu", "openvino:CPU")).start()
    try:
        _wait_http(f"{url}/api/v1/health", server)
        model = tmp_path / "tiny.tflite"
        model.write_bytes(tiny_model["path"].read_bytes())
        data = tmp_path / "tiny.npz"
        np.savez(data, x=tiny_model["x"], y=tiny_model["y"])
        cli = [sys.executable, "-m", "controller.cli"]
        up = subprocess.run(cli + ["upload", str(model), "--data", str(data), "--name", "tiny", "--controller", url],
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        import re

        dataset = re.search(r"data set: ([0-9a-f]{64})", up.stdout).group(1)
        spec = tmp_path / "sweep.yaml"
        spec.write_text(json.dumps({
            "name": "over-http", "models": [{"id": "tiny", "data": dataset}], "variants": ["tflite-fp32", "openvino-fp32"],
            "devices": ["litert:cpu", "openvino:CPU"], "settings": {"min_iterations": 100, "min_duration_s": 0.1},
        }))  # fmt: skip
        agent.wait_ready(lambda: _fleet_has(url, agent.agent_id), timeout_s=90)
        run = subprocess.run(cli + ["sweep", str(spec), "--controller", url], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "openvino-fp32" in run.stdout and "tflite-fp32" in run.stdout
        out = subprocess.run(cli + ["results", "over-http", "--controller", url, "-f", "json"], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        records = json.loads(out.stdout)
        assert {r["variant"] for r in records} == {"tflite-fp32", "openvino-fp32"}
        assert all(r["agent_id"] == agent.agent_id for r in records)
        assert all(r["accuracy_top1"] == 1.0 for r in records)
        fleet = subprocess.run(cli + ["fleet", "--controller", url], env=env, capture_output=True, text=True, timeout=60)
        assert agent.agent_id in fleet.stdout and "online" in fleet.stdout, fleet.stdout + fleet.stderr
        # the agent fetched what it ran over HTTP into its own cache, by sha256
        assert {r["artifact_sha256"] for r in records} <= {p.name for p in cache.iterdir()}
    finally:
        for key in ("FLEETBENCH_AGENT_TOKEN", "FLEETBENCH_AGENT_CACHE"):
            os.environ.pop(key, None)
        agent.stop()
        server.terminate()
        server.wait(timeout=30)


def _fleet_has(url, agent_id) -> bool:
    from controller.client import ApiClient

    return any(a["agent_id"] == agent_id and a["online"] for a in ApiClient(url, USER).get("/api/v1/fleet")["agents"])


def _wait_http(url, proc, timeout_s=60):
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fleetbench serve exited: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def test_gc_keeps_a_data_set_uploaded_through_the_api(api, tmp_path):
    """Issue 14, finding 7: no stored row names an uploaded data set until a sweep does; gc keeps it."""
    body = _npz(x=np.zeros((4, 2), np.float32), y=np.arange(4))
    r = api.post("/api/v1/datasets", content=body, headers=_h(USER))
    assert r.status_code == 201, r.text
    sha = r.json()["dataset"]
    stray = Paths.resolve(tmp_path / "fb").artifacts / "ab" / ("ab" + "0" * 62)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"nobody points at me")
    cli = [sys.executable, "-m", "controller.cli", "artifacts", "gc", "--data-dir", str(tmp_path / "fb")]
    dry = subprocess.run(cli + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "would delete 1 artifact(s)" in dry.stdout, dry.stdout + dry.stderr
    gc = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0 and "deleted 1 artifact(s)" in gc.stdout
    assert not stray.exists()
    assert api.get(f"/api/v1/artifacts/{sha}", headers=_h(AGENT)).content == body


def test_client_triggered_errors_are_4xx_not_500(api, tiny_model, tmp_path):
    """Issue 14, finding 9: a non-ASCII token and a filename with a NUL byte."""
    r = api.get("/api/v1/results", headers={"Authorization": "Bearer caf\u00e9-\u00ff".encode("latin-1")})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    before = set(Paths.resolve(tmp_path / "fb").run.iterdir())
    for name in ("a\x00b.tflite", "../x.tflite", "a/b.tflite"):
        r = api.post("/api/v1/models", params={"filename": name}, content=tiny_model["path"].read_bytes(), headers=_h(USER))
        assert r.status_code == 400 and r.json()["detail"].startswith("filename:"), (name, r.text)
    assert set(Paths.resolve(tmp_path / "fb").run.iterdir()) == before  # no temporary directory left behind


@pytest.mark.parametrize("spec, field", [
    ({"models": 5}, "models"), ({"models": [{"id": "m", "input_shape": "abc"}]}, "models[0].input_shape"),
    ({"models": [{"id": "m", "calibration_size": "x"}]}, "models[0].calibration_size"),
    ({"models": [{"id": "m"}], "max_attempts": "x"}, "max_attempts"), ({"models": [{"id": "m"}], "variants": 5}, "variants"),
    ({"models": [{"id": "m"}], "variants": [["a"]]}, "variants"), ({"models": [{"id": "m", "seed": "x"}]}, "models[0].seed"),
])  # fmt: skip
def test_bad_sweep_specs_are_400s_naming_the_field(api, spec, field):
    """Issue 14, finding 9: each of these was a 500."""
    r = api.post("/api/v1/sweeps", json={"spec": spec}, headers=_h(USER))
    assert r.status_code == 400 and r.json()["detail"].startswith(field + ":"), r.text


def test_a_sweep_spec_that_is_not_utf8_is_one_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(b"name: caf\xe9\nmodels: [a.keras]\n")
    r = subprocess.run([sys.executable, "-m", "controller.cli", "sweep", str(spec), "--data-dir", str(tmp_path / "fb")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout and "not UTF-8 text" in r.stderr + r.stdout


def test_an_npz_compression_bomb_is_refused_before_it_is_inflated(api, tmp_path):
    """Issue 14, finding 2: 1.9 MB of savez_compressed declaring 2 GB; here 1 GB of zeros in a small file,
    against the fixture's limit (4 x 200,000 bytes). The sizes are read from the zip directory and npy header."""
    import zipfile

    bomb = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**28,)})
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        zeros = bytes(2**20)
        for _ in range(64):  # 64 MiB written, 1 GiB declared: enough to prove nothing is inflated
            f.write(zeros)
    body = bomb.read_bytes()
    assert len(body) < 200_000
    r = api.post("/api/v1/datasets", content=body, headers=_h(USER))
    assert r.status_code == 413 and "over the limit" in r.json()["detail"], r.text
    assert "FLEETBENCH_MAX_ARRAY_BYTES" in r.json()["detail"]
    assert not any(Paths.resolve(tmp_path / "fb").artifacts.glob("*/*"))  # nothing stored
    strings = api.post("/api/v1/datasets", content=_npz(x=np.array(["a", "b"])), headers=_h(USER))
    assert strings.status_code == 422 and "are numbers" in strings.json()["detail"]


def test_a_sweep_is_cancelled_over_http_and_from_the_cli(clean_redis_url, tmp_path, tiny_model):
    """Issue 14: `POST /sweeps/{ref}/cancel` (and `fleetbench sweep --cancel NAME --controller URL`) ends a sweep:
    its jobs, waiting for a device nobody has, become cancelled; again is a 409; an unknown sweep a 404."""
    paths = Paths.resolve(tmp_path / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    app = create_app(paths, paths.db_url(), clean_redis_url, Tokens({USER}, {AGENT}), run_scheduler=False)
    with TestClient(app) as api:
        m = api.post("/api/v1/models", params={"filename": "tiny.tflite"}, content=tiny_model["path"].read_bytes(),
                     headers=_h(USER)).json()  # fmt: skip
        spec = {"name": "to-cancel", "models": [{"id": m["model_id"]}], "variants": ["tflite-fp32"],
                "devices": ["litert:cpu"], "settings": {"threads": [1, 2]}}  # fmt: skip
        sweep_id = api.post("/api/v1/sweeps", json={"spec": spec}, headers=_h(USER)).json()["sweep_id"]
        r = api.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=_h(USER))
        assert r.status_code == 200 and r.json() == {"sweep_id": sweep_id, "cancelled": 2}, r.text
        got = api.get(f"/api/v1/sweeps/{sweep_id}", headers=_h(USER)).json()
        assert got["state"] == "cancelled" and got["counts"] == {"cancelled": 2}
        again = api.post("/api/v1/sweeps/to-cancel/cancel", headers=_h(USER))
        assert again.status_code == 409 and "cancelled already" in again.json()["detail"]
        assert api.post("/api/v1/sweeps/nope/cancel", headers=_h(USER)).status_code == 404
        assert api.post(f"/api/v1/sweeps/{sweep_id}/cancel").status_code == 401
        import redis as redis_mod

        from protocol import FENCE_PREFIX

        r = redis_mod.Redis.from_url(clean_redis_url)
        jobs = api.get(f"/api/v1/sweeps/{sweep_id}", headers=_h(USER)).json()["jobs"]
        assert all(r.get(FENCE_PREFIX + j["job_id"]) == b"0" for j in jobs)  # fenced: no agent runs them
        second = api.post("/api/v1/sweeps", json={"spec": dict(spec, name="cli-cancel")}, headers=_h(USER)).json()["sweep_id"]

    from protocol.proc import free_port

    port = free_port()
    env = dict(os.environ, FLEETBENCH_API_TOKENS=USER, FLEETBENCH_AGENT_TOKENS=AGENT, FLEETBENCH_TOKEN=USER)
    server = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", str(port), "--broker", clean_redis_url,
                               "--data-dir", str(paths.root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/api/v1/health", server)
        cli = [sys.executable, "-m", "controller.cli", "sweep", "--cancel", "cli-cancel", "--controller", url]
        out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and f"({second}) cancelled on {url}: 2 unfinished job(s)" in " ".join(out.stdout.split()), out
        twice = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        assert twice.returncode != 0 and "cancelled already" in twice.stderr and "Traceback" not in twice.stderr, twice
    finally:
        server.terminate()
        server.wait(timeout=30)
