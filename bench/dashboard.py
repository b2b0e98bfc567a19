"""Dashboard figures: every page with 100,000 records in PostgreSQL. Target (issue 16): interactive within 2 s.

    .venv/bin/python bench/dashboard.py [--records 100000] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                        [--keep] [--no-browser]

Seeds a schema of its own (``fleetbench_bench_dash``; dropped afterwards unless --keep, and reused
when it already holds the asked-for number of records) with records made from the golden demo runs:
5 models × 7 variants × 20 devices (one host each) × threads 1/2/4, over 90 days, 100 raw samples
each, in sweeps of 2,000 jobs, and 20 agents. Then, for each page:

- script: the page's whole script run by Streamlit's AppTest (queries, pandas, figures), with cold
  caches and again warm;
- browser: `fleetbench dashboard` on the schema, a fresh server (cold caches) in headless Chromium:
  the first open (until the Fleet page is drawn), then for each page the time from a click on its
  link until its key elements are drawn (its queries run cold). Three passes, each on a fresh
  server; the median is held to the target, the worst is printed beside it.

Prints one table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from controller.store import Store  # noqa: E402
from controller.store.models import AgentRow, JobRow, Result, SweepRow  # noqa: E402
from protocol import LatencyStats  # noqa: E402
from protocol.samples import Samples  # noqa: E402
from protocol.stats import summarize_ns  # noqa: E402
from tests.golden_demo import GOLDEN  # noqa: E402

SCHEMA = "fleetbench_bench_dash"
TARGET_S = 2.0  # issue 16: every page, first open included
PAGES = ("fleet", "sweeps", "explorer", "compare", "history")
MODELS = ("mobilenet-v2", "efficientnet-lite0", "resnet50", "yolo-nano", "digits-cnn")
DEVICES = [("litert:cpu", "Cortex-A76"), ("litert:gpu", "Mali-G610"), ("openvino:CPU", "Core i5-1235U"),
           ("openvino:GPU", "Iris Xe"), ("openvino:MYRIAD", "Myriad X")]  # fmt: skip


def seed(url: str, options: str, n: int) -> float:
    """Write ``n`` records (and their sweeps, jobs, agents); returns seconds taken."""
    t0 = time.perf_counter()
    store = Store(url, connect_args={"options": options})
    store.migrate()
    doc = json.loads(GOLDEN.read_text())
    base = {r["variant"]: r for r in doc["records"] if r["settings"]["threads"] == 1}
    variants = sorted(base)
    rng = np.random.default_rng(7)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=90)
    hosts = [f"edge-{i:02d}" for i in range(20)]
    device_of = {h: DEVICES[i % len(DEVICES)] for i, h in enumerate(hosts)}
    t = dt.datetime.now(dt.timezone.utc)
    with store.engine.begin() as conn:
        for i, h in enumerate(hosts):
            cap, name = device_of[h]
            inv = dict(doc["agents"][0], agent_id=f"agent-{h}", host=dict(doc["agents"][0]["host"], hostname=h),
                       capabilities=[dict(doc["agents"][0]["capabilities"][0], name=cap, device_name=name)],
                       heartbeat_at=(t - dt.timedelta(seconds=5 if i % 4 else 3600)).isoformat())  # fmt: skip
            conn.execute(sa.insert(AgentRow), [dict(agent_id=inv["agent_id"], hostname=h, inventory=inv,
                                                    first_seen=start, last_heartbeat=dt.datetime.fromisoformat(
                                                        inv["heartbeat_at"]))])  # fmt: skip
    batch, jobs, per_sweep = [], [], 2000
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        variant = variants[(i // len(MODELS)) % len(variants)]
        host = hosts[(i // (len(MODELS) * len(variants))) % len(hosts)]
        threads = (1, 2, 4)[(i // 7000) % 3]
        cap, device_name = device_of[host]
        sweep_id = f"bench{i // per_sweep:011d}"
        when = start + dt.timedelta(days=90 * i / n)
        r = base[variant]
        factor = (1 + MODELS.index(model)) * (1 + DEVICES.index(device_of[host])) / threads**0.5
        samples = (np.asarray(r["samples_ns"][:100], dtype=np.float64) * factor * rng.normal(1, 0.03)).astype(int)
        summary = summarize_ns(samples)
        stats = LatencyStats.from_summary(summary, load_ms=r["stats"]["load_ms"],
                                          first_inference_ms=r["stats"]["first_inference_ms"])  # fmt: skip
        job_id = uuid.UUID(int=i).hex
        record = dict(r, job_id=job_id, model_name=model, model_id=f"{model:<64}".replace(" ", "0")[:64],
                      capability=cap, device_name=device_name, device=cap.split(":")[1], hostname=host,
                      agent_id=f"agent-{host}", host=dict(r["host"], hostname=host),
                      settings=dict(r["settings"], threads=threads),
                      stats=stats.to_dict(), finished_at=when.isoformat(), started_at=when.isoformat())  # fmt: skip
        record.pop("samples_ns", None)  # kept apart, as the store keeps them (migration 0008)
        batch.append(dict(
            job_id=job_id, attempt=1, model_id=record["model_id"], model_name=model, artifact_sha256=r["artifact_sha256"],
            variant=variant, runtime=cap.split(":")[0], runtime_version=r["runtime_version"], capability=cap,
            device=record["device"], device_name=device_name, hostname=host, agent_id=record["agent_id"],
            p50_ms=stats.p50_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, mean_ms=stats.mean_ms,
            throughput_ips=1000 / stats.mean_ms * threads**0.5, accuracy_top1=r["accuracy_top1"],
            model_size_bytes=r["model_size_bytes"] * (1 + MODELS.index(model)), valid=True, finished_at=when,
            stored_at=when, record=record, sweep_id=sweep_id, superseded=False, threads=threads,
            throughput_requests=0, fidelity_top1=(r.get("fidelity") or {}).get("top1_agreement"),
            peak_rss_bytes=r["peak_rss_bytes"], sample_count=len(samples), samples=Samples(samples).to_blob(),
        ))  # fmt: skip
        jobs.append(dict(job_id=job_id, sweep_id=sweep_id, model_id=record["model_id"], model_name=model,
                         variant=variant, capability=cap, pinned_agent=None, settings=record["settings"], spec=None,
                         state="done", reason="", error_kind=None, attempt=1, sent_attempt=1, max_attempts=3,
                         agent_id=record["agent_id"], created_at=when, updated_at=when, expires_at=None))  # fmt: skip
        if len(batch) == 5000 or i == n - 1:
            with store.engine.begin() as conn:
                conn.execute(sa.insert(Result), batch)
                conn.execute(sa.insert(JobRow), jobs)
            batch, jobs = [], []
            print(f"\r  seeded {i + 1:,} of {n:,} records", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    with store.engine.begin() as conn:
        sweeps = {(j // per_sweep) for j in range(n)}
        conn.execute(sa.insert(SweepRow), [dict(sweep_id=f"bench{s:011d}", name=f"nightly-{s % 3}", spec={},
                                                state="done", created_at=start + dt.timedelta(days=90 * s * per_sweep / n),
                                                finished_at=None) for s in sorted(sweeps)])  # fmt: skip
        conn.execute(sa.text("ANALYZE"))
    store.close()
    return time.perf_counter() - t0


def script_times(url: str) -> dict[str, tuple[float, float]]:
    """(cold, warm) seconds of each page's script under AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.ui import DB_ENV

    os.environ[DB_ENV] = url
    out = {}
    for page in PAGES:
        st.cache_data.clear()
        st.cache_resource.clear()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            at = AppTest.from_file(str(ROOT / "dashboard" / "views" / f"{page}.py"), default_timeout=120).run()
            times.append(time.perf_counter() - t0)
            if at.exception or at.error:
                raise SystemExit(f"{page}: {[e.value for e in at.exception] + [e.value for e in at.error]}")
        out[page] = (times[0], times[1])
    return out


