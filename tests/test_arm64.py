"""An aarch64 agent for real, on an emulated CPU (issue 21): the Debian arm64 root of tests/arm64.py, with
aarch64 builds of Python, numpy and LiteRT, run by qemu-user.

It probes, runs an offline bundle, and serves a sweep beside an x86-64 agent on one broker; the Ansible role
installs it into that root through Ansible's chroot connection. What is emulated is the CPU only, so its
records say so (``host.emulated_by``) and views leave their timings out by default; their accuracy and
fidelity are real and kept.
"""

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

from tests import arm64
from tests.helpers import tiny_sweep, unavailable
from tests.test_ansible import _env as ansible_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ARM_ENV = {"FLEETBENCH_DISABLE_GPU_PROBE": "1"}


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """A private copy of the cached arm64 root with this checkout's agent wheel in it; aarch64 binaries run
    (binfmt_misc) for as long as the module's tests do."""
    why = arm64.problem()
    if why:
        unavailable(why)
    if not arm64.ready():
        unavailable(f"no arm64 root in {arm64.folder()}: run `make arm64` (or `make test`, which makes it)")
    work = tmp_path_factory.mktemp("arm64")
    wheels = work / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with arm64.binfmt():
        m = arm64.Machine(work)
        m.install_agent(next(wheels.glob("fleetbench-*.whl")))
        yield m


