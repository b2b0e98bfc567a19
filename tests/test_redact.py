"""Issue 14, finding 5: no command prints a password from a broker or database URL (one redactor, protocol/redact.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from protocol.redact import redact
from protocol.proc import free_port

SECRET = "s3cret-pw"


@pytest.mark.parametrize("text, clean", [
    ("redis://:s3cret-pw@host:6379/0", "redis://:***@host:6379/0"),
    ("at rediss://default:s3cret-pw@h/1 (refused)", "at rediss://default:***@h/1 (refused)"),
    ("postgresql+psycopg://u:s3cret-pw@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
    ("amqp://guest:s3cret-pw@mq// and http://a:s3cret-pw@c/x", "amqp://guest:***@mq// and http://a:***@c/x"),
    ("redis://host:6379/0 has none", "redis://host:6379/0 has none"),
])  # fmt: skip
def test_redact(text, clean):
    assert redact(text) == clean


def test_no_command_prints_the_password(tmp_path, tiny_model):
    port = free_port()
    broker = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    db = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{port}/x"
    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_model["path"].read_bytes())
    np.savez(tmp_path / "d.npz", x=tiny_model["x"], y=tiny_model["y"])
    spec = tmp_path / "s.yaml"
    spec.write_text(f"models: [{{path: {model}}}]\nvariants: [tflite-fp32]\n")
    data = ["--data-dir", str(tmp_path / "fb")]
    rows = {
        "fleet": ["fleet", "--broker", broker, *data],
        "status": ["status", "--broker", broker, *data],
        "sweep": ["sweep", str(spec), "--broker", broker, *data],
        "convert": ["convert", str(model), "--variants", "tflite-fp16", "--broker", broker, *data],
        "results": ["results", "--db", db],
        "models": ["models", "--db", db],
    }
    env = dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1", COLUMNS="120")
    for name, argv in rows.items():
        r = subprocess.run([sys.executable, "-m", "controller.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode != 0, (name, out)
        assert SECRET not in out and "Traceback" not in out, (name, out)
        assert ":***@" in out, (name, out)  # it still says which URL failed
    # an agent waits for its broker (retrying); what it says meanwhile carries no password
    agent = subprocess.Popen([sys.executable, "-m", "agent", "--broker", broker, "--capability", "litert:cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    try:
        out, _ = agent.communicate(timeout=25)
    except subprocess.TimeoutExpired:
        agent.terminate()
        out, _ = agent.communicate(timeout=60)
    assert "127.0.0.1" in out and SECRET not in out, out
