"""Each dashboard page under Streamlit's AppTest, on a database seeded from three real demo runs."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import dashboard
from dashboard.ui import DB_ENV, EMPTY

VIEWS = Path(dashboard.__file__).parent / "views"
PAGES = ("fleet", "sweeps", "explorer", "compare", "history", "regressions")


def run(page: str, url: str, monkeypatch) -> AppTest:
    monkeypatch.setenv(DB_ENV, url)
    at = AppTest.from_file(str(VIEWS / f"{page}.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_fleet(golden_demo_url, monkeypatch):
    import datetime as dt

    import sqlalchemy as sa

    from controller.store.models import AgentRow

    # the newest agent beats now (the session's database may have been made minutes ago)
    engine = sa.create_engine(golden_demo_url)
    with engine.begin() as conn:
        newest = conn.execute(sa.select(AgentRow.agent_id).order_by(AgentRow.last_heartbeat.desc()).limit(1)).scalar()
        conn.execute(sa.update(AgentRow).where(AgentRow.agent_id == newest)
                     .values(last_heartbeat=dt.datetime.now(dt.timezone.utc)))  # fmt: skip
    engine.dispose()
    at = run("fleet", golden_demo_url, monkeypatch)
    assert at.title[0].value == "Fleet"
    assert metrics(at) == {"Agents": "3", "Online": "1", "Offline": "2", "Capabilities": "2", "Jobs running": "0"}
    summary = at.dataframe[0].value
    assert summary.values.tolist() == [["CPU", "litert:cpu", 1, 2, 3], ["CPU", "openvino:CPU", 1, 2, 3]]
    table = at.dataframe[1].value
    assert len(table) == 3 and (table["capabilities"] == "litert:cpu, openvino:CPU").all()
    assert (table["status"] == "online").sum() == 1  # the newest agent
    assert table["status"].str.startswith("offline since").sum() == 2
    assert at.caption[-2].value == "agents 1–3 of 3" and at.caption[-1].value == "No job is running."


def test_fleet_search_status_and_pages(tmp_path, monkeypatch):
    """300 agents (tests/fleet_seed.py): the page's search, status filter and page controls, kept in the URL."""
    import datetime as dt

    from controller.store import Store
    from tests.fleet_seed import insert_agents

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = Store(url)
    store.migrate()
    insert_agents(store.engine, 300, dt.datetime.now(dt.timezone.utc))
    store.close()
    at = run("fleet", url, monkeypatch)
    assert metrics(at) == {"Agents": "300", "Online": "240", "Offline": "60", "Capabilities": "11", "Jobs running": "0"}

    def shown():
        return at.dataframe[1].value["agent"].tolist(), [c.value for c in at.caption]

    agents, captions = shown()
    assert agents == [f"agent-{i:05d}" for i in range(50)] and "agents 1–50 of 300" in captions
    at.button(key="fleet-next").click().run()
    agents, captions = shown()
    assert agents[0] == "agent-00050" and "agents 51–100 of 300" in captions and at.query_params["page"] == "2"
    at.radio(key="fleet-status").set_value("offline").run()  # back to the first page
    agents, captions = shown()
    assert agents[:2] == ["agent-00000", "agent-00005"] and "agents 1–50 of 60" in captions
    at.number_input(key="fleet-page").set_value(2).run()
    agents, captions = shown()
    assert len(agents) == 10 and "agents 51–60 of 60" in captions and at.button(key="fleet-next").disabled
    at.text_input(key="fleet-search").input("EDGE-0012").run()
    agents, captions = shown()
    assert agents == ["agent-00120", "agent-00125"] and "agents 1–2 of 2" in captions
    assert at.query_params["q"] == "EDGE-0012" and at.query_params["status"] == "offline"
    assert "page" not in at.query_params


def test_sweeps(golden_demo_url, monkeypatch):
    at = run("sweeps", golden_demo_url, monkeypatch)
    bars = at.get("progress")
    assert len(bars) == 3 and all(b.value == 100 for b in bars)  # percent
    assert at.selectbox[0].options and all("demo" in o for o in at.selectbox[0].options)
    jobs = at.dataframe[-1].value
    assert len(jobs) == 7 and set(jobs["state"]) == {"done"}


def test_explorer(golden_demo_url, monkeypatch):
    at = run("explorer", golden_demo_url, monkeypatch)
    assert metrics(at) == {"Records": "21", "Models": "1", "Variants": "7", "Devices": "1"}
    assert len(at.get("plotly_chart")) == 4  # quality/Pareto, boxes, size, throughput
    assert len(at.get("download_button")) == 1
    assert len(at.dataframe[0].value) == 14
    at.sidebar.multiselect[1].set_value(["tflite-fp32"]).run()  # the Variant filter
    assert not at.exception
    assert metrics(at)["Records"] == "3" and metrics(at)["Variants"] == "1"
    at.radio[0].set_value("fidelity_top1").run()
    assert not at.exception and len(at.get("plotly_chart")) == 4
    # every fidelity figure these records carry is offered (the demo's records have no SNR: they predate it)
    assert at.radio[0].options == ["top-1 accuracy", "top-1 agreement with fp32", "worst-output mean cosine vs fp32"]
    at.radio[0].set_value("fidelity_cosine").run()
    assert not at.exception and len(at.get("plotly_chart")) == 4


