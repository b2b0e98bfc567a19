"""Sweeps, their jobs' persisted states, and result ingestion with attempt fencing.

The states and the rules that move a job are in :mod:`controller.jobs`; here they are stored. The
names below are those states' plain string values, as the jobs table holds them.

Ingestion is idempotent and fenced by attempt: the current attempt's first
record is stored; the same record again is a duplicate (nothing written); a
record of an older attempt is kept with ``superseded`` set, never counted.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import false, func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from controller import jobs
from controller.jobs import Ingest, JobState, SweepState
from controller.store.base import StoreBase, StoreError, _in_parts, _write_error, as_utc, record_of
from controller.store.models import BaselineRow, JobRow, Result, SweepRow
from protocol import JobOutcome, ResultRecord

PENDING, CONVERTING, QUEUED, RUNNING, WAITING = (s.value for s in (JobState.PENDING, JobState.CONVERTING,
                                                               JobState.QUEUED, JobState.RUNNING, JobState.WAITING))  # fmt: skip
DONE, FAILED, DEAD_LETTER, EXPIRED, SUPERSEDED, CANCELLED = (s.value for s in jobs.FINAL_STATES)
ACTIVE_STATES = tuple(s.value for s in jobs.ACTIVE_STATES)
FINAL_STATES = tuple(s.value for s in jobs.FINAL_STATES)

#: what ingest() did with an outcome
STORED, DUPLICATE, LATE, RETRY, FAILED_FINAL, UNKNOWN = (a.value for a in Ingest)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class JobsStore(StoreBase):
    """Sweep and job methods of :class:`controller.store.Store`."""

    # ------------------------------------------------------------ sweeps

    def add_sweep(self, sweep: SweepRow, jobs: list[JobRow], *, supersede: bool = False) -> list[str]:
        """Store a sweep and its jobs; with ``supersede``, in the same transaction, end every older sweep
        of its name (their unfinished jobs become superseded) and return those jobs' ids.

        Submissions of one name are serialized (a PostgreSQL advisory lock; SQLite's write lock), so of
        concurrent submissions the last to commit is the one running, and no sweep ends with a job unsent.
        """
        with self._write() as session:
            ids = []
            if supersede:
                self._lock_sweep_name(session, sweep.name)
                ids = self._supersede(session, sweep.name, keep=sweep.sweep_id)
            session.add(sweep)
            session.add_all(jobs)
        return ids

    @staticmethod
    def _lock_sweep_name(session, name: str) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"fleetbench-sweep:{name}"})
        else:  # a write as the transaction's first statement takes SQLite's write lock until commit
            session.execute(text("UPDATE sweeps SET name = name WHERE 0 = 1"))

    def get_sweep(self, ref: str) -> SweepRow:
        """A sweep by id, unique id prefix, or name (the newest of that name)."""
        with self._session() as session:
            row = session.get(SweepRow, ref)
            if row is None and len(ref) >= 4:
                rows = list(session.scalars(select(SweepRow).where(SweepRow.sweep_id.startswith(ref))))
                row = rows[0] if len(rows) == 1 else None
            if row is None:
                stmt = select(SweepRow).where(SweepRow.name == ref).order_by(SweepRow.created_at.desc()).limit(1)
                row = session.scalar(stmt)
        if row is None:
            raise StoreError(f"no sweep matches '{ref}'; `fleetbench status` lists the sweeps")
        return row

    def sweep_named(self, name: str) -> SweepRow | None:
        """The newest sweep called exactly ``name`` (or whose id is ``name``), or None."""
        with self._session() as session:
            row = session.get(SweepRow, name)
            if row is None:
                stmt = select(SweepRow).where(SweepRow.name == name).order_by(SweepRow.created_at.desc()).limit(1)
                row = session.scalar(stmt)
            return row

    def sweeps(self, limit: int = 50) -> list[SweepRow]:
        with self._session() as session:
            return list(session.scalars(select(SweepRow).order_by(SweepRow.created_at.desc()).limit(limit)))

    def set_baseline(self, tag: str, sweep_id: str) -> bool:
        """Point ``tag`` at ``sweep_id``; True if the tag is new, False if it moved."""
        with self._write() as session:
            row = session.get(BaselineRow, tag)
            if row is None:
                session.add(BaselineRow(tag=tag, sweep_id=sweep_id, created_at=now()))
                return True
            row.sweep_id, row.created_at = sweep_id, now()
            return False

    def baselines(self) -> list[BaselineRow]:
        with self._session() as session:
            return list(session.scalars(select(BaselineRow).order_by(BaselineRow.tag)))

    def resolve_sweep(self, ref: str) -> SweepRow:
        """A sweep by id, id prefix or name, or ``baseline:TAG`` for the sweep a baseline points at."""
        if ref.startswith("baseline:"):
            tag = ref.removeprefix("baseline:")
            with self._session() as session:
                row = session.get(BaselineRow, tag)
            if row is None:
                raise StoreError(f"no baseline '{tag}'; `fleetbench baseline set SWEEP --tag {tag}` makes one")
            return self.get_sweep(row.sweep_id)
        return self.get_sweep(ref)

    def set_sweep_state(self, sweep_id: str, state: str, *, only_from: str | None = None) -> None:
        """Set a sweep's state (with ``only_from``, only if it is in that state now)."""
        with self._write() as session:
            row = session.get(SweepRow, sweep_id, with_for_update=True)
            if only_from is not None and row.state != only_from:
                return
            row.state = state
            row.finished_at = now() if state == SweepState.DONE else None

    def cancel_sweep(self, sweep_id: str, why: str = "cancelled by the user") -> list[str]:
        """End a sweep: its unfinished jobs become cancelled; returns their ids (to fence on the broker)."""
        with self._write() as session:
            sweep = session.get(SweepRow, sweep_id, with_for_update=True)
            ids = []
            for job in session.scalars(select(JobRow).where(JobRow.sweep_id == sweep_id, JobRow.state.in_(ACTIVE_STATES))):
                job.state, job.reason, job.updated_at = CANCELLED, why, now()
                ids.append(job.job_id)
            sweep.state, sweep.finished_at = SweepState.CANCELLED.value, now()
        return ids

    def supersede_sweeps(self, name: str, keep: str) -> list[str]:
        """Mark the unfinished jobs of older sweeps called ``name`` superseded; returns their ids."""
        with self._write() as session:
            self._lock_sweep_name(session, name)
            return self._supersede(session, name, keep)

    @staticmethod
    def _supersede(session, name: str, keep: str) -> list[str]:
        ids = []
        olds = select(SweepRow.sweep_id).where(SweepRow.name == name, SweepRow.sweep_id != keep)
        for sweep in session.scalars(select(SweepRow).where(SweepRow.sweep_id.in_(olds), SweepRow.state == SweepState.RUNNING.value)):
            sweep.state, sweep.finished_at = "done", now()
        for job in session.scalars(select(JobRow).where(JobRow.sweep_id.in_(olds), JobRow.state.in_(ACTIVE_STATES))):
            job.state, job.reason, job.updated_at = SUPERSEDED, f"superseded by sweep {keep}", now()
            ids.append(job.job_id)
        return ids

    # ------------------------------------------------------------ jobs

    def jobs(self, sweep_id: str | None = None, states: tuple[str, ...] | None = None,
             expiring_before: dt.datetime | None = None, *, agents=None, capabilities=None, pinned=None,
             unoffered=None) -> list[JobRow]:  # fmt: skip
        """Jobs, oldest first. With any of ``agents`` (on one of these agents), ``capabilities`` or ``pinned``
        (pinned to one of these agents), only those that match one of them (none when all are empty). With
        ``unoffered`` (the capabilities the fleet offers), only those pinned or of a capability not in it."""
        stmt = select(JobRow).order_by(JobRow.created_at, JobRow.job_id)
        if sweep_id:
            stmt = stmt.where(JobRow.sweep_id == sweep_id)
        if states:
            stmt = stmt.where(JobRow.state.in_(states))
        if expiring_before is not None:
            stmt = stmt.where(JobRow.expires_at.isnot(None), JobRow.expires_at <= expiring_before)
        if unoffered is not None:
            stmt = stmt.where(or_(JobRow.pinned_agent.isnot(None), JobRow.capability.not_in(sorted(unoffered))))
        if agents is None and capabilities is None and pinned is None:
            with self._session() as session:
                return list(session.scalars(stmt))
        found: dict[str, JobRow] = {}
        with self._session() as session:
            for column, values in ((JobRow.agent_id, agents), (JobRow.capability, capabilities), (JobRow.pinned_agent, pinned)):
                for part in _in_parts(sorted(values or ())):
                    found.update((j.job_id, j) for j in session.scalars(stmt.where(column.in_(part))))
        return sorted(found.values(), key=lambda j: (as_utc(j.created_at), j.job_id))

    def running_on(self, sweep_id: str) -> list[tuple[str, str | None]]:
        """(job id, agent id) of a sweep's running jobs: two columns, not the rows (a fleet runs thousands)."""
        stmt = select(JobRow.job_id, JobRow.agent_id).where(JobRow.sweep_id == sweep_id, JobRow.state == RUNNING)
        with self._session() as session:
            return [tuple(r) for r in session.execute(stmt)]

    def get_job(self, job_id: str) -> JobRow | None:
        with self._session() as session:
            return session.get(JobRow, job_id)

    def update_job(self, job_id: str, *, expect_attempt: int | None = None, **fields) -> bool:
        """Set ``fields`` on a job (unless it is final, or its attempt moved on); True if it was changed."""
        return self.update_jobs([(job_id, expect_attempt, fields, None)])[0]

    def jobs_by_id(self, ids, states: tuple[str, ...] | None = None) -> list[JobRow]:
        """The jobs of these ids (in any sweep) that exist, in ``states`` if given."""
        out: list[JobRow] = []
        with self._session() as session:
            for part in _in_parts(ids):
                stmt = select(JobRow).where(JobRow.job_id.in_(part))
                if states:
                    stmt = stmt.where(JobRow.state.in_(states))
                out.extend(session.scalars(stmt))
        return out

    def update_jobs(self, changes: list[tuple[str, int | None, dict, tuple[str, ...] | None]]) -> list[bool]:
        """:meth:`update_job` for many ``(job id, expected attempt, fields, expected states)`` in one
        transaction; a change is made only while the job is not final, its attempt is the expected one (if
        not None) and its state one of the expected (if not None: what the rule that made it saw). Returns,
        for each, whether it was made. Rows are locked in job-id order, as ingestion locks them (no deadlock)."""
        done: list[bool] = []
        if not changes:
            return done
        with self._write() as session:
            rows: dict[str, JobRow] = {}
            for part in _in_parts(sorted({c[0] for c in changes})):
                stmt = select(JobRow).where(JobRow.job_id.in_(part)).order_by(JobRow.job_id).with_for_update()
                rows.update((j.job_id, j) for j in session.scalars(stmt))
            stamp = now()
            for job_id, expect_attempt, fields, states in changes:
                job = rows.get(job_id)
                if (job is None or job.state in FINAL_STATES or (expect_attempt is not None and job.attempt != expect_attempt)
                        or (states is not None and job.state not in states)):  # fmt: skip
                    done.append(False)
                    continue
                for key, value in fields.items():
                    setattr(job, key, value.value if isinstance(value, enum.Enum) else value)
                job.updated_at = stamp
                done.append(True)
        return done

    def job_counts_by_state(self) -> dict[str, int]:
        """{state: count} over every job in the store, counted in SQL."""
        with self._session() as session:
            return {state: n for state, n in session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))}

    def active_capabilities(self) -> set[str]:
        """The capabilities unfinished jobs ask for (a device nobody offers yet included)."""
        stmt = select(JobRow.capability).where(JobRow.state.in_(ACTIVE_STATES)).distinct()
        with self._session() as session:
            return set(session.scalars(stmt))

    def job_counts(self, sweep_id: str) -> dict[str, int]:
        """{state: count} for one sweep, counted in SQL."""
        stmt = select(JobRow.state, func.count()).where(JobRow.sweep_id == sweep_id).group_by(JobRow.state)
        with self._session() as session:
            return {state: n for state, n in session.execute(stmt)}

    def sweep_results(self, sweep_id: str) -> list[ResultRecord]:
        stmt = (
            select(Result.record, Result.samples)
            .where(Result.sweep_id == sweep_id, Result.superseded == false())
            .order_by(Result.model_name, Result.variant, Result.capability)
        )
        with self._session() as session:
            return [record_of(r, b) for r, b in session.execute(stmt)]

    def count_superseded(self, job_id: str) -> int:
        stmt = select(func.count()).select_from(Result).where(Result.job_id == job_id, Result.superseded.is_(True))
        with self._session() as session:
            return session.scalar(stmt) or 0

    # ------------------------------------------------------------ ingestion

    def add_result(self, record: ResultRecord) -> bool:
        """Store ``record`` once; True if it is now the job's current record (see :meth:`ingest`)."""
        record.check_consistent()
        outcome = JobOutcome(
            job_id=record.job_id, attempt=record.attempt, ok=True, record=record, agent_id=record.agent_id
        )
        return self.ingest(outcome) == "stored"

    def ingest(self, outcome: JobOutcome) -> str:
        """Store an agent's outcome exactly once; returns what was done (STORED, DUPLICATE, ...)."""
        return self.ingest_many([outcome])[0]

    def ingest_many(self, outcomes: list[JobOutcome]) -> list[str]:
        """:meth:`ingest` for a batch, in one transaction (one at a time if a concurrent writer collides)."""
        try:
            return self._ingest_batch(outcomes)
        except IntegrityError:
            pass  # another delivery of one of them won an insert: classify each again on its own
        except OperationalError as exc:
            raise _write_error(self.url, exc) from None
        answers = []
        for outcome in outcomes:
            for _ in range(3):
                try:
                    answers.append(self._ingest_batch([outcome])[0])
                    break
                except IntegrityError:
                    continue
                except OperationalError as exc:
                    raise _write_error(self.url, exc) from None
            else:
                answers.append(DUPLICATE)
        return answers

    def _ingest_batch(self, outcomes: list[JobOutcome]) -> list[str]:
        ids = {o.job_id for o in outcomes}
        with self._write() as session:
            jobs = {j.job_id: j for j in session.scalars(  # locked in job-id order, as update_jobs locks them
                select(JobRow).where(JobRow.job_id.in_(sorted(ids))).order_by(JobRow.job_id).with_for_update())}
            have = {(j, a) for j, a in session.execute(select(Result.job_id, Result.attempt).where(Result.job_id.in_(ids)))}
            current = {r.job_id: r for r in session.scalars(
                select(Result).where(Result.job_id.in_(ids), Result.superseded == false()))}  # fmt: skip
            rows: list[dict] = []
            answers = [self._classify(session, o, jobs.get(o.job_id), have, current, rows) for o in outcomes]
            if rows:  # one multi-row INSERT (no ORM round trip per record)
                session.execute(insert(Result), rows)
            return answers

    def _classify(self, session, outcome: JobOutcome, job: JobRow | None, have: set, current: dict, rows: list) -> str:
        """What to do with one outcome, given the job and the records already there (updated as it goes).

        New result rows go to ``rows`` (dicts, inserted together); ``current`` maps a job to its
        current record: a stored row, or one of ``rows``.
        """
        record = outcome.record
        key = (outcome.job_id, outcome.attempt)

        def add(superseded: bool = False, sweep_id: str | None = None) -> None:
            row = self._result_values(record, sweep_id=sweep_id, superseded=superseded)
            rows.append(row)
            have.add(key)
            if not superseded:
                current[outcome.job_id] = row

        if job is None:  # not a sweep job (demo, bundle, ad hoc): the newest attempt is current
            if not outcome.ok:
                return UNKNOWN
            if key in have:
                return DUPLICATE
            cur = current.get(outcome.job_id)
            cur_attempt = cur["attempt"] if isinstance(cur, dict) else cur.attempt if cur is not None else None
            if cur is not None and cur_attempt > outcome.attempt:
                add(superseded=True)
                return LATE
            if isinstance(cur, dict):
                cur["superseded"] = True  # not inserted yet
            elif cur is not None:
                cur.superseded = True
                session.flush()  # before the new current row: one current record per job
            add()
            return STORED
        verdict = jobs.on_outcome(job, outcome.attempt, outcome.ok, outcome.agent_id, outcome.error_kind, outcome.error)
        if verdict.answer == Ingest.LATE:
            if outcome.ok and key not in have:
                add(superseded=True, sweep_id=job.sweep_id)
        elif verdict.answer != Ingest.DUPLICATE:
            if verdict.answer == Ingest.STORED:
                add(sweep_id=job.sweep_id)
            for name, value in verdict.fields.items():
                setattr(job, name, value.value if isinstance(value, enum.Enum) else value)
            job.updated_at = now()
        return verdict.answer.value
