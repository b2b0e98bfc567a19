"""The dashboard's queries: read-only, aggregated in SQL, each returning a DataFrame.

Nothing here imports Streamlit, so every query is tested on SQLite and
PostgreSQL on its own (tests/test_dashboard_data.py) and timed by
bench/dashboard.py. Grouping happens in the database on plain columns of
``results`` (migration 0005 copied what the dashboard groups on out of the
JSON record); the JSON record is read only for the raw latency samples of a
bounded number of records.
"""

# size: every query the pages run, aggregated in SQL; they share the filters and the read-only engines

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Float, case, cast, create_engine, false, func, inspect, literal, or_, select, true
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from controller.config import FLEET_RECORD_S
from controller.jobs import FINAL_STATES, JobState
from controller.store.models import AgentRow, BaselineRow, ChangePointRow, JobRow, ModelRow, Result, SweepRow, VariantRow
from protocol import HEARTBEAT_S, HEARTBEAT_TTL_S, Profile
from protocol.profiling import int8_share
from protocol.samples import decode

#: An agent counts as online when the controller recorded it this recently: `fleetbench serve` records the live
#: agents every FLEET_RECORD_S, and an agent is live until its heartbeat key expires (HEARTBEAT_TTL_S), plus
#: a heartbeat's interval of slack for the recording thread's own turn.
ONLINE_WINDOW_S = FLEET_RECORD_S + HEARTBEAT_TTL_S + HEARTBEAT_S
#: Per-record points up to this many; beyond it History averages per day, in SQL.
HISTORY_POINTS = 2000
#: The CSV download holds at most this many records (the newest).
SELECTION_ROWS = 10_000
#: Raw samples are read for at most this many records (the newest of each group).
SAMPLE_RECORDS = 40

#: History and Compare metrics: column, label with unit, and whether a larger value is worse.
METRICS: dict[str, tuple[str, bool]] = {
    "p50_ms": ("p50 latency (ms)", True),
    "p90_ms": ("p90 latency (ms)", True),
    "p99_ms": ("p99 latency (ms)", True),
    "throughput_ips": ("throughput (inferences/s)", False),
    "accuracy_top1": ("top-1 accuracy (%)", False),
    "fidelity_top1": ("fidelity: top-1 agreement with fp32 (%)", False),
    "fidelity_snr_db": ("fidelity: worst-output SNR vs fp32 (dB)", False),
    "fidelity_cosine": ("fidelity: worst-output mean cosine vs fp32", False),
    "peak_rss_bytes": ("peak memory (MiB)", True),
}
#: Shown as percentages / MiB rather than fractions / bytes.
PERCENT = {"accuracy_top1", "fidelity_top1"}
MEGABYTES = {"peak_rss_bytes", "model_size_bytes"}

#: One History series: a setting change (threads) starts a new series, not a regression.
SERIES = ("model_name", "variant", "capability", "device_name", "threads")
GROUP_COLUMNS = ("model_name", "variant", "runtime", "capability", "device_name", "hostname")


class DashboardError(RuntimeError):
    """The database cannot be read; the message says what to do."""


# ---------------------------------------------------------------- connection


