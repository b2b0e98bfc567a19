"""Machines: the architecture an agent runs on, how it knows it is emulated, and the selectors that route jobs by
architecture (``litert:cpu@aarch64``). The emulated agent itself runs in tests/test_arm64.py."""

from __future__ import annotations

import dataclasses

import pytest

from agent.host import emulation
from protocol.machines import canonical, runs_natively, split_selector, with_machine
from tests.test_jobs import _migrated, fleet_store  # noqa: F401 - the scheduler's store, as test_jobs makes it


def test_names_and_selectors():
    assert [canonical(m) for m in ("arm64", "AMD64", "aarch64", "x86_64", "armhf")] == ["aarch64", "x86_64", "aarch64",
                                                                                        "x86_64", "armv7l"]  # fmt: skip
    assert split_selector("litert:cpu@arm64") == ("litert:cpu", "aarch64")
    assert split_selector("openvino:HETERO:FPGA,CPU") == ("openvino:HETERO:FPGA,CPU", "")
    assert with_machine(["litert:cpu", "openvino:CPU"], "arm64") == {"litert:cpu", "openvino:CPU", "litert:cpu@aarch64",
                                                                     "openvino:CPU@aarch64"}  # fmt: skip
    assert with_machine(["litert:cpu"], "") == {"litert:cpu"}  # an agent before issue 21 says no machine
    # compat mode is native: a 32-bit Raspberry Pi OS userland on a 64-bit kernel
    assert runs_natively("armv7l", "aarch64") and runs_natively("i686", "x86_64") and not runs_natively("aarch64", "x86_64")


def _binfmt(tmp_path, name: str, text: str):
    d = tmp_path / "binfmt"
    d.mkdir(exist_ok=True)
    (d / "status").write_text("enabled\n")
    (d / "register").write_text("")
    (d / name).write_text(text)
    return d


@pytest.mark.parametrize("kernel, binfmt, cpuinfo, expected", [
    ("x86_64", None, None, "qemu-user or alike: aarch64 on an x86_64 kernel"),
    ("aarch64", None, None, ""),  # a Pi
    # before Linux 6.1 (no kernel.arch): binfmt_misc's qemu handler for this machine, else the CPU's own words
    (None, ("qemu-aarch64", "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\n"), None,
     "qemu-user: binfmt_misc runs aarch64 binaries through /usr/libexec/qemu-binfmt/aarch64-binfmt-P"),
    (None, ("fleetbench-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n"), None,
     "qemu-user: binfmt_misc runs aarch64 binaries through /usr/bin/qemu-aarch64-static"),
    (None, ("qemu-aarch64", "disabled\ninterpreter /usr/bin/qemu-aarch64-static\n"), None, ""),
    (None, ("qemu-x86_64", "enabled\ninterpreter /usr/bin/qemu-x86_64-static\n"), None, ""),  # another machine's
    (None, ("qemu-aarch64_be", "enabled\ninterpreter /usr/bin/qemu-aarch64_be-static\n"), None, ""),  # big-endian
    # a real board (Jetson, Linux 5.15) with qemu handlers registered: its own CPU wins
    (None, ("qemu-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\n"), "processor\t: 0\nCPU implementer\t: 0x41\n", ""),
    (None, None, "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2\n", "qemu-user or alike: aarch64 on an x86 CPU (/proc/cpuinfo)"),
    (None, None, "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n", ""),
])  # fmt: skip
def test_an_agent_knows_it_is_emulated(tmp_path, kernel, binfmt, cpuinfo, expected):
    arch = tmp_path / "arch"
    if kernel:
        arch.write_text(kernel + "\n")
    d = _binfmt(tmp_path, *binfmt) if binfmt else tmp_path / "no-binfmt"
    info = tmp_path / "cpuinfo"
    if cpuinfo:
        info.write_text(cpuinfo)
    assert emulation("aarch64", kernel_arch=arch, binfmt=d, cpuinfo=info) == expected


def test_a_job_for_another_machine_is_refused_in_one_line(tiny_model, tmp_path):
    from agent.host import host_facts
    from agent.runner import run_job
    from controller.artifacts import ArtifactStore
    from protocol import BenchmarkSettings, JobSpec

    store = ArtifactStore(tmp_path / "a")
    spec = JobSpec(job_id="j1", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu@riscv64",
                   artifact=store.put_file(tiny_model["path"]), settings=BenchmarkSettings(min_iterations=10))  # fmt: skip
    out = run_job(spec.to_dict(), "a1")
    assert not out.ok and out.error_kind == "unsupported-device"
    assert out.error == (f"the job asks for litert:cpu@riscv64 but this agent is {host_facts().machine}: it reached the "
                         "wrong agent's queue")  # fmt: skip
    # its own machine: run, and recorded as the capability that ran
    ok = run_job(dataclasses.replace(spec, capability=f"litert:cpu@{host_facts().machine}").to_dict(), "a1")
    assert ok.ok, ok.error
    assert ok.record.capability == "litert:cpu" and ok.record.host.machine == host_facts().machine


