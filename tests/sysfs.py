"""Recorded sysfs trees for the agent's energy sources (issue 19): the files a real device exposes, written into
a folder the sources read as their root, and advanced as the device's counters would advance.

- :class:`RaplTree`: ``/sys/class/powercap`` of an Intel laptop: package-0 (with core, uncore and DRAM
  sub-zones, nested under it and linked beside it, as the kernel lists them), psys; energy counters in µJ that wrap at ``max_energy_range_uj`` (262143328850 µJ on real parts; a
  small range here, so a wrap happens within a test).
- :class:`Ina3221Tree`: ``/sys/class/hwmon`` of a Jetson board: an INA3221 with three rails reported as
  voltage (mV) and current (mA) only, plus a chip with a ``power1_input`` (µW).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


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
        for zone, (name, _) in self.ZONES.items():
            d = root / zone
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(name + "\n")
            (d / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
            self.energy[zone] = start_uj
            self._write(zone)
            if "/" in zone:  # the class folder lists every zone, sub-zones too, as links to where they live
                (root / zone.rsplit("/", 1)[1]).symlink_to(d)
        # what the kernel links beside the zones: not a RAPL zone, not read
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
        ina = root / "hwmon1"
        ina.mkdir(parents=True, exist_ok=True)
        (ina / "name").write_text("ina3221\n")
        for ch, (label, mv, ma) in self.RAILS.items():
            (ina / f"in{ch}_label").write_text(label + "\n")
            (ina / f"in{ch}_input").write_text(f"{mv}\n")
            (ina / f"curr{ch}_input").write_text(f"{ma}\n")
        other = root / "hwmon0"
        other.mkdir(exist_ok=True)
        (other / "name").write_text("ina238\n")
        (other / "power1_input").write_text("2500000\n")  # 2.5 W in µW
        (other / "temp1_input").write_text("45000\n")  # not a power reading

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
        for i, (kind, mc) in enumerate([("x86_pkg_temp", 52000), ("acpitz", 41000)]):
            zone = thermal / f"thermal_zone{i}"
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "type").write_text(kind + "\n")
            (zone / "temp").write_text(f"{mc}\n")
        self.cpus = cpus
        for c in (0, 1):
            freq = cpus / f"cpu{c}" / "cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            (freq / "scaling_governor").write_text("powersave\n")
            self.set_mhz(c, mhz)
        (cpus / "cpuidle").mkdir(exist_ok=True)  # not a core

    def set_mhz(self, cpu: int, mhz: int) -> None:
        path = self.cpus / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq"
        tmp = path.with_name("scaling_cur_freq.new")
        tmp.write_text(f"{mhz * 1000}\n")
        os.replace(tmp, path)
