"""bench/fleet_sim.py itself, at a small N: 20 simulated agents against a real `fleetbench serve`, Redis and
PostgreSQL, through every phase; every record is stored once and the crashed agent's job is sent again in time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import HEARTBEAT_S, HEARTBEAT_TTL_S
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_simulator_runs_20_agents_and_stores_every_record_once(tmp_path, tiny_model, pg_url):
    out = tmp_path / "sim.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench/fleet_sim.py"), "--agents", "20", "--jobs", "200", "--window-s",
                          "2", "--pg", PG_URL, "--model", str(tiny_model["path"]), "--json", str(out)],
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["serve ok"] and row["serve tracebacks"] == 0
    assert row["seen online"] == 20  # the controller's own count, from its presence mirror
    assert row["jobs"] == 200 and row["records stored"] == 200 and row["stored once"]
    assert row["sim counters"]["sent"] == 200 and row["sim counters"]["fenced-off"] == 0
    # the TTL, a beat period and a few ticks: from the fleet's changes, not the full pass every 30 s
    assert row["crashed"] == 1 and row["detect and resend s"] <= HEARTBEAT_TTL_S + HEARTBEAT_S + 2
