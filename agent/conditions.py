"""The device's state around a job (issue 19): temperatures and clocks before and after, throttling, other
processes' CPU time during the job (disturbance), and the CPU affinity the benchmark ran with.

- temperatures: ``/sys/class/thermal/thermal_zone*/temp`` (m°C, named by ``type``);
- clocks: ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`` (kHz) and the governor;
- disturbance: the utime + stime (``/proc/<pid>/stat``) of every process that is not this one or one of its
  ancestors (the agent that started it), over the job's wall time, in cores;
- affinity: ``settings.cpu_affinity`` ("0", "0-3", "0,2") applied with ``os.sched_setaffinity`` and read
  back.

The sysfs roots are settings (``FLEETBENCH_THERMAL_ROOT``, ``FLEETBENCH_CPUFREQ_ROOT``), so tests read
recorded trees through this code. A clock that fell by more than :data:`THROTTLE_FALL` between the start and
the end of the job marks the record throttled.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

THERMAL_ENV, CPUFREQ_ENV = "FLEETBENCH_THERMAL_ROOT", "FLEETBENCH_CPUFREQ_ROOT"
THERMAL, CPUFREQ = "/sys/class/thermal", "/sys/devices/system/cpu"
#: A clock that falls by more than this share during the job counts as throttling.
THROTTLE_FALL = 0.10
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def thermal_state():
    """Temperatures (°C) by zone and CPU clocks (MHz) by core, with the governor, as :class:`protocol.ThermalState`."""
    from protocol import ThermalState

    temps: dict[str, float] = {}
    root = Path(os.environ.get(THERMAL_ENV) or THERMAL)
    for zone in sorted(root.glob("thermal_zone*")) if root.is_dir() else []:
        raw, kind = _read(zone / "temp"), _read(zone / "type") or zone.name
        if raw and raw.lstrip("-").isdigit():
            temps[f"{kind} ({zone.name})"] = int(raw) / 1000
    mhz: dict[str, float] = {}
    governors: set[str] = set()
    croot = Path(os.environ.get(CPUFREQ_ENV) or CPUFREQ)
    for cpu in sorted(croot.glob("cpu[0-9]*")) if croot.is_dir() else []:
        raw = _read(cpu / "cpufreq" / "scaling_cur_freq")
        if raw and raw.isdigit():
            mhz[cpu.name] = int(raw) / 1000
        gov = _read(cpu / "cpufreq" / "scaling_governor")
        if gov:
            governors.add(gov)
    return ThermalState(temps_c=temps, cpu_mhz=mhz, governor=",".join(sorted(governors)))


def throttled(before, after) -> str:
    """Why the record counts as throttled (a clock fell during the job), or ""."""
    fell = [(cpu, b, after.cpu_mhz[cpu]) for cpu, b in before.cpu_mhz.items()
            if cpu in after.cpu_mhz and b > 0 and after.cpu_mhz[cpu] < b * (1 - THROTTLE_FALL)]  # fmt: skip
    if not fell:
        return ""
    cpu, b, a = max(fell, key=lambda f: (f[1] - f[2]) / f[1])
    return f"{cpu} fell from {b:,.0f} to {a:,.0f} MHz during the job ({len(fell)} core(s) fell by more than {THROTTLE_FALL:.0%})"


def _ancestors() -> set[int]:
    pids, pid = {os.getpid()}, os.getpid()
    while pid > 1:
        stat = _read(Path(f"/proc/{pid}/stat"))
        if not stat:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        pids.add(pid)
    return pids


def other_cpu_seconds(mine: set[int] | None = None) -> float:
    """CPU seconds (user + system) used so far by every process but ``mine`` (default: this one and its ancestors)."""
    mine = _ancestors() if mine is None else mine
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        stat = _read(Path(entry.path) / "stat")
        if not stat or ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        try:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
        except (IndexError, ValueError):
            continue
    return total / _TICKS


class Watch:
    """The conditions of one job: ``start()`` before its first measured phase, ``stop()`` after its last."""

    def __init__(self, disturbance_max_cores: float):
        self.disturbance_max_cores = disturbance_max_cores
        self.mine = _ancestors()

    def start(self) -> "Watch":
        self.before = thermal_state()
        self.cpu0, self.t0 = other_cpu_seconds(self.mine), time.monotonic()
        return self

    def stop(self):
        from protocol import DeviceConditions

        seconds = max(1e-9, time.monotonic() - self.t0)
        cores = max(0.0, other_cpu_seconds(self.mine) - self.cpu0) / seconds
        after = thermal_state()
        why = throttled(self.before, after)
        return DeviceConditions(before=self.before, after=after, throttled=bool(why), throttle_why=why,
                                other_cpu_cores=round(cores, 4), disturbed=cores > self.disturbance_max_cores,
                                disturbance_max_cores=self.disturbance_max_cores, seconds=seconds,
                                affinity=tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ())  # fmt: skip


def apply_affinity(text: str) -> None:
    """Pin this process (the benchmark child) to the cores ``text`` names; ValueError says what is wrong."""
    if not text:
        return
    from protocol.records import parse_cpus

    cpus = parse_cpus(text)
    available = os.sched_getaffinity(0)
    missing = [c for c in cpus if c not in available]
    if missing:
        raise ValueError(f"cpu_affinity: core(s) {', '.join(map(str, missing))} not available here "
                         f"(this device has {', '.join(map(str, sorted(available)))})")  # fmt: skip
    os.sched_setaffinity(0, cpus)
