"""``python -m agent``: discover capabilities and serve them from a broker.

Standard-library argparse only, so a bare device needs nothing extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import uuid

from agent.backends import probe_all
from agent.config import AgentConfig, load_config
from agent.oneline import OneLineParser
from protocol import JOB_TIME_LIMIT_S, VISIBILITY_TIMEOUT_S, check_broker_url, check_visibility_timeout


#: seconds an idle agent's Celery consumer waits on the broker (a BRPOP) before it asks again
#: (docs/fleet-setup.md). kombu's default, on purpose: a stopping agent first reads the reply of the BRPOP
#: in flight (kombu's Channel.close, so a job it popped is not lost), so every stop waits up to this long.
#: A 5 s wait made each agent's stop take 3.4 s instead of 0.6 s (a real agent's SIGTERM, timed).
POLL_S = 1.0


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
    p.add_argument("--cooldown-s", type=float, default=None, metavar="S",
                   help="before each job, wait S seconds (or at most S for --cooldown-within-c; default 300 then)")
    p.add_argument("--cooldown-within-c", type=float, default=None, metavar="C",
                   help="before each job, wait until every thermal zone is within C °C of its idle baseline")
    p.add_argument("--on-disturbance", choices=("record", "wait", "refuse"), default=None,
                   help="other processes busy before a job: run and mark the record (record, the default), wait for "
                   "quiet (wait), or fail the job as device-busy (refuse)")
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
    config = AgentConfig.resolve(args, load_config(args.config) if args.config else {})
    if config.broker and not args.probe:
        insecure = check_broker_url(config.broker, config.allow_insecure_broker)
        if insecure:
            print(f"error: {insecure}", file=sys.stderr)  # names host:port only, and an example URL
            return 2
    try:
        prejob = config.prejob()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unsafe = check_visibility_timeout(config.visibility_timeout_s, config.job_time_limit_s)
    if not unsafe and prejob.active and config.visibility_timeout_s <= config.job_time_limit_s + prejob.max_wait_s:
        unsafe = (f"the broker's visibility timeout ({config.visibility_timeout_s:g} s) must be longer than the job time "
                  f"limit ({config.job_time_limit_s:g} s) plus the waits before a job (up to {prejob.max_wait_s:g} s: "
                  "cooldown_s, quiet_wait_s): raise visibility_timeout_s or shorten the waits")  # fmt: skip
    if unsafe:
        print(f"error: {unsafe}", file=sys.stderr)
        return 2
    os.environ.update(config.child_env())  # the one hand-over to the probes and benchmark children (agent/config.py)
    caps, missing = probe_all()
    from agent.host import host_facts

    facts = host_facts()
    print(f"machine {facts.machine}" + (f", emulated ({facts.emulated_by}): its records are marked emulated"
                                        if facts.emulated_by else ""), flush=True)  # fmt: skip
    for cap in caps:
        print(f"capability {cap.name}: {cap.runtime} {cap.runtime_version}, {cap.device_name}", flush=True)
    for what, reason in missing.items():
        print(f"{'capability' if ':' in what else 'runtime'} {what} unavailable: {reason}", flush=True)
    if config.capabilities:
        wanted = set(config.capabilities)
        unknown = wanted - {c.name for c in caps}
        if unknown:
            hint = ("; name capabilities without @machine (an agent serves litert:cpu and litert:cpu@<its machine> "
                    "both)") if any("@" in u for u in unknown) else ""  # fmt: skip
            print(f"error: this device does not offer {', '.join(sorted(unknown))}{hint}", file=sys.stderr)
            return 2
        caps = [c for c in caps if c.name in wanted]
    if args.probe:
        return 0 if caps else 1
    if not caps:
        print("error: no runtime on this device offers any capability; install one (see above)", file=sys.stderr)
        return 2
    if not config.broker:
        print("error: no broker given; pass --broker redis://HOST:6379/0 or set FLEETBENCH_BROKER_URL", file=sys.stderr)
        return 2

    from agent.presence import Heartbeat
    from protocol import AgentInventory, agent_queue, queue_for, utc_now
    from protocol.machines import with_machine

    config = config.with_agent_id(config.agent_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    agent_id = config.agent_id
    os.environ.update(config.child_env())  # now with the agent's id, which its benchmark children stamp

    from agent import outbox as outbox_mod
    from agent.worker import app, context

    app.conf.broker_url = config.broker
    app.conf.result_backend = config.broker
    # an idle agent asks for a job every POLL_S (kombu's BRPOP timeout: 10,000 BRPOPs a second from an idle
    # fleet of 10,000); a message still arrives at once. Keepalive drops a dead board's socket.
    app.conf.broker_transport_options = {"visibility_timeout": config.visibility_timeout_s, "polling_interval": POLL_S,
                                         "socket_keepalive": True}  # fmt: skip
    app.conf.result_backend_transport_options = {"visibility_timeout": config.visibility_timeout_s}
    # nobody sends an agent control commands (its presence and its jobs' fences are protocol/presence.py's and
    # protocol/keys.py's): no pidbox connection; an agent holds four in all (docs/fleet-setup.md, "Sizing")
    app.conf.worker_enable_remote_control = False
    # the child's own timeout fires first; this is Celery's last resort
    app.conf.task_time_limit = config.job_time_limit_s + prejob.max_wait_s + 60
    context.prejob = prejob
    outbox = outbox_mod.Outbox(outbox_mod.default_path(agent_id))
    context.outbox, context.job_time_limit_s = outbox, config.job_time_limit_s
    from agent.presence import broker_client

    context.redis = broker_client(config.broker)  # fences, starts and the outbox's relay: one connection
    if len(outbox):  # said before the relay starts, which may empty the outbox at once
        print(f"outbox {outbox.path}: {len(outbox)} result(s) from before a restart, relaying", flush=True)
    context.relay = outbox_mod.Relay(outbox, context.redis).start()
    from agent.runner import ForkServer

    context.forkserver = ForkServer().start()  # imports the runtimes while the worker connects
    # each capability's queue, and the same @ this machine (litert:cpu@aarch64: protocol/machines.py)
    facts = host_facts()
    served = with_machine([c.name for c in caps], facts.machine, bool(facts.emulated_by))
    queues = [queue_for(n) for n in sorted(served)] + [agent_queue(agent_id)]
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
    heartbeat = Heartbeat(config.broker, inventory)  # a connection of its own: never behind a large result's push
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
                "--without-heartbeat",  # Celery's own heartbeat events: presence is protocol/presence.py's
                f"--loglevel={args.loglevel}",
            ]
        )
    finally:
        heartbeat.stop()
        context.relay.stop()
        context.forkserver.close()
    return 0
