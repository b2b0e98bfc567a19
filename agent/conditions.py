"""The device's state around a job (issue 19): temperatures and clocks before and after, throttling, other
processes' CPU time during the job (disturbance), and the CPU affinity the benchmark ran with.

- temperatures: ``/sys/class/thermal/thermal_zone*/temp`` (m°C, named by ``type``);
- clocks: ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`` (kHz) and the governor;
- the platform's throttle counters: ``/sys/devices/system/cpu/cpu*/thermal_throttle/{core,package}_throttle_count``
  (Intel), which rise each time the hardware throttled;
- NVIDIA GPUs through NVML (``nvidia-ml-py``, where a driver answers): temperature, SM clock, and the clock event
  reasons that mean throttling (thermal or power slowdown, power cap);
- disturbance: the utime + stime (``/proc/<pid>/stat``) of every process that is not this one or one of its
  ancestors (the agent that started it), over the job's wall time, in cores;
- affinity: ``settings.cpu_affinity`` ("0", "0-3", "0,2") applied with ``os.sched_setaffinity`` and read
  back.

The sysfs roots are settings (``FLEETBENCH_THERMAL_ROOT``, ``FLEETBENCH_CPUFREQ_ROOT``), so tests read
recorded trees through this code. A clock that fell by more than :data:`THROTTLE_FALL` between the start and
the end of the job, a throttle counter that rose, or a throttle reason NVML reports mark the record throttled.
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
    counts: dict[str, int] = {}
    governors: set[str] = set()
    croot = Path(os.environ.get(CPUFREQ_ENV) or CPUFREQ)
    for cpu in sorted(croot.glob("cpu[0-9]*")) if croot.is_dir() else []:
        raw = _read(cpu / "cpufreq" / "scaling_cur_freq")
        if raw and raw.isdigit():
            mhz[cpu.name] = int(raw) / 1000
        gov = _read(cpu / "cpufreq" / "scaling_governor")
        if gov:
            governors.add(gov)
        raw = _read(cpu / "thermal_throttle" / "core_throttle_count")
        if raw and raw.isdigit():
            counts[f"{cpu.name} core"] = int(raw)
        raw = _read(cpu / "thermal_throttle" / "package_throttle_count")  # every core of a package shows its count
        if raw and raw.isdigit():
            counts[f"package {_read(cpu / 'topology' / 'physical_package_id') or 0}"] = int(raw)
    gpu_temps, gpu_mhz, flags = _gpus()
    return ThermalState(temps_c={**temps, **gpu_temps}, cpu_mhz=mhz, governor=",".join(sorted(governors)), gpu_mhz=gpu_mhz,
                        throttle_counts=counts, throttle_flags=flags)  # fmt: skip


#: NVML clock event reasons that mean the GPU was slowed (not idle, not an application's own clock setting).
NVML_THROTTLE = {"SwPowerCap": 0x4, "HwSlowdown": 0x8, "SwThermalSlowdown": 0x20, "HwThermalSlowdown": 0x40,
                 "HwPowerBrakeSlowdown": 0x80}  # fmt: skip
_nvml_handle: list = []  # [pynvml or None], once per process


def _nvml():
    if not _nvml_handle:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_handle.append(pynvml)
        except Exception:  # noqa: BLE001 - not installed, no driver: no GPU state (agent/energy.py says why)
            _nvml_handle.append(None)
    return _nvml_handle[0]


def _gpus() -> tuple[dict[str, float], dict[str, float], tuple[str, ...]]:
    """Each NVIDIA GPU's temperature (°C), SM clock (MHz) and active throttle reasons; empty without NVML."""
    n = _nvml()
    temps, mhz, flags = {}, {}, []
    if n is None:
        return temps, mhz, ()
    try:
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            temps[f"GPU {i} (nvml)"] = float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
            mhz[f"GPU {i}"] = float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
            reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
            bits = int(reasons(h))
            flags += [f"GPU {i} {name}" for name, bit in NVML_THROTTLE.items() if bits & bit]
    except Exception:  # noqa: BLE001 - a GPU that stops answering leaves what was read
        pass
    return temps, mhz, tuple(flags)


def throttled(before, after) -> str:
    """Why the record counts as throttled, or "": a CPU or GPU clock fell during the job, a throttle counter rose,
    or NVML says a GPU is slowed."""
    why = []
    for clocks, what in (("cpu_mhz", "core(s)"), ("gpu_mhz", "GPU(s)")):
        b_, a_ = getattr(before, clocks), getattr(after, clocks)
        fell = [(k, b, a_[k]) for k, b in b_.items() if k in a_ and b > 0 and a_[k] < b * (1 - THROTTLE_FALL)]
        if fell:
            k, b, a = max(fell, key=lambda f: (f[1] - f[2]) / f[1])
            why.append(f"{k} fell from {b:,.0f} to {a:,.0f} MHz during the job ({len(fell)} {what} fell by more than "
                       f"{THROTTLE_FALL:.0%})")  # fmt: skip
    rose = {k: after.throttle_counts[k] - n for k, n in before.throttle_counts.items() if after.throttle_counts.get(k, n) > n}
    if rose:
        k = max(rose, key=rose.get)
        why.append(f"{k} throttle count rose by {rose[k]:,} during the job ({len(rose)} counter(s) rose)")
    flags = list(dict.fromkeys(before.throttle_flags + after.throttle_flags))
    if flags:
        why.append("NVML reports " + ", ".join(flags))
    return "; ".join(why)