def test_the_scheduler_sends_a_machine_selector_only_to_that_machine(fleet_store):
    from controller.fleet.memory import MemoryFleet
    from tests.test_jobs import _sweep

    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("server", "litert:cpu", machine="x86_64")
    sched, sid = _sweep(fleet_store, fleet, devices=("litert:cpu@arm64",), expire_after="1h")
    assert sched.tick(sid) == {"waiting-for-device": 1}  # no aarch64 agent yet: nothing sent to the server
    assert fleet.sent == []
    fleet.add_agent("pi", "litert:cpu", machine="aarch64")
    assert sched.tick(sid) == {"queued": 1}
    (sent,) = fleet.sent
    assert sent.queue == "fleetbench.cap.litert:cpu@aarch64" and sent.spec.capability == "litert:cpu@aarch64"


def test_an_emulated_agent_serves_only_its_machine_queues():
    assert with_machine(["litert:cpu"], "aarch64", emulated=True) == {"litert:cpu@aarch64"}


def test_readiness_and_compare_never_pool_one_capability_across_machines(golden_record):
    from controller.analysis.readiness import assess, parse_budgets
    from controller.analysis.regress import compare

    def on(machine, job, emulated=""):
        return dataclasses.replace(golden_record, job_id=job, host=dataclasses.replace(golden_record.host, machine=machine,
                                                                                       emulated_by=emulated))  # fmt: skip

    server, pi = on("x86_64", "s1"), on("aarch64", "p1")
    cap = golden_record.capability
    budgets = parse_budgets({"required": [f"{cap}@aarch64"], "budgets": [{"devices": f"{cap.split(':')[0]}:*@aarch64",
                                                                           "p90_ms": 1e6}]})  # fmt: skip
    result = assess("m", [server, pi], budgets)
    assert sorted(v.candidate.capability for v in result.verdicts) == [f"{cap}@aarch64", f"{cap}@x86_64"]
    assert all(v.candidate.runs == 1 for v in result.verdicts)  # one record each: not pooled
    assert result.required == {f"{cap}@aarch64": [f"{cap}@aarch64"]} and result.ready
    # one machine only: the capability as it ran, and a budget naming the machine still applies
    alone = assess("m", [pi], budgets)
    assert [v.candidate.capability for v in alone.verdicts] == [cap] and alone.ready
    assert alone.verdicts[0].budget.devices.endswith("@aarch64")
    rows = compare([server, pi], [on("x86_64", "s2"), on("aarch64", "p2", "qemu-user or alike: aarch64 on an x86_64 kernel")])
    assert sorted(r.capability for r in rows) == [f"{cap}@aarch64", f"{cap}@aarch64 (emulated)", f"{cap}@x86_64"]


def test_an_emulated_agent_pinned_by_id_gets_its_job(fleet_store):
    """An emulated agent serves only @machine queues, but a job pinned to it by id (agent:<id>) still reaches it."""
    from controller.fleet.memory import MemoryFleet
    from tests.test_jobs import _sweep

    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("qemu-pi", "litert:cpu", machine="aarch64")
    inv = fleet.agents["qemu-pi"]
    fleet.put_agent(dataclasses.replace(inv, host=dataclasses.replace(inv.host, emulated_by="qemu-user")))
    fleet_store.record_agent(fleet.agents["qemu-pi"])
    sched, sid = _sweep(fleet_store, fleet, devices=("agent:qemu-pi",))
    assert sched.tick(sid) == {"queued": 1}
    (sent,) = fleet.sent
    assert sent.queue == "fleetbench.agent.qemu-pi" and sent.spec.capability == "litert:cpu"


def test_the_dashboards_compare_never_averages_two_machines(tmp_path, golden_record):
    from controller.store import Store
    from dashboard.data import Side, compare

    store = Store(f"sqlite:///{tmp_path / 'fb.db'}")
    store.migrate()
    try:
        for job, machine in (("s1", "x86_64"), ("p1", "aarch64")):
            host = dataclasses.replace(golden_record.host, machine=machine)
            assert store.add_result(dataclasses.replace(golden_record, job_id=job, host=host))
        table = compare(store.engine, Side(), Side())
        cap = golden_record.capability
        assert sorted(table["capability"]) == [f"{cap}@aarch64", f"{cap}@x86_64"]
        assert (table["a_runs"] == 1).all() and (table["verdict"] == "same").all()
    finally:
        store.close()