def browser_times(url: str) -> dict[str, float]:
    """On a fresh server (cold caches): seconds from opening the dashboard until the Fleet page is drawn
    ("first open"), then from a click on each page's link until its key elements are drawn."""
    from playwright.sync_api import sync_playwright

    from tests.helpers import CHROMIUM_ARGS, INSTALL, LocalDashboard, chromium_path
    from tests.helpers import PAGES as BROWSER_PAGES

    out = {}
    chromium = chromium_path() or sys.exit(INSTALL)
    with tempfile.TemporaryDirectory() as tmp, LocalDashboard(url, Path(tmp) / "dashboard.log") as dashboard:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def drawn(heading: str, selector: str, at_least: int) -> None:
                page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
                page.wait_for_function(f"document.querySelectorAll({selector!r}).length >= {at_least}",
                                       timeout=60_000)  # fmt: skip

            t0 = time.perf_counter()
            page.goto(f"{dashboard.url}/", wait_until="domcontentloaded")
            drawn(*BROWSER_PAGES[0][2:])
            out["first open"] = time.perf_counter() - t0
            for name, _path, heading, selector, at_least in BROWSER_PAGES[1:] + BROWSER_PAGES[:1]:
                page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
                t0 = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"]').get_by_text(heading, exact=True).click()
                drawn(heading, selector, at_least)
                out[name] = time.perf_counter() - t0
            browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--keep", action="store_true", help="keep the seeded schema for the next run")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="browser passes, each on a fresh server (median reported)")
    args = p.parse_args()
    admin = sa.create_engine(args.pg)
    options = f"-csearch_path={SCHEMA}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        have = conn.execute(sa.text(f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{SCHEMA}' "
                                    "AND table_name = 'results'")).scalar()  # fmt: skip
        if have:
            have = conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.results")).scalar()
        if have and have != args.records:
            conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"))
            have = 0
    seed_s = 0.0
    if not have:
        seed_s = seed(args.pg, options, args.records)
    url = sa.engine.make_url(args.pg).update_query_dict({"options": options}).render_as_string(hide_password=False)
    try:
        scripts = script_times(url)
        passes = [] if args.no_browser else [browser_times(url) for _ in range(args.repeat)]
        browser = {k: statistics.median(p[k] for p in passes) for k in (passes[0] if passes else {})}
        worst = {k: max(p[k] for p in passes) for k in browser}
    finally:
        if not args.keep:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
        admin.dispose()
    print(f"\n{args.records:,} records in PostgreSQL" + (f" (seeded in {seed_s:.0f} s)" if seed_s else " (reused)"))
    if "first open" in browser:
        print(f"first open of the dashboard (fresh server, Fleet page drawn): median {browser['first open']:.2f} s, "
              f"worst {worst['first open']:.2f} s of {args.repeat}")  # fmt: skip
    print(f"{'page':<10} {'script cold':>12} {'script warm':>12} {'browser median':>15} {'worst':>8}"
          f"  target <= {TARGET_S:.0f} s (median)")  # fmt: skip
    for page in PAGES:
        cold, warm = scripts[page]
        med = f"{browser[page]:.2f} s" if page in browser else "-"
        bad = f"{worst[page]:.2f} s" if page in browser else "-"
        verdict = "met" if max(cold, browser.get(page, 0.0)) <= TARGET_S else "MISSED"
        print(f"{page:<10} {cold:>10.2f} s {warm:>10.2f} s {med:>15} {bad:>8}  {verdict}")


if __name__ == "__main__":
    main()
