"""A large made-up fleet for the Fleet page's tests and bench/fleet_page.py: agents written in bulk (SQLAlchemy
core, one executemany), their inventories as real agents send them (protocol.AgentInventory.to_dict).

Agent ``i`` (``agent-00042``, host ``edge-00042``) has the capabilities of ``PROFILES[i % 6]`` and is offline
(its last heartbeat an hour before ``now``) when ``i % 5 == 0``; the rest beat ``now``. With 6 and 5 coprime,
each profile of a fleet of ``30 k`` agents has ``5 k`` agents, ``k`` of them offline.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

#: (machine, emulated_by, capabilities): the device classes of docs/design, and one capability of no class
PROFILES = (
    ("x86_64", "", ("litert:cpu", "openvino:CPU")),  # a server
    ("aarch64", "", ("litert:cpu", "litert:gpu", "tflite:gpu")),  # a board with a GPU
    ("x86_64", "", ("openvino:CPU", "openvino:MYRIAD")),  # an NCS2 host
    ("x86_64", "", ("openvino:CPU", "openvino:HETERO:FPGA,CPU", "tflite:fpga")),  # an FPGA card
    ("x86_64", "", ("openvino:CPU", "openvino:GPU", "openvino:NPU", "litert:npu")),  # a laptop with an NPU
    ("aarch64", "qemu-user: aarch64 on an x86_64 kernel", ("litert:cpu", "tflite:edgetpu")),  # emulated
)
OFFLINE_EVERY = 5
DEVICE_NAMES = {"cpu": "Cortex-A76", "CPU": "Core i5-1235U", "gpu": "Mali-G610", "GPU": "Iris Xe",
                "MYRIAD": "Intel Movidius Myriad X VPU", "NPU": "Intel AI Boost", "npu": "Intel AI Boost",
                "fpga": "Agilex 7", "HETERO:FPGA,CPU": "Agilex 7", "edgetpu": "Coral Edge TPU"}  # fmt: skip


def agent_id(i: int) -> str:
    return f"agent-{i:05d}"


def inventory(i: int, beat: dt.datetime) -> dict:
    """Agent ``i``'s inventory (AgentInventory.to_dict) as of ``beat``."""
    from protocol import AgentInventory, CapabilityInfo, HostFacts

    machine, emulated_by, names = PROFILES[i % len(PROFILES)]
    caps = []
    for name in names:
        runtime, _, device = name.partition(":")
        caps.append(CapabilityInfo(name=name, runtime=runtime, runtime_version="2026.4.1" if runtime == "openvino"
                                   else "2.3.0", device=device, device_name=DEVICE_NAMES.get(device, device),
                                   precisions=("FP16", "FP32", "INT8")))  # fmt: skip
    host = HostFacts(hostname=f"edge-{i:05d}", cpu_model="Core i5-1235U", cpu_cores=8, ram_bytes=16 << 30,
                     os="Linux-6.1", python="3.11.7", machine=machine, emulated_by=emulated_by)  # fmt: skip
    return AgentInventory(agent_id=agent_id(i), host=host, capabilities=tuple(caps), started_at=beat.isoformat(),
                          heartbeat_at=beat.isoformat()).to_dict()  # fmt: skip


def insert_agents(engine, n: int, now: dt.datetime, running: dict[str, int] | None = None) -> None:
    """Write ``n`` agents (and ``running[agent_id]`` running jobs each) in one transaction."""
    from controller.store.models import AgentRow, JobRow, SweepRow

    old = now - dt.timedelta(hours=1)
    rows = []
    for i in range(n):
        beat = old if i % OFFLINE_EVERY == 0 else now
        rows.append(dict(agent_id=agent_id(i), hostname=f"edge-{i:05d}", inventory=inventory(i, beat),
                         first_seen=now - dt.timedelta(days=30), last_heartbeat=beat))  # fmt: skip
    jobs = [dict(job_id=f"run-{a}-{k}", sweep_id="s-fleet", model_id="0" * 64, model_name="digits-cnn",
                 variant="tflite-fp32", capability="litert:cpu", settings={}, state="running", reason="",
                 attempt=1, sent_attempt=1, max_attempts=3, agent_id=a, created_at=now, updated_at=now)
            for a, count in (running or {}).items() for k in range(count)]  # fmt: skip
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(sa.insert(AgentRow), rows[start : start + 2000])
        if jobs:
            conn.execute(sa.insert(SweepRow), [dict(sweep_id="s-fleet", name="fleet", spec={}, state="running",
                                                    created_at=now)])  # fmt: skip
            conn.execute(sa.insert(JobRow), jobs)
