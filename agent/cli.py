"""``python -m agent``: discover capabilities and serve them from a broker.

Standard-library argparse only, so a bare device needs nothing extra.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

from agent.backends import probe_all
from agent.oneline import OneLineParser
from protocol import JOB_TIME_LIMIT_S, VISIBILITY_TIMEOUT_S, check_broker_url, check_visibility_timeout


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
    "job_time_limit_s": ((int, float), "a number"),
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


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fleetbench-agent",
        description="Run a fleetbench agent on this device. "
        "`fleetbench-agent run-bundle BUNDLE` runs an offline bundle instead (no broker).",
    )
    p.add_argument("--config", help="agent config file (JSON); flags given on the command line win")
    p.add_argument(
        "--broker",
        default=os.environ.get("FLEETBENCH_BROKER_URL"),
        help="Redis URL of the broker (env FLEETBENCH_BROKER_URL), e.g. redis://:PASSWORD@controller:6379/0",
    )
    p.add_argument("--agent-id", default=os.environ.get("FLEETBENCH_AGENT_ID"), help="unique name of this agent")
    p.add_argument(
        "--capability",
        action="append",
        default=[],
        help="serve only this capability (repeatable); default: every capability found",
    )
    p.add_argument("--state-dir", default=os.environ.get("FLEETBENCH_AGENT_STATE"), help="outbox directory")
    p.add_argument("--visibility-timeout", type=float, default=None, help=f"seconds (default {VISIBILITY_TIMEOUT_S})")
    p.add_argument("--job-time-limit", type=float, default=None, help=f"seconds (default {JOB_TIME_LIMIT_S})")
    p.add_argument("--file-root", action="append", default=[], metavar="DIR",
                   help="read file:// artifacts only under DIR (repeatable; env FLEETBENCH_AGENT_FILE_ROOTS, "
                   "os.pathsep-separated); default: the controller's artifact store on this machine")
    p.add_argument("--allow-insecure-broker", action="store_true",
                   help="accept a broker beyond this machine without a password (closed lab networks only)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--probe", action="store_true", help="print the capabilities found and exit")
    return p


DEBUG_ENV = "FLEETBENCH_DEBUG"


def main(argv: list[str] | None = None) -> int:
    """``fleetbench-agent``: every failure is one ``error:`` line on stderr.

    An exception nothing turned into a message is one line too; FLEETBENCH_DEBUG=1 shows its traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
            raise
        from protocol.redact import redact

        text = " ".join(redact(str(exc)).split()) or "(no message)"
        print(f"error: {type(exc).__name__}: {text}; run with {DEBUG_ENV}=1 for the traceback", file=sys.stderr)
        return 1


