"""`fleetbench dashboard` in Debian's headless Chromium, driven by Playwright: every page opens, shows its
key elements and no Streamlit exception box; a screenshot of each goes to build/screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM_ARGS, INSTALL, PAGES, LocalDashboard, chromium_path

SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
pytestmark = pytest.mark.slow


def chromium() -> str:
    path = chromium_path()
    if not path:
        pytest.fail(INSTALL)
    return path


def _serve(url: str, log: Path, env: dict | None = None):
    """`fleetbench dashboard` on ``url``: yields the page's address, stops it after."""
    from controller.errors import ServiceError

    dashboard = LocalDashboard(url, log, env=env)
    try:
        dashboard.start()
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield dashboard.url
    dashboard.stop()


@pytest.fixture(scope="module")
def dashboard_url(golden_demo_url, tmp_path_factory):
    yield from _serve(golden_demo_url, tmp_path_factory.mktemp("dash-log") / "dashboard.log")


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's Python package: pip install 'fleetbench[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("name, path, heading, selector, at_least", PAGES, ids=[p[0] for p in PAGES])
def test_every_page_renders_in_chromium(dashboard_url, browser, name, path, heading, selector, at_least):
    page = browser.new_page(viewport={"width": 1400, "height": 1500})  # tall: the screenshot shows most of the page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.monotonic()
    page.goto(f"{dashboard_url}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll({selector!r}).length >= {at_least}", timeout=60_000)
    shown_s = time.monotonic() - t0
    # let the script run finish (the status widget says "Running" until then)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)  # charts finish drawing
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert page.locator(selector).count() >= at_least
    for other in ("Fleet", "Sweeps", "Explorer", "Compare", "Profile", "History", "Regressions"):  # the navigation lists every page
        assert page.locator('[data-testid="stSidebarNav"]').get_by_text(other, exact=True).count() == 1
    if name in ("fleet", "explorer", "compare"):
        assert page.locator('[data-testid="stMetric"]').count() >= 4
    if name in ("fleet", "sweeps", "explorer", "compare"):
        assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    print(f"{name}: key elements shown {shown_s:.2f} s after navigation")
    assert not errors, errors
    page.close()


def _seeded(tmp_path_factory, name: str, *seeders, db: str | None = None):
    """A dashboard on a new SQLite store (at ``db`` when given) that each of ``seeders`` (store -> None) fills."""
    from controller.store import Store

    root = tmp_path_factory.mktemp(f"dash-{name}")
    url = db or f"sqlite:///{root / f'{name}.db'}"
    store = Store(url)
    store.migrate()
    for fill in seeders:
        fill(store)
    store.close()
    yield from _serve(url, root / "dashboard.log")


def _open(browser, url: str, heading: str, ready: str, height: int, exact: bool = False):
    """A page at ``url`` once ``heading`` and what ``ready`` (a JS condition) waits for are drawn and the script
    run has finished, with no Streamlit exception or error box: (page, its heading, the page errors so far)."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    found = page.get_by_role("heading", name=heading, exact=exact).first
    found.wait_for(timeout=60_000)
    # the heading can draw before what follows it (and before the status widget shows): wait for that too
    page.wait_for_function(ready, timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)  # charts finish drawing
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    return page, found, errors


@pytest.fixture(scope="module")
def profiled_url(tmp_path_factory):
    """A dashboard on the golden profiled runs (tests/data/profile_runs.json)."""
    from tests.golden_demo import seed

    yield from _seeded(tmp_path_factory, "profiled", lambda store: seed(store, Path(__file__).parent / "data" / "profile_runs.json"))


def test_the_profile_page_renders_in_chromium(profiled_url, browser):
    page, _, errors = _open(browser, f"{profiled_url}/profile", "Profile",
                            "document.querySelectorAll('.js-plotly-plot').length >= 2", height=2200, exact=True)  # fmt: skip
    assert page.locator('[data-testid="stMetric"]').count() >= 4 and page.locator('[data-testid="stDataFrame"]').count() >= 2
    for heading in ("Placement and precision coverage", "Time by op type", "Slowest nodes"):
        assert page.get_by_role("heading", name=heading).count() == 1
    legend = page.locator(".js-plotly-plot").first.locator(".legendtext")  # the coverage chart names its precisions
    assert {legend.nth(i).text_content() for i in range(legend.count())} == {"f32", "i8", "unknown"}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "profile.png"), full_page=True)
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def quant_url(tmp_path_factory):
    """A dashboard on the golden runs with the demo model's accuracy-keeping variants and per-layer reports."""
    from tests.golden_demo import seed, seed_quant

    yield from _seeded(tmp_path_factory, "quant", seed, seed_quant)


def test_explorer_shows_the_quantization_details_beside_fidelity(quant_url, browser):
    page, heading, errors = _open(browser, f"{quant_url}/explorer", "Quantization: what each int8 variant kept, and where int8 loses",
                                  "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 3", height=3200)  # fmt: skip
    assert page.locator('[data-testid="stDataFrame"]').count() >= 3  # the variants, one report, the selection
    assert page.get_by_text("Per-layer quantization error of").count() == 1
    assert page.get_by_text("rmse/scale is the error in quantization steps", exact=False).count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    heading.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "explorer-quantization.png"), full_page=True)
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def conditions_url(tmp_path_factory):
    """A dashboard on the golden runs and three sustained runs with energy figures, one disturbed and throttled."""
    from tests.golden_demo import seed, seed_conditions

    yield from _seeded(tmp_path_factory, "conditions", seed, seed_conditions)