def readonly_engine(url: str) -> Engine:
    """An engine that cannot write: SQLite opened with ``mode=ro``, PostgreSQL in read-only transactions."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        path = u.database or ""
        if not path or path == ":memory:" or path.startswith("file:"):
            raise DashboardError(f"the dashboard needs a SQLite file, not {url!r}")
        if not Path(path).is_file():
            raise DashboardError(f"no database at {path}: run `fleetbench demo` first (or pass --db URL)")
        return create_engine(f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true")
    if u.get_backend_name() == "postgresql":
        options = " ".join(filter(None, ["-c default_transaction_read_only=on", u.query.get("options")]))
        u = u.update_query_dict({"options": options})
        return create_engine(u, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    raise DashboardError(f"unsupported database {u.get_backend_name()!r}: use sqlite:///PATH or postgresql://...")


def _frame(engine: Engine, stmt) -> pd.DataFrame:
    try:
        with engine.connect() as conn:
            result = conn.execute(stmt)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except (OperationalError, ProgrammingError) as exc:
        raise DashboardError(_db_error(engine, exc)) from None


def _db_error(engine: Engine, exc: Exception) -> str:
    text = " ".join(str(getattr(exc, "orig", exc)).split())
    where = engine.url.render_as_string(hide_password=True)
    if "no such table" in text or "does not exist" in text and "relation" in text:
        return f"{where} has no fleetbench tables yet: run `fleetbench demo` first"
    return f"cannot read {where}: {text}. Check that the database is up and the URL is right"


def _avg(column):
    """A mean as a float on every database (PostgreSQL's AVG of an integer column is NUMERIC)."""
    return cast(func.avg(column), Float)


def _utc(series: pd.Series) -> pd.Series:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    s = pd.to_datetime(series)
    return s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")


# ---------------------------------------------------------------- overview


def counts(engine: Engine) -> dict[str, int]:
    """Current records, agents and sweeps; all 0 for a database the demo never wrote to."""
    try:
        names = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise DashboardError(_db_error(engine, exc)) from None
    if not {"results", "agents", "sweeps"} <= names:
        return {"results": 0, "agents": 0, "sweeps": 0}
    stmt = select(
        select(func.count()).select_from(Result).where(Result.superseded == false()).scalar_subquery(),
        select(func.count()).select_from(AgentRow).scalar_subquery(),
        select(func.count()).select_from(SweepRow).scalar_subquery(),
    )
    row = _frame(engine, stmt).iloc[0]
    return {"results": int(row.iloc[0]), "agents": int(row.iloc[1]), "sweeps": int(row.iloc[2])}


# ---------------------------------------------------------------- fleet
# Built for 10,000 agents: counts, the per-capability summary and the agent list's search and paging run in SQL; only
# one page of inventories (PAGE_SIZE) is read as JSON for the page. fleet() reads every inventory, flattened with
# numpy rather than row by row.

#: Agents per page of the Fleet page's list.
PAGE_SIZE = 50
#: The device classes of docs/design (the Fleet page's summary), in their order; a capability of none is "other".
DEVICE_CLASSES = ("CPU", "GPU", "NCS2", "FPGA", "NPU", "other")
FLEET_COLUMNS = ["agent", "host", "machine", "status", "last heartbeat", "capability", "device", "runtime version",
                 "precisions", "jobs running"]  # fmt: skip
AGENT_COLUMNS = ["agent", "host", "machine", "capabilities", "status", "last heartbeat", "jobs running"]
SUMMARY_COLUMNS = ["device class", "capability", "online", "offline", "total"]
STATUSES = ("all", "online", "offline")


def device_class(capability: str) -> str:
    """The device class of a capability (``openvino:MYRIAD`` -> NCS2), by its device part; ``@machine`` ignored.

    CPU: ``litert:cpu``, ``openvino:CPU``; GPU: ``litert:gpu``, ``tflite:gpu``, ``openvino:GPU`` (and ``GPU.1``);
    NCS2: ``openvino:MYRIAD``; FPGA: anything naming an FPGA (``openvino:HETERO:FPGA,CPU``, a TFLite external
    delegate ``tflite:fpga``); NPU: ``openvino:NPU``, ``litert:npu``; anything else: "other".
    """
    name = str(capability).partition("@")[0]
    device = name.partition(":")[2].upper()
    if "FPGA" in device:
        return "FPGA"
    head = device.partition(".")[0]  # OpenVINO numbers devices of a kind: GPU.0, GPU.1
    return {"CPU": "CPU", "GPU": "GPU", "MYRIAD": "NCS2", "NPU": "NPU"}.get(head, "other")


def _cutoff(now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """(now, the oldest heartbeat that still counts as online)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now, now - dt.timedelta(seconds=ONLINE_WINDOW_S)


def _running_per_agent():
    return (select(func.count()).where(JobRow.agent_id == AgentRow.agent_id, JobRow.state == JobState.RUNNING.value)
            .correlate(AgentRow).scalar_subquery())  # fmt: skip


def _agent_frame(agents: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """Per agent (rows of agent_id, hostname, inventory, last_heartbeat, running): its machine and status."""
    beat = _utc(agents["last_heartbeat"])
    hosts = [inv.get("host") or {} for inv in agents["inventory"]]
    machine = pd.Series([h.get("machine") or "-" for h in hosts], index=agents.index, dtype=object)
    emulated = np.fromiter((bool(h.get("emulated_by")) for h in hosts), bool, len(hosts))
    online = (pd.Timestamp(now) - beat) <= pd.Timedelta(seconds=ONLINE_WINDOW_S)
    return pd.DataFrame({
        "agent": agents["agent_id"], "host": agents["hostname"],
        "machine": machine.where(~emulated, machine + " (emulated)"),
        "status": np.where(online, "online", "offline since " + beat.dt.strftime("%Y-%m-%d %H:%M") + " UTC"),
        "last heartbeat": beat, "jobs running": agents["running"].fillna(0).astype(int),
    })  # fmt: skip


def fleet(engine: Engine, now: dt.datetime | None = None) -> pd.DataFrame:
    """One row per agent × capability: device, precisions, status, last heartbeat, jobs running now."""
    now, _ = _cutoff(now)
    agents = _frame(engine, select(AgentRow.agent_id, AgentRow.hostname, AgentRow.inventory, AgentRow.last_heartbeat,
                                   _running_per_agent().label("running")).order_by(AgentRow.agent_id))  # fmt: skip
    if agents.empty:
        return pd.DataFrame(columns=FLEET_COLUMNS)
    per_agent = _agent_frame(agents, now)
    caps = [inv.get("capabilities") or [{}] for inv in agents["inventory"]]
    flat = [c for cs in caps for c in cs]
    rows = per_agent.iloc[np.repeat(np.arange(len(caps)), [len(cs) for cs in caps])].reset_index(drop=True)
    return rows.assign(
        capability=[c.get("name", "-") for c in flat], device=[c.get("device_name", "-") for c in flat],
        **{"runtime version": [c.get("runtime_version", "-") for c in flat],
           "precisions": [", ".join(c.get("precisions") or ()) for c in flat]},
    )[FLEET_COLUMNS]  # fmt: skip


def fleet_counts(engine: Engine, now: dt.datetime | None = None) -> dict[str, int]:
    """Agents, online, offline (by the last heartbeat) and jobs running now, counted in SQL."""
    _, cutoff = _cutoff(now)
    stmt = select(
        select(func.count()).select_from(AgentRow).scalar_subquery(),
        select(func.count()).select_from(AgentRow).where(AgentRow.last_heartbeat >= cutoff).scalar_subquery(),
        select(func.count()).select_from(JobRow).where(JobRow.state == JobState.RUNNING.value).scalar_subquery(),
    )
    agents, online, running = (int(v) for v in _frame(engine, stmt).iloc[0])
    return {"agents": agents, "online": online, "offline": agents - online, "jobs running": running}


def _capabilities_of_agents(engine: Engine):
    """(last_heartbeat, capability): one row per capability of each agent, the inventories' JSON unnested in SQL."""
    if engine.dialect.name == "postgresql":
        caps = func.jsonb_array_elements(AgentRow.inventory["capabilities"]).table_valued("value").lateral("cap")
        name = caps.c.value.op("->>")("name")
    else:
        caps = func.json_each(AgentRow.inventory, "$.capabilities").table_valued("value").alias("cap")
        name = func.json_extract(caps.c.value, "$.name")
    return select(AgentRow.last_heartbeat, name.label("capability")).select_from(AgentRow).join(caps, true())


def fleet_summary(engine: Engine, now: dt.datetime | None = None) -> pd.DataFrame:
    """Agents online and offline per device class and capability (counted in SQL), classes in DEVICE_CLASSES' order."""
    _, cutoff = _cutoff(now)
    each = _capabilities_of_agents(engine).subquery()
    stmt = (select(each.c.capability, func.sum(case((each.c.last_heartbeat >= cutoff, 1), else_=0)).label("online"),
                   func.count().label("total")).group_by(each.c.capability))  # fmt: skip
    df = _frame(engine, stmt).dropna(subset=["capability"])
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    df[["online", "total"]] = df[["online", "total"]].astype(int)
    df["offline"] = df["total"] - df["online"]
    names = df["capability"].unique()
    df["device class"] = pd.Categorical(df["capability"].map(dict(zip(names, map(device_class, names)))),
                                        categories=DEVICE_CLASSES, ordered=True)  # fmt: skip
    df = df.sort_values(["device class", "capability"]).reset_index(drop=True)
    df["device class"] = df["device class"].astype(str)
    return df[SUMMARY_COLUMNS]


def fleet_agents(engine: Engine, search: str = "", status: str = "all", page: int = 1, page_size: int = PAGE_SIZE,
                 now: dt.datetime | None = None) -> tuple[pd.DataFrame, int]:  # fmt: skip
    """One page of agents (by agent id), those whose id or host contains ``search`` (any case) and whose status is
    ``status`` (all, online, offline), searched and paged in SQL: (the page, how many agents match in all)."""
    if status not in STATUSES:
        raise ValueError(f"status is one of {STATUSES}, not {status!r}")
    now, cutoff = _cutoff(now)
    where = []
    if search.strip():
        text = search.strip().lower()
        where.append(or_(func.lower(AgentRow.agent_id).contains(text, autoescape=True),
                         func.lower(AgentRow.hostname).contains(text, autoescape=True)))  # fmt: skip
    if status != "all":
        where.append(AgentRow.last_heartbeat >= cutoff if status == "online" else AgentRow.last_heartbeat < cutoff)
    total = int(_frame(engine, select(func.count()).select_from(AgentRow).where(*where)).iloc[0, 0])
    stmt = (select(AgentRow.agent_id, AgentRow.hostname, AgentRow.inventory, AgentRow.last_heartbeat,
                   _running_per_agent().label("running"))
            .where(*where).order_by(AgentRow.agent_id).limit(page_size).offset(max(page - 1, 0) * page_size))  # fmt: skip
    agents = _frame(engine, stmt)
    if agents.empty:
        return pd.DataFrame(columns=AGENT_COLUMNS), total
    rows = _agent_frame(agents, now)
    rows["capabilities"] = [", ".join(c.get("name", "-") for c in inv.get("capabilities") or ()) or "-"
                            for inv in agents["inventory"]]  # fmt: skip
    return rows[AGENT_COLUMNS], total


def page_caption(page: int, shown: int, total: int, page_size: int = PAGE_SIZE) -> str:
    """The caption over a page of agents: "agents 51–100 of 10,000" for the second page of 50."""
    if not total:
        return "no agent matches"
    first = (page - 1) * page_size + 1
    return f"agents {first:,}–{first + shown - 1:,} of {total:,}"


def running_jobs(engine: Engine) -> pd.DataFrame:
    stmt = (
        select(JobRow.agent_id.label("agent"), JobRow.model_name.label("model"), JobRow.variant,
               JobRow.capability, JobRow.attempt, JobRow.updated_at.label("since"), JobRow.sweep_id.label("sweep"))
        .where(JobRow.state == JobState.RUNNING.value).order_by(JobRow.updated_at)
    )  # fmt: skip
    return _frame(engine, stmt)


# ---------------------------------------------------------------- sweeps

#: Sweep progress columns, in the order of a job's life.
STATE_ORDER = tuple(s.value for s in (JobState.DONE, JobState.RUNNING, JobState.QUEUED, JobState.PENDING,
                                     JobState.CONVERTING, JobState.WAITING, JobState.FAILED, JobState.DEAD_LETTER,
                                     JobState.EXPIRED, JobState.SUPERSEDED, JobState.CANCELLED))  # fmt: skip
FINISHED = [s.value for s in FINAL_STATES]


def sweeps(engine: Engine, limit: int = 50) -> pd.DataFrame:
    """The newest sweeps with their job counts per state (counted in SQL)."""
    recent = select(SweepRow).order_by(SweepRow.created_at.desc()).limit(limit).subquery()
    stmt = (
        select(recent.c.sweep_id, recent.c.name, recent.c.state, recent.c.created_at, recent.c.finished_at,
               JobRow.state.label("job_state"), func.count(JobRow.job_id).label("n"))
        .select_from(recent.outerjoin(JobRow, JobRow.sweep_id == recent.c.sweep_id))
        .group_by(recent.c.sweep_id, recent.c.name, recent.c.state, recent.c.created_at, recent.c.finished_at,
                  JobRow.state)
    )  # fmt: skip
    df = _frame(engine, stmt)
    base = ["sweep_id", "name", "state", "created_at", "finished_at"]
    if df.empty:
        return pd.DataFrame(columns=base + ["total", "finished", *STATE_ORDER])
    counts = df.dropna(subset=["job_state"]).pivot_table(index="sweep_id", columns="job_state", values="n",
                                                         aggfunc="sum", fill_value=0)  # fmt: skip
    counts = counts.reindex(columns=list(STATE_ORDER), fill_value=0)
    wide = df[base].drop_duplicates("sweep_id").merge(counts, left_on="sweep_id", right_index=True, how="left")
    wide[list(STATE_ORDER)] = wide[list(STATE_ORDER)].fillna(0).astype(int)
    wide["total"] = wide[list(STATE_ORDER)].sum(axis=1)
    wide["finished"] = wide[FINISHED].sum(axis=1)
    wide["created_at"] = _utc(wide["created_at"])
    return wide.sort_values("created_at", ascending=False).reset_index(drop=True)


def sweep_jobs(engine: Engine, sweep_id: str, states: tuple[str, ...] = ()) -> pd.DataFrame:
    stmt = (
        select(JobRow.model_name.label("model"), JobRow.variant, JobRow.capability, JobRow.state, JobRow.reason,
               JobRow.attempt, JobRow.agent_id.label("agent"), JobRow.updated_at)
        .where(JobRow.sweep_id == sweep_id).order_by(JobRow.state, JobRow.model_name, JobRow.variant)
    )  # fmt: skip
    if states:
        stmt = stmt.where(JobRow.state.in_(states))
    return _frame(engine, stmt)


# ---------------------------------------------------------------- explorer


@dataclasses.dataclass(frozen=True)
class Filters:
    """What Explorer, History and Compare select; an empty tuple means any."""

    models: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    threads: tuple[int, ...] = ()
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive
    sweep_id: str | None = None
    #: keep records of emulated agents (qemu-user: their timings are not a device's); left out by default
    emulated: bool = False

    def where(self, stmt):
        stmt = stmt.where(Result.superseded == false())
        if not self.emulated:
            stmt = stmt.where(Result.emulated == false())
        for column, values in (
            (Result.model_name, self.models), (Result.variant, self.variants), (Result.runtime, self.runtimes),
            (Result.capability, self.capabilities), (Result.device_name, self.devices), (Result.hostname, self.hosts),
        ):  # fmt: skip
            if values:
                stmt = stmt.where(column.in_(values))
        if self.threads:
            stmt = stmt.where(Result.threads.in_(self.threads))
        if self.since:
            stmt = stmt.where(Result.finished_at >= _day_start(self.since))
        if self.until:
            stmt = stmt.where(Result.finished_at < _day_start(self.until + dt.timedelta(days=1)))
        if self.sweep_id:
            stmt = stmt.where(Result.sweep_id == self.sweep_id)
        return stmt


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def filter_options(engine: Engine) -> pd.DataFrame:
    """Every stored combination of the filter columns (and threads, and emulation), with its record count and time span."""
    cols = [getattr(Result, c) for c in GROUP_COLUMNS] + [Result.threads, Result.emulated]
    stmt = (
        select(*cols, func.count().label("records"), func.min(Result.finished_at).label("first"),
               func.max(Result.finished_at).label("last"))
        .where(Result.superseded == false()).group_by(*cols)
    )  # fmt: skip
    df = _frame(engine, stmt)
    if not df.empty:
        df["first"], df["last"] = _utc(df["first"]), _utc(df["last"])
    return df


def explorer_groups(engine: Engine, f: Filters) -> pd.DataFrame:
    """One row per model × variant × capability × device × host × threads × requests: means over its runs."""
    keys = [getattr(Result, c) for c in GROUP_COLUMNS] + [Result.threads, Result.throughput_requests]
    stmt = f.where(
        select(
            *keys,
            func.count().label("runs"),
            _avg(Result.p50_ms).label("p50_ms"),
            func.min(Result.p50_ms).label("best_p50_ms"),
            _avg(Result.p90_ms).label("p90_ms"),
            _avg(Result.p99_ms).label("p99_ms"),
            _avg(Result.throughput_ips).label("throughput_ips"),
            _avg(Result.accuracy_top1).label("accuracy_top1"),
            _avg(Result.fidelity_top1).label("fidelity_top1"),
            func.min(Result.fidelity_snr_db).label("fidelity_snr_db"),
            func.min(Result.fidelity_cosine).label("fidelity_cosine"),
            func.max(Result.precision).label("precision"),
            _avg(Result.model_size_bytes).label("model_size_bytes"),
            func.max(Result.peak_rss_bytes).label("peak_rss_bytes"),
            _avg(Result.energy_mj).label("energy_mj"),
            _avg(Result.energy_w).label("energy_w"),
            func.sum(case((Result.valid, 0), else_=1)).label("invalid_runs"),
            func.sum(case((Result.disturbed, 1), else_=0)).label("disturbed_runs"),
            func.sum(case((Result.throttled, 1), else_=0)).label("throttled_runs"),
            func.max(Result.finished_at).label("last_run"),
        ).group_by(*keys)
    )
    df = _frame(engine, stmt)
    if not df.empty:
        df["last_run"] = _utc(df["last_run"])
    return df


def quantization(engine: Engine, f: Filters) -> pd.DataFrame:
    """The selected models' variants whose conversion found something out (issue 18): layers kept in float,
    QAT, integer checks, the per-layer report; beside each, the mean accuracy and worst fidelity of the records
    that ran that very file (joined on its sha256, so two stored variants of one name never pool their records).
    One row per stored variant, newest first; ``details`` is the dict."""
    columns = ["model_name", "variant", "details", "accuracy_top1", "fidelity_snr_db", "runs"]
    measured = f.where(
        select(Result.model_id, Result.artifact_sha256, _avg(Result.accuracy_top1).label("accuracy_top1"),
               func.min(Result.fidelity_snr_db).label("fidelity_snr_db"), func.count().label("runs"))
        .group_by(Result.model_id, Result.artifact_sha256)
    )  # fmt: skip
    m = _frame(engine, measured)
    if m.empty:
        return pd.DataFrame(columns=columns)
    stmt = (
        select(ModelRow.name.label("model_name"), VariantRow.model_id, VariantRow.variant, VariantRow.artifact,
               VariantRow.details, VariantRow.created_at)
        .join(ModelRow, ModelRow.model_id == VariantRow.model_id)
        .where(VariantRow.details.is_not(None), VariantRow.model_id.in_(m["model_id"].unique().tolist()))
        .order_by(VariantRow.created_at.desc())
    )  # fmt: skip
    v = _frame(engine, stmt)
    if v.empty:
        return pd.DataFrame(columns=columns)
    loads = lambda d: d if isinstance(d, dict) else json.loads(d)  # noqa: E731 - JSON columns come back as text on SQLite
    v["details"] = [loads(d) for d in v["details"]]
    v["artifact_sha256"] = [loads(a)["sha256"] for a in v["artifact"]]
    v = v[[bool(d) for d in v["details"]]]
    out = v.merge(m.drop(columns=["model_id"]), on="artifact_sha256", how="left")
    out["runs"] = out["runs"].astype("Int64")  # a variant never benchmarked has no runs, not NaN of them
    return out[columns].reset_index(drop=True)


def layer_errors(details: dict) -> pd.DataFrame:
    """A variant's per-layer report (``fleetbench quant-report``, or a mixed variant's ranking), worst first."""
    rows = details.get("layer_errors") or []
    return pd.DataFrame([{"layer": r["layer"], "op": r["op"], "error": r["error"], "metric": r["metric"]} for r in rows],
                        columns=["layer", "op", "error", "metric"])  # fmt: skip


def selection_rows(engine: Engine, f: Filters, limit: int = SELECTION_ROWS) -> pd.DataFrame:
    """The selected records themselves (newest first, at most ``limit``), for the CSV download."""
    cols = [Result.finished_at, Result.model_name, Result.variant, Result.runtime, Result.runtime_version,
            Result.capability, Result.device_name, Result.hostname, Result.agent_id, Result.threads,
            Result.throughput_requests, Result.p50_ms, Result.p90_ms, Result.p99_ms, Result.mean_ms,
            Result.throughput_ips, Result.accuracy_top1, Result.fidelity_top1, Result.fidelity_snr_db,
            Result.fidelity_cosine, Result.precision, Result.from_source, Result.model_size_bytes, Result.peak_rss_bytes, Result.sample_count, Result.valid, Result.sweep_id, Result.job_id]  # fmt: skip
    stmt = f.where(select(*cols)).order_by(Result.finished_at.desc(), Result.id.desc()).limit(limit)
    return _frame(engine, stmt)


def latency_boxes(engine: Engine, f: Filters, limit: int = SAMPLE_RECORDS) -> pd.DataFrame:
    """Box statistics (ms) from the raw samples of the newest record of each variant × capability × device.

    Only ``limit`` records are read (their samples column, FBS1); the quartiles are computed with numpy.
    """
    newest = f.where(
        select(func.max(Result.id).label("id")).group_by(Result.model_name, Result.variant, Result.capability,
                                                          Result.device_name, Result.hostname)
    ).subquery()  # fmt: skip
    stmt = (
        select(Result.model_name, Result.variant, Result.capability, Result.device_name, Result.hostname,
               Result.samples)
        .where(Result.id.in_(select(newest.c.id))).order_by(Result.id.desc()).limit(limit)
    )  # fmt: skip
    df = _frame(engine, stmt)
    out = []
    for row in df.itertuples(index=False):  # at most `limit` records
        if row.samples is None:  # a row no store wrote (every stored record has its samples)
            continue
        ms = decode(bytes(row.samples)).astype(np.float64) / 1e6
        if ms.size == 0:
            continue
        q1, med, q3 = np.percentile(ms, [25, 50, 75])
        iqr = q3 - q1
        inside = ms[(ms >= q1 - 1.5 * iqr) & (ms <= q3 + 1.5 * iqr)]
        out.append(dict(model_name=row.model_name, variant=row.variant, capability=row.capability,
                        device_name=row.device_name, hostname=row.hostname, samples=int(ms.size), q1=q1, median=med,
                        q3=q3, low=float(inside.min()), high=float(inside.max()), max=float(ms.max())))  # fmt: skip
    return pd.DataFrame(out, columns=["model_name", "variant", "capability", "device_name", "hostname", "samples",
                                      "q1", "median", "q3", "low", "high", "max"])  # fmt: skip


def pareto_front(x: pd.Series, y: pd.Series) -> pd.Series:
    """True for the points no other point beats: lower or equal ``x`` and higher or equal ``y``, one strictly.

    Points with a missing value are never on the front.
    """
    ok = x.notna() & y.notna()
    front = pd.Series(False, index=x.index)
    if not ok.any():
        return front
    order = pd.DataFrame({"x": x[ok], "y": y[ok]}).sort_values(["x", "y"], ascending=[True, False])
    best = order["y"].cummax().shift(fill_value=-np.inf)  # best y among all faster (or equal-x, better-y) points
    front.loc[order.index[(order["y"] > best).to_numpy()]] = True
    return front


# ---------------------------------------------------------------- history


def history(engine: Engine, f: Filters, metric: str, max_points: int = HISTORY_POINTS) -> pd.DataFrame:
    """``metric`` over time per model × variant × capability × device × threads: one point per record, or, past
    ``max_points`` records, one per day (mean, in SQL). Columns: series keys, ``at``, ``value``, ``runs``."""
    if metric not in METRICS:
        raise DashboardError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    column = getattr(Result, metric)
    keys = [Result.model_name, Result.variant, Result.capability, Result.device_name, Result.threads]
    n = _frame(engine, f.where(select(func.count()).select_from(Result))).iloc[0, 0]
    if n <= max_points:
        stmt = f.where(select(*keys, Result.finished_at.label("at"), column.label("value"), literal(1).label("runs"),
                              Result.model_id, Result.sweep_id))  # fmt: skip
    else:
        day = _day_bucket(engine)
        stmt = f.where(select(*keys, day.label("at"), _avg(column).label("value"), func.count().label("runs"),
                              func.max(Result.model_id).label("model_id"), literal(None).label("sweep_id"))
                       .group_by(*keys, day))  # fmt: skip
    df = _frame(engine, stmt)
    if df.empty:
        return df
    df["at"] = _utc(df["at"])
    df = df.dropna(subset=["value"]).sort_values([*SERIES, "at"]).reset_index(drop=True)
    labels = sweep_labels(engine)
    df["labels"] = [labels.get(s, "") if isinstance(s, str) else "" for s in df["sweep_id"]]
    # a model name whose source changed (a new sha) is a new version of the same model: where, in each series
    df["new_version"] = df.groupby(list(SERIES), sort=False)["model_id"].transform(
        lambda ids: (ids != ids.shift()) & ids.shift().notna())
    return df


def sweep_labels(engine: Engine) -> dict[str, str]:
    """Each sweep's labels (the spec's ``labels:``) as "name=value, ..." by name; sweeps without any are left out."""
    rows = _frame(engine, select(SweepRow.sweep_id, SweepRow.spec))
    out = {}
    for sweep_id, spec in rows.itertuples(index=False):
        spec = spec if isinstance(spec, dict) else json.loads(spec)
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if isinstance(labels, dict) and labels:
            out[sweep_id] = ", ".join(f"{k}={labels[k]}" for k in sorted(labels))  # JSONB keeps no key order: by name
    return out


def baselines(engine: Engine) -> pd.DataFrame:
    """The named baselines (`fleetbench baseline set`): tag and sweep, for History's markers."""
    return _frame(engine, select(BaselineRow.tag, BaselineRow.sweep_id))


def _day_bucket(engine: Engine):
    if engine.dialect.name == "postgresql":
        return func.date_trunc("day", Result.finished_at)
    return func.date(Result.finished_at)


def change_points(engine: Engine, f: Filters, metric: str) -> pd.DataFrame:
    """The change points of every series in the selection, by the rule `fleetbench regressions` uses
    (:func:`controller.analysis.changepoints.find`: E-Divisive, confirmed on the raw samples), with what was
    acknowledged. One row per change point, placed at the first record of the new level; empty for a metric
    change points are not found on."""
    from controller.analysis.changepoints import METRICS as CP_METRICS, DetectorMissing, Point, Series, find, same, watched

    columns = [*SERIES, "throughput_requests", "at", "value", "kind", "ratio", "p_value", "before_value", "after_value",
               "after_job", "acked", "ack_note", "cp_id"]  # fmt: skip
    if metric not in CP_METRICS:
        return pd.DataFrame(columns=columns)
    column = getattr(Result, metric)
    keys = (Result.model_name, Result.variant, Result.capability, Result.threads, Result.throughput_requests,
            Result.device_name)  # a series, as `fleetbench regressions` keys it (changepoints.Series)
    f = dataclasses.replace(f, emulated=False)  # as `fleetbench regressions`: no emulated series has change points
    stmt = f.where(select(*keys, Result.id, Result.job_id, Result.finished_at, column.label("value"))
                   .where(column.is_not(None)))  # fmt: skip
    df = _frame(engine, stmt.order_by(*keys, Result.finished_at, Result.id))
    if df.empty:
        return pd.DataFrame(columns=columns)
    df["finished_at"] = _utc(df["finished_at"])

    def samples_of(ids: list[int]) -> dict[int, np.ndarray]:
        rows = _frame(engine, select(Result.id, Result.samples).where(Result.id.in_([int(i) for i in ids])))
        return {int(i): decode(bytes(b)) for i, b in rows.itertuples(index=False) if b is not None}

    acks = _frame(engine, select(ChangePointRow.id, ChangePointRow.after_job, ChangePointRow.kind, ChangePointRow.acked_at,
                                 ChangePointRow.ack_note).where(ChangePointRow.metric == metric))  # fmt: skip
    stored = list(acks.itertuples(index=False))
    rows = []
    series_keys = ["model_name", "variant", "capability", "threads", "throughput_requests", "device_name"]
    for key, g in df.groupby(series_keys, sort=False):
        if not watched(metric, key[4]):
            continue
        points = [Point(int(r.id), r.job_id, r.finished_at, float(r.value)) for r in g.itertuples(index=False)]
        try:
            found = find(Series(*key), metric, points, samples_of)
        except DetectorMissing as exc:
            raise DashboardError(str(exc)) from None
        position = {p.job_id: i for i, p in enumerate(points)}
        for cp in found:  # the stored one it is, by the rule `fleetbench regressions` stores it by
            ack = next((r for r in stored if r.after_job == cp.after.job_id), None) or next(
                (r for r in stored if same(cp.after.job_id, cp.kind, r.after_job, r.kind, position)), None)
            rows.append(dict(zip(series_keys, key), at=cp.after.at, value=cp.after.value, kind=cp.kind,
                             ratio=cp.ratio, p_value=cp.p_value, before_value=cp.before_value, after_value=cp.after_value,
                             after_job=cp.after.job_id, acked=bool(ack is not None and ack.acked_at is not None),
                             ack_note=(ack.ack_note or "") if ack is not None else "",
                             cp_id=int(ack.id) if ack is not None else None))  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


#: the most change points the feed reads (the newest), before it sorts them by magnitude
FEED_ROWS = 500


def feed(engine: Engine, limit: int = FEED_ROWS) -> pd.DataFrame:
    """The change points `fleetbench regressions` stored: the newest ``limit``, largest change first, each with
    a ``history`` link to its series (``history?model=...&metric=...&threads=...&device=...``)."""
    from urllib.parse import urlencode

    c = ChangePointRow
    stmt = (select(c.id, c.kind, c.magnitude, c.ratio, c.p_value, c.metric, c.model_name, c.variant, c.capability,
                   c.device_name, c.threads, c.throughput_requests, c.before_value, c.after_value, c.after_at, c.after_job,
                   c.acked_at, c.ack_note, c.notified_at)
            .order_by(c.after_at.desc(), c.id.desc()).limit(limit))  # fmt: skip
    df = _frame(engine, stmt)
    if df.empty:
        return df.assign(history=[], acked=[])
    df["after_at"] = _utc(df["after_at"])
    df["acked"] = df["acked_at"].notna()
    df["history"] = [f"history?{urlencode({'model': m, 'metric': k, 'threads': t, **({'device': d} if d else {})})}"
                     for m, k, t, d in zip(df["model_name"], df["metric"], df["threads"], df["device_name"])]  # fmt: skip
    return df.drop(columns=["acked_at"]).sort_values(["magnitude", "after_at"], ascending=False).reset_index(drop=True)


# ---------------------------------------------------------------- compare


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a comparison: a sweep, one host's records of one capability, or one variant's records
    (then rows pair up by model × capability × threads, across the two variants)."""

    sweep_id: str | None = None
    hostname: str | None = None
    capability: str | None = None
    variant: str | None = None
    emulated: bool = False  # as Filters.emulated

    def where(self, stmt):
        stmt = stmt.where(Result.superseded == false())
        if not self.emulated:
            stmt = stmt.where(Result.emulated == false())
        if self.variant:
            stmt = stmt.where(Result.variant == self.variant)
        if self.sweep_id:
            stmt = stmt.where(Result.sweep_id == self.sweep_id)
        if self.hostname:
            stmt = stmt.where(Result.hostname == self.hostname)
        if self.capability:
            stmt = stmt.where(Result.capability == self.capability)
        return stmt


def hosts_by_capability(engine: Engine) -> pd.DataFrame:
    stmt = (
        select(Result.capability, Result.hostname, func.count().label("records"))
        .where(Result.superseded == false()).group_by(Result.capability, Result.hostname)
        .order_by(Result.capability, Result.hostname)
    )  # fmt: skip
    return _frame(engine, stmt)


#: Latency metrics are judged by the significance test on raw samples; the others by plain ratio.
TESTED_METRICS = ("p50_ms", "p90_ms", "p99_ms")


def _place(df: pd.DataFrame) -> pd.Series:
    """Where each row ran, as far as pooling goes (controller.analysis.regress.place): machine, and emulation."""
    return df["machine"].astype(str) + np.where(df["emulated"].astype(bool), " (emulated)", "")


def _relabel(df: pd.DataFrame, mixed: set[str]) -> pd.DataFrame:
    """``df`` with the capabilities in ``mixed`` named with where they ran (``litert:cpu@aarch64``)."""
    if not df.empty and mixed:
        many = df["capability"].isin(mixed)
        df.loc[many, "capability"] = df.loc[many, "capability"] + "@" + _place(df[many])
    return df.drop(columns=["machine", "emulated"], errors="ignore")


def _side_samples(engine: Engine, side: Side, limit: int, by_variant: bool = True,
                  mixed: frozenset = frozenset()) -> dict[tuple, np.ndarray]:  # fmt: skip
    """Raw samples (ns) of the newest ``limit`` records of a side, concatenated per compare key."""
    stmt = side.where(select(Result.model_name, Result.variant, Result.capability, Result.threads,
                             Result.machine, Result.emulated, Result.samples))  # fmt: skip
    df = _relabel(_frame(engine, stmt.order_by(Result.id.desc()).limit(limit)), mixed)
    out: dict[tuple, list] = {}
    for row in df.itertuples(index=False):  # at most `limit` records
        key = (row.model_name, row.variant if by_variant else "", row.capability, int(row.threads))
        if row.samples is not None:  # a row no store wrote (every stored record has its samples)
            out.setdefault(key, []).append(decode(bytes(row.samples)))
    return {k: np.concatenate(v) for k, v in out.items()}


def compare(engine: Engine, a: Side, b: Side, metric: str = "p50_ms", threshold: float = 0.05,
            sample_records: int = SAMPLE_RECORDS) -> pd.DataFrame:  # fmt: skip
    """Side by side per model × variant × capability × threads: means of ``metric`` on A and on B, the ratio
    B/A, and a verdict. Latency metrics: the significance test of ``controller.analysis.regress`` on the raw samples
    of the newest ``sample_records`` records of each side (Mann-Whitney U, p < 0.05, and the median moved by
    more than ``threshold`` or the 99%-trimmed mean by more than 25%); other metrics: plain ratio (``threshold`` either way)."""
    from controller.analysis.regress import IMPROVEMENT, REGRESSION, significance

    if metric not in METRICS:
        raise DashboardError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    column = getattr(Result, metric)
    by_variant = not (a.variant or b.variant)  # comparing two variants: pair them up across variants
    variant = Result.variant if by_variant else literal(f"{a.variant} → {b.variant}")
    # per machine too: where one capability ran on several (a server, a board), the two are never averaged
    keys = [Result.model_name, Result.capability, Result.threads, Result.machine, Result.emulated] + (
        [Result.variant] if by_variant else [])
    frames = []
    for label, side in (("a", a), ("b", b)):
        stmt = side.where(select(Result.model_name, variant.label("variant"), Result.capability, Result.threads,
                                 Result.machine, Result.emulated, _avg(column).label(label),
                                 func.count().label(f"{label}_runs")).group_by(*keys))  # fmt: skip
        frames.append(_frame(engine, stmt))
    both = pd.concat(frames)
    mixed = frozenset() if both.empty else frozenset(
        both.assign(place=_place(both)).groupby("capability")["place"].nunique().loc[lambda n: n > 1].index)
    frames = [_relabel(f, mixed) for f in frames]
    on = ["model_name", "variant", "capability", "threads"]
    merged = frames[0].merge(frames[1], on=on, how="outer")
    if merged.empty:
        return merged.assign(ratio=pd.Series(dtype=float), p_value=pd.Series(dtype=float),
                             verdict=pd.Series(dtype=str))  # fmt: skip
    merged["ratio"] = merged["b"] / merged["a"]
    worse_if_higher = METRICS[metric][1]
    worse = merged["ratio"] > 1 + threshold if worse_if_higher else merged["ratio"] < 1 - threshold
    better = merged["ratio"] < 1 - threshold if worse_if_higher else merged["ratio"] > 1 + threshold
    merged["verdict"] = np.select([merged["a"].isna(), merged["b"].isna(), worse, better],
                                  ["only in B", "only in A", "worse", "better"], default="same")  # fmt: skip
    merged["p_value"] = np.nan
    if metric in TESTED_METRICS:
        sa = _side_samples(engine, a, sample_records, by_variant, mixed)
        sb = _side_samples(engine, b, sample_records, by_variant, mixed)
        for i, row in merged.iterrows():  # one test per paired key: tens of rows
            key = (row["model_name"], row["variant"] if by_variant else "", row["capability"], int(row["threads"]))
            if key in sa and key in sb and sa[key].size > 1 and sb[key].size > 1:
                t = significance(sa[key], sb[key])
                merged.at[i, "p_value"] = t.p_value
                merged.at[i, "verdict"] = {REGRESSION: "worse", IMPROVEMENT: "better"}.get(t.verdict, "same")
    return merged.sort_values(on).reset_index(drop=True)


__all__ = [
    "DashboardError", "Filters", "METRICS", "Side", "compare", "counts", "explorer_groups", "filter_options", "fleet",
    "baselines", "change_points", "feed", "history", "sweep_labels", "hosts_by_capability", "latency_boxes", "pareto_front", "readonly_engine",
    "running_jobs", "selection_rows", "sweep_jobs", "sweeps",
]  # fmt: skip


# ---------------------------------------------------------------- profiles

#: The Profile page reads the profiles of at most this many records (the newest).
PROFILE_RECORDS = 500


def profiles(engine: Engine, limit: int = PROFILE_RECORDS) -> pd.DataFrame:
    """The newest profiled record of each model × variant × capability × device × threads (the ``profiled`` column
    of migration 0009), with its profile as a dict: one row each, newest first. Only these rows' JSON is read."""
    cols = (Result.job_id, Result.model_name, Result.variant, Result.capability, Result.device_name, Result.threads,
            Result.p50_ms, Result.mean_ms, Result.fallback_ops, Result.finished_at)  # fmt: skip
    stmt = (select(*cols, Result.record).where(Result.profiled.is_(True), Result.superseded == false())
            .order_by(Result.finished_at.desc(), Result.id.desc()).limit(limit))  # fmt: skip
    df = _frame(engine, stmt)
    if df.empty:
        return df.drop(columns=["record"]).assign(profile=[])
    df = df.drop_duplicates(["model_name", "variant", "capability", "device_name", "threads"]).reset_index(drop=True)
    df["profile"] = [(r if isinstance(r, dict) else json.loads(r)).get("profile") for r in df.pop("record")]
    df["finished_at"] = _utc(df["finished_at"])
    return df


#: The most sustained runs the Explorer draws (the newest of each model × variant × device × threads).
SUSTAINED_RECORDS = 12


def sustained(engine: Engine, f: Filters, limit: int = SUSTAINED_RECORDS) -> pd.DataFrame:
    """The windows of the newest sustained run (``drift_ratio`` set, migration 0012) of each model × variant ×
    capability × device × threads in the selection: one row per window, with the run's drift; only these rows'
    JSON is read."""
    cols = (Result.job_id, Result.model_name, Result.variant, Result.capability, Result.device_name, Result.threads,
            Result.drift_ratio, Result.finished_at)  # fmt: skip
    stmt = f.where(select(Result.id, *cols).where(Result.drift_ratio.is_not(None)))
    df = _frame(engine, stmt.order_by(Result.finished_at.desc(), Result.id.desc()))  # no JSON: a few columns a row
    columns = [c.key for c in cols] + ["run", "window", "minute", "p50_ms", "p99_ms", "hottest_c", "cpu_mhz"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    df = df.drop_duplicates(["model_name", "variant", "capability", "device_name", "threads"]).head(limit)
    records = dict(_frame(engine, select(Result.id, Result.record).where(Result.id.in_([int(i) for i in df["id"]]))).itertuples(index=False))
    rows = []
    for run in df.itertuples(index=False):
        record = records[run.id] if isinstance(records[run.id], dict) else json.loads(records[run.id])
        label = f"{run.model_name} · {run.variant} · {run.capability} · {run.device_name}" + (
            f" · {run.threads} threads" if run.threads != 1 else "")
        for i, w in enumerate((record.get("sustained") or {}).get("windows", [])):
            rows.append({**{c: getattr(run, c) for c in columns[:8]}, "run": label, "window": i + 1,
                         "minute": w["start_s"] / 60, "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"],
                         "hottest_c": w.get("hottest_c"), "cpu_mhz": w.get("cpu_mhz")})  # fmt: skip
    out = pd.DataFrame(rows, columns=columns)
    out["finished_at"] = _utc(out["finished_at"])
    return out


def op_types(profile: dict) -> pd.DataFrame:
    """A profile's time by op type: op_type, count, time_ms, share."""
    return pd.DataFrame(profile.get("op_types") or [], columns=["op_type", "count", "time_ms", "share"])


def top_nodes(profile: dict) -> pd.DataFrame:
    """A profile's slowest nodes as the page shows them: time ms, op type, place, ran in, kernel, node, status."""
    df = pd.DataFrame(profile.get("top_nodes") or [], columns=["name", "op_type", "place", "precision", "exec_type",
                                                                "time_ms", "status"])  # fmt: skip
    names = {"time_ms": "time ms", "op_type": "op type", "place": "place", "precision": "ran in", "exec_type": "kernel",
             "name": "node", "status": "status"}  # fmt: skip
    return df[list(names)].rename(columns=names)


def coverage(rows: pd.DataFrame) -> pd.DataFrame:
    """Placement and precision coverage per variant × device (× threads): one row per profiled record, with the
    share of node time (or, without per-op time, of nodes) in each precision as columns ``share_<precision>``."""
    out = []
    for r in rows.itertuples(index=False):
        p = r.profile or {}
        pl = p.get("placement") or {}
        total = (pl.get("ops_on_target") or 0) + (pl.get("fallback_ops") or 0)
        share = int8_share(Profile.from_dict(p)) if p and not p.get("error") else None
        row = {"variant": r.variant, "device": r.capability, "threads": r.threads,
               "on target": f"{pl.get('ops_on_target')}/{total} {pl.get('target', '')}" if pl else "-",
               "fallback ops": pl.get("fallback_ops"), "partitions": pl.get("partitions"),
               "int8": share[0] if share else None, "node time ms": p.get("node_time_ms"), "p50 ms": r.p50_ms,
               "job": r.job_id[:8], "error": p.get("error", "")}  # fmt: skip
        for s in p.get("precisions") or []:
            share = s.get("time_share") if s.get("time_share") is not None else s.get("op_share")
            row[f"share_{s['precision']}"] = share
        out.append(row)
    df = pd.DataFrame(out)
    shares = sorted((c for c in df.columns if c.startswith("share_")),
                    key=lambda c: (c != "share_i8", c != "share_u8", c == "share_unknown", c))  # fmt: skip
    head = ["variant", "device", "threads", "on target", "fallback ops", "partitions", "int8"]
    return df[head + shares + [c for c in df.columns if c not in head and not c.startswith("share_")]].fillna(
        {c: 0.0 for c in shares})


def default_pair(rows: pd.DataFrame) -> tuple[int, int | None]:
    """The two records the Profile page opens on (row positions): a float variant and an int8 one on the same
    device (fp32 before fp16, the int8 of the same family first), else the newest record alone."""
    variants = list(rows["variant"])
    for cap in dict.fromkeys(rows["capability"]):
        here = [i for i, c in enumerate(rows["capability"]) if c == cap]
        floats = sorted((i for i in here if variants[i].endswith(("-fp32", "-fp16"))),
                        key=lambda i: (not variants[i].endswith("-fp32"), i))  # fmt: skip
        ints = [i for i in here if "int8" in variants[i]]
        if floats and ints:
            family = variants[floats[0]].split("-")[0]
            return floats[0], min(ints, key=lambda i: (variants[i] != f"{family}-int8", i))
    return 0, None
