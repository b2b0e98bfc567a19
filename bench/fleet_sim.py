"""Fleet size (issue 22): N simulated agents, from 10 to 10,000, against the real controller.

    .venv/bin/python bench/fleet_sim.py [--agents 10,100,1000,10000] [--jobs 10000] [--procs 2]
        [--job-ms 5] [--crash-pct 1] [--churn-per-min 0] [--flap-per-min 0] [--window-s 20]
        [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--model M.tflite] [--json OUT] [--connections]

``--connections`` first counts the Redis connections one real agent holds, from its sockets.

For each N it starts a private Redis, a real ``fleetbench serve`` (scheduler, collector, API) on a fresh
PostgreSQL schema, and N agents in ``--procs`` processes (asyncio). The agents speak the real protocol:
- a heartbeat every HEARTBEAT_S with a real inventory (protocol/presence.py's BEAT_SCRIPT), over a spread
  of capabilities (litert:cpu, openvino:CPU, litert:gpu, openvino:MYRIAD);
- real job messages taken off their capability queues (Celery's messages as kombu's Redis transport
  keeps them), with the attempt fence read and the start announced as an agent does (agent/worker.py);
- a real ResultRecord per job (tests/data/golden_record_litert_cpu.json, recorded on a real run, replayed
  with the job's labels) pushed onto the results list the collector drains.
They are simulated in one respect only: no model runs (a job sleeps ``--job-ms``). What the simulator does
not model: kombu's unacked-message hash (a message taken is gone, as if its agent acknowledged it at once;
a crashed agent's job comes back only through the controller's lost-agent path, which is what is measured).

Phases at each N, in one run:
1. join: the N agents beat until the controller's presence counts N; Redis memory per agent (and, in
   phase 3, per queued job).
2. idle: ``--window-s`` with no sweep: Redis commands per agent per minute (everything the broker
   processed, the controller's syncs included).
3. queued: a sweep of ``--jobs`` tiny jobs is sent while the agents take nothing; then the scheduler's
   tick time with all of them queued (its Prometheus histogram over the window: the mean, and the median
   and 90th percentile interpolated in its buckets as Prometheus' histogram_quantile does).
4. drain: the agents take the jobs: jobs dispatched and results stored per second, and every record
   stored once (records in the store == jobs, no job done twice); the controller's CPU time per job (so
   its rate on a core of its own), and how busy the machine and the simulator were.
5. crash: a sweep of one long job per agent; once all run, ``--crash-pct`` of the agents stop dead (no
   goodbye, their jobs dropped). The time until the controller has sent every one of their jobs again
   (its fence moved to attempt 2) is the detection time; target <= 2 x HEARTBEAT_TTL_S.

Prints one markdown table; copy it to docs/benchmarks.md.
"""

# size: one benchmark script: the simulated agents (a process each), the controller it starts and the five
# phases it measures; split, each part would need the others' settings and keys

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    FENCE_PREFIX,
    HEARTBEAT_S,
    HEARTBEAT_TTL_S,
    RESULTS_KEY,
    STARTED_KEY,
    STARTS_PREFIX,
    AgentInventory,
    CapabilityInfo,
    HostFacts,
    queue_for,
    utc_now,
)
from agent.presence import stable  # noqa: E402
from protocol.presence import BEAT_SCRIPT, FLEET_BEATS, FLEET_KEYS, LEAVE_SCRIPT  # noqa: E402

#: capability mixes, by agent number modulo 10: CPU boxes (LiteRT and OpenVINO), bare LiteRT boards, GPU
#: hosts, NCS2 sticks on a CPU host
MIXES = {0: ("litert:cpu", "openvino:CPU"), 1: ("litert:cpu", "openvino:CPU"), 2: ("litert:cpu", "openvino:CPU"),
         3: ("litert:cpu", "openvino:CPU"), 4: ("litert:cpu",), 5: ("litert:cpu",), 6: ("litert:gpu", "litert:cpu"),
         7: ("litert:gpu", "litert:cpu"), 8: ("openvino:MYRIAD", "openvino:CPU"), 9: ("litert:cpu", "openvino:CPU")}  # fmt: skip