# size: the agent's flags, its config file and their checks, then serving: one straight sequence
def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run-bundle"]:  # offline mode: no broker, no celery
        from agent.bundle import main as run_bundle_main

        return run_bundle_main(argv[1:])
    args = _parser().parse_args(argv)
    cfg: dict = {}
    if args.config:
        cfg = load_config(args.config)
        args.broker = args.broker or cfg.get("broker")
        args.agent_id = args.agent_id or cfg.get("agent_id")
        args.capability = args.capability or list(cfg.get("capabilities", []))
        if cfg.get("openvino_devices"):
            os.environ["FLEETBENCH_OPENVINO_DEVICES"] = ";".join(cfg["openvino_devices"])
        from agent import artifacts

        for key, env in (("token", artifacts.TOKEN_ENV), ("cache_dir", artifacts.CACHE_ENV), ("cache_max_mb", artifacts.CACHE_MAX_ENV)):
            if cfg.get(key) not in (None, ""):
                os.environ.setdefault(env, str(cfg[key]))  # the environment wins, as flags do
        if cfg.get("file_roots"):
            os.environ.setdefault(artifacts.FILE_ROOTS_ENV, os.pathsep.join(cfg["file_roots"]))
        if cfg.get("delegates"):  # benchmark children inherit it
            from agent.backends.delegates import ENV

            os.environ[ENV] = json.dumps(cfg["delegates"])
    if args.file_root:  # benchmark children inherit it; the flag wins over the environment and the config
        from agent.artifacts import FILE_ROOTS_ENV

        os.environ[FILE_ROOTS_ENV] = os.pathsep.join(str(Path(r).expanduser().resolve()) for r in args.file_root)
    if args.broker and not args.probe:
        insecure = check_broker_url(args.broker, args.allow_insecure_broker or bool(cfg.get("allow_insecure_broker")))
        if insecure:
            print(f"error: {insecure}", file=sys.stderr)  # names host:port only, and an example URL
            return 2
    visibility = args.visibility_timeout or float(cfg.get("visibility_timeout_s") or VISIBILITY_TIMEOUT_S)
    time_limit = args.job_time_limit or float(cfg.get("job_time_limit_s") or JOB_TIME_LIMIT_S)
    unsafe = check_visibility_timeout(visibility, time_limit)
    if unsafe:
        print(f"error: {unsafe}", file=sys.stderr)
        return 2
    if cfg.get("state_dir") and not args.state_dir:
        args.state_dir = cfg["state_dir"]
    caps, missing = probe_all()
    for cap in caps:
        print(f"capability {cap.name}: {cap.runtime} {cap.runtime_version}, {cap.device_name}", flush=True)
    for what, reason in missing.items():
        print(f"{'capability' if ':' in what else 'runtime'} {what} unavailable: {reason}", flush=True)
    if args.capability:
        wanted = set(args.capability)
        unknown = wanted - {c.name for c in caps}
        if unknown:
            print(f"error: this device does not offer {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        caps = [c for c in caps if c.name in wanted]
    if args.probe:
        return 0 if caps else 1
    if not caps:
        print("error: no runtime on this device offers any capability; install one (see above)", file=sys.stderr)
        return 2
    if not args.broker:
        print("error: no broker given; pass --broker redis://HOST:6379/0 or set FLEETBENCH_BROKER_URL", file=sys.stderr)
        return 2

    from agent.host import host_facts
    from agent.presence import Heartbeat
    from protocol import AgentInventory, agent_queue, queue_for, utc_now

    agent_id = args.agent_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    os.environ["FLEETBENCH_AGENT_ID"] = agent_id
    import redis

    from agent import outbox as outbox_mod
    from agent.worker import app, context

    app.conf.broker_url = args.broker
    app.conf.result_backend = args.broker
    app.conf.broker_transport_options = {"visibility_timeout": visibility}
    app.conf.result_backend_transport_options = {"visibility_timeout": visibility}
    # the child's own timeout fires first; this is Celery's last resort
    app.conf.task_time_limit = time_limit + 60
    if args.state_dir:
        os.environ[outbox_mod.STATE_ENV] = args.state_dir
    outbox = outbox_mod.Outbox(outbox_mod.default_path(agent_id))
    context.outbox, context.job_time_limit_s = outbox, time_limit
    context.redis = redis.Redis.from_url(args.broker, socket_timeout=5, socket_connect_timeout=5)
    if len(outbox):  # said before the relay starts, which may empty the outbox at once
        print(f"outbox {outbox.path}: {len(outbox)} result(s) from before a restart, relaying", flush=True)
    context.relay = outbox_mod.Relay(outbox, args.broker).start()
    from agent.runner import ForkServer

    context.forkserver = ForkServer().start()  # imports the runtimes while the worker connects
    queues = [queue_for(c.name) for c in caps] + [agent_queue(agent_id)]
    inventory = AgentInventory(
        agent_id=agent_id, host=host_facts(), capabilities=tuple(caps), started_at=utc_now(), heartbeat_at=utc_now()
    )
    # Until Celery installs its own handlers, SIGTERM must still unwind through
    # the `finally` below so the heartbeat key is removed.
    from celery.signals import after_setup_logger, after_setup_task_logger

    from protocol.redact import install_log_filter

    for sig in (after_setup_logger, after_setup_task_logger):  # Celery sets logging up afresh in worker_main
        sig.connect(lambda logger=None, **kw: install_log_filter(logger), weak=False)
    install_log_filter()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    heartbeat = Heartbeat(args.broker, inventory)
    heartbeat.start()
    print(f"agent {agent_id} serving {', '.join(c.name for c in caps)}", flush=True)
    try:
        app.worker_main(
            [
                "worker",
                f"--hostname={agent_id}@%h",
                f"--queues={','.join(queues)}",
                # One job at a time: a device measured while busy gives false numbers.
                "--pool=solo",
                "--concurrency=1",
                "--without-gossip",
                "--without-mingle",
                f"--loglevel={args.loglevel}",
            ]
        )
    finally:
        heartbeat.stop()
        context.relay.stop()
        context.forkserver.close()
    return 0
