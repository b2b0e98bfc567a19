"""Secure defaults that are not covered next to their feature.

The others, each with its own test:
- the API refuses requests without a valid token: test_api.py::test_health_needs_no_token_and_everything_else_does,
  test_agent_tokens_may_only_download_artifacts, test_api_without_user_tokens_refuses_to_start;
- Celery accepts JSON only: test_delivery.py::test_pickle_message_is_refused_and_never_run;
- upload size limits: test_api.py::test_bad_uploads_get_clear_answers (413);
- artifacts verified by sha256 on the agent: test_runner.py::test_artifact_with_wrong_sha256_is_never_run,
  test_artifact_fetch.py::test_a_damaged_download_is_fetched_again;
- Keras loads only in the sandboxed child with safe_mode: test_convert.py::test_malicious_lambda_never_runs.
"""

import subprocess
import sys

import pytest

from protocol import check_broker_url


@pytest.mark.parametrize("url, allow, refused", [
    ("redis://10.0.0.5:6379/0", False, "without a password"),
    ("redis://fleet-controller/0", False, "without a password"),
    ("redis://user@10.0.0.5:6379/0", False, "without a password"),  # a user name is not a password
    ("redis://:s3cret@10.0.0.5:6379/0", False, None),
    ("rediss://:s3cret@controller:6380/0", False, None),
    ("redis://127.0.0.1:6379/0", False, None),  # loopback: the embedded demo, tests
    ("redis://localhost/0", False, None),
    ("redis://[::1]:6379/0", False, None),
    ("redis://10.0.0.5:6379/0", True, None),  # a closed lab network, said out loud
    ("amqp://guest@10.0.0.5//", False, "redis:// or rediss://"),
    ("10.0.0.5:6379", False, "redis:// or rediss://"),
])  # fmt: skip
def test_broker_urls(url, allow, refused):
    problem = check_broker_url(url, allow_insecure=allow)
    if refused is None:
        assert problem is None
    else:
        assert refused in problem


def test_the_agent_refuses_a_remote_redis_without_a_password(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent", "--broker", "redis://10.0.0.5:6379/0"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "without a password" in r.stderr and "redis://:PASSWORD@HOST:6379/0" in r.stderr
    assert "capability" not in r.stdout  # refused before anything else happens
    cfg = tmp_path / "agent.json"
    cfg.write_text('{"broker": "redis://10.0.0.5:6379/0"}')
    r = subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without a password" in r.stderr


def test_the_embedded_redis_needs_its_password_beyond_loopback(tmp_path):
    import redis

    from controller.embedded import RedisServer

    loopback = RedisServer(tmp_path / "a", tmp_path / "a.log").start()
    try:
        assert loopback.password == "" and "@" not in loopback.url
    finally:
        loopback.stop()
    shared = RedisServer(tmp_path / "b", tmp_path / "b.log", bind=("127.0.0.2",)).start()
    try:
        assert shared.password and f":{shared.password}@" in shared.url_on("127.0.0.2")
        assert check_broker_url(shared.url_on("127.0.0.2")) is None
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.2", port=shared.port).ping()
        assert redis.Redis.from_url(shared.url_on("127.0.0.2")).ping()
    finally:
        shared.stop()