DEVICES = ["litert:cpu", "openvino:CPU", "litert:gpu", "openvino:MYRIAD"]
VARIANTS = ["tflite-fp32", "openvino-fp32"]
CONTROL = "fleetsim:control"  # hash: pause (1: take no job), job_s (how long a job takes), crash (JSON agent ids)
STATS = "fleetsim:stats:"  # + process number: hash of counters
TOKEN = "fleetsim-token"


# ------------------------------------------------------------------ the simulated agents (child processes)


def inventory(i: int, run: str) -> AgentInventory:
    agent_id = f"sim-{run}-{i:05d}"
    host = HostFacts(hostname=f"board-{i:05d}", cpu_model="Cortex-A72 (simulated)", cpu_cores=4, ram_bytes=4 << 30,
                     os="Linux 6.1", python="3.11.2", machine="x86_64")  # fmt: skip
    caps = tuple(CapabilityInfo(name=c, runtime=c.split(":")[0], runtime_version="2.19.0" if c.startswith("litert") else "2025.3.0",
                                device=c.split(":")[1], device_name=f"{c.split(':')[1]} #{i}", precisions=("fp32",))
                 for c in MIXES[i % 10])  # fmt: skip
    return AgentInventory(agent_id=agent_id, host=host, capabilities=caps, started_at=utc_now(), heartbeat_at=utc_now())