def test_compare(golden_demo_url, monkeypatch):
    at = run("compare", golden_demo_url, monkeypatch)
    m = metrics(at)
    # the two newest demo runs alike (1 thread): the seven variants pair up
    assert int(m["Worse in B"]) + int(m["Better in B"]) + int(m["Same"]) == 7
    assert m["Only in A"] == m["Only in B"] == "0"
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="compare-a").set_value(at.selectbox(key="compare-a").options[2]).run()  # the 2-thread run
    assert not at.exception and metrics(at)["Only in A"] == "7"
    at.radio(key="compare-mode").set_value("two variants").run()
    assert not at.exception and at.selectbox(key="compare-variant-a").value == "tflite-fp32"
    assert at.selectbox(key="compare-variant-b").value == "tflite-int8"
    m = metrics(at)  # litert:cpu at 1 and 2 threads: two pairs
    assert int(m["Worse in B"]) + int(m["Better in B"]) + int(m["Same"]) == 2
    at.radio(key="compare-mode").set_value("two hosts of one capability").run()
    assert not at.exception
    assert "two hosts" in at.info[0].value  # one host in the demo data: says what to do


def test_history(golden_demo_url, monkeypatch):
    at = run("history", golden_demo_url, monkeypatch)
    assert metrics(at)["Unacknowledged regressions"] == "0"  # three alike demo runs: no change point
    assert metrics(at)["Points"] == "14"  # the usual thread setting (1): 7 variants × 2 runs
    assert len(at.get("plotly_chart")) == 1
    at.multiselect(key="history-threads").set_value([1, 2]).run()
    assert not at.exception and metrics(at)["Points"] == "21"
    at.selectbox(key="history-metric").set_value("throughput_ips").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def test_history_shows_a_seeded_step_regression_and_its_acknowledgement(tmp_path, golden_record, monkeypatch):
    from controller.regressions import scan
    from controller.store import Store
    from tests.test_regressions import NOISE, _ingest

    url = f"sqlite:///{tmp_path / 'stepped.db'}"
    store = Store(url)
    store.migrate()
    _ingest(store, golden_record, list(NOISE[:12]) + list(NOISE[12:18] * 1.25), name="stepped")
    at = run("history", url, monkeypatch)
    assert metrics(at)["Unacknowledged regressions"] == "1" and metrics(at)["Change points"] == "1"
    (table,) = [d for d in at.dataframe if "kind" in d.value.columns]
    assert table.value[["kind", "after_job", "acked"]].values.tolist() == [["regression", "stepped-012", False]]
    (cp,) = scan(store, metrics=("p50_ms",))
    store.ack_change_point(cp.id, "expected: new preprocessing")
    store.close()
    import streamlit as st

    st.cache_data.clear()  # the page caches its queries for a minute; a new visit after that sees the ack
    at = run("history", url, monkeypatch)
    assert metrics(at)["Unacknowledged regressions"] == "0" and metrics(at)["Change points"] == "1"


def test_the_feed_lists_stored_change_points_largest_first_with_links_to_history(tmp_path, golden_record, monkeypatch):
    from controller.regressions import scan
    from controller.store import Store
    from tests.test_regressions import NOISE, _ingest

    url = f"sqlite:///{tmp_path / 'feed.db'}"
    store = Store(url)
    store.migrate()
    _ingest(store, golden_record, list(NOISE[:12]) + list(NOISE[12:18] * 1.25), name="stepped")
    _ingest(store, golden_record, list(NOISE[:12]) + list(NOISE[12:18] * 1.6), name="leapt")
    at = run("regressions", url, monkeypatch)
    assert "No change point stored yet" in at.info[0].value  # found only when `fleetbench regressions` runs
    found = scan(store, metrics=("p50_ms",))
    store.close()
    import streamlit as st

    st.cache_data.clear()
    at = run("regressions", url, monkeypatch)
    assert metrics(at)["Unacknowledged regressions"] == str(len(found)) == "2"
    table = at.dataframe[0].value
    assert table["magnitude"].tolist() == sorted(table["magnitude"], reverse=True)
    assert table["model_name"].tolist() == ["leapt", "stepped"]  # the larger change first
    device = golden_record.device_name.replace(" ", "+")  # the series' device: the link opens that one
    assert table["history"].iloc[1] == f"history?model=stepped&metric=p50_ms&threads=1&device={device}"


