"""Facts about the machine a benchmark ran on. Standard library only."""

from __future__ import annotations

import functools
import os
import platform
import socket
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


def emulation(machine: str, kernel_arch: Path = KERNEL_ARCH, binfmt: Path = BINFMT, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """How this process's ``machine`` is emulated, or "" when it runs natively.

    Three signs, the first that speaks wins: the kernel's own architecture (``/proc/sys/kernel/arch``)
    differs from the machine ``uname`` gives, beyond compat mode (an armv7l process on an aarch64
    kernel is native); binfmt_misc hands binaries of this machine to a qemu interpreter; the CPU in
    ``/proc/cpuinfo`` is another architecture's (qemu-user shows the host's).
    """
    kernel = _read(kernel_arch).strip()
    if kernel:
        return "" if runs_natively(machine, kernel) else f"qemu-user: {machine} on an {canonical(kernel)} kernel"
    try:
        handlers = [p for p in binfmt.iterdir() if p.name not in ("register", "status")]
    except OSError:
        handlers = []
    for h in handlers:
        text = _read(h)
        interp = next((ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith("interpreter ")), "")
        if text.startswith("enabled") and f"qemu-{machine}" in interp:
            return f"qemu-user: binfmt_misc runs {machine} binaries through {interp}"
    info = _read(cpuinfo)
    arm = machine.startswith(("aarch64", "arm"))
    if info and arm and "vendor_id" in info and "CPU implementer" not in info:
        return f"qemu-user: {machine} on an x86 CPU (/proc/cpuinfo)"
    if info and machine in ("x86_64", "i686") and "CPU implementer" in info:
        return f"qemu-user: {machine} on an Arm CPU (/proc/cpuinfo)"
    return ""


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


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    machine = canonical(platform.machine())
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
