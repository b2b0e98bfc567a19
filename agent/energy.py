# size: three sysfs/NVML readers and the sampler that integrates them; each reader is short
"""Energy sources on an agent (issue 19): what measures power on this device, and reading it.

Three kinds of source, one small interface each (:class:`Source`): ``probe()`` lists the domains that can be
read and says why others cannot; ``read()`` returns each domain's cumulative joules (an energy counter) or
instantaneous watts (a power sensor).

- :class:`Rapl`: Intel/AMD RAPL through ``/sys/class/powercap/*/energy_uj`` (package, core, uncore, DRAM,
  psys where present). The counters wrap at ``max_energy_range_uj``; :class:`Counter` carries the wraps.
- :class:`Hwmon`: ``/sys/class/hwmon``: any ``power*_input`` (µW) and ``energy*_input`` (µJ), and rails
  that report only voltage and current, as the INA3221 on Jetson boards does (``in*_input`` mV ×
  ``curr*_input`` mA, matched by channel).
- :class:`Nvml`: NVIDIA GPUs through NVML (``nvidia-ml-py``): total energy consumption where the device has
  it, else sampled power.

The sysfs roots are settings, so tests read recorded trees (``tests/sysfs.py``) through the same code that
reads a real device. :class:`Sampler` samples the sources in a background thread at a stated interval and
turns the samples into joules, average and peak watts; an energy figure over fewer than
:data:`MIN_INTERVALS` sampling intervals is marked invalid with the reason, like a percentile over too few
samples. Nothing here estimates: a device with no sensor says ``no energy sensor: <why>``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: An energy figure needs at least this many sampling intervals inside its window to be valid.
MIN_INTERVALS = 10
POWERCAP = "/sys/class/powercap"
HWMON = "/sys/class/hwmon"
#: The sysfs roots an agent reads, for a device whose sysfs sits elsewhere (and for tests on recorded trees).
POWERCAP_ENV, HWMON_ENV = "FLEETBENCH_POWERCAP_ROOT", "FLEETBENCH_HWMON_ROOT"
#: Sampling interval of the latency phase's energy sampler.
INTERVAL_ENV, INTERVAL_S = "FLEETBENCH_ENERGY_INTERVAL_S", 0.02


@dataclass(frozen=True)
class Domain:
    """One thing that can be read: ``kind`` is "energy" (a cumulative counter, joules) or "power" (watts)."""

    name: str
    source: str  # "rapl", "hwmon", "nvml"
    kind: str
    key: str  # what the source reads it by (a path, a device index)


@dataclass
class Probe:
    domains: list[Domain] = field(default_factory=list)
    #: Why domains this source looked for cannot be read (missing, permission, no driver), one line each.
    missing: list[str] = field(default_factory=list)


class Source:
    name = ""

    def probe(self) -> Probe:
        raise NotImplementedError

    def read(self, domains: list[Domain]) -> dict[str, float]:
        """Each domain's joules (kind "energy", raw, before wrap handling) or watts (kind "power")."""
        raise NotImplementedError


