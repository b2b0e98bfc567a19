"""The agent's settings, resolved once into a frozen :class:`AgentConfig`.

Where each setting comes from, first found wins: a command-line flag, the environment, the config file
(``--config``, a JSON object of :data:`CONFIG_KEYS`), the default (the config file's OpenVINO devices and
delegates replace the environment's: naming them is what the file is for). A few settings are read by code
that runs in other processes (the benchmark children, the probes' children): :meth:`AgentConfig.child_env`
is the one place they are handed over, as the environment those processes inherit.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from protocol import JOB_TIME_LIMIT_S, VISIBILITY_TIMEOUT_S

#: environment variables the agent's other processes read (the rest are named where they are read)
OPENVINO_DEVICES_ENV = "FLEETBENCH_OPENVINO_DEVICES"
AGENT_ID_ENV = "FLEETBENCH_AGENT_ID"


#: Keys an agent config file (JSON) may hold, and what each sets.
CONFIG_KEYS = {
    "broker": "the broker URL (same as --broker); beyond this machine it must carry a password",
    "allow_insecure_broker": "accept a broker beyond this machine without a password (closed lab networks only)",
    "agent_id": "this agent's unique name (same as --agent-id)",
    "controller": "the controller API's URL (for the record: each job carries its artifacts' full URLs)",
    "capabilities": "serve only these capabilities (same as --capability)",
    "openvino_devices": "extra OpenVINO device strings to probe, e.g. [\"HETERO:FPGA,CPU\", \"AUTO:CPU\"]",
    "token": "this agent's token for the controller's HTTP API (artifact downloads)",
    "cache_dir": "where downloaded artifacts are cached (default ~/.cache/fleetbench-agent)",
    "file_roots": "folders file:// artifacts may be read from (same as --file-root; default: the controller's "
    "artifact store on this machine)",
    "cache_max_mb": "bound on the artifact cache, in MiB (default 4096)",
    "state_dir": "where the outbox of unsent results lives (default ~/.local/share/fleetbench-agent)",
    "visibility_timeout_s": "seconds before the broker hands an unacknowledged job to another agent (default 7200)",
    "job_time_limit_s": "the longest a job may run (default 3600); must be below visibility_timeout_s",
    "cooldown_s": "before each job, wait this long (seconds), or at most this long for cooldown_within_c (default 300 "
    "then)",
    "cooldown_within_c": "before each job, wait until every thermal zone is within this many °C of its idle baseline",
    "cooldown_idle_c": "the idle baseline in °C (default: each zone's coolest reading since the agent started)",
    "on_disturbance": "when other processes use the CPU before a job: record (run, mark the record disturbed), "
    "wait (for a quiet device, at most quiet_wait_s) or refuse (fail the job as device-busy)",
    "quiet_wait_s": "the most seconds on_disturbance=wait waits for a quiet device (default 60)",
    "delegates": "TFLite external delegates by path, e.g. {\"edgetpu\": {\"path\": \"libedgetpu.so.1\"}} "
    "(see agent/backends/delegates.py)",
}


#: The JSON types each config key may hold (``delegates`` is checked by its own module).
CONFIG_TYPES = {
    "broker": ((str,), "a string"), "agent_id": ((str,), "a string"), "controller": ((str,), "a string"),
    "token": ((str,), "a string"), "cache_dir": ((str,), "a string"), "state_dir": ((str,), "a string"),
    "allow_insecure_broker": ((bool,), "true or false"),
    "capabilities": ((list,), "a list of strings"), "openvino_devices": ((list,), "a list of strings"),
    "file_roots": ((list,), "a list of strings"),
    "cache_max_mb": ((int, float), "a number"), "visibility_timeout_s": ((int, float), "a number"),
    "job_time_limit_s": ((int, float), "a number"), "cooldown_s": ((int, float), "a number"),
    "cooldown_within_c": ((int, float), "a number"), "cooldown_idle_c": ((int, float), "a number"),
    "on_disturbance": ((str,), "a string"), "quiet_wait_s": ((int, float), "a number"),
}  # fmt: skip


def load_config(path: str) -> dict:
    """An agent config file: a JSON object with the keys in CONFIG_KEYS."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise SystemExit(f"error: cannot read agent config {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: agent config {path} is not valid JSON: {exc}")
    except UnicodeDecodeError as exc:
        raise SystemExit(f"error: agent config {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON")
    if not isinstance(data, dict):
        raise SystemExit(f"error: agent config {path} must be a JSON object")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise SystemExit(f"error: agent config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    for key, value in data.items():
        expected = CONFIG_TYPES.get(key)
        if expected is None or value is None:
            continue
        ok = isinstance(value, expected[0]) and not (isinstance(value, bool) and bool not in expected[0])
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise SystemExit(f"error: agent config {path}: `{key}` must be {expected[1]}, not {type(value).__name__}")
    if "delegates" in data:
        from agent.backends.delegates import check_config

        try:
            check_config(data["delegates"])
        except ValueError as exc:
            raise SystemExit(f"error: agent config {path}: {exc}")
    return data


def _first(*values) -> float:
    return float(next(v for v in values if v is not None))


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent runs with, once flags, environment and config file are weighed (see the module)."""

    broker: str | None = None
    agent_id: str | None = None
    capabilities: tuple[str, ...] = ()
    state_dir: str | None = None
    visibility_timeout_s: float = VISIBILITY_TIMEOUT_S
    job_time_limit_s: float = JOB_TIME_LIMIT_S
    allow_insecure_broker: bool = False
    openvino_devices: tuple[str, ...] = ()
    token: str | None = None
    cache_dir: str | None = None
    cache_max_mb: str | None = None
    file_roots: tuple[str, ...] = ()
    #: the config file's delegates, as JSON text (a frozen value)
    delegates: str | None = None
    #: the waits before each job (agent/conditions.py PreJob)
    cooldown_s: float = 0.0
    cooldown_within_c: float = 0.0
    cooldown_idle_c: float | None = None
    on_disturbance: str = "record"
    quiet_wait_s: float = 60.0

    @classmethod
    def resolve(cls, args, file: dict, environ=None) -> "AgentConfig":
        """The settings from the parsed flags ``args`` (whose defaults already read the environment), the config
        file's ``file`` and ``environ`` (default: this process's environment)."""
        from agent.artifacts import CACHE_ENV, CACHE_MAX_ENV, FILE_ROOTS_ENV, TOKEN_ENV
        from agent.backends.delegates import ENV as DELEGATES_ENV

        environ = os.environ if environ is None else environ

        def env_or_file(env: str, key: str) -> str | None:
            if env in environ:  # set at all, even empty, the environment wins
                return environ[env]
            return str(file[key]) if file.get(key) not in (None, "") else None

        if args.file_root:  # the flag wins over the environment and the config file
            roots = tuple(str(Path(r).expanduser().resolve()) for r in args.file_root)
        elif FILE_ROOTS_ENV in environ:
            roots = tuple(r for r in environ[FILE_ROOTS_ENV].split(os.pathsep) if r)
        else:
            roots = tuple(file.get("file_roots") or ())
        devices = tuple(file.get("openvino_devices") or ()) or tuple(d for d in environ.get(OPENVINO_DEVICES_ENV, "").split(";") if d)
        return cls(
            broker=args.broker or file.get("broker"),
            agent_id=args.agent_id or file.get("agent_id"),
            capabilities=tuple(args.capability or file.get("capabilities", [])),
            state_dir=args.state_dir or file.get("state_dir"),
            visibility_timeout_s=args.visibility_timeout or float(file.get("visibility_timeout_s") or VISIBILITY_TIMEOUT_S),
            job_time_limit_s=args.job_time_limit or float(file.get("job_time_limit_s") or JOB_TIME_LIMIT_S),
            allow_insecure_broker=bool(args.allow_insecure_broker or file.get("allow_insecure_broker")),
            openvino_devices=devices,
            token=env_or_file(TOKEN_ENV, "token"),
            cache_dir=env_or_file(CACHE_ENV, "cache_dir"),
            cache_max_mb=env_or_file(CACHE_MAX_ENV, "cache_max_mb"),
            file_roots=roots,
            delegates=json.dumps(file["delegates"]) if file.get("delegates") else environ.get(DELEGATES_ENV),
            cooldown_s=_first(args.cooldown_s, file.get("cooldown_s"), 0.0),
            cooldown_within_c=_first(args.cooldown_within_c, file.get("cooldown_within_c"), 0.0),
            cooldown_idle_c=file.get("cooldown_idle_c"),
            on_disturbance=args.on_disturbance or file.get("on_disturbance") or "record",
            quiet_wait_s=_first(None, file.get("quiet_wait_s"), 60.0),
        )  # fmt: skip

    def prejob(self):
        """The waits before each job these settings ask for (:class:`agent.conditions.PreJob`); ValueError says
        which setting is wrong."""
        from agent.conditions import PreJob

        return PreJob(cooldown_s=self.cooldown_s, cooldown_within_c=self.cooldown_within_c, idle_c=self.cooldown_idle_c,
                      on_disturbance=self.on_disturbance, quiet_wait_s=self.quiet_wait_s)  # fmt: skip

    def with_agent_id(self, agent_id: str) -> "AgentConfig":
        return dataclasses.replace(self, agent_id=agent_id)

    def child_env(self) -> dict[str, str]:
        """The variables the agent's other processes (benchmark children, probes) read these settings from."""
        from agent.artifacts import CACHE_ENV, CACHE_MAX_ENV, FILE_ROOTS_ENV, TOKEN_ENV
        from agent.backends.delegates import ENV as DELEGATES_ENV
        from agent.outbox import STATE_ENV

        values = {
            AGENT_ID_ENV: self.agent_id, STATE_ENV: self.state_dir, TOKEN_ENV: self.token, CACHE_ENV: self.cache_dir,
            CACHE_MAX_ENV: self.cache_max_mb, FILE_ROOTS_ENV: os.pathsep.join(self.file_roots),
            OPENVINO_DEVICES_ENV: ";".join(self.openvino_devices), DELEGATES_ENV: self.delegates,
        }  # fmt: skip
        return {k: v for k, v in values.items() if v}
