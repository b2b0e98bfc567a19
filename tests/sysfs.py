"""Recorded sysfs trees for the agent's energy sources (issue 19): the files a real device exposes
(``tests/data/sysfs/<device>/``, the layout, names and units its kernel lists) copied into a folder the sources
read as their root, and advanced as the device's counters would advance.

- :class:`RaplTree`: ``/sys/class/powercap`` of an Intel laptop: package-0 (with core, uncore and DRAM
  sub-zones, nested under it and linked beside it, as the kernel lists them), psys; energy counters in µJ that wrap at ``max_energy_range_uj`` (262143328850 µJ on real parts; a
  small range here, so a wrap happens within a test).
- :class:`Ina3221Tree`: ``/sys/class/hwmon`` of a Jetson board: an INA3221 with three rails reported as
  voltage (mV) and current (mA) only, plus a chip with a ``power1_input`` (µW).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

RECORDED = Path(__file__).parent / "data" / "sysfs"


def _copy(recorded: str, root: Path) -> None:
    shutil.copytree(RECORDED / recorded, root, symlinks=True, dirs_exist_ok=True)  # sub-zone links stay links


class RaplTree:
    ZONES = {  # zone folder -> (name, watts it draws)
        "intel-rapl:0": ("package-0", 15.0),
        "intel-rapl:0/intel-rapl:0:0": ("core", 9.0),
        "intel-rapl:0/intel-rapl:0:1": ("uncore", 1.5),
        "intel-rapl:1": ("psys", 22.0),
        "intel-rapl:0/intel-rapl:0:2": ("dram", 2.0),
    }

    def __init__(self, root: Path, wrap_uj: int = 50_000_000, start_uj: int = 49_000_000):
        self.root = root
        self.wrap_uj = wrap_uj
        self.t = 0.0  # the device's own clock, seconds: what a sampler reading this tree should time by
        self.energy = {}
        _copy("intel-laptop/class/powercap", root)  # sub-zones nested and linked beside, as the kernel lists them
        for zone, (name, _) in self.ZONES.items():
            assert (root / zone / "name").read_text().strip() == name, zone
            (root / zone / "max_energy_range_uj").write_text(f"{wrap_uj}\n")  # a small range: it wraps in a test
            self.energy[zone] = start_uj
            self._write(zone)
        # what the kernel lists beside the zones: not a RAPL zone, not read
        (root / "dtpm").mkdir(exist_ok=True)

    def _write(self, zone: str) -> None:
        """A sysfs read is atomic: never half a number. Write beside, then rename over."""
        path = self.root / zone / "energy_uj"
        tmp = path.with_name("energy_uj.new")
        tmp.write_text(f"{self.energy[zone]}\n")
        os.replace(tmp, path)

    def advance(self, seconds: float) -> None:
        """The counters after ``seconds`` at each zone's draw, wrapping as the hardware's do."""
        for zone, (_, watts) in self.ZONES.items():
            self.energy[zone] = (self.energy[zone] + int(watts * seconds * 1e6)) % self.wrap_uj
            self._write(zone)
        self.t += seconds


class Ina3221Tree:
    RAILS = {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 600), 3: ("VDD_SOC", 5000, 300)}  # mV, mA

    def __init__(self, root: Path):
        self.root = root
        _copy("jetson-orin-nano/class/hwmon", root)  # hwmon1: the INA3221's rails; hwmon0: an INA238 (2.5 W in µW)
        for ch, (label, mv, ma) in self.RAILS.items():
            assert (root / "hwmon1" / f"in{ch}_label").read_text().strip() == label
            (root / "hwmon1" / f"in{ch}_input").write_text(f"{mv}\n")
            self.set_current(ch, ma)

    def set_current(self, channel: int, ma: int) -> None:
        (self.root / "hwmon1" / f"curr{channel}_input").write_text(f"{ma}\n")


class Ticker:
    """Advances a tree in a thread, ``step_s`` of device time about every ``step_s`` of wall time, until stopped
    (a loaded machine ticks slower; the tree's own clock, ``tree.t``, says how much device time passed)."""

    def __init__(self, tree: RaplTree, step_s: float = 0.01):
        self.tree, self.step_s = tree, step_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.step_s):
            self.tree.advance(self.step_s)

    def __enter__(self) -> "Ticker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ThermalTree:
    """``/sys/class/thermal`` with two zones and ``/sys/devices/system/cpu`` with two cores' cpufreq."""

    def __init__(self, thermal: Path, cpus: Path, mhz: int = 2400):
        _copy("intel-laptop/class/thermal", thermal)  # x86_pkg_temp at 52 °C, acpitz at 41 °C
        _copy("intel-laptop/devices/system/cpu", cpus)  # the powersave governor, throttle counts 17 (core), 3 (package)
        self.thermal, self.cpus = thermal, cpus
        for c in (0, 1):
            self.set_mhz(c, mhz)
        (cpus / "cpuidle").mkdir(exist_ok=True)  # not a core

    def throttle(self, cpu: int, times: int = 1) -> None:
        """The hardware throttled core ``cpu`` ``times`` more times (its ``core_throttle_count`` rises)."""
        path = self.cpus / f"cpu{cpu}" / "thermal_throttle" / "core_throttle_count"
        tmp = path.with_name("core_throttle_count.new")
        tmp.write_text(f"{int(path.read_text()) + times}\n")
        os.replace(tmp, path)

    def set_temp(self, zone: int, celsius: float) -> None:
        path = self.thermal / f"thermal_zone{zone}" / "temp"
        tmp = path.with_name("temp.new")
        tmp.write_text(f"{int(celsius * 1000)}\n")
        os.replace(tmp, path)

    def set_mhz(self, cpu: int, mhz: int) -> None:
        path = self.cpus / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq"
        tmp = path.with_name("scaling_cur_freq.new")
        tmp.write_text(f"{mhz * 1000}\n")
        os.replace(tmp, path)
