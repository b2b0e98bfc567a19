"""Readiness verdicts, budgets files, regression detection, their CLI exit codes and JUnit output,
on three real demo runs (tests/data/demo_runs.json)."""

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.analysis.readiness import (
    Budget,
    BudgetError,
    assess,
    candidates,
    judge,
    parse_budgets,
    recommend,
)  # fmt: skip
from controller.analysis.regress import IMPROVEMENT, REGRESSION, SAME, compare, significance
from protocol import ResultRecord
from tests.golden_demo import GOLDEN, seed, slowed

ROOT = Path(__file__).resolve().parent.parent
DOC = json.loads(GOLDEN.read_text())
RECORDS = [ResultRecord.from_dict(r) for r in DOC["records"]]
runner = CliRunner()


def _sweep_records(i: int) -> list[ResultRecord]:
    """The records of the i-th demo run (0: 2 threads, 1 and 2: 1 thread, alike)."""
    sweep = DOC["sweeps"][i]["sweep_id"]
    jobs = {j["job_id"] for j in DOC["jobs"] if j["sweep_id"] == sweep}
    return [r for r in RECORDS if r.job_id in jobs]


# ---------------------------------------------------------------- budgets files


@pytest.mark.parametrize("doc, message", [
    ([], "expected a mapping"),
    ({"budget": []}, "unknown key(s) budget"),
    ({"required": [1]}, "'required' is a list"),
    ({"budgets": [{"devices": "*", "p90": 1}]}, "unknown key(s) p90"),
    ({"budgets": [{"p90_ms": -1}]}, "p90_ms must be a number >= 0"),
    ({"budgets": [{"p90_ms": "fast"}]}, "p90_ms must be a number >= 0"),
    ({"budgets": [{"fidelity_min": 99}]}, "fidelity_min is a fraction"),
    ({"budgets": [{"top1_agreement_min": 2}]}, "top1_agreement_min is a fraction"),
    ({"budgets": [{"fidelity_min": 0.9, "top1_agreement_min": 0.9}]}, "the same limit"),
    ({"budgets": [{"cosine_min": 1.5}]}, "cosine_min is a fraction"),
    ({"budgets": [{"devices": ""}]}, "devices is a capability or a glob"),
    ({"budgets": ["litert:cpu"]}, "budgets[0]: expected a mapping"),
])  # fmt: skip
def test_bad_budgets_files_name_the_entry(doc, message):
    with pytest.raises(BudgetError) as err:
        parse_budgets(doc, "b.yaml")
    assert message in str(err.value) and "b.yaml" in str(err.value)


def test_the_first_matching_rule_applies():
    b = parse_budgets({"required": "litert:cpu", "budgets": [
        {"devices": "litert:gpu", "p90_ms": 1}, {"devices": "litert:*", "p99_ms": 2, "p50_ms": 1}, {"p90_ms": 9}]})
    assert b.required == ("litert:cpu",)
    assert b.for_capability("litert:gpu").latency_ms == {90: 1.0}
    assert b.for_capability("litert:cpu").latency_ms == {99: 2.0, 50: 1.0}
    assert b.for_capability("litert:cpu").percentile == 99
    assert b.for_capability("openvino:CPU").latency_ms == {90: 9.0}
    assert parse_budgets({}).for_capability("x:y").latency_ms == {}  # no rule: only validity


# ---------------------------------------------------------------- verdicts


def test_candidates_merge_samples_before_percentiles():
    runs = [r for r in RECORDS if r.variant == "tflite-fp32" and r.settings.threads == 1]
    assert len(runs) == 2
    (c,) = [c for c in candidates(RECORDS) if c.variant == "tflite-fp32" and c.threads == 1]
    merged = np.concatenate([np.asarray(r.samples_ns) for r in runs]) / 1e6
    assert c.runs == 2 and c.samples == merged.size
    assert c.percentiles_ms[90] == pytest.approx(np.percentile(merged, 90))
    assert c.accuracy == pytest.approx(np.mean([r.accuracy_top1 for r in runs]))