def test_explorer_draws_energy_sustained_runs_and_marks_disturbed_ones(conditions_url, browser):
    page, heading, errors = _open(browser, f"{conditions_url}/explorer", "Sustained runs: latency over time",
                                  "document.querySelectorAll('.js-plotly-plot').length >= 6", height=3200)  # fmt: skip
    assert page.get_by_role("heading", name="Energy against latency").count() == 1
    assert page.get_by_text("1 run(s) were disturbed", exact=False).count() == 1
    legend = page.locator(".js-plotly-plot", has=page.locator(".legendtext", has_text="drift 1.40x")).first.locator(".legendtext")
    assert sorted(legend.nth(i).text_content().rsplit("(", 1)[1] for i in range(legend.count())) == [
        "drift 1.02x)", "drift 1.15x)", "drift 1.40x)"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    heading.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "explorer-sustained.png"), full_page=True)
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def locked_url(golden_demo_url, tmp_path_factory):
    """The dashboard as `fleetbench dashboard --host 0.0.0.0` runs it: a token opens it."""
    yield from _serve(golden_demo_url, tmp_path_factory.mktemp("dash-locked") / "dashboard.log",
                      env={"FLEETBENCH_DASHBOARD_TOKENS": "team-token-1, team-token-2"})


def test_a_token_opens_the_dashboard_and_nothing_else_does(locked_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{locked_url}/explorer", wait_until="domcontentloaded")
    field = page.get_by_label("Token", exact=True)
    field.wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Explorer").count() == 0 and page.locator(".js-plotly-plot").count() == 0
    field.fill("team-token-3")
    page.get_by_role("button", name="Open").click()
    page.get_by_text("That is not one of this dashboard's tokens").wait_for(timeout=30_000)
    assert page.get_by_role("heading", name="Explorer").count() == 0
    page.get_by_label("Token", exact=True).fill("team-token-2")
    page.get_by_role("button", name="Open").click()
    page.get_by_role("heading", name="Explorer", exact=True).first.wait_for(timeout=60_000)  # the page it was sent to
    page.locator('[data-testid="stSidebarNav"]').get_by_text("History", exact=True).click()  # the session stays open
    page.get_by_role("heading", name="History", exact=True).first.wait_for(timeout=60_000)
    page.close()


def test_a_shared_history_link_reopens_the_same_view(dashboard_url, browser):
    page, _, errors = _open(browser, f"{dashboard_url}/history?model=digits-cnn&metric=p99_ms&threads=2", "History",
                            "document.querySelectorAll('.js-plotly-plot').length >= 1", height=1200, exact=True)  # fmt: skip
    assert page.get_by_text("p99 latency (ms)").count() >= 1  # the metric the link names, not the default p50
    assert "metric=p99_ms" in page.url and "threads=2" in page.url
    assert not errors, errors
    page.close()


def test_a_shared_explorer_link_reopens_its_filters_and_every_chart_and_table_downloads(dashboard_url, browser):
    """The sidebar filters and the quality axis come from the URL, and go back into it; each chart shows its
    "Download plot as png" button, and a table's toolbar downloads it as CSV."""
    page, _, errors = _open(browser, f"{dashboard_url}/explorer?variant=tflite-int8&variant=openvino-int8&quality=fidelity_cosine",
                            "Explorer", "document.querySelectorAll('.js-plotly-plot').length >= 3", height=3000,
                            exact=True)  # fmt: skip
    chips = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(has_text="Variant")
    assert sorted(chips.locator("[data-tag]").all_inner_texts()) == ["openvino-int8", "tflite-int8"]
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Variants").get_by_text("2", exact=True).count() == 1
    checked = page.get_by_role("radiogroup", name="Quality").locator('[data-testid="stRadioOption"][data-selected="true"]')
    assert checked.inner_text() == "worst-output mean cosine vs fp32"  # the quality the link names, not the first
    assert "variant=tflite-int8" in page.url and "quality=fidelity_cosine" in page.url
    charts = page.locator(".js-plotly-plot").count()
    assert page.locator('.modebar-btn[data-title="Download plot as a PNG"]').count() == charts >= 3
    table = page.locator('[data-testid="stDataFrame"]').last
    table.scroll_into_view_if_needed()
    table.hover()
    button = page.locator('[data-testid="stElementToolbar"] button[aria-label="Download as CSV"]').last
    button.wait_for(timeout=10_000)
    # Chromium offers a save dialog (showSaveFilePicker) no headless run answers: without it, Streamlit downloads
    page.evaluate("() => { window.showSaveFilePicker = undefined; }")
    with page.expect_download(timeout=30_000) as download:
        button.click()
    csv = Path(download.value.path()).read_text(encoding="utf-8-sig")  # with a BOM, for Excel
    assert csv.splitlines()[0].startswith("model_name,variant") and {"tflite-int8", "openvino-int8"} <= set(csv.split(","))
    assert not errors, errors
    page.close()


def test_a_shared_compare_link_reopens_the_same_pair(dashboard_url, browser):
    page, _, errors = _open(browser, f"{dashboard_url}/compare?mode=two+variants&a=openvino-fp32&b=openvino-int8&metric=p99_ms",
                            "Compare", "document.querySelectorAll('.js-plotly-plot').length >= 1", height=1400,
                            exact=True)  # fmt: skip
    assert page.get_by_text("B / A of p99 latency (ms)").count() >= 1
    for label, value in (("A (baseline)", "openvino-fp32"), ("B (candidate)", "openvino-int8")):
        assert page.get_by_role("combobox", name=label).input_value() == value
    assert not errors, errors
    page.close()


def _seed_step(golden_record):
    """A series that is 25% slower from its 13th record on, where the model's second version arrived; the change
    point stored as `fleetbench regressions` stores it."""
    from tests.test_regressions import NOISE, _ingest

    def fill(store):
        from controller.regressions import scan

        _ingest(store, golden_record, list(NOISE[:12]), name="cp-model")
        _ingest(store, golden_record, list(NOISE[12:18] * 1.25), name="cp-model", start=12, model_id="f" * 64)
        assert [cp.kind for cp in scan(store, metrics=("p50_ms",))] == ["regression"]

    return fill


@pytest.fixture(scope="module")
def step_dashboard(tmp_path_factory, golden_record):
    """(the dashboard's address, its database URL) on the seeded step."""
    root = tmp_path_factory.mktemp("dash-step-db")
    db = f"sqlite:///{root / 'step.db'}"
    for url in _seeded(tmp_path_factory, "step", _seed_step(golden_record), db=db):
        yield url, db


def test_the_feed_shows_a_seeded_regression_and_opens_its_series_with_it_marked(step_dashboard, browser, golden_record):
    step_url, db = step_dashboard
    page, _, errors = _open(browser, f"{step_url}/regressions", "Regressions",
                            "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 1", height=900,
                            exact=True)  # fmt: skip
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Unacknowledged regressions").get_by_text(
        "1", exact=True).count() == 1  # fmt: skip
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "regressions.png"), full_page=True)
    from dashboard import data  # the grid draws its cells on a canvas: the link is read from the page's own data

    engine = data.readonly_engine(db)
    (link,) = data.feed(engine)["history"]
    engine.dispose()
    assert link == f"history?model=cp-model&metric=p50_ms&threads=1&device={golden_record.device_name.replace(' ', '+')}"
    history = f"{step_url}/{link}"
    page.goto(history, wait_until="domcontentloaded")
    page.get_by_role("heading", name="History", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)
    legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert "regression" in legend and "new model version" in legend, legend
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Unacknowledged regressions").get_by_text(
        "1", exact=True).count() == 1  # fmt: skip
    page.screenshot(path=str(SCREENSHOTS / "history-regression.png"), full_page=True)
    assert not errors, errors
    page.close()


