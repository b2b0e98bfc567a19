"""Artifacts over real HTTP into the agent's bounded cache: verified, fetched again, never run when wrong."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.artifacts import ArtifactCache
from agent.errors import JobError
from protocol import ArtifactRef

GOOD = b"model bytes " * 1000
SHA = hashlib.sha256(GOOD).hexdigest()


class Origin:
    """A real HTTP server: serves GOOD, damaged for the first `bad` requests; counts requests; checks the token."""

    def __init__(self):
        self.bad = 0
        self.requests = 0
        self.token = "agent-secret"
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                origin.requests += 1
                if self.headers.get("Authorization") != f"Bearer {origin.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if not self.path.endswith(SHA):
                    self.send_response(404)
                    self.end_headers()
                    return
                body = GOOD
                if origin.bad > 0:
                    origin.bad -= 1
                    body = GOOD[:-10] + b"X" * 10  # a flipped tail, same length
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def ref(self, sha=SHA):
        return ArtifactRef(sha256=sha, uri=f"{self.url}/api/v1/artifacts/{sha}", size_bytes=len(GOOD), filename="m.tflite")


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.server.shutdown()


def test_download_is_verified_and_cached(origin, tmp_path):
    cache = ArtifactCache(tmp_path, token="agent-secret")
    path = cache.path(origin.ref())
    assert path.read_bytes() == GOOD and path.name == SHA
    assert cache.path(origin.ref()) == path
    assert origin.requests == 1  # the second use came from the cache


def test_a_damaged_download_is_fetched_again(origin, tmp_path):
    origin.bad = 1
    cache = ArtifactCache(tmp_path, token="agent-secret")
    assert cache.path(origin.ref()).read_bytes() == GOOD
    assert cache.downloads == 2


def test_a_cached_copy_changed_on_disk_is_fetched_again(origin, tmp_path):
    cache = ArtifactCache(tmp_path, token="agent-secret")
    path = cache.path(origin.ref())
    path.write_bytes(b"bit rot")
    assert cache.path(origin.ref()).read_bytes() == GOOD
    assert origin.requests == 2


def test_an_origin_that_keeps_serving_damage_is_refused_and_nothing_is_kept(origin, tmp_path):
    origin.bad = 10
    cache = ArtifactCache(tmp_path, token="agent-secret")
    with pytest.raises(JobError) as err:
        cache.path(origin.ref())
    assert err.value.kind == "bad-artifact" and "not run" in err.value.message and "2 downloads" in err.value.message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "token, sha, words",
    [("", SHA, "HTTP 401; the controller wants a token"), ("agent-secret", "0" * 64, "HTTP 404")],
)
def test_http_errors_say_what_to_do(origin, tmp_path, token, sha, words):
    with pytest.raises(JobError) as err:
        ArtifactCache(tmp_path, token=token).path(origin.ref(sha))
    assert words in err.value.message


def test_unreachable_controller_is_a_fetch_error(tmp_path):
    ref = ArtifactRef(sha256=SHA, uri="http://127.0.0.1:9/a", size_bytes=1)
    with pytest.raises(JobError) as err:
        ArtifactCache(tmp_path).path(ref)
    assert err.value.kind == "fetch-failed" and "reachable" in err.value.message


def test_cache_is_bounded_least_recently_used_first(tmp_path):
    import os
    import time

    cache = ArtifactCache(tmp_path, max_bytes=2500)
    for i, name in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (time.time() - 100 + i, time.time() - 100 + i))
    cache._evict(keep=tmp_path / ("a" * 64))
    assert sorted(p.name[0] for p in tmp_path.iterdir()) == ["a", "c"]  # b was the oldest one not in use
