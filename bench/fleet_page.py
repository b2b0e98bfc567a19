"""The Fleet page with 10, 1,000 and 10,000 agents, in headless Chromium. Target: drawn within 2 s at 10,000.

    .venv/bin/python bench/fleet_page.py [--agents 10 1000 10000] [--loads 5] [--pg postgresql+psycopg://...]

For each fleet size: a new database (SQLite in a temporary folder, or a schema of its own on --pg, dropped
afterwards) with that many agents written by tests/fleet_seed.py (six kinds of device, one in five offline, two
jobs running), and a fresh `fleetbench dashboard` on it. Then, as bench/dashboard.py counts a page:

- load (the target): ``--loads`` times, from another page (Regressions), a click on Fleet's link in the sidebar
  after the page's live cache has expired (LIVE_TTL_S), so every query runs again, until the metrics, the grouped
  table and the agents' page are drawn and the script run has finished. Median and worst;
- first open: the first load of the dashboard in a new tab on the fresh server (Streamlit's own bundle, the
  Python imports of the page's script, every query cold); new tab: the same later, median (the bundle again, not
  the queries: it is as long at 10 agents as at 10,000);
- search: typing one agent's id into the search box, until the page shows that agent alone (median).

Prints one markdown table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from controller.store import Store  # noqa: E402
from dashboard.ui import LIVE_TTL_S  # noqa: E402
from tests.fleet_seed import agent_id, insert_agents  # noqa: E402

TARGET_S = 2.0
DONE = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"


def seed(url: str, n: int, connect_args: dict | None = None) -> float:
    t0 = time.perf_counter()
    store = Store(url, **({"connect_args": connect_args} if connect_args else {}))
    store.migrate()
    insert_agents(store.engine, n, dt.datetime.now(dt.timezone.utc), running={agent_id(1): 2})
    store.close()
    return time.perf_counter() - t0


def drawn(page, n: int) -> None:
    """Wait until the Fleet page of ``n`` agents is drawn and its script run has finished."""
    page.get_by_role("heading", name="Fleet", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text(f"of {n:,}", exact=False).first.wait_for(timeout=60_000)  # the agents' page caption
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 5 && "
                           "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 2",
                           timeout=60_000)  # fmt: skip
    page.wait_for_function(DONE, timeout=60_000)


def new_tab(browser, url: str, n: int) -> tuple[float, object]:
    """Seconds from opening the dashboard in a new tab until the Fleet page of ``n`` agents is drawn."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    drawn(page, n)
    return time.perf_counter() - t0, page


def click_to_fleet(page, n: int) -> float:
    """From the Regressions page, seconds from a click on Fleet's link until the Fleet page is drawn."""
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Regressions", exact=True).click()
    page.get_by_role("heading", name="Regressions", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function(DONE, timeout=60_000)
    time.sleep(LIVE_TTL_S + 0.5)  # the live queries' cache has expired: they run again
    t0 = time.perf_counter()
    nav.get_by_text("Fleet", exact=True).click()
    drawn(page, n)
    return time.perf_counter() - t0


def search(page, wanted: str, n: int) -> float:
    """Seconds from typing ``wanted`` into the search box until the page shows that agent alone; then cleared."""
    box = page.get_by_label("Search agent id or host")
    t0 = time.perf_counter()
    box.fill(wanted)
    box.press("Enter")
    page.get_by_text("agents 1–1 of 1", exact=True).wait_for(timeout=60_000)
    page.wait_for_function(DONE, timeout=60_000)
    took = time.perf_counter() - t0
    box.fill("")
    box.press("Enter")
    page.get_by_text(f"of {n:,}", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_function(DONE, timeout=60_000)
    return took


def measure(url: str, n: int, loads: int, browser, work: Path) -> dict:
    from tests.helpers import LocalDashboard

    out: dict = {"loads": [], "tabs": [], "search": []}
    with LocalDashboard(url, work / f"dashboard-{n}.log") as dashboard:
        out["first"], page = new_tab(browser, f"{dashboard.url}/", n)
        for i in range(loads):
            out["loads"].append(click_to_fleet(page, n))
            out["search"].append(search(page, agent_id((i * 7919) % n), n))
        page.close()
        for _ in range(loads):
            took, page = new_tab(browser, f"{dashboard.url}/", n)
            out["tabs"].append(took)
            page.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[10, 1_000, 10_000])
    p.add_argument("--loads", type=int, default=5, help="loads per fleet size after the first (median reported)")
    p.add_argument("--pg", help="a PostgreSQL URL to seed schemas on (default: SQLite files)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from tests.helpers import CHROMIUM_ARGS, INSTALL, chromium_path

    chromium = chromium_path() or sys.exit(INSTALL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for n in args.agents:
            if args.pg:
                schema = f"fleetbench_bench_fleet_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(args.pg)
                with admin.begin() as conn:
                    conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
                options = f"-csearch_path={schema}"
                url = sa.engine.make_url(args.pg).update_query_dict({"options": options}).render_as_string(
                    hide_password=False)  # fmt: skip
                seeded = seed(args.pg, n, {"options": options})
            else:
                url = f"sqlite:///{Path(tmp) / f'fleet-{n}.db'}"
                seeded = seed(url, n)
            print(f"  {n:,} agents seeded in {seeded:.1f} s", file=sys.stderr, flush=True)
            try:
                got = measure(url, n, args.loads, browser, Path(tmp))
            finally:
                if args.pg:
                    with admin.begin() as conn:
                        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                    admin.dispose()
            rows.append((n, got))
        browser.close()
    print(f"\nFleet page, {'PostgreSQL' if args.pg else 'SQLite'}, headless Chromium; {args.loads} loads per size "
          f"after the first, each with the live cache expired\n")  # fmt: skip
    print("| agents | load median | load worst | target <= 2 s | search median | first open (fresh server) | "
          "new tab median |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for n, got in rows:
        med = statistics.median(got["loads"])
        verdict = "met" if med <= TARGET_S else "MISSED"
        print(f"| {n:,} | {med:.2f} s | {max(got['loads']):.2f} s | {verdict} | "
              f"{statistics.median(got['search']):.2f} s | {got['first']:.2f} s | "
              f"{statistics.median(got['tabs']):.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