def _ancestors() -> set[int]:
    pids, pid = {os.getpid()}, os.getpid()
    while pid > 1:
        stat = _read(Path(f"/proc/{pid}/stat"))
        if not stat:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        pids.add(pid)
    return pids


def other_cpu_seconds(mine: set[int] | None = None, descendants_of: int | None = None) -> float:
    """CPU seconds (user + system) used so far by every process but ``mine`` (default: this one and its ancestors)
    and, with ``descendants_of``, that process's children and theirs (an agent's fork server and the benchmark
    child it is still reaping)."""
    mine = _ancestors() if mine is None else mine
    times: dict[int, tuple[int, int]] = {}  # pid -> (parent, ticks)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        stat = _read(Path(entry.path) / "stat")
        if not stat or ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        try:
            times[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid; utime + stime
        except (IndexError, ValueError):
            continue
    if descendants_of is not None:
        ours, grew = {descendants_of}, True
        while grew:
            new = {pid for pid, (parent, _) in times.items() if parent in ours and pid not in ours}
            ours |= new
            grew = bool(new)
        times = {pid: v for pid, v in times.items() if pid not in ours}
    return sum(ticks for _, ticks in times.values()) / _TICKS


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


def sustained_record(samples_ns, m, readings: list, window_s: float):
    """Sustained mode's record: the samples cut where ``m`` (a :class:`agent.measure.Measurement`) says each window
    began, with the thermal state read when each closed (``readings``, one per window), and the drift of the last
    window's p50 from the first's."""
    from protocol import Sustained, SustainedWindow
    from protocol.stats import window_percentiles

    starts = [(0, 0), *m.boundaries]
    ends = [i for i, _ in m.boundaries] + [len(samples_ns)]
    counts = [end - start for (start, _), end in zip(starts, ends)]
    windows = tuple(
        SustainedWindow(start_s=t_ns / 1e9, count=n, p50_ms=p50, p99_ms=p99,
                        hottest_c=max(st.temps_c.values()) if st.temps_c else None,
                        cpu_mhz=sum(st.cpu_mhz.values()) / len(st.cpu_mhz) if st.cpu_mhz else None)
        for (_, t_ns), n, (p50, p99), st in zip(starts, counts, window_percentiles(samples_ns, counts), readings)
    )  # fmt: skip
    return Sustained(seconds=m.elapsed_ns / 1e9, window_s=window_s, windows=windows, drift_ratio=Sustained.drift_of(windows))


#: What an agent does when the device is busy before a job: run and mark the record, wait for quiet, or refuse.
ON_DISTURBANCE = ("record", "wait", "refuse")


#: How many idle readings per zone the cooldown's baseline is the coolest of.
IDLE_READINGS = 20


class DeviceBusy(Exception):
    """The device was busy before the job and the agent's ``on_disturbance`` is ``refuse``."""


class PreJob:
    """The agent's waits before each job (its settings, not the job's): ``cooldown`` until every thermal zone is
    within ``cooldown_within_c`` of its idle baseline (at most ``cooldown_s``), or ``cooldown_s`` flat where no
    target is set; then, with ``on_disturbance`` ``wait``, until other processes use at most the job's
    ``disturbance_max_cores`` over a ``probe_s`` probe (at most ``quiet_wait_s``), or ``refuse`` at once.

    The idle baseline is ``idle_c`` for every zone where given, else each zone's coolest of its last
    :data:`IDLE_READINGS` idle readings (at the agent's start, and as each cooldown ends)."""

    def __init__(self, cooldown_s: float = 0.0, cooldown_within_c: float = 0.0, idle_c: float | None = None,
                 on_disturbance: str = "record", quiet_wait_s: float = 60.0, probe_s: float = 1.0,
                 sleep=time.sleep, clock=time.monotonic):  # fmt: skip
        if on_disturbance not in ON_DISTURBANCE:
            raise ValueError(f"on_disturbance must be one of {', '.join(ON_DISTURBANCE)}, not {on_disturbance!r}")
        if min(cooldown_s, cooldown_within_c, quiet_wait_s) < 0 or probe_s <= 0:
            raise ValueError("cooldown_s, cooldown_within_c and quiet_wait_s must be >= 0")
        self.cooldown_s = cooldown_s or (300.0 if cooldown_within_c else 0.0)
        self.within_c, self.idle_c = cooldown_within_c, idle_c
        self.on_disturbance, self.quiet_wait_s, self.probe_s = on_disturbance, quiet_wait_s, probe_s
        self.sleep, self.clock = sleep, clock
        self.mine = _ancestors()
        self.baseline: dict[str, float] = {}
        self._idle: dict[str, list[float]] = {}
        self._note(thermal_state().temps_c)

    @property
    def active(self) -> bool:
        return bool(self.cooldown_s) or self.on_disturbance != "record"

    @property
    def max_wait_s(self) -> float:
        """The longest the waits before one job can take (a probe may run past ``quiet_wait_s`` by one)."""
        quiet = {"record": 0.0, "wait": self.quiet_wait_s + 2 * self.probe_s, "refuse": self.probe_s}[self.on_disturbance]
        return self.cooldown_s + quiet

    def _note(self, temps: dict[str, float]) -> None:
        """Each zone's baseline: ``idle_c``, else its coolest of the last :data:`IDLE_READINGS` readings taken
        idle (at the start, and as each cooldown ends), so a room that warms moves it up again; a reading no
        sensor gives (below -40 or above 150 °C) is a glitch, not a baseline."""
        for zone, c in temps.items():
            if self.idle_c is not None:
                self.baseline[zone] = self.idle_c
            elif -40.0 <= c <= 150.0:
                recent = self._idle.setdefault(zone, [])
                recent.append(c)
                del recent[:-IDLE_READINGS]
                self.baseline[zone] = min(recent)

    def _hot(self, temps: dict[str, float]) -> tuple[str, float, float] | None:
        """The zone furthest above its baseline by more than ``within_c``: (zone, °C, baseline), or None."""
        over = [(z, c, self.baseline[z]) for z, c in temps.items() if z in self.baseline and c - self.baseline[z] > self.within_c]
        return max(over, key=lambda o: o[1] - o[2]) if over else None

    def cooldown(self):
        from protocol import Wait

        t0 = self.clock()
        if not self.within_c:
            self.sleep(self.cooldown_s)
            return Wait(kind="cooldown", seconds=self.clock() - t0, done=True, why=f"waited {self.cooldown_s:g} s (cooldown_s)")
        temps = thermal_state().temps_c
        if not temps:
            self.sleep(self.cooldown_s)
            return Wait(kind="cooldown", seconds=self.clock() - t0, done=False,
                        why=f"no thermal zone to watch: waited cooldown_s={self.cooldown_s:g} s instead")  # fmt: skip
        while (hot := self._hot(temps)) and self.clock() - t0 < self.cooldown_s:
            self.sleep(min(1.0, max(0.0, self.cooldown_s - (self.clock() - t0))))
            temps = thermal_state().temps_c
        seconds = self.clock() - t0
        if not temps:
            return Wait(kind="cooldown", seconds=seconds, done=False,
                        why=f"the thermal zones stopped answering after {seconds:.0f} s; ran without the cooldown")  # fmt: skip
        self._note(temps)
        if hot:
            zone, c, idle = hot
            return Wait(kind="cooldown", seconds=seconds, done=False, why=f"gave up after {seconds:.0f} s: {zone} at "
                        f"{c:.1f} °C, more than {self.within_c:g} °C above its idle {idle:.1f} °C")  # fmt: skip
        worst = max(temps.items(), key=lambda zc: zc[1] - self.baseline.get(zc[0], zc[1]))
        return Wait(kind="cooldown", seconds=seconds, done=True, why=f"every zone within {self.within_c:g} °C of idle after "
                    f"{seconds:.1f} s ({worst[0]} {worst[1]:.1f} °C, idle {self.baseline[worst[0]]:.1f} °C)")  # fmt: skip

    def _busy(self) -> float:
        """Other processes' CPU use over one probe, in cores."""
        agent = os.getpid()
        cpu0, t0 = other_cpu_seconds(self.mine, agent), self.clock()
        self.sleep(self.probe_s)
        return max(0.0, other_cpu_seconds(self.mine, agent) - cpu0) / max(1e-9, self.clock() - t0)

    def quiet(self, max_cores: float):
        from protocol import Wait

        t0 = self.clock()
        cores = self._busy()
        if cores > max_cores and self.on_disturbance == "refuse":
            raise DeviceBusy(f"device busy: other processes used {cores:.2f} cores over the {self.probe_s:g} s before "
                             f"the job, above disturbance_max_cores={max_cores:g}; this agent refuses busy devices "
                             "(on_disturbance=refuse): stop the other work, or set on_disturbance to wait or record")  # fmt: skip
        while cores > max_cores and self.clock() - t0 < self.quiet_wait_s:
            cores = self._busy()
        seconds = self.clock() - t0
        if cores > max_cores:
            return Wait(kind="quiet", seconds=seconds, done=False, why=f"still busy after {seconds:.0f} s: other "
                        f"processes used {cores:.2f} cores (limit {max_cores:g}); ran anyway")  # fmt: skip
        return Wait(kind="quiet", seconds=seconds, done=True,
                    why=f"other processes used {cores:.2f} cores (limit {max_cores:g}) after {seconds:.1f} s")  # fmt: skip

    def run(self, max_cores: float) -> tuple:
        """The waits before one job, in order (DeviceBusy when the agent refuses a busy device)."""
        waits = []
        if self.cooldown_s:
            waits.append(self.cooldown())
        if self.on_disturbance != "record":
            waits.append(self.quiet(max_cores))
        return tuple(waits)
