"""Facts about the machine a benchmark ran on. Standard library only."""

from __future__ import annotations

import functools
import os
import platform
import re
import socket
import struct
from pathlib import Path

from protocol import HostFacts
from protocol.machines import canonical, runs_natively

#: The real kernel's architecture: user-mode emulators (qemu-user) fake uname(2), not this file (Linux >= 6.1).
KERNEL_ARCH = Path("/proc/sys/kernel/arch")
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86: "model name"; many ARM kernels: "Model" or "Hardware".
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


#: The qemu-user target that runs each machine's binaries (qemu names 32-bit Arm "arm" and 32-bit x86 "i386").
QEMU_TARGET = {"armv7l": "arm", "armv6l": "arm", "armv8l": "arm", "i686": "i386", "i586": "i386"}


def emulation(machine: str, kernel_arch: Path = KERNEL_ARCH, binfmt: Path = BINFMT, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """How this process's ``machine`` is emulated, or "" when it runs natively.

    The first sign that speaks wins: the kernel's own architecture (``/proc/sys/kernel/arch``, Linux 6.1+), which
    user-mode emulators do not fake, differs from the machine ``uname`` gives, beyond compat mode (an armv7l
    userland on an aarch64 kernel is native); ``/proc/cpuinfo`` shows this machine's own kind of CPU (native) or
    another's (qemu-user shows the host's); binfmt_misc hands this machine's binaries to a qemu interpreter.
    """
    kernel = _read(kernel_arch).strip()
    if kernel:
        return "" if runs_natively(machine, kernel) else f"qemu-user or alike: {machine} on an {canonical(kernel)} kernel"
    info = _read(cpuinfo)
    arm = machine.startswith(("aarch64", "arm"))
    x86 = machine in ("x86_64", "i686", "i586")
    if info and ((arm and "CPU implementer" in info) or (x86 and "vendor_id" in info)):
        return ""  # the CPU is this machine's kind
    if info and ((arm and "vendor_id" in info) or (x86 and "CPU implementer" in info)):
        return f"qemu-user or alike: {machine} on an {'x86' if arm else 'Arm'} CPU (/proc/cpuinfo)"
    for _, interp, _ in qemu_handlers(QEMU_TARGET.get(machine, machine), binfmt):
        return f"qemu-user: binfmt_misc runs {machine} binaries through {interp}"
    return ""


def qemu_handlers(target: str, binfmt: Path = BINFMT) -> list[tuple[str, str, str]]:
    """(name, interpreter, flags) of each enabled binfmt_misc handler whose interpreter is qemu-user for ``target``
    (qemu's name: aarch64, arm, i386): Debian's ``/usr/libexec/qemu-binfmt/aarch64-binfmt-P``, a static build's
    ``/usr/bin/qemu-aarch64-static``; not another target's (``aarch64_be``)."""
    try:
        entries = sorted(p for p in binfmt.iterdir() if p.name not in ("register", "status"))
    except OSError:
        return []
    out = []
    for entry in entries:
        lines = _read(entry).splitlines()
        field = {k.rstrip(":"): v for k, _, v in (ln.partition(" ") for ln in lines[1:])}
        interp = field.get("interpreter", "")
        if lines[:1] == ["enabled"] and re.fullmatch(rf"(qemu-)?{re.escape(target)}(-static|-binfmt-P)?", Path(interp).name):
            out.append((entry.name, interp, field.get("flags", "")))
    return out


def _ram_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _userland(machine: str) -> str:
    """The machine this Python's binaries are built for: ``uname`` gives the kernel's, and a 32-bit userland on a
    64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4 or 5) runs armv7l wheels, not aarch64 ones."""
    if struct.calcsize("P") == 4:
        return {"aarch64": "armv7l", "x86_64": "i686"}.get(machine, machine)
    return machine


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    machine = _userland(canonical(platform.machine()))
    emulated_by = emulation(machine)
    model = _cpu_model()
    return HostFacts(
        hostname=socket.gethostname(),
        # an emulated CPU is not the host's: its name (the device of litert:cpu records) says so
        cpu_model=(f"{machine} emulated" + (f" on {model}" if model != machine else "")) if emulated_by else model,
        cpu_cores=os.cpu_count() or 1,
        ram_bytes=_ram_bytes(),
        os=platform.platform(),
        python=platform.python_version(),
        machine=machine,
        emulated_by=emulated_by,
    )
