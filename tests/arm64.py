"""An emulated arm64 machine for the tests (issue 21): a Debian arm64 root made by debootstrap from Debian's
packages, with the agent's aarch64 wheels from PyPI, run by qemu-user. Only the CPU is emulated: the Python,
numpy and LiteRT in it are the aarch64 builds a Raspberry Pi or a Jetson runs.

    python -m tests.arm64 build     # once: debootstrap the root, add the aarch64 wheels (`make test` runs it)
    python -m tests.arm64 path      # print the cache folder
    python -m tests.arm64 problem   # why this machine cannot build or run it ("" when it can)

The root is cached in ``~/.cache/fleetbench/arm64/<key>/`` (or ``$FLEETBENCH_ARM64``), where the key is a
hash of the Debian suite, its package list and the agent's requirements, so a warm run (and CI on this
machine) reuses it. Tests run a private copy of it.

Running aarch64 binaries needs binfmt_misc: :func:`binfmt` mounts it where it is not mounted, registers
``qemu-aarch64-static`` with the F flag (the interpreter is opened at registration, so it works inside a
chroot, and the agent's child processes, which exec the aarch64 Python again, run too) and, on exit,
removes what it registered. Processes run in a mount namespace of their own (``unshare --mount``), with
``/proc``, ``/dev``, ``/sys`` and the given host folders bound into the root: nothing is left mounted when
they end. All of this needs root.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"  # Debian 12: Python 3.11, as Raspberry Pi OS 12 ships
MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-packaging")  # what the Ansible role needs on a device: a venv, and packaging for its pip module
#: The wheel tags pip may take for Debian 12 arm64 (glibc 2.36); pip does not widen one --platform by itself.
PLATFORMS = [f"manylinux_2_{v}_aarch64" for v in (17, 24, 27, 28, 31, 34, 35, 36)] + ["manylinux2014_aarch64"]
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "fleetbench-aarch64"
#: ELF64, little-endian, e_machine 183 (AArch64); as Debian's qemu-user-static registers it
BINFMT_LINE = (
    rf":{BINFMT_NAME}:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:"
    r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:" + QEMU + ":F"
)
#: Where the wheels and the installed dependencies sit in the root.
WHEELS = "/opt/fleetbench/wheels"
DEPS = "/opt/fleetbench/deps"
AGENT = "/opt/fleetbench/agent"
#: community.general (its chroot connection) out of the `ansible` package's wheel, for the role's run on the root
ANSIBLE_PACKAGE = "ansible==12.3.0"
COLLECTION = "ansible_collections/community/general/"


#: What the root's Python needs beyond the agent's requirements that pip cannot see from here: it evaluates
#: environment markers for this host's Python, not the root's. redis-py needs async-timeout below Python 3.11.3,
#: and Debian 12's is 3.11.2.
ROOT_EXTRA = ["async-timeout>=4.0.3"]


def agent_requirements() -> list[str]:
    """What `pip install fleetbench[agent]` asks for on the root: the project's dependencies and its agent extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["agent"]) + ROOT_EXTRA