class SimProcess:
    """One process's share of the fleet: its agents' beats, the jobs they take, and the outcomes they send."""

    def __init__(self, broker: str, proc: int, indices: list[int], run: str, job_s: float, churn: float, flap: float):
        self.broker, self.proc, self.job_s, self.churn, self.flap = broker, proc, job_s, churn, flap
        self.agents = {inventory(i, run).agent_id: inventory(i, run) for i in indices}
        self.payload = {a: stable(inv) for a, inv in self.agents.items()}  # as agent/presence.py beats it
        start = time.monotonic()  # beats spread over one period; every agent then keeps its place in the line
        self.schedule = collections.deque(sorted((start + random.uniform(0, HEARTBEAT_S), a) for a in self.agents))
        self.away_until: dict[str, float] = {}  # agents that left (cleanly) or flap (silently), until then
        self.crashed: set[str] = set()
        self.busy: set[str] = set()
        self.caps = {a: [c.name for c in inv.capabilities] for a, inv in self.agents.items()}
        #: per capability, its agents that may be idle (checked when taken: an agent idle for two queues is in both)
        self.idle = {c: collections.deque(a for a in self.agents if c in self.caps[a]) for c in DEVICES}
        self.in_line = {c: set(line) for c, line in self.idle.items()}
        self.counts = {"taken": 0, "sent": 0, "fenced-off": 0, "lost": 0, "beats": 0}
        self.template = wire_template()
        self.paused = True

    async def run(self) -> None:
        import redis.asyncio as aredis

        self.r = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(self.broker, max_connections=8, timeout=None))
        self.beat = self.r.register_script(BEAT_SCRIPT)
        self.leave = self.r.register_script(LEAVE_SCRIPT)
        await asyncio.gather(self.beats(), self.control(), *(self.consume(c) for c in DEVICES))

    async def beats(self) -> None:
        while True:
            now = time.monotonic()
            due = []
            while self.schedule and self.schedule[0][0] <= now:
                _, a = self.schedule.popleft()
                self.schedule.append((now + HEARTBEAT_S, a))
                if a not in self.crashed and self.away_until.get(a, 0) <= now:
                    due.append(a)
            if due:
                pipe = self.r.pipeline(transaction=False)
                for a in due:
                    await self.beat(keys=FLEET_KEYS, args=[a, self.payload[a]], client=pipe)
                await pipe.execute()
                self.counts["beats"] += len(due)
            await asyncio.sleep(0.05)

    async def control(self) -> None:
        last = time.monotonic()
        while True:
            ctl = await self.r.hgetall(CONTROL)
            self.paused = ctl.get(b"pause") == b"1"
            self.job_s = float(ctl.get(b"job_s", self.job_s))
            for a in json.loads(ctl.get(b"crash", b"[]")):
                if a in self.agents and a not in self.crashed:
                    self.crashed.add(a)  # dead: no beat, no goodbye; its job is dropped
            now = time.monotonic()
            for a in self.agents if self.churn or self.flap else ():  # churn (leaves, back in 10 s), flaps (2 TTLs)
                if a in self.crashed or a in self.busy or self.away_until.get(a, 0) > now:
                    continue
                roll = random.random() * 60 / max(now - last, 1e-3)
                if roll < self.churn:
                    self.away_until[a] = now + 10
                    await self.leave(keys=FLEET_KEYS, args=[a])
                elif roll < self.churn + self.flap:
                    self.away_until[a] = now + 2 * HEARTBEAT_TTL_S
            last = now
            await self.r.hset(STATS + str(self.proc), mapping=self.counts)
            await asyncio.sleep(0.5)

    def _ready(self, cap: str, most: int) -> list[str]:
        """Up to ``most`` idle agents offering ``cap``, taken off its line (the others stay in it)."""
        line, now, out, seen = self.idle[cap], time.monotonic(), [], 0
        while line and len(out) < most and seen < len(line):
            a = line.popleft()
            self.in_line[cap].discard(a)
            if a in self.busy or a in self.crashed:
                continue  # back in the line when its job ends (a crashed one never)
            if self.away_until.get(a, 0) > now:
                self._line_up(cap, a)
                seen += 1
                continue
            out.append(a)
        return out

    async def consume(self, cap: str) -> None:
        queue = queue_for(cap)
        while True:
            ready = [] if self.paused else self._ready(cap, 200)
            messages = (await self.r.rpop(queue, len(ready)) or []) if ready else []  # kombu pushes with LPUSH
            for raw, agent in zip(messages, ready):
                self.busy.add(agent)
                asyncio.ensure_future(self.job(agent, raw))
            for a in ready[len(messages):]:  # no message for these: first in line next time
                self._line_up(cap, a, first=True)
            if not messages:
                await asyncio.sleep(0.02)

    async def job(self, agent: str, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            spec = json.loads(body)[0][0]
            self.counts["taken"] += 1
            job_id, attempt = spec["job_id"], spec["attempt"]
            fence = await self.r.get(FENCE_PREFIX + job_id)
            if fence is not None and int(fence) != attempt:
                self.counts["fenced-off"] += 1
                return
            pipe = self.r.pipeline(transaction=False)
            pipe.incr(f"{STARTS_PREFIX}{job_id}.{attempt}")
            pipe.rpush(STARTED_KEY, json.dumps({"job_id": job_id, "attempt": attempt, "agent_id": agent}))
            await pipe.execute()
            await asyncio.sleep(self.job_s)
            if agent in self.crashed:
                self.counts["lost"] += 1
                return
            await self.r.rpush(RESULTS_KEY, json.dumps(self.outcome(agent, spec)))
            self.counts["sent"] += 1
        finally:
            self.busy.discard(agent)
            for c in self.caps[agent]:
                if c in self.idle:
                    self._line_up(c, agent)

    def _line_up(self, cap: str, agent: str, first: bool = False) -> None:
        if agent not in self.in_line[cap]:
            self.in_line[cap].add(agent)
            (self.idle[cap].appendleft if first else self.idle[cap].append)(agent)

    def outcome(self, agent: str, spec: dict) -> dict:
        inv = self.agents[agent]
        cap = next(c for c in inv.capabilities if c.name == spec["capability"])
        finished = utc_now()
        record = dict(self.template, job_id=spec["job_id"], attempt=spec["attempt"], model_id=spec["model_id"],
                      model_name=spec["model_name"], artifact_sha256=spec["artifact"]["sha256"], variant=spec["variant"],
                      runtime=cap.runtime, runtime_version=cap.runtime_version, capability=cap.name, device=cap.device,
                      device_name=cap.device_name, agent_id=agent, host=inv.host.to_dict(), settings=spec["settings"],
                      started_at=finished, finished_at=finished)  # fmt: skip
        return {"job_id": spec["job_id"], "attempt": spec["attempt"], "ok": True, "record": record, "agent_id": agent,
                "schema_version": record["schema_version"]}  # fmt: skip


def wire_template() -> dict:
    """The recorded record as an agent puts it on the wire (its samples as fbs1 text, agent/outbox.py)."""
    from protocol import JobOutcome, ResultRecord

    rec = ResultRecord.from_dict(json.loads((ROOT / "tests/data/golden_record_litert_cpu.json").read_text()))
    return json.loads(JobOutcome(job_id=rec.job_id, attempt=rec.attempt, ok=True, record=rec, agent_id=rec.agent_id)
                      .to_json(samples="text"))["record"]  # fmt: skip


def _sim_main(broker: str, proc: int, indices: list[int], run: str, job_s: float, churn: float, flap: float) -> None:
    asyncio.run(SimProcess(broker, proc, indices, run, job_s, churn, flap).run())


# ------------------------------------------------------------------ the controller and its broker


class Controller:
    """A private Redis, a PostgreSQL schema of its own, and a real `fleetbench serve` on them."""

    def __init__(self, work: Path, pg: str | None):
        from controller.embedded import RedisServer

        self.work = work
        self.redis_server = RedisServer(work / "redis", work / "redis.log").start()
        self.broker = self.redis_server.url
        self.schema = None
        if pg:
            import sqlalchemy

            self.schema = f"fleetsim_{uuid.uuid4().hex[:8]}"
            self.admin = sqlalchemy.create_engine(pg)
            with self.admin.begin() as c:
                c.execute(sqlalchemy.text(f"CREATE SCHEMA {self.schema}"))
            self.db = pg + ("&" if "?" in pg else "?") + "options=" + urllib.parse.quote(f"-csearch_path={self.schema}")
        else:
            self.db = f"sqlite:///{work / 'fleetsim.db'}"
        from protocol.proc import free_port, spawn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, FLEETBENCH_API_TOKENS=TOKEN, FLEETBENCH_AGENT_TOKENS=TOKEN + "-agent")

        # told to die with this process: a bench killed (a test's timeout) leaves no controller behind
        self.proc = spawn([sys.executable, "-m", "controller.cli", "serve", "--port", str(self.port), "--broker",
                           self.broker, "--db", self.db, "--data-dir", str(work / "data")], work / "serve.log", env=env)  # fmt: skip
        from controller.client import ApiClient

        self.api = ApiClient(self.url, TOKEN, timeout_s=120)
        deadline = time.monotonic() + 90
        while True:
            try:
                self.api.get("/api/v1/sweeps")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"fleetbench serve did not start; see {work / 'serve.log'}") from None
                time.sleep(0.3)
        import redis

        self.redis = redis.Redis.from_url(self.broker)

    def metrics(self) -> dict[str, float]:
        """The controller's Prometheus figures, by name with labels."""
        import urllib.request

        req = urllib.request.Request(self.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        out = {}
        for line in urllib.request.urlopen(req, timeout=60).read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def close(self) -> None:
        from protocol.proc import stop

        stop(self.proc, grace_s=30)
        self.redis_server.stop()
        if self.schema:
            import sqlalchemy

            with self.admin.begin() as c:
                c.execute(sqlalchemy.text(f"DROP SCHEMA {self.schema} CASCADE"))
            self.admin.dispose()


#: the simulator's processes: a wait ends as soon as one of them died
_PROCS: list[mp.Process] = []


def wait(what: str, check, timeout_s: float, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        dead = [p for p in _PROCS if not p.is_alive()]
        if dead:
            raise SystemExit(f"fleet_sim: a simulator process died (exit {dead[0].exitcode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"fleet_sim: timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def ticks(m: dict) -> tuple[float, float, dict[float, float]]:
    """The tick histogram: (sum, count, {bucket's upper bound: cumulative count})."""
    buckets = {float(k.split('le="')[1].split('"')[0]): v for k, v in m.items()
               if k.startswith("fleetbench_scheduler_tick_seconds_bucket{")}  # fmt: skip
    return m.get("fleetbench_scheduler_tick_seconds_sum", 0.0), m.get("fleetbench_scheduler_tick_seconds_count", 0.0), buckets


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The ``q`` quantile of what the histogram saw between two readings, interpolated in its bucket (as
    Prometheus' histogram_quantile does)."""
    bounds = sorted(b for b in after if b != float("inf"))
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if not total:
        return 0.0
    rank, low, seen = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank:
            return low + (bound - low) * (rank - seen) / max(cumulative - seen, 1e-9)
        low, seen = bound, cumulative
    return bounds[-1]


def sweep_spec(name: str, model_id: str, jobs: int) -> dict:
    """A sweep of ``jobs`` jobs (rounded up to a multiple of 4: 2 variants x 2 capabilities each)."""
    settings = {"threads": [1], "min_iterations": list(range(100, 100 + max(1, -(-jobs // 4))))}
    return {"name": name, "models": [{"id": model_id}], "variants": VARIANTS, "devices": DEVICES, "settings": settings,
            "max_attempts": 3}  # fmt: skip


def submit(ctl: Controller, spec: dict) -> str:
    return ctl.api.post("/api/v1/sweeps", json={"spec": spec, "confirm": True})["sweep_id"]


def counts(ctl: Controller, sweep_id: str) -> dict:
    """The sweep's job counts by state, from the sweeps list (GET /sweeps/<id> lists every job: at 10,000 jobs
    polling it would take the controller's time from the scheduler it measures)."""
    return next(s["counts"] for s in ctl.api.get("/api/v1/sweeps")["sweeps"] if s["sweep_id"] == sweep_id)


def point(n: int, args, model: Path, work: Path) -> dict:
    """Every phase at N agents; returns the figures."""
    ctl = Controller(work / f"n{n}", args.pg)
    procs = _PROCS
    procs.clear()
    out: dict = {"agents": n}
    try:
        model_id = ctl.api.upload("/api/v1/models", model, params={"filename": model.name})["model_id"]
        ctl.redis.hset(CONTROL, mapping={"pause": "1", "crash": "[]", "job_s": str(args.job_ms / 1e3)})
        base_mem = int(ctl.redis.info("memory")["used_memory"])
        run = uuid.uuid4().hex[:4]
        k = max(1, min(args.procs, n))
        for p in range(k):
            proc = mp.get_context("spawn").Process(target=_sim_main, daemon=True, args=(
                ctl.broker, p, list(range(p, n, k)), run, args.job_ms / 1e3, args.churn_per_min, args.flap_per_min))  # fmt: skip
            proc.start()
            procs.append(proc)
        # 1. join
        t0 = time.perf_counter()
        wait(f"{n} agents to join", lambda: ctl.redis.zcard(FLEET_BEATS) >= n, 120 + n / 50)
        online = wait("the controller to see them", lambda: _online(ctl) >= n and _online(ctl), 60)
        out["join s"] = time.perf_counter() - t0
        out["seen online"] = online
        out["Redis bytes/agent"] = (int(ctl.redis.info("memory")["used_memory"]) - base_mem) / n
        out["Redis clients (all)"] = len(ctl.redis.client_list())
        # 2. idle
        c0, s0 = _commands(ctl.redis), time.perf_counter()
        time.sleep(args.window_s)
        out["Redis commands/agent/min (idle)"] = (_commands(ctl.redis) - c0) / n / ((time.perf_counter() - s0) / 60)
        # 3. queued
        mem0 = int(ctl.redis.info("memory")["used_memory"])
        sweep_id = submit(ctl, sweep_spec(f"sim-{n}", model_id, args.jobs))
        jobs = sum(wait("the sweep's conversions", lambda: (c := counts(ctl, sweep_id)) and "converting" not in c and c, 600).values())
        out["jobs"] = jobs
        wait("every job to be queued", lambda: counts(ctl, sweep_id).get("queued", 0) == jobs, 300)
        out["Redis bytes/queued job"] = (int(ctl.redis.info("memory")["used_memory"]) - mem0) / jobs
        m0 = ticks(ctl.metrics())
        time.sleep(args.window_s)
        m1 = ticks(ctl.metrics())
        out["ticks in window"] = m1[1] - m0[1]
        out["tick ms (all queued)"] = 1e3 * (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)  # the mean
        out["tick ms p50"] = 1e3 * quantile(0.5, m0[2], m1[2])
        out["tick ms p90"] = 1e3 * quantile(0.9, m0[2], m1[2])
        # 4. drain
        stored0 = ctl.metrics().get("fleetbench_records_stored", 0)
        cpu = CpuMeter(ctl.proc.pid, [p.pid for p in procs])
        ctl.redis.hset(CONTROL, "pause", "0")
        t0 = time.perf_counter()
        wait("every job to be done", lambda: counts(ctl, sweep_id).get("done", 0) == jobs, 600, 0.25)
        out["drain s"] = time.perf_counter() - t0
        out.update(cpu.read(jobs))
        out["jobs/s (dispatched and stored)"] = jobs / out["drain s"]
        stored = ctl.metrics().get("fleetbench_records_stored", 0) - stored0
        out["records stored"] = int(stored)
        out["stored once"] = stored == jobs and counts(ctl, sweep_id) == {"done": jobs}
        # 5. crash
        out.update(crash(ctl, model_id, n, args, procs))
        out["sim counters"] = _sim_counts(ctl.redis, k)
        out["serve ok"] = ctl.proc.poll() is None
    finally:
        for p in procs:
            p.kill()
        ctl.close()
    out["serve tracebacks"] = (ctl.work / "serve.log").read_text().count("Traceback")
    return out


class CpuMeter:
    """CPU time the controller (`fleetbench serve`) and the simulator spent, and how busy the machine was."""

    def __init__(self, serve_pid: int, sim_pids: list[int]):
        import psutil

        self.serve = psutil.Process(serve_pid)
        self.sims = [psutil.Process(p) for p in sim_pids]
        self.t0, self.machine0 = time.perf_counter(), psutil.cpu_times()
        self.serve0, self.sims0 = self._spent([self.serve]), self._spent(self.sims)

    @staticmethod
    def _spent(procs) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in procs)

    def read(self, jobs: int) -> dict:
        import psutil

        wall = time.perf_counter() - self.t0
        m1 = psutil.cpu_times()
        busy = sum(getattr(m1, f) - getattr(self.machine0, f) for f in ("user", "system", "nice", "irq", "softirq"))
        total = busy + (m1.idle - self.machine0.idle) + (m1.iowait - self.machine0.iowait)
        serve = self._spent([self.serve]) - self.serve0
        return {"controller CPU ms/job": 1e3 * serve / jobs, "jobs/s per controller core": jobs / serve if serve else 0.0,
                "machine CPU busy %": 100 * busy / total if total else 0.0,
                "simulator CPU % of the machine": 100 * (self._spent(self.sims) - self.sims0) / (wall * psutil.cpu_count())}  # fmt: skip


def crash(ctl: Controller, model_id: str, n: int, args, procs) -> dict:
    """One long job per agent; then ``crash_pct`` of the busy agents die at once: seconds until each of
    their jobs was sent again (its fence at attempt 2)."""
    ctl.redis.hset(CONTROL, mapping={"pause": "1", "job_s": "3600"})  # long jobs from now on
    sweep_id = submit(ctl, sweep_spec(f"sim-crash-{n}", model_id, n))
    jobs = sum(wait("the crash sweep", lambda: (c := counts(ctl, sweep_id)) and "converting" not in c and c, 300).values())
    # sent (the agents read the pause within 0.5 s, so a few may have taken a job already: they run it long)
    wait("the crash sweep to be sent", lambda: (c := counts(ctl, sweep_id)).get("queued", 0) + c.get("running", 0) == jobs, 300)
    ctl.redis.hset(CONTROL, "pause", "0")
    enough = max(1, min(jobs, n) // 2)  # the MYRIAD lane holds a quarter of the jobs and a tenth of the agents
    running = wait("the long jobs to run", lambda: (c := counts(ctl, sweep_id)).get("running", 0) >= enough and c, 300)
    busy = _running_jobs(ctl, sweep_id)
    k = max(1, round(n * args.crash_pct / 100))
    victims = random.Random(0).sample(sorted(busy), min(k, len(busy)))
    t0 = time.perf_counter()
    ctl.redis.hset(CONTROL, "crash", json.dumps([busy[j] for j in victims]))
    wait("every lost job to be sent again", lambda: all(int(ctl.redis.get(FENCE_PREFIX + j) or 0) >= 2 for j in victims),
         10 * HEARTBEAT_TTL_S, 0.1)  # fmt: skip
    detect = time.perf_counter() - t0
    ctl.api.post(f"/api/v1/sweeps/{sweep_id}/cancel", json={})
    return {"crashed": len(victims), "running when crashed": running.get("running", 0),
            "detect and resend s": detect, "detect ÷ TTL": detect / HEARTBEAT_TTL_S}  # fmt: skip


def agent_connections(work: Path, model: Path) -> dict:
    """Redis connections one real agent (``python -m agent``, and every process it started) holds: idle, and
    after running a real job. Counted from the operating system's sockets (psutil), not guessed."""
    import psutil
    import redis

    from controller.artifacts import ArtifactStore
    from controller.dispatch import Dispatcher
    from controller.embedded import LocalAgent, RedisServer
    from protocol import BenchmarkSettings, JobSpec, new_job_id
    from tests.helpers import wait_outcome

    server = RedisServer(work / "conn-redis", work / "conn-redis.log").start()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    d = Dispatcher(server.url)
    agent = LocalAgent(server.url, "conn-agent", work / "conn-agent.log", ("litert:cpu",), file_roots=(work,))

    def held() -> int:
        root = psutil.Process(agent.proc.pid)
        return sum(1 for p in [root, *root.children(recursive=True)] for c in p.net_connections("tcp")
                   if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)  # fmt: skip

    try:
        agent.start().wait_ready(lambda: "conn-agent" in {a.agent_id for a in d.live_agents()}, timeout_s=120)
        time.sleep(2 * HEARTBEAT_S)
        idle = held()
        probe = redis.Redis.from_url(server.url)
        before, t0 = probe.info("commandstats"), time.perf_counter()
        time.sleep(6 * HEARTBEAT_S)  # nobody but the agent talks to this Redis meanwhile
        after, minutes = probe.info("commandstats"), (time.perf_counter() - t0) / 60
        calls = {k.removeprefix("cmdstat_"): v["calls"] - before.get(k, {"calls": 0})["calls"] for k, v in after.items()}
        calls.pop("info", None)
        per_min = {k: round(v / minutes, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v}
        art = ArtifactStore(work / "conn-artifacts").put_file(model)
        spec = JobSpec(job_id=new_job_id(), model_id="tiny", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                       artifact=art, settings=BenchmarkSettings(min_iterations=50, min_duration_s=0.0, warmup_iterations=2))  # fmt: skip
        assert wait_outcome(d, d.submit(spec), spec, check=agent.check_alive).ok
        time.sleep(HEARTBEAT_S)
        busy = held()
    finally:
        agent.stop()
        d.close()
        server.stop()
    return {"Redis connections per agent, idle": idle, "Redis connections per agent, after a job": busy,
            "Redis commands per idle agent per minute": round(sum(per_min.values()), 1),
            "of which (per minute)": per_min}  # fmt: skip


def _running_jobs(ctl: Controller, sweep_id: str) -> dict[str, str]:
    jobs = ctl.api.get("/api/v1/jobs", params={"sweep": sweep_id, "state": "running"})["jobs"]
    return {j["job_id"]: j["agent_id"] for j in jobs if j.get("agent_id")}


def _online(ctl: Controller) -> int:
    """Live agents as the controller counts them: each offers litert:cpu or openvino:MYRIAD, never both (MIXES)."""
    m = ctl.metrics()
    return int(m.get('fleetbench_agents_online{capability="litert:cpu"}', 0)
               + m.get('fleetbench_agents_online{capability="openvino:MYRIAD"}', 0))  # fmt: skip


def _commands(r) -> int:
    return int(r.info("stats")["total_commands_processed"])


def _sim_counts(r, k: int) -> dict:
    total: dict[str, int] = {}
    for p in range(k):
        for key, v in r.hgetall(STATS + str(p)).items():
            total[key.decode()] = total.get(key.decode(), 0) + int(v)
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", default="10,100,1000,10000", help="fleet sizes, comma-separated")
    p.add_argument("--jobs", type=int, default=10_000, help="tiny jobs per sweep (the queued and drain phases)")
    p.add_argument("--procs", type=int, default=2, help="processes the agents are spread over")
    p.add_argument("--job-ms", type=float, default=5.0, help="how long a simulated job takes")
    p.add_argument("--crash-pct", type=float, default=1.0, help="percent of busy agents that crash in phase 5")
    p.add_argument("--churn-per-min", type=float, default=0.0, help="fraction of agents leaving (back in 10 s) per minute")
    p.add_argument("--flap-per-min", type=float, default=0.0, help="fraction of agents going silent for 2 TTLs per minute")
    p.add_argument("--window-s", type=float, default=20.0, help="length of the idle and queued measuring windows")
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", help="PostgreSQL ('' for SQLite)")
    p.add_argument("--model", type=Path, help="a .tflite to sweep (default: a tiny one made with TensorFlow)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--connections", action="store_true", help="first count the Redis connections of one real agent")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fleetsim-"))
    model = args.model
    if model is None:
        from bench.fleet import tiny_tflite

        model = tiny_tflite(work / "tiny.tflite")
    rows = []
    if args.connections:
        conns = agent_connections(work, model)
        print(json.dumps(conns), flush=True)
    for n in [int(x) for x in args.agents.split(",") if x.strip()]:
        row = point(n, args, model, work)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    if args.connections:
        print("\n" + ", ".join(f"{k}: {v}" for k, v in conns.items()))
    return 0 if all(r["stored once"] and r["serve ok"] and not r["serve tracebacks"] for r in rows) else 1


def table(rows: list[dict]) -> str:
    cols = ["agents", "jobs", "tick ms (all queued)", "tick ms p50", "tick ms p90", "jobs/s (dispatched and stored)",
            "jobs/s per controller core",
            "machine CPU busy %", "Redis bytes/agent", "Redis commands/agent/min (idle)", "crashed",
            "detect and resend s", "stored once"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:,.1f}" if isinstance(r[c], float) else f"{r[c]:,}" if isinstance(r[c], int)
                                       and not isinstance(r[c], bool) else str(r[c]) for c in cols) + " |")  # fmt: skip
    if len(rows) > 1 and rows[0]["tick ms (all queued)"] > 0 and rows[0]["tick ms p50"] > 0:
        lines.append(f"\ntick at {rows[-1]['agents']:,} ÷ at {rows[0]['agents']:,} agents: "
                     f"{rows[-1]['tick ms (all queued)'] / rows[0]['tick ms (all queued)']:.2f} (means), "
                     f"{rows[-1]['tick ms p50'] / rows[0]['tick ms p50']:.2f} (medians)")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
