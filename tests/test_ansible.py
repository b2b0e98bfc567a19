"""ansible/: lint and syntax, and the fleetbench_agent role run for real against localhost into a
temporary prefix (systemd off: there is none here), the installed agent registering with a running
controller, and a second run changing nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent


def _env(tmp: Path) -> dict:
    return dict(os.environ, ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"),
                PATH=f"{BIN}:{os.environ.get('PATH', '')}")  # fmt: skip


def test_lint_and_syntax(tmp_path):
    for playbook in ("playbook-agents.yml", "playbook-controller.yml"):
        r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory.example.ini", playbook],
                           cwd=ANSIBLE, capture_output=True, text=True, env=_env(tmp_path))  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "playbook-agents.yml", "playbook-controller.yml",
                        "roles/"], cwd=ANSIBLE, capture_output=True, text=True, env=_env(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_a_broker_without_a_password_is_refused_before_anything_is_installed(tmp_path):
    inv = tmp_path / "inventory.ini"
    inv.write_text(f"[cpu]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), "playbook-agents.yml",
                        "-e", json.dumps({"fleetbench_agent_broker_url": "redis://10.0.0.5:6379/0",
                                          "fleetbench_agent_prefix": str(tmp_path / "prefix")})],
                       cwd=ANSIBLE, capture_output=True, text=True, env=_env(tmp_path))  # fmt: skip
    assert r.returncode != 0 and "redis://:PASSWORD@HOST:6379/0" in r.stdout
    assert not (tmp_path / "prefix").exists()


@pytest.mark.slow
def test_the_agent_role_on_localhost(tmp_path):
    from controller.dispatch import Dispatcher
    from controller.embedded import RedisServer

    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("fleetbench-*.whl")
    # a broker reachable beyond loopback, so with a password (the role insists on one)
    broker = RedisServer(tmp_path / "redis", tmp_path / "redis.log", bind=("127.0.0.2",)).start()
    prefix = tmp_path / "prefix"
    agent_id = f"ansible-{uuid.uuid4().hex[:6]}"
    inv = tmp_path / "inventory.ini"
    inv.write_text(f"[cpu]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    extra = {
        "fleetbench_agent_package": f"fleetbench[agent] @ {wheel.as_uri()}",
        "fleetbench_agent_python": sys.executable,
        "fleetbench_agent_prefix": str(prefix),
        "fleetbench_agent_create_user": False,
        "fleetbench_agent_manage_systemd": False,
        "fleetbench_agent_broker_url": broker.url_on("127.0.0.2"),
        "fleetbench_agent_controller_url": "http://127.0.0.1:8080",
        "fleetbench_agent_token": "agent-token-x",
        "fleetbench_agent_id": agent_id,
        "fleetbench_agent_openvino_devices": ["AUTO:CPU"],
        # the RAPL rule goes to a folder of the test's (no udev, no root helper here)
        "fleetbench_agent_udev_rules_dir": str(tmp_path / "udev"),
        "fleetbench_agent_udev_reload": False,
        "fleetbench_agent_system_become": False,
        "fleetbench_agent_energy_group": "fleetlab",
        "fleetbench_agent_cooldown_within_c": 3,
    }
    (tmp_path / "udev").mkdir()
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inv), "playbook-agents.yml", "-e", f"@{tmp_path / 'vars.json'}"]
    d = Dispatcher(broker.url)
    agent = None
    try:
        first = subprocess.run(cmd, cwd=ANSIBLE, capture_output=True, text=True, env=_env(tmp_path), timeout=900)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        cfg = json.loads((prefix / "agent.json").read_text())
        assert cfg["broker"] == broker.url_on("127.0.0.2") and cfg["agent_id"] == agent_id
        assert cfg["token"] == "agent-token-x" and cfg["openvino_devices"] == ["AUTO:CPU"]
        assert oct((prefix / "agent.json").stat().st_mode & 0o777) == "0o600"  # it holds the password and the token
        assert cfg["cooldown_within_c"] == 3.0 and cfg["on_disturbance"] == "record"
        rule = (tmp_path / "udev" / "98-fleetbench-rapl.rules").read_text()
        assert 'SUBSYSTEM=="powercap"' in rule and "chgrp fleetlab /sys%p/energy_uj" in rule and "chmod 0440" in rule
        # the installed agent, as the systemd unit would run it, registers with the controller
        agent = subprocess.Popen([str(prefix / "venv" / "bin" / "fleetbench-agent"), "--config", str(prefix / "agent.json")],
                                 stdout=open(tmp_path / "agent.log", "wb"), stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 120
        found = None
        while time.monotonic() < deadline and found is None:
            found = next((a for a in d.live_agents() if a.agent_id == agent_id), None)
            time.sleep(0.5)
        assert found is not None, (tmp_path / "agent.log").read_text()[-3000:]
        caps = {c.name for c in found.capabilities}
        assert {"litert:cpu", "openvino:CPU", "openvino:AUTO:CPU"} <= caps, caps
        # a second run changes nothing
        second = subprocess.run(cmd, cwd=ANSIBLE, capture_output=True, text=True, env=_env(tmp_path), timeout=900)
        assert second.returncode == 0, second.stdout[-4000:]
        recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", second.stdout)
        assert recap and recap.group(1) == "0", second.stdout[-4000:]
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        d.close()
        broker.stop()