def interval_s() -> float:
    """The latency phase's sampling interval: FLEETBENCH_ENERGY_INTERVAL_S, else 20 ms."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, INTERVAL_S))
    except ValueError:
        return INTERVAL_S
    return value if 0.001 <= value <= 10 else INTERVAL_S


def _text(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


def _readable(path: Path) -> str | None:
    """None if ``path`` can be read, else why not (one line)."""
    try:
        with open(path, "rb") as f:
            f.read(64)
        return None
    except PermissionError:
        return (f"{path}: permission denied (RAPL counters need root on kernels since 5.10; grant read access with a "
                "udev rule or a group, see docs/fleet-setup.md)")  # fmt: skip
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"


class Rapl(Source):
    name = "rapl"

    def __init__(self, root: str | os.PathLike = POWERCAP):
        self.root = Path(root)
        self.ranges: dict[str, float] = {}  # domain key -> wrap range in joules

    def probe(self) -> Probe:
        out = Probe()
        if not self.root.is_dir():
            out.missing.append(f"rapl: {self.root} does not exist (no powercap driver: not an Intel/AMD CPU, or a VM)")
            return out
        zones = sorted(p for p in self.root.iterdir() if p.name.startswith(("intel-rapl", "amd-rapl")))
        if not zones:
            out.missing.append(f"rapl: {self.root} has no intel-rapl or amd-rapl zone")
        for zone in zones:
            energy = zone / "energy_uj"
            if not energy.exists():
                continue
            why = _readable(energy)
            if why:
                out.missing.append(f"rapl: {why}")
                continue
            label = _text(zone / "name") if (zone / "name").exists() else zone.name
            try:
                self.ranges[str(energy)] = int(_text(zone / "max_energy_range_uj")) / 1e6
            except (OSError, ValueError):
                self.ranges[str(energy)] = 0.0  # no wrap range: a fall is then not taken for a wrap
            out.domains.append(Domain(f"{label} ({zone.name})", "rapl", "energy", str(energy)))
        return out

    def read(self, domains: list[Domain]) -> dict[str, float]:
        return {d.name: int(_text(Path(d.key))) / 1e6 for d in domains}


def _kind(fname: str) -> str | None:
    """A hwmon file's reading: "power" (``power*_input``, µW), "energy" (``energy*_input``, µJ), or None."""
    if fname.endswith("_input"):
        for kind in ("power", "energy"):
            if fname.startswith(kind):
                return kind
    return None


class Hwmon(Source):
    name = "hwmon"

    def __init__(self, root: str | os.PathLike = HWMON):
        self.root = Path(root)

    # size: the three shapes a hwmon chip reports power in, with their labels
    def probe(self) -> Probe:
        out = Probe()
        if not self.root.is_dir():
            out.missing.append(f"hwmon: {self.root} does not exist")
            return out
        for chip in sorted(self.root.iterdir()):
            chip_name = _text(chip / "name") if (chip / "name").exists() else chip.name
            files = {p.name for p in chip.iterdir()}
            for fname in sorted(files):
                kind = _kind(fname)
                if kind is None:
                    continue
                why = _readable(chip / fname)
                if why:
                    out.missing.append(f"hwmon: {why}")
                    continue
                label_file = fname.replace("_input", "_label")
                label = _text(chip / label_file) if label_file in files else fname.removesuffix("_input")
                out.domains.append(Domain(f"{chip_name} {label}", "hwmon", kind, str(chip / fname)))
            # INA3221-style rails: voltage (mV) and current (mA) per channel, no power file
            for fname in sorted(files):
                if not (fname.startswith("curr") and fname.endswith("_input")):
                    continue
                channel = fname[len("curr") : -len("_input")]
                volts = f"in{channel}_input"
                if volts not in files or f"power{channel}_input" in files:
                    continue
                label_file = f"in{channel}_label"
                label = _text(chip / label_file) if label_file in files else f"rail {channel}"
                out.domains.append(Domain(f"{chip_name} {label}", "hwmon", "power", f"{chip / volts}|{chip / fname}"))
        if not out.domains and not out.missing:
            out.missing.append(f"hwmon: no power, energy or voltage-and-current sensor under {self.root}")
        return out

    def read(self, domains: list[Domain]) -> dict[str, float]:
        values = {}
        for d in domains:
            if "|" in d.key:
                volts, amps = d.key.split("|")
                values[d.name] = int(_text(Path(volts))) / 1e3 * int(_text(Path(amps))) / 1e3
            else:
                values[d.name] = int(_text(Path(d.key))) / 1e6  # µW -> W, µJ -> J
        return values