def test_each_failed_limit_is_a_reason():
    pool = candidates(_sweep_records(1))
    (c,) = [c for c in pool if c.variant == "tflite-int8"]
    tight = Budget(latency_ms={90: 1e-6}, accuracy_drop_max=0.0, fidelity_min=1.0, memory_max_mb=1, size_max_mb=0.001,
                   throughput_min=1e9)  # fmt: skip
    v = judge(c, tight, fp32_accuracy=c.accuracy + 0.05)
    text = "\n".join(v.reasons)
    assert not v.passed and len(v.reasons) == 5 + (c.fidelity is not None and c.fidelity < 1.0)
    for needle in ("p90 latency", "points below fp32", "peak memory", "model size", "throughput"):
        assert needle in text
    loose = Budget(latency_ms={90: 1e3}, accuracy_drop_max=100, memory_max_mb=1e5, size_max_mb=1e3, throughput_min=1)
    assert judge(c, loose, fp32_accuracy=c.accuracy).passed


def test_an_invalid_percentile_is_a_failure_of_its_own():
    (c,) = [c for c in candidates(_sweep_records(1)) if c.variant == "tflite-fp32"]
    assert c.samples == 400  # the golden runs took 400 samples: p90 is valid, p99 (662 needed) is not
    v = judge(c, Budget(latency_ms={90: 1e3, 99: 1e3}), None)
    assert v.reasons == ("p99 is not valid: 400 samples, the MLPerf LoadGen rule needs 662; run longer (min_iterations)",)


def test_missing_measurements_are_reasons_not_passes():
    (c,) = [c for c in candidates(_sweep_records(1)) if c.variant == "tflite-fp16"]
    bare = dataclasses.replace(c, accuracy=None, fidelity=None, snr_db=None, cosine=None)
    v = judge(bare, Budget(accuracy_drop_max=1, fidelity_min=0.9), fp32_accuracy=0.97)
    assert any("no accuracy measured" in r for r in v.reasons) and any("no fidelity measured" in r for r in v.reasons)
    v = judge(c, Budget(accuracy_drop_max=1), fp32_accuracy=None)
    assert v.reasons == ("no fp32 accuracy to compare with: benchmark the fp32 variant too",)


def _cand(variant, p90, acc, size=1.0, cap="litert:cpu", threads=1):
    (c,) = [c for c in candidates(_sweep_records(1)) if c.variant == "tflite-fp32"]
    return dataclasses.replace(c, capability=cap, variant=variant, threads=threads, accuracy=acc, size_mb=size,
                               percentiles_ms={**c.percentiles_ms, 90: p90})  # fmt: skip


@pytest.mark.parametrize("cands, best", [
    ([("a", 1.0, 0.97), ("b", 0.5, 0.96)], "a"),  # more accurate wins
    ([("a", 1.0, 0.970), ("b", 0.5, 0.9695)], "b"),  # within 0.1 point: the faster
    ([("a", 0.5, 0.97, 2.0), ("b", 0.5, 0.97, 1.0)], "b"),  # same speed: the smaller file
    ([("b", 0.5, 0.97), ("a", 0.5, 0.97)], "a"),  # all equal: by name
])  # fmt: skip
def test_recommendation_tie_break(cands, best):
    verdicts = [judge(_cand(*c), Budget(), None) for c in cands]
    assert recommend(verdicts)["litert:cpu"].candidate.variant == best


