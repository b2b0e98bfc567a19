"""Process helpers the controller and the agent share: spawn, stop, die with the parent, name a signal.

Standard library only. ``telemetry_off`` is called on import of ``agent`` and ``controller``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from protocol.private import create_private


def telemetry_off() -> None:
    """Make ``openvino_telemetry`` unimportable, so OpenVINO and NNCF send nothing.

    OpenVINO sends a telemetry event over HTTP on import (from a thread pool) unless that package
    cannot be imported. Agents run in air-gapped labs, and a fork server that forks beside that
    thread can leave a job's child deadlocked before it runs.
    """
    sys.modules.setdefault("openvino_telemetry", None)


def signal_name(returncode: int) -> str:
    """'SIGSEGV' for a child killed by signal 11 (returncode -11)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child between fork and exec (preexec_fn): get ``sig`` when the parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``argv`` in a session of its own, told to die with this process, its output in a 0600 log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    create_private(log_path)  # logs hold hostnames, paths and errors: the owner's only
    with contextlib.suppress(OSError):
        os.chmod(log_path, 0o600)  # a log an older release made 0644
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        log.close()


def stop(proc: subprocess.Popen | None, grace_s: float) -> None:
    """SIGTERM ``proc``'s process group, then SIGKILL it after ``grace_s``; reaps it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, or "" when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