class Nvml(Source):
    """NVIDIA GPUs. Needs ``nvidia-ml-py`` and a driver; says which is missing."""

    name = "nvml"

    def __init__(self):
        self._nvml = None

    def probe(self) -> Probe:
        out = Probe()
        try:
            import pynvml
        except ImportError:
            out.missing.append("nvml: nvidia-ml-py is not installed (pip install nvidia-ml-py)")
            return out
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            out.missing.append(f"nvml: no NVIDIA driver answers ({type(exc).__name__}: {exc})")
            return out
        self._nvml = pynvml
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                out.domains.append(Domain(f"GPU {i} {name}", "nvml", "energy", str(i)))
            except Exception:  # noqa: BLE001 - NVMLError_NotSupported on older boards
                try:
                    pynvml.nvmlDeviceGetPowerUsage(handle)
                    out.domains.append(Domain(f"GPU {i} {name}", "nvml", "power", str(i)))
                except Exception as exc:  # noqa: BLE001
                    out.missing.append(f"nvml: GPU {i} {name} reports neither energy nor power ({exc})")
        return out

    def read(self, domains: list[Domain]) -> dict[str, float]:
        n = self._nvml
        values = {}
        for d in domains:
            handle = n.nvmlDeviceGetHandleByIndex(int(d.key))
            if d.kind == "energy":
                values[d.name] = n.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
            else:
                values[d.name] = n.nvmlDeviceGetPowerUsage(handle) / 1e3  # mW -> W
        return values


class Counter:
    """A wrapping energy counter turned into joules since the first reading."""

    def __init__(self, wrap_j: float):
        self.wrap_j = wrap_j
        self.first: float | None = None
        self.last: float | None = None
        self.wraps = 0

    def add(self, raw_j: float) -> float:
        if self.first is None:
            self.first = self.last = raw_j
            return 0.0
        if raw_j < self.last and self.wrap_j > 0:
            self.wraps += 1
        self.last = raw_j
        return raw_j + self.wraps * self.wrap_j - self.first


@dataclass(frozen=True)
class Energy:
    """Energy over a window: per domain joules, average and peak watts; ``valid`` False with ``why``."""

    joules: dict[str, float]
    avg_w: dict[str, float]
    peak_w: dict[str, float]
    sources: dict[str, str]
    interval_s: float
    intervals: int
    seconds: float
    valid: bool
    why: str = ""

    def per_inference_mj(self, domain: str, inferences: int) -> float | None:
        return self.joules[domain] / inferences * 1e3 if inferences and domain in self.joules else None

    def record(self, inferences: int):
        """The wire form (:class:`protocol.EnergyRecord`), per inference from the first domain."""
        from protocol import EnergyDomain, EnergyRecord

        domains = tuple(EnergyDomain(name=n, source=self.sources[n], joules=j, avg_w=self.avg_w[n], peak_w=self.peak_w[n])
                        for n, j in self.joules.items())  # fmt: skip
        first = domains[0].name if domains else ""
        return EnergyRecord(valid=self.valid, why=self.why, interval_s=self.interval_s, intervals=self.intervals,
                            seconds=self.seconds, inferences=inferences,
                            mj_per_inference=self.per_inference_mj(first, inferences) if self.valid else None,
                            domains=domains)  # fmt: skip


@dataclass
class Sources:
    """The sources this agent reads, found once: what can be read, and why the rest cannot."""

    readers: list[tuple[Source, list[Domain]]]
    missing: list[str]

    @classmethod
    def probe(cls, powercap: str | os.PathLike | None = None, hwmon: str | os.PathLike | None = None,
              nvml: bool = True) -> "Sources":  # fmt: skip
        """Every source; the roots default to FLEETBENCH_POWERCAP_ROOT / FLEETBENCH_HWMON_ROOT, else sysfs."""
        powercap = powercap or os.environ.get(POWERCAP_ENV) or POWERCAP
        hwmon = hwmon or os.environ.get(HWMON_ENV) or HWMON
        readers, missing = [], []
        for source in [Rapl(powercap), Hwmon(hwmon)] + ([Nvml()] if nvml else []):
            p = source.probe()
            missing += p.missing
            if p.domains:
                readers.append((source, p.domains))
        return cls(readers, missing)

    @property
    def none_why(self) -> str | None:
        """``no energy sensor: <why>`` when nothing can be read, else None."""
        if self.readers:
            return None
        return "no energy sensor: " + ("; ".join(self.missing) or "no source found")