def test_the_root_is_arm64_and_knows_it_is_emulated(machine):
    r = machine.run(["python3", "-c", "import json, platform, numpy, ai_edge_litert; from agent.host import host_facts; "
                     "h = host_facts(); print(json.dumps([platform.machine(), h.machine, h.emulated_by, h.cpu_model, "
                     "numpy.__file__, ai_edge_litert.__file__]))"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    uname, machine_name, emulated_by, cpu, numpy_file, litert_file = json.loads(r.stdout)
    assert uname == machine_name == "aarch64"
    assert emulated_by == "qemu-user or alike: aarch64 on an x86_64 kernel" and cpu.startswith("aarch64 emulated")
    # the aarch64 wheels installed into the root, not this host's
    assert numpy_file.startswith(arm64.DEPS) and litert_file.startswith(arm64.DEPS)
    so = machine.root / arm64.DEPS.lstrip("/") / "numpy" / "_core"
    elf = next(so.glob("_multiarray_umath*.so")).read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # e_machine: EM_AARCH64
    # the same process on this host: native, and says so
    here = subprocess.run([sys.executable, "-c", "from agent.host import host_facts; h = host_facts(); print(h.machine, repr(h.emulated_by))"],
                          capture_output=True, text=True)  # fmt: skip
    assert here.stdout.split() == ["x86_64", "''"], here.stdout + here.stderr


def test_probe_on_the_emulated_agent(machine):
    r = machine.run(["python3", "-m", "agent", "--probe"], **ARM_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "machine aarch64, emulated (qemu-user or alike: aarch64 on an x86_64 kernel): its records are marked emulated" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("capability litert:cpu:"))
    assert re.match(r"capability litert:cpu: litert 2\.\d+\.\d+, aarch64 emulated", line), line


def test_run_bundle_on_the_emulated_agent_and_import(machine, tmp_path, tiny_model):
    from controller.bundles import create_bundle, import_results
    from protocol import BenchmarkSettings
    from protocol.bundles import read_results
    from tests.test_bundle import tiny_variants

    store, arts = tiny_variants(tmp_path, tiny_model)
    try:
        bundle = tmp_path / "tiny.fbb"
        create_bundle(store, arts, "tiny", bundle, variants=["tflite-fp32"],
                      settings=BenchmarkSettings(min_iterations=50, min_duration_s=0.0))  # fmt: skip
        results = tmp_path / "results.json"
        r = machine.run(["python3", "-m", "agent", "run-bundle", str(bundle), "--out", str(results), "--agent-id", "pi-emu"],
                        binds=(tmp_path,), **ARM_ENV)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        (outcome,) = read_results(results)
        assert outcome.ok, outcome.error
        rec = outcome.record
        assert (rec.host.machine, rec.agent_id, rec.capability) == ("aarch64", "pi-emu", "litert:cpu")
        assert rec.host.emulated_by.startswith("qemu-user") and rec.device_name.startswith("aarch64 emulated")
        # accuracy and fidelity from the aarch64 LiteRT are real: the same answers as on this host
        assert rec.accuracy_top1 == 1.0 and rec.fidelity.top1_agreement == 1.0 and rec.fidelity.max_abs_error < 1e-4
        assert import_results(store, results).stored == 1
        from sqlalchemy import select

        from controller.store.models import Result

        with store.engine.connect() as c:
            row = c.execute(select(Result.machine, Result.emulated).where(Result.agent_id == "pi-emu")).one()
        assert tuple(row) == ("aarch64", True)
    finally:
        store.close()


def _wait_live(dispatcher, agent_ids: set[str], procs: dict, logs: dict, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = {a.agent_id: a for a in dispatcher.live_agents()}
        if agent_ids <= set(live):
            return live
        for name, p in procs.items():
            assert p.poll() is None, f"agent {name} exited: " + logs[name].read_text()[-3000:]
        time.sleep(1)
    raise AssertionError("agents not live: " + "; ".join(f"{n}: {logs[n].read_text()[-1500:]}" for n in logs))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_sweep_across_x86_64_and_an_emulated_aarch64_agent(machine, tmp_path, clean_redis_url, tiny_model,
                                                             agent_file_roots):  # fmt: skip
    from controller.dispatch import Dispatcher
    from controller.store import Store

    spec = tiny_sweep(
        tmp_path / "in", tiny_model,
        "name: mixed\n"
        "models: [{path: tiny.tflite, data: tiny.npz, calibration_size: 4}]\n"
        "variants: [tflite-fp32]\n"
        "devices: ['litert:cpu@x86_64', 'litert:cpu@arm64']\n"  # arm64: Debian's name for aarch64
        "settings: {threads: 1, min_iterations: 50, min_duration_s: 0.1}\n"
        "expire_after: 5m\n"
    )
    tag = uuid.uuid4().hex[:6]
    ids = {"x86": f"x86-{tag}", "arm": f"pi-emu-{tag}"}
    logs = {n: tmp_path / f"{n}.log" for n in ids}
    common = ["--broker", clean_redis_url, "--capability", "litert:cpu", "--state-dir"]
    procs = {
        "x86": subprocess.Popen([sys.executable, "-m", "agent", *common, str(tmp_path / "x86-state"), "--agent-id", ids["x86"]],
                                stdout=open(logs["x86"], "wb"), stderr=subprocess.STDOUT,
                                env=dict(os.environ, **ARM_ENV), start_new_session=True),  # fmt: skip
        # the file roots: the controller's artifact store lies under the tests' temporary folder, bound in
        "arm": machine.popen(["python3", "-m", "agent", *common, "/var/lib/fleetbench", "--agent-id", ids["arm"]],
                             logs["arm"], binds=(Path(agent_file_roots),), FLEETBENCH_AGENT_FILE_ROOTS=agent_file_roots,
                             **ARM_ENV),  # fmt: skip
    }
    data = tmp_path / "fb"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "controller.cli"]
    logs["converter"] = tmp_path / "converter.log"  # a fleet's sweep converts on its converter workers
    procs["converter"] = subprocess.Popen(cli + ["worker", "--broker", clean_redis_url, "--data-dir", str(data)], env=env,
                                          stdout=open(logs["converter"], "wb"), stderr=subprocess.STDOUT,
                                          start_new_session=True)  # fmt: skip
    d = Dispatcher(clean_redis_url)
    try:
        live = _wait_live(d, set(ids.values()), procs, logs)
        assert (live[ids["arm"]].host.machine, live[ids["x86"]].host.machine) == ("aarch64", "x86_64")
        assert live[ids["arm"]].host.emulated_by and not live[ids["x86"]].host.emulated_by
        run = subprocess.run(cli + ["sweep", str(spec), "--broker", clean_redis_url, "--data-dir", str(data)], env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + logs["arm"].read_text()[-3000:]
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
        d.close()
    out = subprocess.run(cli + ["results", "mixed", "-f", "json", "--data-dir", str(data)], env=env, capture_output=True, text=True)
    records = json.loads(out.stdout)
    by_machine = {r["host"]["machine"]: r for r in records}
    assert len(records) == 2 and set(by_machine) == {"x86_64", "aarch64"}, [r["agent_id"] for r in records]
    # each architecture's job went to that architecture's agent; what ran (and is recorded) is litert:cpu
    assert by_machine["aarch64"]["agent_id"] == ids["arm"] and by_machine["x86_64"]["agent_id"] == ids["x86"]
    assert {r["capability"] for r in records} == {"litert:cpu"}
    assert by_machine["aarch64"]["host"]["emulated_by"].startswith("qemu-user") and not by_machine["x86_64"]["host"]["emulated_by"]
    for r in records:  # accuracy and fidelity are real on both
        assert r["accuracy_top1"] == 1.0 and r["fidelity"]["top1_agreement"] == 1.0
    store = Store(f"sqlite:///{data / 'fleetbench.db'}")
    try:
        jobs = {j.capability for j in store.jobs(store.get_sweep("mixed").sweep_id)}
        assert jobs == {"litert:cpu@x86_64", "litert:cpu@aarch64"}
    finally:
        store.close()
    # readiness leaves the emulated record out, and says so; --include-emulated judges it too
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("required: ['litert:cpu']\nbudgets:\n  - devices: 'litert:*'\n    p90_ms: 10000\n")
    ready = subprocess.run(cli + ["readiness", "--model", "tiny", "--budgets", str(budgets), "--data-dir", str(data)],
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "1 record(s) of emulated agents left out" in " ".join(ready.stderr.split())
    assert "aarch64" not in ready.stdout and "passing on litert:cpu" in " ".join(ready.stdout.split())
    both = subprocess.run(cli + ["readiness", "--model", "tiny", "--budgets", str(budgets), "--include-emulated",
                                 "--data-dir", str(data)], capture_output=True, text=True, env=dict(env, COLUMNS="200"))  # fmt: skip
    assert both.returncode == 0 and "emulated agents left out" not in both.stderr
    # judged too, and never pooled with the x86-64 record: each row names where it ran
    assert "litert:cpu@aarch64 (emulated)" in both.stdout and "litert:cpu@x86_64" in both.stdout, both.stdout


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_the_agent_role_on_the_arm64_root(machine, tmp_path):
    """The role, through Ansible's chroot connection (community.general, from the `ansible` package), installs
    the agent into the arm64 root from the aarch64 wheels there; the installed agent starts and registers; a
    second run changes nothing."""
    from controller.dispatch import Dispatcher
    from controller.embedded import RedisServer

    broker = RedisServer(tmp_path / "redis", tmp_path / "redis.log", bind=("127.0.0.2",)).start()
    agent_id = f"pi-role-{uuid.uuid4().hex[:6]}"
    prefix = "/opt/fleetbench-agent"
    wheel = next((machine.root / arm64.WHEELS.lstrip("/")).glob("fleetbench-*.whl")).name
    inv = tmp_path / "inventory.ini"
    inv.write_text(f"[cpu]\npi-emu ansible_connection=community.general.chroot ansible_host={machine.root} "
                   "ansible_python_interpreter=/usr/bin/python3\n")  # fmt: skip
    extra = {
        "fleetbench_agent_package": f"fleetbench[agent] @ file://{arm64.WHEELS}/{wheel}",
        "fleetbench_agent_pip_extra_args": f"--no-index --find-links {arm64.WHEELS}",  # an air-gapped device
        "fleetbench_agent_python": "/usr/bin/python3",
        "fleetbench_agent_prefix": prefix,
        "fleetbench_agent_manage_systemd": False,  # a chroot has no systemd: the test starts the agent as the unit would
        "fleetbench_agent_udev_reload": False,
        "fleetbench_agent_broker_url": broker.url_on("127.0.0.2"),
        "fleetbench_agent_controller_url": "http://127.0.0.1:8080",
        "fleetbench_agent_token": "agent-token-arm",
        "fleetbench_agent_id": agent_id,
    }
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(ansible_env(tmp_path), ANSIBLE_COLLECTIONS_PATH=str(machine.collections))  # community.general: chroot
    playbook = [str(BIN / "ansible-playbook"), "-i", str(inv), "playbook-agents.yml", "-e", f"@{tmp_path / 'vars.json'}"]
    d = Dispatcher(broker.url)
    agent = None
    try:
        first = subprocess.run(machine.host_side(playbook), cwd=ROOT / "ansible", capture_output=True, text=True, env=env,
                               timeout=1200)  # fmt: skip
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
        cfg = json.loads((machine.root / prefix.lstrip("/") / "agent.json").read_text())
        assert cfg["broker"] == broker.url_on("127.0.0.2") and cfg["agent_id"] == agent_id
        uid = (machine.root / prefix.lstrip("/") / "agent.json").stat().st_uid
        passwd = (machine.root / "etc" / "passwd").read_text()
        assert re.search(rf"^fleetbench:x:{uid}:", passwd, re.M), "the prefix belongs to the fleetbench user the role made"
        venv_python = machine.root / prefix.lstrip("/") / "venv" / "bin" / "python3"
        assert venv_python.exists()
        log = tmp_path / "agent.log"
        # as the role's systemd unit runs it: ExecStart, as User=fleetbench
        agent = machine.popen(["runuser", "-u", "fleetbench", "--", f"{prefix}/venv/bin/fleetbench-agent", "--config",
                               f"{prefix}/agent.json"], log, **ARM_ENV)  # fmt: skip
        deadline, found = time.monotonic() + 240, None
        while time.monotonic() < deadline and found is None:
            assert agent.poll() is None, log.read_text()[-3000:]
            found = next((a for a in d.live_agents() if a.agent_id == agent_id), None)
            time.sleep(1)
        assert found is not None, log.read_text()[-3000:]
        assert found.host.machine == "aarch64" and found.host.emulated_by.startswith("qemu-user")
        assert "litert:cpu" in {c.name for c in found.capabilities}
        second = subprocess.run(machine.host_side(playbook), cwd=ROOT / "ansible", capture_output=True, text=True,
                                env=env, timeout=1200)  # fmt: skip
        assert second.returncode == 0, second.stdout[-4000:]
        recap = re.search(r"pi-emu\s*:\s*ok=\d+\s+changed=(\d+)", second.stdout)
        assert recap and recap.group(1) == "0", second.stdout[-4000:]
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, 9)
        d.close()
        broker.stop()