def test_assess_the_demo_runs():
    budgets = parse_budgets({"required": ["litert:cpu", "openvino:*", "openvino:MYRIAD"], "budgets": [
        {"devices": "litert:*", "size_max_mb": 0.075}]})  # fmt: skip (MiB)
    r = assess("digits-cnn", RECORDS, budgets)
    assert len(r.verdicts) == 14
    failing = {v.candidate.variant for v in r.verdicts if not v.passed}
    assert failing == {"tflite-fp32", "tflite-fp16"}  # 152.7 and 79 KiB files
    assert r.recommended["litert:cpu"].candidate.variant in {"tflite-int8", "tflite-dynamic-int8"}
    assert r.required == {"litert:cpu": ["litert:cpu"], "openvino:*": ["openvino:CPU"], "openvino:MYRIAD": []}
    assert not r.ready and r.missing == ["openvino:MYRIAD"]
    # missing is told apart from failing
    assert r.why_missing("openvino:MYRIAD").startswith("no variant of digits-cnn exists for openvino:MYRIAD: no variant was")
    tight = parse_budgets({"required": ["litert:cpu"], "budgets": [{"size_max_mb": 1e-6}]})
    assert assess("digits-cnn", RECORDS, tight).why_missing("litert:cpu") == "no variant of digits-cnn passes on litert:cpu"
    why = assess("digits-cnn", RECORDS, budgets, why_absent=lambda req: "the NCS2 agent is offline").absent
    assert why == {"openvino:MYRIAD": "the NCS2 agent is offline"}


def test_snr_and_cosine_budgets():
    (c,) = [c for c in candidates(_sweep_records(1)) if c.variant == "tflite-int8"]
    c = dataclasses.replace(c, snr_db=25.0, cosine=0.995)
    v = judge(c, Budget(snr_db_min=30, cosine_min=0.999), None)
    assert v.reasons == ("worst-output SNR 25.0 dB < 30", "worst-output cosine 0.995000 < 0.999")
    assert judge(c, Budget(snr_db_min=20, cosine_min=0.99), None).passed
    # a model without class scores has no top-1: the budget says what to use instead
    v = judge(dataclasses.replace(c, fidelity=None), Budget(fidelity_min=0.9), None)
    assert v.reasons == ("no top-1 agreement: no output holds class scores; budget snr_db_min or cosine_min instead",)
    assert parse_budgets({"budgets": [{"top1_agreement_min": 0.9}]}).rules[0].fidelity_min == 0.9


# ---------------------------------------------------------------- regression detection


@pytest.mark.parametrize("shift, noise, expect", [
    (1.00, 0.05, SAME),  # A/A
    (1.30, 0.05, REGRESSION),
    (0.70, 0.05, IMPROVEMENT),
    (1.01, 0.001, SAME),  # significant (tiny noise, many samples) but below the effect threshold
])  # fmt: skip
def test_significance(shift, noise, expect):
    rng = np.random.default_rng(3)
    a = 1e6 * (1 + rng.normal(0, noise, 5000))
    b = 1e6 * shift * (1 + rng.normal(0, noise, 5000))
    t = significance(a, b, alpha=0.05, threshold=0.05)
    ratio, p, verdict = t.ratio, t.p_value, t.verdict
    assert verdict == expect and ratio == pytest.approx(shift, rel=0.01)
    if expect != SAME:
        assert p < 1e-6


def test_a_slower_tail_with_the_same_median_is_a_regression():
    """What a competing process does: the median stays, one sample in five waits for the other process."""
    rng = np.random.default_rng(5)
    a = 0.4e6 * (1 + rng.normal(0, 0.03, 4000))
    b = 0.4e6 * (1 + rng.normal(0, 0.03, 4000))
    b[rng.random(4000) < 0.2] += 4e6  # preempted
    t = significance(a, b)
    assert t.ratio == pytest.approx(1.0, abs=0.05) and t.tail_ratio > 2 and t.verdict == REGRESSION
    assert significance(b, a).verdict == IMPROVEMENT


def test_compare_pairs_runs_and_flags_an_injected_slowdown():
    a, b = _sweep_records(1), _sweep_records(2)
    rows = compare(a, a)
    assert len(rows) == 7 and {r.verdict for r in rows} == {SAME} and all(r.p_value == pytest.approx(1.0) for r in rows)
    slow = [slowed(r, 1.5) if r.variant == "openvino-fp16" else r for r in b]
    flagged = {r.variant: r for r in compare(a, slow)}
    plain = {r.variant: r for r in compare(a, b)}
    assert flagged["openvino-fp16"].verdict == REGRESSION
    assert flagged["openvino-fp16"].ratio == pytest.approx(1.5 * plain["openvino-fp16"].ratio, rel=0.01)
    assert all(flagged[v] == plain[v] for v in plain if v != "openvino-fp16")
    unpaired = compare(_sweep_records(0), a)
    assert sorted({r.verdict for r in unpaired}) == ["only in baseline", "only in candidate"]
    with pytest.raises(ValueError, match="alpha"):
        compare(a, b, alpha=0)


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def demo_db(tmp_path):
    from controller.store import Store

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    store = Store(url)
    store.migrate()
    seed(store)
    store.close()
    return url


