"""Hardening of the controller's HTTP API (issue 14, findings 4 and 14; NaN in uploaded data sets).

Sweeps through the API name uploaded data sets and stored models, never paths on the server; request bodies
are bounded in size and in time; a client that goes away mid-upload is one log line; 422s show no server
paths; an uploaded data set with NaN is refused unless asked for. The time and disconnect tests run the app
under real uvicorn on a loopback port and talk to it over raw sockets."""

import io
import logging
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from controller.api import Tokens, create_app
from controller.config import Paths
from controller.sweeps import SweepError, spec_from_dict

USER, AGENT = "user-secret-h", "agent-secret-h"
H = {"Authorization": f"Bearer {USER}"}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _app(tmp_path, broker_url=None, **kw):
    paths = Paths.resolve(tmp_path / "fb")
    paths.run.mkdir(parents=True, exist_ok=True)
    kw.setdefault("max_upload_bytes", 2_000_000)
    return paths, create_app(paths, paths.db_url(), broker_url, Tokens({USER}, {AGENT}), run_scheduler=False, **kw)


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBENCH_MAX_JSON_BYTES", "10000")
    paths, app = _app(tmp_path)
    with TestClient(app) as client:
        client.paths = paths
        yield client


class _Server:
    def __init__(self, app, paths):
        import uvicorn

        from protocol.proc import free_port

        self.paths, self.port = paths, free_port()
        # log_config=None: uvicorn's loggers propagate, so caplog sees what it would print
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, log_level="info",
                                                    lifespan="off"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def get(self, path: str) -> bytes:
        with self.connect() as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _head(method: str, path: str, **headers) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {USER}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBENCH_MAX_JSON_BYTES", "10000")
    monkeypatch.setenv("FLEETBENCH_BODY_TIMEOUT_S", "1")
    paths, app = _app(tmp_path)
    with _Server(app, paths) as s:
        yield s


# --- finding 4: nothing in an API sweep spec is a path on the server


def _uploaded(api) -> str:
    r = api.post("/api/v1/datasets", content=_npz(x=np.zeros((4, 2), np.float32), y=np.arange(4)), headers=H)
    assert r.status_code == 201, r.text
    return r.json()["dataset"]


def test_a_sweeps_data_is_an_uploaded_data_set_never_a_server_path(api, tmp_path):
    there = tmp_path / "there.npz"
    there.write_bytes(_npz(x=np.zeros((4, 2))))
    answers = []
    for data in (str(there), str(tmp_path / "missing.npz"), "../etc/passwd", "~/x.npz", "$HOME/x.npz", "sha256:" + "z" * 64):
        r = api.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "m", "data": data}]}}, headers=H)
        assert r.status_code == 400 and r.json()["detail"].startswith("models[0].data:"), (data, r.text)
        assert str(tmp_path) not in r.text and "there" not in r.text and "missing" not in r.text
        answers.append(r.json()["detail"])
    assert len(set(answers)) == 1  # a path that exists and one that does not get the same answer
    unknown = api.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "m", "data": "ab" * 32}]}}, headers=H)
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("models[0].data:")
    assert "POST /api/v1/datasets" in unknown.json()["detail"]
    assert not any(api.paths.artifacts.glob("*/*"))  # nothing read from the server's disk was stored


def test_an_uploaded_data_set_is_named_by_its_sha256(api):
    sha = _uploaded(api)
    for data in (sha, f"sha256:{sha}"):
        r = api.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "m", "data": data}]}}, headers=H)
        assert r.status_code == 503, r.text  # past the spec's checks: only the missing broker stops it


@pytest.mark.parametrize("models", [["model.keras"], ["/etc/passwd"], [{"path": "m.keras"}], [{"id": "../m.keras"}],
                                    [{"id": "~/m.keras"}], [{"id": "a/b"}], [{"id": ".hidden"}], [{"id": "m"}, {"path": "/x.onnx"}]])  # fmt: skip
def test_a_sweeps_models_are_stored_ones_never_server_paths(api, models):
    r = api.post("/api/v1/sweeps", json={"spec": {"models": models}}, headers=H)
    assert r.status_code == 400 and r.json()["detail"].startswith("models["), r.text
    assert "POST /api/v1/models" in r.json()["detail"]