@dataclass
class _Track:
    """One domain's figures so far, integrated sample by sample (a sustained run samples for hours: nothing is
    kept per sample). A counter's joules are its last reading less its first; a power sensor's are trapezoids."""

    kind: str
    t0: float
    v0: float
    t: float
    v: float
    joules: float = 0.0
    peak_w: float = 0.0
    readings: int = 1

    def add(self, ts: float, value: float) -> None:
        if self.kind == "energy":
            if ts > self.t:
                self.peak_w = max(self.peak_w, (value - self.v) / (ts - self.t))
            self.joules = value - self.v0
        else:
            self.joules += (ts - self.t) * (self.v + value) / 2
            self.peak_w = max(self.peak_w, value)
        self.t, self.v, self.readings = ts, value, self.readings + 1


# size: the sampling thread and the integration of its samples, kept together
class Sampler:
    """Samples every source at ``interval_s`` in a background thread between ``start()`` and ``stop()``."""

    def __init__(self, sources: Sources, interval_s: float = 0.05, clock=time.monotonic):
        self.sources = sources
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters: dict[str, Counter] = {}
        self._tracks: dict[str, _Track] = {}
        self._first: float | None = None
        self._last: float | None = None
        self._n = 0

    def _sample(self) -> None:
        values: dict[str, tuple[str, float]] = {}
        for source, domains in self.sources.readers:
            try:
                raw = source.read(domains)
            except Exception:  # noqa: BLE001 - OSError, NVMLError...: a sensor that stops answering leaves a gap
                continue
            for d in domains:
                if d.name not in raw:
                    continue
                if d.kind == "energy":
                    wrap = getattr(source, "ranges", {}).get(d.key, 0.0)
                    values[d.name] = (d.kind, self._counters.setdefault(d.name, Counter(wrap)).add(raw[d.name]))
                else:
                    values[d.name] = (d.kind, raw[d.name])
        ts = self.clock()
        for name, (kind, value) in values.items():
            track = self._tracks.get(name)
            if track is None:
                self._tracks[name] = _Track(kind, ts, value, ts, value, peak_w=value if kind == "power" else 0.0)
            else:
                track.add(ts, value)
        self._first = ts if self._first is None else self._first
        self._last, self._n = ts, self._n + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> "Sampler":
        """Start sampling; with no source to read, no thread runs (nothing perturbs the phase it brackets)."""
        self._counters.clear()
        self._tracks.clear()
        self._first, self._last, self._n = None, None, 0
        self._stop.clear()
        self._thread = None
        if self.sources.readers:
            self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)
            self._thread.start()
        else:
            self._sample()
        return self

    def stop(self) -> Energy:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # the window's end
        return self.result()

    def result(self) -> Energy:
        sources = {d.name: s.name for s, ds in self.sources.readers for d in ds}
        seconds = self._last - self._first if self._n > 1 else 0.0
        joules, avg, peak = {}, {}, {}
        for name, track in self._tracks.items():
            if track.readings < 2:
                continue
            span = track.t - track.t0
            joules[name], peak[name] = track.joules, track.peak_w
            avg[name] = track.joules / span if span > 0 else 0.0
        intervals = max(0, self._n - 1)
        why = self.sources.none_why or ""
        if not why and intervals < MIN_INTERVALS:
            why = (f"the window held {intervals} sampling interval(s) of {self.interval_s * 1e3:g} ms, fewer than "
                   f"{MIN_INTERVALS}; run longer (min_duration_s) or sample faster")  # fmt: skip
        return Energy(joules=joules, avg_w=avg, peak_w=peak, sources={n: sources[n] for n in joules},
                      interval_s=self.interval_s, intervals=intervals, seconds=seconds, valid=not why, why=why)  # fmt: skip