def cli(*argv):
    from controller.cli import app

    return runner.invoke(app, list(argv), catch_exceptions=False)


def test_readiness_cli_exit_codes_junit_and_report(demo_db, tmp_path):
    budgets = ROOT / "examples" / "demo-budgets.yaml"
    junit, report, md = tmp_path / "r.xml", tmp_path / "r.html", tmp_path / "r.md"
    r = cli("readiness", "--model", "digits-cnn", "--budgets", str(budgets), "--db", demo_db,
            "--junit", str(junit), "--report", str(report))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "READY" in r.output and "recommended on litert:cpu" in r.output
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 14 + 2  # capability × variant × threads, plus the two required classes
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == 2  # tflite-fp32 (156 kB) at 1 and 2 threads
    assert all("model size" in c.find("failure").get("message") for c in failed)
    page = report.read_text()
    assert "plotly" in page.lower() and "<script" in page and "http" not in page.split("<body>")[1].split("<script")[0]
    # a required class nobody offers: not ready, exit 1
    strict = tmp_path / "strict.yaml"
    strict.write_text("required: [litert:cpu, openvino:MYRIAD]\nbudgets: []\n")
    r = cli("readiness", "--model", "digits-cnn", "--budgets", str(strict), "--db", demo_db, "--report", str(md))
    assert r.exit_code == 1 and "no variant of digits-cnn exists for openvino:MYRIAD: no variant was benchmarked" in r.output
    assert "NOT READY" in md.read_text()
    # one sweep only, by name of a baseline
    sweep = DOC["sweeps"][0]["sweep_id"]
    assert cli("baseline", "set", sweep, "--tag", "two-threads", "--db", demo_db).exit_code == 0
    r = cli("readiness", "--model", "digits-cnn", "--budgets", str(budgets), "--db", demo_db, "--sweep", "baseline:two-threads")
    assert r.exit_code == 0 and r.output.count("│ 2 ") >= 7 and "│ 1 " not in r.output
    # bad input: exit 2 with the reason
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [{p90: 1}]\n")
    r = cli("readiness", "--model", "digits-cnn", "--budgets", str(bad), "--db", demo_db)
    assert r.exit_code == 2 and "unknown key(s) p90" in r.output
    r = cli("readiness", "--model", "nope", "--budgets", str(budgets), "--db", demo_db)
    assert r.exit_code == 2 and "no stored model matches 'nope'" in r.output