def test_a_history_link_opens_its_series(tmp_path, golden_record, monkeypatch):
    from controller.store import Store
    from tests.test_regressions import NOISE, _ingest

    url = f"sqlite:///{tmp_path / 'two.db'}"
    store = Store(url)
    store.migrate()
    _ingest(store, golden_record, list(NOISE[:6]), name="first")
    _ingest(store, golden_record, list(NOISE[:6]), name="second", start=10)  # the newest: what History opens on
    store.close()
    monkeypatch.setenv(DB_ENV, url)
    at = AppTest.from_file(str(VIEWS / "history.py"), default_timeout=120)
    assert AppTest.from_file(str(VIEWS / "history.py"), default_timeout=120).run().selectbox(key="history-model").value == "second"
    at.query_params["model"], at.query_params["metric"] = "first", "p99_ms"
    at.run()
    assert not at.exception
    assert at.selectbox(key="history-model").value == "first" and at.selectbox(key="history-metric").value == "p99_ms"
    at.selectbox(key="history-model").set_value("second").run()
    assert at.query_params["model"] == ["second"] or at.query_params["model"] == "second"  # the URL follows the view


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_database_says_run_the_demo_first(page, tmp_path, monkeypatch):
    from controller.store import Store

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).migrate()
    at = run(page, url, monkeypatch)
    assert any("fleetbench demo" in i.value for i in at.info), [i.value for i in at.info]
    assert at.info[0].value == EMPTY


@pytest.mark.parametrize("page", PAGES)
def test_a_missing_or_dead_database_is_a_message_not_a_traceback(page, tmp_path, monkeypatch):
    monkeypatch.setenv(DB_ENV, f"sqlite:///{tmp_path / 'missing.db'}")
    at = AppTest.from_file(str(VIEWS / f"{page}.py"), default_timeout=60).run()
    assert not at.exception
    assert "run `fleetbench demo` first" in at.error[0].value
    monkeypatch.setenv(DB_ENV, "postgresql+psycopg://u:secret@127.0.0.1:1/none")
    at = AppTest.from_file(str(VIEWS / f"{page}.py"), default_timeout=60).run()
    assert not at.exception
    assert "cannot read" in at.error[0].value and "secret" not in at.error[0].value


def test_compare_after_a_single_demo_run_compares_two_variants(tmp_path, monkeypatch):
    """One `make demo` is one sweep: the page opens on two variants of it, filled."""
    import json

    from controller.store import Store
    from tests.golden_demo import GOLDEN, seed

    doc = json.loads(GOLDEN.read_text())
    one = dict(doc, sweeps=doc["sweeps"][-1:])
    keep = {j["job_id"] for j in doc["jobs"] if j["sweep_id"] == one["sweeps"][0]["sweep_id"]}
    one["jobs"] = [j for j in doc["jobs"] if j["job_id"] in keep]
    one["records"] = [r for r in doc["records"] if r["job_id"] in keep]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(one))
    url = f"sqlite:///{tmp_path / 'one.db'}"
    store = Store(url)
    store.migrate()
    seed(store, path)
    store.close()
    at = run("compare", url, monkeypatch)
    assert at.radio(key="compare-mode").value == "two variants"
    m = metrics(at)
    assert int(m["Worse in B"]) + int(m["Better in B"]) + int(m["Same"]) == 1  # tflite-fp32 → tflite-int8 on litert:cpu
    assert len(at.get("plotly_chart")) == 1


def test_emulated_records_are_left_out_until_asked_for(tmp_path, golden_record, monkeypatch):
    """An emulated agent's record (qemu-user) is out of Explorer and the Fleet page's device counts by default,
    with a sidebar caption saying how many; the switch (kept in the URL) brings it in."""
    import dataclasses

    import streamlit as st

    from controller.store import Store

    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    store = Store(url)
    store.migrate()
    pi = dataclasses.replace(golden_record.host, machine="aarch64", emulated_by="qemu-user: aarch64 on an x86_64 kernel",
                             cpu_model="aarch64 emulated")  # fmt: skip
    assert store.add_result(golden_record)
    assert store.add_result(dataclasses.replace(golden_record, job_id="on-qemu", host=pi, device_name="aarch64 emulated"))
    store.close()
    st.cache_data.clear()
    at = run("explorer", url, monkeypatch)
    assert metrics(at)["Records"] == "1" and metrics(at)["Devices"] == "1"
    (toggle,) = [t for t in at.sidebar.toggle if t.label == "Include emulated runs"]
    assert not toggle.value
    assert any("1 record(s) of emulated agents left out" in c.value for c in at.sidebar.caption)
    toggle.set_value(True).run()
    assert not at.exception and metrics(at)["Records"] == "2" and metrics(at)["Devices"] == "2"
    assert at.query_params.get("emulated") in ("1", ["1"])
    assert not any("emulated agents left out" in c.value for c in at.sidebar.caption)