def test_local_sweep_specs_still_take_paths(tmp_path):
    spec = spec_from_dict({"models": [{"path": "m.keras", "data": "d.npz"}, "other.onnx"]}, tmp_path)
    assert spec.models[0].path == str(tmp_path / "m.keras") and spec.models[0].data == str(tmp_path / "d.npz")
    assert spec.models[1].path == str(tmp_path / "other.onnx")
    with pytest.raises(SweepError, match=r"^models\[0\]\.data:"):
        spec_from_dict({"models": [{"id": "m", "data": "d.npz"}]}, server_paths=False)
    assert spec_from_dict({"models": [{"id": "m", "data": "AB" * 32}]}).models[0].data == "AB" * 32  # a local path


# --- finding 14: request bodies are bounded in size and time


def test_a_json_body_over_the_limit_is_413_by_its_content_length(api):
    big = {"spec": {"models": [{"id": "m"}], "name": "x" * 20_000}}
    r = api.post("/api/v1/sweeps", json=big, headers=H)
    assert r.status_code == 413 and "FLEETBENCH_MAX_JSON_BYTES" in r.json()["detail"], r.text
    assert "10,000" in r.json()["detail"]
    assert api.post("/api/v1/sweeps", json=big).status_code == 401  # the token still comes first


def test_the_limits_are_create_app_parameters_and_env_values_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBENCH_MAX_JSON_BYTES", "10000")
    _, app = _app(tmp_path, max_json_bytes=500, body_timeout_s=5)  # a parameter wins over the environment
    with TestClient(app) as client:
        r = client.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "m" * 600}]}}, headers=H)
        assert r.status_code == 413 and "at most 500 " in r.json()["detail"]
    for name, bad in (("FLEETBENCH_MAX_JSON_BYTES", "lots"), ("FLEETBENCH_BODY_TIMEOUT_S", "-1")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            _app(tmp_path)
        monkeypatch.setenv(name, "10")


def test_a_big_content_length_is_refused_before_the_body_is_read(server):
    with server.connect() as s:
        s.sendall(_head("POST", "/api/v1/sweeps", Content_Type="application/json", Content_Length=10**9) + b'{"spec": ')
        head = _read_all(s)  # answered (and closed) with 999,999,991 bytes still unsent
    assert head.startswith(b"HTTP/1.1 413") and b"FLEETBENCH_MAX_JSON_BYTES" in head


def test_a_chunked_json_body_is_counted_as_it_streams(server):
    with server.connect() as s:
        s.sendall(_head("POST", "/api/v1/sweeps", Content_Type="application/json", Transfer_Encoding="chunked"))
        piece = b" " * 4096
        for _ in range(3):  # 12 KB of whitespace against a 10,000-byte limit, and no last chunk:
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        # a 413 now can only come from counting as the body streams. Sending no more than this
        # lets the server read all of it, so its close is a FIN, not a reset that could drop the answer.
        head = _read_all(s)
    assert head.startswith(b"HTTP/1.1 413"), head[:300]
    assert b"is over " in head and b"FLEETBENCH_MAX_JSON_BYTES" in head


@pytest.mark.parametrize("path, ctype", [("/api/v1/sweeps", "application/json"), ("/api/v1/datasets", "application/octet-stream")])
def test_a_stalled_body_is_408_and_others_are_served_meanwhile(server, path, ctype):
    with server.connect() as s:
        s.sendall(_head("POST", path, Content_Type=ctype, Content_Length=5000) + b'{"spec"')
        time.sleep(0.3)
        assert b'"ok":true' in server.get("/api/v1/health")  # not blocked by the stalled one
        t0 = time.monotonic()
        head = _read_all(s)
        waited = time.monotonic() - t0
    assert head.startswith(b"HTTP/1.1 408") and b"stalled" in head, head[:300]
    assert waited < 5
    assert b'"ok":true' in server.get("/api/v1/health")
    assert not list(server.paths.run.iterdir())  # the stalled upload's temporary file is gone


def test_a_client_gone_mid_upload_is_one_log_line(server, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(3):
        s = server.connect()
        s.sendall(_head("POST", "/api/v1/datasets", Content_Type="application/octet-stream", Content_Length=1_000_000))
        s.sendall(b"\0" * 200_000)
        time.sleep(0.2)
        s.close()
    with server.connect() as s:  # and a JSON body cut short: no log line needed, no traceback either
        s.sendall(_head("POST", "/api/v1/sweeps", Content_Type="application/json", Content_Length=5000) + b'{"spec": {')
        time.sleep(0.2)
    time.sleep(0.5)
    deadline = time.monotonic() + 10
    while sum("disconnected" in r.getMessage() for r in caplog.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 3, caplog.text
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records), caplog.text
    assert all("\n" not in line for line in lines)
    assert not list(server.paths.run.iterdir())  # no temporary file left behind
    assert b'"ok":true' in server.get("/api/v1/health")


def test_422s_show_no_server_paths(api, tmp_path):
    root = str(api.paths.root)
    answers = [api.post("/api/v1/models", params={"filename": f"m{ext}"}, content=b"junk" * 20, headers=H)
               for ext in (".tflite", ".keras", ".h5")]  # fmt: skip
    answers += [api.post("/api/v1/datasets", content=body, headers=H)
                for body in (b"junk" * 30, _npz(x=np.array(["a"])), _npz(x=np.full((3, 2), np.nan)))]  # fmt: skip
    answers.append(api.post("/api/v1/sweeps", content=b"{bad", headers={**H, "Content-Type": "application/json"}))
    for r in answers:
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "/tmp" not in detail and root not in detail and str(tmp_path) not in detail, detail
        assert "\n" not in detail and detail
    assert "m.tflite" in answers[0].json()["detail"]  # the file is still named, by its own name


# --- NaN and infinities in an uploaded data set


def test_an_uploaded_data_set_with_nan_is_refused_unless_asked_for(api):
    x = np.zeros((6, 2), np.float32)
    x[0, 0], x[3, 1], x[5, 0] = np.nan, np.inf, -np.inf
    body = _npz(x=x, y=np.arange(6))
    r = api.post("/api/v1/datasets", content=body, headers=H)
    assert r.status_code == 422 and "3 NaN or infinite" in r.json()["detail"], r.text
    assert "?allow_nan=true" in r.json()["detail"]
    ok = api.post("/api/v1/datasets", params={"allow_nan": "true"}, content=body, headers=H)
    assert ok.status_code == 201 and ok.json()["samples"] == 6, ok.text


def test_uploaded_labels_get_the_local_checks(api):
    r = api.post("/api/v1/datasets", content=_npz(x=np.zeros((3, 2)), y=np.array([0, -1, 2]), task=np.array("classification")),
                 headers=H)  # fmt: skip
    assert r.status_code == 422 and "not class indices" in r.json()["detail"], r.text
    bad_task = api.post("/api/v1/datasets", content=_npz(x=np.zeros((3, 2)), y=np.arange(3), task=np.array("poetry")), headers=H)
    assert bad_task.status_code == 422 and "'task'" in bad_task.json()["detail"]
    assert api.post("/api/v1/datasets", content=_npz(x=np.zeros((3, 2)), y=np.arange(3)), headers=H).status_code == 201


def test_a_sweep_over_a_nan_upload_keeps_its_nan_and_only_that_one(tmp_path, monkeypatch):
    """What the upload allowed holds when a sweep prepares the data set (the controller's env is not asked)."""
    from controller.datasets import DatasetError, prepare

    monkeypatch.delenv("FLEETBENCH_ALLOW_NAN", raising=False)
    paths, app = _app(tmp_path, broker_url="redis://127.0.0.1:1")  # never reached: submit is replaced below
    submitted = []
    app.state.fleetbench.submit = lambda spec, confirm=False: submitted.append(spec) or "sweep-1"
    x = np.zeros((4, 2), np.float32)
    x[1, 1] = np.nan
    with TestClient(app) as client:
        nan = client.post("/api/v1/datasets", params={"allow_nan": "true"}, content=_npz(x=x), headers=H).json()["dataset"]
        clean = client.post("/api/v1/datasets", content=_npz(x=np.ones((4, 2))), headers=H).json()["dataset"]
        spec = {"models": [{"id": "m", "data": nan}, {"id": "m", "data": f"sha256:{clean}"}, {"id": "m"}]}
        r = client.post("/api/v1/sweeps", json={"spec": spec}, headers=H)
        assert r.status_code == 201, r.text
    assert [m.allow_nan for m in submitted[0].models] == [True, False, None]
    from controller.artifacts import ArtifactStore

    store = ArtifactStore(paths.artifacts)
    local = tmp_path / "nan.npz"
    local.write_bytes(store.path_for(nan).read_bytes())
    assert prepare(local, store, allow_nan=True, n_calibration=1).n_validation == 3
    with pytest.raises(DatasetError, match="1 NaN"):
        prepare(local, store, allow_nan=False)


def test_a_slow_download_is_not_cut_by_the_body_timeout(tmp_path, monkeypatch):
    """The body timeout is for request bodies: once a request's body is in, Starlette's wait for a disconnect
    (beside a FileResponse) is not timed, so an artifact download may take longer than it."""
    monkeypatch.setenv("FLEETBENCH_BODY_TIMEOUT_S", "0.5")
    paths, app = _app(tmp_path, max_upload_bytes=40_000_000)
    body = _npz(x=np.zeros((500_000, 4), np.float32))  # 8 MB
    with _Server(app, paths) as server:
        with server.connect() as s:
            s.sendall(_head("POST", "/api/v1/datasets", Content_Length=len(body), Connection="close") + body)
            sha = _read_all(s).split(b'"dataset":"')[1][:64].decode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.connect(("127.0.0.1", server.port))
        with s:
            s.sendall(_head("GET", f"/api/v1/artifacts/{sha}", Connection="close").replace(USER.encode(), AGENT.encode()))
            got, t0 = b"", time.monotonic()
            while chunk := s.recv(1 << 20):
                got += chunk
                time.sleep(0.005)
        assert time.monotonic() - t0 > 1.0  # slower than the timeout, twice over
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(body), got[:200]


def test_a_conversion_error_on_submit_shows_no_server_paths(tmp_path):
    from controller.convert.service import ConvertError

    paths, app = _app(tmp_path, broker_url="redis://127.0.0.1:1")

    def submit(spec, confirm=False):
        raise ConvertError(f"{paths.run}/sweeps/fleetbench-sweep-x1/ab12/m.keras: not a Keras .keras archive")

    app.state.fleetbench.submit = submit
    with TestClient(app) as client:
        r = client.post("/api/v1/sweeps", json={"spec": {"models": [{"id": "m"}]}}, headers=H)
    assert r.status_code == 400 and r.json()["detail"] == "m.keras: not a Keras .keras archive", r.text


def test_scrub_keeps_file_names_routes_and_urls():
    from controller.api import _scrub

    text = "/srv/my data/fb/run/tmpx/m.keras: bad (/tmp/a/b.npz); see POST /api/v1/models or http://host/a/b"
    assert _scrub(text, "/srv/my data/fb") == "m.keras: bad (b.npz); see POST /api/v1/models or http://host/a/b"


def test_fleetbench_upload_sends_allow_nan_when_the_cli_would_keep_nan(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper
    from typer.testing import CliRunner

    from controller.cli import app as cli

    model = tmp_path / "id.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])  # fmt: skip
    onnx.save(helper.make_model(graph), model)
    data = tmp_path / "nan.npz"
    np.savez(data, x=np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32))
    paths, app = _app(tmp_path)
    with _Server(app, paths) as server:
        monkeypatch.setenv("FLEETBENCH_TOKEN", USER)
        argv = ["upload", str(model), "--data", str(data), "--controller", f"http://127.0.0.1:{server.port}"]
        monkeypatch.delenv("FLEETBENCH_ALLOW_NAN", raising=False)
        refused = CliRunner().invoke(cli, argv)
        assert refused.exit_code != 0 and "1 NaN" in refused.output, refused.output
        monkeypatch.setenv("FLEETBENCH_ALLOW_NAN", "1")
        kept = CliRunner().invoke(cli, argv)
        assert kept.exit_code == 0 and "data set: " in kept.output, kept.output


def test_the_health_bench_runs(capsys):
    """bench/api_health.py on a small upload (docs/benchmarks.md has the 512 MiB figures)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("api_health", Path(__file__).parent.parent / "bench" / "api_health.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--mb", "4"]) == 0
    out = capsys.readouterr().out
    assert "-> 201 in" in out and "/health during upload: n=" in out and "target /health <= 100 ms" in out, out


def test_a_truncated_tflite_upload_is_422_and_not_listed(api, tiny_model):
    """Issue 14, finding 10: an uploaded TFLite file is read whole (off the event loop) before it is stored;
    a truncated one is a 422 naming it, and `GET /models` stays empty. The whole file is then accepted."""
    whole = tiny_model["path"].read_bytes()
    r = api.post("/api/v1/models", params={"filename": "cut.tflite"}, content=whole[: len(whole) // 2], headers=H)
    assert r.status_code == 422 and "cut.tflite" in r.json()["detail"] and "corrupt or truncated" in r.json()["detail"], r.text
    assert api.get("/api/v1/models", headers=H).json()["models"] == []
    ok = api.post("/api/v1/models", params={"filename": "tiny.tflite"}, content=whole, headers=H)
    assert ok.status_code == 201, ok.text
    assert [m["model_id"] for m in api.get("/api/v1/models", headers=H).json()["models"]] == [ok.json()["model_id"]]