def test_compare_cli_exit_codes_and_baselines(demo_db):
    from controller.store import Store
    from protocol import JobOutcome

    s1, s2 = DOC["sweeps"][1]["sweep_id"], DOC["sweeps"][2]["sweep_id"]
    r = cli("compare", s1, s1, "--db", demo_db)
    assert r.exit_code == 0 and "Regressions" not in r.output
    assert cli("baseline", "set", s1, "--tag", "release-1", "--db", demo_db).exit_code == 0
    listed = cli("baseline", "list", "--db", demo_db)
    assert "release-1" in listed.output and s1 in listed.output
    # a candidate sweep with one variant 1.5x slower: a regression, exit 1
    store = Store(demo_db)
    from controller.store.jobs import now
    from controller.store.models import JobRow, SweepRow

    t = now()
    slow = [slowed(r, 1.5) if r.variant == "tflite-fp32" else dataclasses.replace(r, job_id="c-" + r.job_id[:12])
            for r in _sweep_records(2)]  # fmt: skip
    store.add_sweep(SweepRow(sweep_id="candidate1", name="nightly", spec={}, state="done", created_at=t), [
        JobRow(job_id=r.job_id, sweep_id="candidate1", model_id=r.model_id, model_name=r.model_name, variant=r.variant,
               capability=r.capability, settings=r.settings.to_dict(), state="running", reason="", attempt=1,
               sent_attempt=1, max_attempts=1, created_at=t, updated_at=t) for r in slow])  # fmt: skip
    assert store.ingest_many([JobOutcome(job_id=r.job_id, attempt=1, ok=True, record=r, agent_id="a") for r in slow]) \
        == ["stored"] * 7
    store.close()
    r = cli("compare", "baseline:release-1", "nightly", "--db", demo_db, "--format", "json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.output)
    assert [x["variant"] for x in out["regressions"]] == ["tflite-fp32"]
    assert out["regressions"][0]["ratio"] > 1.3 and out["regressions"][0]["p_value"] < 0.05
    r = cli("compare", "baseline:nope", s2, "--db", demo_db)
    assert r.exit_code == 2 and "no baseline 'nope'" in r.output
    r = cli("baseline", "set", s1, "--tag", "bad tag", "--db", demo_db)
    assert r.exit_code == 2


@pytest.mark.slow
def test_the_html_report_opens_in_chromium(demo_db, tmp_path):
    """The report is self-contained: it draws its charts in headless Chromium with no network."""
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard_browser import CHROMIUM_ARGS, SCREENSHOTS, chromium

    report = tmp_path / "readiness.html"
    r = cli("readiness", "--model", "digits-cnn", "--budgets", str(ROOT / "examples" / "demo-budgets.yaml"),
            "--db", demo_db, "--report", str(report))  # fmt: skip
    assert r.exit_code == 0, r.output
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        errors, requests = [], []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: requests.append(req.url))
        page.goto(report.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=30_000)
        assert page.locator("#verdict").inner_text() == "READY"
        assert page.locator("#verdicts tr").count() == 1 + 14
        assert page.locator("#recommended li").count() == 2
        assert page.locator(".js-plotly-plot .shapelayer path").count() >= 2  # the budget lines
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "readiness-report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests  # nothing fetched


def test_a_constant_reference_warning_reaches_the_candidate():
    records = _sweep_records(1)
    warned = [dataclasses.replace(r, fidelity=dataclasses.replace(r.fidelity, warnings=("output 'x': constant",)))
              if r.variant == "tflite-int8" and r.fidelity else r for r in records]  # fmt: skip
    by_variant = {c.variant: c for c in candidates(warned)}
    assert by_variant["tflite-int8"].warnings == ("output 'x': constant",)
    assert by_variant["tflite-fp32"].warnings == ()


def test_a_name_means_the_version_that_has_records(store, golden_record):
    """readiness NAME after the model's second version was stored but not yet benchmarked: the first version's
    records, not "no records"; with --sweep, the version that sweep ran."""
    import datetime as dt

    from controller.cli.readiness import _model_records
    from controller.store.models import JobRow, SweepRow
    from protocol import JobOutcome

    r, now = golden_record, dt.datetime.now(dt.timezone.utc)
    v1 = r.model_id
    assert store.add_model(v1, r.model_name, "keras", "m.keras", 10)
    store.add_sweep(SweepRow(sweep_id="s-one", name="one", spec={}, state="done", created_at=now),
                    [JobRow(job_id=r.job_id, sweep_id="s-one", model_id=v1, model_name=r.model_name, variant=r.variant,
                            capability=r.capability, settings={}, state="running", created_at=now, updated_at=now)])  # fmt: skip
    assert store.ingest(JobOutcome(job_id=r.job_id, attempt=r.attempt, ok=True, record=r, agent_id=r.agent_id)) == "stored"
    assert store.add_model("e" * 64, golden_record.model_name, "keras", "m.keras", 12)  # v2, never benchmarked
    assert store.find_model(golden_record.model_name).model_id == "e" * 64
    for sweep in (None, "s-one"):
        name, records = _model_records(store, golden_record.model_name, sweep)
        assert name == golden_record.model_name and [x.model_id for x in records] == [v1], sweep