def key() -> str:
    """A hash of what the root holds: the suite, its packages, the wheels' requirements and tags, and the recipe."""
    what = [SUITE, MIRROR, DEBIAN_PACKAGES, agent_requirements(), _platform_args(), ANSIBLE_PACKAGE, inspect.getsource(build)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def folder() -> Path:
    root = os.environ.get("FLEETBENCH_ARM64")
    return Path(root) if root else Path.home() / ".cache" / "fleetbench" / "arm64" / key()


def problem() -> str:
    """Why this machine cannot build or run the arm64 root; "" when it can."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the emulated arm64 machine is built on x86_64 Linux, not {sys.platform} {platform.machine()}"
    if os.geteuid() != 0:
        return "the emulated arm64 machine needs root (debootstrap, chroot, binfmt_misc, mount namespaces)"
    for tool, package in ((QEMU, "qemu-user-static"), ("debootstrap", "debootstrap"), ("unshare", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} is missing: apt-get install {package}"
    return ""


def ready() -> bool:
    return (folder() / "ready").is_file()


# ---------------------------------------------------------------- binfmt_misc


def _aarch64_handler() -> str:
    """The name of an enabled binfmt_misc handler that runs aarch64 binaries (qemu-aarch64, not aarch64_be) with
    the F flag, or ""."""
    from agent.host import qemu_handlers

    return next((name for name, _, flags in qemu_handlers("aarch64", BINFMT_DIR) if "F" in flags), "")


@contextlib.contextmanager
def binfmt():
    """aarch64 binaries run (through qemu-aarch64-static) while in this block; what it set up is undone after."""
    mounted = registered = False
    if not (BINFMT_DIR / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=True)
        mounted = True
    try:
        found = _aarch64_handler()
        if found == BINFMT_NAME:  # ours, left by a run that was killed: this run removes it
            registered = True
        elif not found:
            if (BINFMT_DIR / BINFMT_NAME).exists():  # ours, left disabled or without F: replace it
                (BINFMT_DIR / BINFMT_NAME).write_text("-1")
            (BINFMT_DIR / "register").write_text(BINFMT_LINE)
            registered = True
        yield
    finally:
        if registered and (BINFMT_DIR / BINFMT_NAME).exists():
            (BINFMT_DIR / BINFMT_NAME).write_text("-1")
        if mounted:
            subprocess.run(["umount", str(BINFMT_DIR)], check=False)


# ---------------------------------------------------------------- the root, built once


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def _platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for tag in PLATFORMS:
        args += ["--platform", tag]
    return args


def build(say=print) -> Path:
    """Make the cached root (a no-op when it is there); returns its folder."""
    dest = folder()
    if ready():
        return dest
    why = problem()
    if why:
        raise RuntimeError(why)
    for stale in dest.parent.glob("*.tmp*"):  # a build that was killed (its mounts ended with its namespace)
        shutil.rmtree(stale, ignore_errors=True)
    work = dest.with_name(dest.name + f".tmp{os.getpid()}")
    root = work / "root"
    started = time.monotonic()
    with binfmt():
        say(f"arm64: debootstrap {SUITE} arm64 ({', '.join(DEBIAN_PACKAGES)}) into {root} (once; a few minutes)")
        subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", "--foreign", f"--include={','.join(DEBIAN_PACKAGES)}",
                        SUITE, str(root), MIRROR], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        say("arm64: debootstrap's second stage, under qemu-user")
        # in a mount namespace of its own: the /proc and /sys it mounts in the root end with it, even if killed
        subprocess.run(["unshare", "--mount", "--propagation", "private", "chroot", str(root), "/debootstrap/debootstrap",
                        "--second-stage"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    say("arm64: the agent's aarch64 wheels, from PyPI, installed from this side (pip --target)")
    wheels = root / WHEELS.lstrip("/")
    _pip("download", "-d", str(wheels), *_platform_args(), *agent_requirements())
    _pip("install", "--no-warn-conflicts", "--no-index", "--find-links", str(wheels), "--target", str(root / DEPS.lstrip("/")), *_platform_args(),
         *agent_requirements())  # fmt: skip
    say(f"arm64: community.general (the chroot connection) from {ANSIBLE_PACKAGE}")
    ansible = work / "ansible-wheel"
    _pip("download", "--no-deps", "-d", str(ansible), ANSIBLE_PACKAGE)
    with zipfile.ZipFile(next(ansible.glob("ansible-*.whl"))) as z:
        z.extractall(work / "collections", [n for n in z.namelist() if n.startswith(COLLECTION)])
    shutil.rmtree(ansible)
    (work / "ready").write_text(json.dumps({"seconds": round(time.monotonic() - started, 1), "key": key()}))
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    say(f"arm64: ready in {dest} ({time.monotonic() - started:.0f} s)")
    return dest


# ---------------------------------------------------------------- a machine made of a copy of it

#: What a process in the root sees: its own PATH and Python path, nothing of the host's venv.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
            "PYTHONPATH": f"{AGENT}:{DEPS}", "PYTHONUNBUFFERED": "1", "TMPDIR": "/tmp"}  # fmt: skip


#: One CPU of an arm64 kernel's /proc/cpuinfo (a Cortex-A72, as in a Raspberry Pi 4).
CPUINFO = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
           "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n")


class Machine:
    """A private copy of the cached root, and processes run in it (chroot, in a mount namespace of their own).

    qemu-user 7.2 (Debian 12's) shows aarch64 processes the host's x86 ``/proc/cpuinfo``, and the cpuinfo library
    in LiteRT's XNNPACK then dereferences a null pointer (SIGSEGV) when an interpreter is made. So the machine
    binds an arm64 kernel's ``/proc/cpuinfo`` over it, one entry per host CPU, as qemu does for other targets
    and as the kernel of a real board gives. ``/proc/sys/kernel/arch`` still tells the agent it is emulated.
    """

    def __init__(self, work: Path):
        self.root = work / "root"
        subprocess.run(["cp", "-a", "--reflink=auto", str(folder() / "root"), str(self.root)], check=True)
        self.collections = folder() / "collections"
        self.cpuinfo = work / "cpuinfo"
        self.cpuinfo.write_text("\n".join(CPUINFO.format(i=i) for i in range(os.cpu_count() or 1)) + "\n")

    def _mounts(self) -> list[str]:
        r = shlex.quote(str(self.root))
        return ([f"mount --rbind /{d} {r}/{d}" for d in ("proc", "dev", "sys")] +
                [f"mount --bind {shlex.quote(str(self.cpuinfo))} {r}/proc/cpuinfo"])  # fmt: skip

    def install_agent(self, wheel: Path) -> None:
        """The agent's own wheel (pure Python), installed from this side, as its dependencies were."""
        _pip("install", "--no-deps", "--no-index", "--target", str(self.root / AGENT.lstrip("/")), str(wheel))
        shutil.copy2(wheel, self.root / WHEELS.lstrip("/"))

    def wrap(self, argv: list[str], binds: tuple[Path, ...] = ()) -> list[str]:
        """``argv`` run in the root: /proc, /dev, /sys and ``binds`` (host folders, at the same paths) bound in
        first, in a mount namespace that ends with the process."""
        r = shlex.quote(str(self.root))
        lines = ["set -e"] + self._mounts()
        for b in binds:
            b = Path(b).resolve()
            lines += [f"mkdir -p {r}{shlex.quote(str(b))}", f"mount --bind {shlex.quote(str(b))} {r}{shlex.quote(str(b))}"]
        lines.append(f'exec chroot {r} "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "arm64", *argv]

    def host_side(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host, with /proc, /dev and /sys bound into the root for it and its children (Ansible's
        chroot connection: each command it runs in the root sees them), in a mount namespace that ends with it."""
        lines = ["set -e"] + self._mounts() + ['exec "$@"']
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "arm64", *argv]

    def env(self, **extra: str) -> dict:
        return dict(BASE_ENV, **extra)

    def run(self, argv: list[str], binds=(), timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(argv, binds), env=self.env(**extra_env), capture_output=True, text=True, timeout=timeout)

    def popen(self, argv: list[str], log: Path, binds=(), **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen(self.wrap(argv, binds), env=self.env(**extra_env), stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "build"
    if cmd == "path":
        print(folder())
    elif cmd == "problem":
        print(problem())
    elif cmd == "build":
        why = problem()
        if why:
            print(f"arm64: skipped ({why}); the emulated-arm64 tests skip here, and fail under CI=true")
            return 0
        try:
            build()
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            print(f"error: building the arm64 root failed: {exc}", file=sys.stderr)
            return 1
    else:
        print("usage: python -m tests.arm64 [build|path|problem]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