#: the accessible copy of a grid's drawn rows (Streamlit draws a table's cells on a canvas, and keeps them, for
#: screen readers, in a <table> inside it): a list of rows, each a list of cell texts
GRID_ROWS = "el => [...el.querySelectorAll('table[role=grid] tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))"


@pytest.fixture(scope="module")
def fleet_10k_url(tmp_path_factory):
    """A dashboard on 10,000 agents of six kinds (tests/fleet_seed.py): one in five offline, 2 jobs running."""
    import datetime as dt

    from tests.fleet_seed import agent_id, insert_agents

    # the live agents beat 10 minutes ahead: still online however long the dashboard takes to start
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    yield from _seeded(tmp_path_factory, "fleet10k", lambda store: insert_agents(store.engine, 10_000, now,
                                                                                running={agent_id(1): 2}))  # fmt: skip


def test_the_fleet_page_with_10000_agents_counts_searches_and_pages(fleet_10k_url, browser):
    page, _, errors = _open(browser, f"{fleet_10k_url}/", "Fleet", "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 2",
                            height=2600, exact=True)  # fmt: skip
    page.get_by_text("agents 1–50 of 10,000", exact=True).wait_for(timeout=30_000)
    metrics = {m.split("\n")[0]: m.split("\n")[-1] for m in page.locator('[data-testid="stMetric"]').all_inner_texts()}
    assert metrics == {"Agents": "10,000", "Online": "8,000", "Offline": "2,000", "Capabilities": "11",
                       "Jobs running": "2"}  # fmt: skip
    assert page.get_by_role("heading", name="By device class and capability").count() == 1
    grids = page.locator('[data-testid="stDataFrame"]')
    # agent i has the capabilities of PROFILES[i % 6] and is offline when i % 5 == 0
    assert grids.nth(0).evaluate(GRID_ROWS) == [
        ["CPU", "litert:cpu", "3999", "1001", "5000"],
        ["CPU", "openvino:CPU", "5334", "1333", "6667"],
        ["GPU", "litert:gpu", "1334", "333", "1667"],
        ["GPU", "openvino:GPU", "1333", "333", "1666"],
        ["GPU", "tflite:gpu", "1334", "333", "1667"],
        ["NCS2", "openvino:MYRIAD", "1334", "333", "1667"],
        ["FPGA", "openvino:HETERO:FPGA,CPU", "1334", "333", "1667"],
        ["FPGA", "tflite:fpga", "1334", "333", "1667"],
        ["NPU", "litert:npu", "1333", "333", "1666"],
        ["NPU", "openvino:NPU", "1333", "333", "1666"],
        ["other", "tflite:edgetpu", "1332", "334", "1666"],
    ]
    first, second = grids.nth(1).evaluate(GRID_ROWS)[:2]
    # agent, host, machine, capabilities, status, ... (dashboard.data.AGENT_COLUMNS)
    assert first[:2] == ["agent-00000", "edge-00000"] and first[4].startswith("offline since ")  # 0 % 5 == 0
    assert second[:2] == ["agent-00001", "edge-00001"] and second[4] == "online"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "fleet-10k.png"), full_page=True)

    page.get_by_role("button", name="Next", exact=True).click()  # the second page
    page.get_by_text("agents 51–100 of 10,000", exact=True).wait_for(timeout=30_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    page.wait_for_timeout(500)
    rows = page.locator('[data-testid="stDataFrame"]').nth(1).evaluate(GRID_ROWS)
    assert rows[0][0] == "agent-00050" and "page=2" in page.url

    box = page.get_by_label("Search agent id or host")  # one agent, by its id: the search starts at its first page
    box.fill("AGENT-04242")
    box.press("Enter")
    page.get_by_text("agents 1–1 of 1", exact=True).wait_for(timeout=30_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    page.wait_for_timeout(500)
    rows = page.locator('[data-testid="stDataFrame"]').nth(1).evaluate(GRID_ROWS)
    assert [[r[0], r[1], r[4]] for r in rows] == [["agent-04242", "edge-04242", "online"]]  # agent, host, status
    assert "q=AGENT-04242" in page.url and "page=" not in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
    page.close()
