"""Issue 14, finding 1: a bad outcome is set aside with its reason and ingestion goes on behind it.

Real Redis, a real store on SQLite and PostgreSQL, and the CLI as a subprocess."""

import dataclasses
import json
import os
import subprocess
import sys

import redis

from controller.collector import DEAD_KEY, Collector, dead_letters
from protocol import RESULTS_KEY, JobOutcome


def _outcome(record, job_id: str, attempt: int = 1) -> JobOutcome:
    rec = dataclasses.replace(record, job_id=job_id, attempt=attempt)
    return JobOutcome(job_id=job_id, attempt=attempt, ok=True, record=rec, agent_id="a1")


def _bad_stats(record, job_id: str) -> str:
    d = json.loads(_outcome(record, job_id).to_json())
    d["record"]["stats"]["p50_ms"] *= 3  # valid JSON, but the stats no longer follow from the samples
    return json.dumps(d)


def test_a_bad_outcome_is_set_aside_and_the_good_ones_behind_it_are_stored(store, clean_redis_url, golden_record):
    r = redis.Redis.from_url(clean_redis_url)
    r.rpush(RESULTS_KEY, _bad_stats(golden_record, "bad-stats"), b"{not json", b'{"job_id": 7}')
    good = [_outcome(golden_record, f"good-{i}") for i in range(3)]
    r.rpush(RESULTS_KEY, *[o.to_json() for o in good])
    collector = Collector(r, store)
    done = collector.drain()
    assert done["stored"] == 3 and done["dead-letter"] == 3
    assert {x.job_id for x in store.results()} == {"good-0", "good-1", "good-2"}
    assert collector.pending() == 0
    count, newest = dead_letters(r, limit=5)
    assert count == 3
    reasons = [d["reason"] for d in newest]
    assert any("p50_ms does not match its raw samples" in why for why in reasons)
    assert any("not valid JSON" in why for why in reasons)
    entry = json.loads(r.lindex(DEAD_KEY, 0))
    assert entry["job_id"] == "bad-stats" and "bad-stats" in entry["raw"]  # the message itself is kept to look at
    # a second drain finds nothing stuck and stores nothing twice
    assert sum(collector.drain().values()) == 0 and store.count_results() == 3


def test_an_outcome_the_database_refuses_is_set_aside_alone(store, clean_redis_url, golden_record):
    r = redis.Redis.from_url(clean_redis_url)
    long_variant = dataclasses.replace(_outcome(golden_record, "too-long").record, variant="v" * 5000)
    bad = JobOutcome(job_id="too-long", attempt=1, ok=True, record=long_variant, agent_id="a1")
    r.rpush(RESULTS_KEY, _outcome(golden_record, "before").to_json(), bad.to_json(), _outcome(golden_record, "after").to_json())
    done = Collector(r, store).drain()
    stored = {x.job_id for x in store.results()}
    if "too-long" in stored:  # SQLite keeps any length: nothing to refuse there
        assert done["stored"] == 3
    else:
        assert done["dead-letter"] == 1 and stored == {"before", "after"}
        assert "the database refused it" in dead_letters(r)[1][0]["reason"]


def test_status_counts_the_results_set_aside(clean_redis_url, tmp_path, golden_record):
    r = redis.Redis.from_url(clean_redis_url)
    from controller.store import Store

    store = Store(f"sqlite:///{tmp_path / 'fb' / 'fleetbench.db'}")
    store.migrate()
    r.rpush(RESULTS_KEY, _bad_stats(golden_record, "bad-1"))
    Collector(r, store).drain()
    store.close()
    env = dict(os.environ, COLUMNS="120")
    out = subprocess.run([sys.executable, "-m", "controller.cli", "status", "--broker", clean_redis_url,
                          "--data-dir", str(tmp_path / "fb")], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "results set aside: 1" in out.stdout and "job bad-1" in out.stdout and "does not match" in out.stdout
    dead = subprocess.run([sys.executable, "-m", "controller.cli", "status", "--broker", "redis://:pw-secret@127.0.0.1:1/0",
                           "--data-dir", str(tmp_path / "fb")], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert dead.returncode != 0 and "Traceback" not in dead.stderr + dead.stdout
    assert "pw-secret" not in dead.stderr + dead.stdout and "cannot reach the broker" in dead.stderr + dead.stdout


def test_the_outbox_relay_sets_aside_a_damaged_row_and_sends_the_rest(tmp_path, clean_redis_url, golden_record):
    import sqlite3

    from agent.outbox import Outbox, Relay

    box = Outbox(tmp_path / "outbox.db")
    box.put(_outcome(golden_record, "first"))
    with sqlite3.connect(box.path) as db:  # a row damaged on disk
        db.execute("INSERT INTO outbox (job_id, attempt, body) VALUES ('torn', 1, '{\"job_id\": \"torn\", \"att')")
    box.put(_outcome(golden_record, "last"))
    relay = Relay(box, clean_redis_url)
    assert relay.relay_once() == 2
    sent = [JobOutcome.from_json(x).job_id for x in redis.Redis.from_url(clean_redis_url).lrange(RESULTS_KEY, 0, -1)]
    assert sent == ["first", "last"] and len(box) == 0
    ((reason, body),) = box.dead()
    assert "not valid JSON" in reason and "torn" in body
