"""The agent's energy sources on recorded sysfs trees (tests/sysfs.py), read through the code that reads a real
device; the sampler's joules, watts and validity."""

import os
import time

import pytest

from agent.energy import MIN_INTERVALS, Counter, Hwmon, Rapl, Sampler, Sources
from tests.sysfs import Ina3221Tree, RaplTree, Ticker


def test_rapl_finds_every_zone_and_its_wrap_range(tmp_path):
    RaplTree(tmp_path)
    probe = Rapl(tmp_path).probe()
    assert sorted(d.name.split(" ")[0] for d in probe.domains) == ["core", "dram", "package-0", "psys", "uncore"]
    assert all(d.kind == "energy" and d.source == "rapl" for d in probe.domains) and probe.missing == []


def test_a_wrapping_counter_keeps_counting(tmp_path):
    tree = RaplTree(tmp_path, wrap_uj=50_000_000, start_uj=49_000_000)  # 1 J below the wrap
    rapl = Rapl(tmp_path)
    domains = rapl.probe().domains
    pkg = next(d for d in domains if d.name.startswith("package-0"))
    counter = Counter(rapl.ranges[pkg.key])
    assert counter.add(rapl.read([pkg])[pkg.name]) == 0.0
    tree.advance(1.0)  # 15 J at 15 W: the counter wraps past 50 J
    raw = rapl.read([pkg])[pkg.name]
    assert raw < 49.0  # the raw counter fell
    assert counter.add(raw) == pytest.approx(15.0) and counter.wraps == 1
    tree.advance(2.0)
    assert counter.add(rapl.read([pkg])[pkg.name]) == pytest.approx(45.0)


def test_the_sampler_integrates_a_ticking_rapl_tree(tmp_path):
    tree = RaplTree(tmp_path, wrap_uj=3_000_000, start_uj=0)  # wraps every 0.2 s at 15 W
    sources = Sources.probe(powercap=tmp_path, hwmon=tmp_path / "none", nvml=False)
    with Ticker(tree, step_s=0.005):
        sampler = Sampler(sources, interval_s=0.01, clock=lambda: tree.t).start()  # timed by the device's clock
        while tree.t < 0.5:
            time.sleep(0.01)
        energy = sampler.stop()
    assert energy.valid, energy.why
    assert energy.intervals >= MIN_INTERVALS and energy.seconds >= 0.4
    pkg = next(n for n in energy.joules if n.startswith("package-0"))
    # a tick may land between a sample's reads and its clock: at most one 5 ms step (75 mJ of ~7.5 J) each end
    assert energy.avg_w[pkg] == pytest.approx(15.0, rel=0.05), energy.avg_w
    dram = next(n for n in energy.joules if n.startswith("dram"))
    assert energy.avg_w[dram] == pytest.approx(2.0, rel=0.05)
    assert energy.joules[pkg] == pytest.approx(15.0 * energy.seconds, rel=0.05)
    assert energy.sources[pkg] == "rapl" and energy.peak_w[pkg] >= energy.avg_w[pkg]


def test_too_short_a_window_is_invalid_with_the_reason(tmp_path):
    RaplTree(tmp_path)
    sampler = Sampler(Sources.probe(powercap=tmp_path, hwmon=tmp_path / "none", nvml=False), interval_s=10.0).start()
    energy = sampler.stop()
    assert not energy.valid and "fewer than 10" in energy.why and energy.intervals < MIN_INTERVALS


def test_ina3221_rails_are_voltage_times_current_and_power_files_are_read(tmp_path):
    tree = Ina3221Tree(tmp_path)
    probe = Hwmon(tmp_path).probe()
    names = {d.name: d for d in probe.domains}
    assert set(names) == {"ina238 power1", "ina3221 VDD_IN", "ina3221 VDD_CPU_GPU_CV", "ina3221 VDD_SOC"}
    values = Hwmon(tmp_path).read(probe.domains)
    assert values["ina3221 VDD_IN"] == pytest.approx(6.0)  # 5 V × 1.2 A
    assert values["ina238 power1"] == pytest.approx(2.5)
    tree.set_current(1, 2000)
    assert Hwmon(tmp_path).read([names["ina3221 VDD_IN"]])["ina3221 VDD_IN"] == pytest.approx(10.0)


def test_power_sensors_integrate_to_joules(tmp_path):
    Ina3221Tree(tmp_path)
    sources = Sources.probe(powercap=tmp_path / "none", hwmon=tmp_path, nvml=False)
    energy = Sampler(sources, interval_s=0.01).start()
    time.sleep(0.2)
    e = energy.stop()
    assert e.valid, e.why
    assert e.avg_w["ina3221 VDD_IN"] == pytest.approx(6.0) and e.peak_w["ina3221 VDD_IN"] == pytest.approx(6.0)
    assert e.joules["ina3221 VDD_IN"] == pytest.approx(6.0 * e.seconds)


def test_no_sensor_says_why(tmp_path):
    sources = Sources.probe(powercap=tmp_path / "no-powercap", hwmon=tmp_path / "no-hwmon", nvml=False)
    assert sources.readers == []
    assert sources.none_why.startswith("no energy sensor: rapl: ") and "does not exist" in sources.none_why
    e = Sampler(sources, interval_s=0.01).start().stop()
    assert not e.valid and e.why.startswith("no energy sensor") and e.joules == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_counter_names_the_permission_and_the_fix(tmp_path):
    RaplTree(tmp_path)
    (tmp_path / "intel-rapl:1" / "energy_uj").chmod(0o000)
    probe = Rapl(tmp_path).probe()
    assert any("permission denied" in m and "udev rule" in m for m in probe.missing)
    assert "psys (intel-rapl:1)" not in {d.name for d in probe.domains}


def test_nvml_says_what_is_missing_here():
    from agent.energy import Nvml

    probe = Nvml().probe()
    # this machine has no NVIDIA driver (and may lack nvidia-ml-py): either way one line says which
    assert probe.domains == [] and len(probe.missing) == 1 and probe.missing[0].startswith("nvml: ")


# ---------------------------------------------------------------- the latency phase's energy, on a real job

def _spec(tmp_path, tiny_model):
    from controller.artifacts import ArtifactStore
    from protocol import BenchmarkSettings, JobSpec

    settings = BenchmarkSettings(threads=1, warmup_iterations=5, min_iterations=50, min_duration_s=0.5, timeout_s=120)
    art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
    return JobSpec(job_id="energy", model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                   artifact=art, settings=settings)  # fmt: skip


def test_a_job_on_a_device_with_a_rapl_counter_records_its_energy(tmp_path, tiny_model, monkeypatch):
    from agent import benchmark
    from protocol import ResultRecord

    tree = RaplTree(tmp_path / "powercap", wrap_uj=5_000_000, start_uj=4_000_000)  # wraps during the job
    monkeypatch.setenv("FLEETBENCH_POWERCAP_ROOT", str(tmp_path / "powercap"))
    monkeypatch.setenv("FLEETBENCH_HWMON_ROOT", str(tmp_path / "no-hwmon"))
    spec = _spec(tmp_path, tiny_model)
    with Ticker(tree, step_s=0.005):
        record = benchmark.execute(spec, "agent-e")
    e = record.energy
    assert e.valid, e.why
    assert e.intervals >= MIN_INTERVALS and e.interval_s == 0.02
    assert e.inferences == 1 + 5 + len(record.samples_ns)
    names = [d.name for d in e.domains]
    assert names[0].startswith("package-0") and {n.split(" ")[0] for n in names} == {"package-0", "core", "uncore",
                                                                                   "dram", "psys"}  # fmt: skip
    pkg = e.domains[0]
    assert pkg.source == "rapl" and pkg.joules > 0 and pkg.peak_w >= pkg.avg_w > 0
    assert e.mj_per_inference == pytest.approx(pkg.joules / e.inferences * 1e3)
    record.check_consistent()
    again = ResultRecord.from_json(record.to_json())
    assert again.energy == e


def test_the_throughput_phase_gets_its_own_energy_figure(tmp_path, tiny_model, monkeypatch):
    import dataclasses

    from agent import benchmark

    tree = RaplTree(tmp_path / "powercap")
    monkeypatch.setenv("FLEETBENCH_POWERCAP_ROOT", str(tmp_path / "powercap"))
    monkeypatch.setenv("FLEETBENCH_HWMON_ROOT", str(tmp_path / "no-hwmon"))
    spec = _spec(tmp_path, tiny_model)
    spec = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, throughput_requests=2, throughput_duration_s=0.5))
    with Ticker(tree, step_s=0.005):
        record = benchmark.execute(spec, "agent-e")
    t = record.throughput
    assert t.energy.valid, t.energy.why
    assert t.energy.inferences == t.completed and 0.45 <= t.energy.seconds <= 1.0
    assert t.energy.mj_per_inference == pytest.approx(t.energy.domains[0].joules / t.completed * 1e3)
    assert record.energy.inferences == 1 + 5 + len(record.samples_ns)  # the latency phase's figure is its own
    bad = dataclasses.replace(t.energy, seconds=-1.0)
    with pytest.raises(Exception, match="throughput energy: energy figures must be finite"):
        dataclasses.replace(record, throughput=dataclasses.replace(t, energy=bad)).check_consistent()


def test_a_job_without_a_sensor_says_why_and_keeps_its_other_figures(tmp_path, tiny_model, monkeypatch):
    from agent import benchmark

    monkeypatch.setenv("FLEETBENCH_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    monkeypatch.setenv("FLEETBENCH_HWMON_ROOT", str(tmp_path / "no-hwmon"))
    record = benchmark.execute(_spec(tmp_path, tiny_model), "agent-e")
    e = record.energy
    assert not e.valid and e.why.startswith("no energy sensor: rapl: ") and e.mj_per_inference is None
    assert e.domains == () and record.stats.count > 0


def test_impossible_energy_is_refused_at_ingestion(tmp_path, tiny_model, monkeypatch):
    import dataclasses

    from agent import benchmark
    from protocol import ContractError, EnergyDomain

    tree = RaplTree(tmp_path / "powercap")
    monkeypatch.setenv("FLEETBENCH_POWERCAP_ROOT", str(tmp_path / "powercap"))
    monkeypatch.setenv("FLEETBENCH_HWMON_ROOT", str(tmp_path / "no-hwmon"))
    with Ticker(tree, step_s=0.005):
        record = benchmark.execute(_spec(tmp_path, tiny_model), "agent-e")
    bad = dataclasses.replace(record.energy, domains=(EnergyDomain("x", "rapl", float("nan"), 1.0, 1.0),))
    with pytest.raises(ContractError, match="energy: energy figures must be finite"):
        dataclasses.replace(record, energy=bad).check_consistent()


# ---------------------------------------------------------------- readiness budgets on energy


def _with_energy(record, mj=None, watts=None, why=""):
    import dataclasses

    from protocol import EnergyDomain, EnergyRecord

    if mj is None:
        e = EnergyRecord(valid=False, why=why, interval_s=0.02, intervals=0, seconds=0.0, inferences=0,
                         mj_per_inference=None)  # fmt: skip
    else:
        e = EnergyRecord(valid=True, why="", interval_s=0.02, intervals=50, seconds=1.0, inferences=1000,
                         mj_per_inference=mj, domains=(EnergyDomain("package-0 (intel-rapl:0)", "rapl", mj, watts, watts * 1.5),))  # fmt: skip
    return dataclasses.replace(record, energy=e)


def test_energy_budgets_judge_the_highest_figure_and_say_why_there_is_none(golden_record):
    from controller.analysis.readiness import candidates, judge, parse_budgets

    budgets = parse_budgets({"budgets": [{"devices": "*", "energy_per_inference_mj_max": 2.5, "power_w_max": 5}]})
    rule = budgets.for_capability(golden_record.capability)
    (c,) = candidates([_with_energy(golden_record, 2.0, 4.0), _with_energy(golden_record, 3.0, 4.5)])
    assert c.energy_mj == 3.0 and c.power_w == 4.5
    assert judge(c, rule, None).reasons == ("energy per inference 3 mJ > 2.5 mJ",)
    (ok,) = candidates([_with_energy(golden_record, 2.0, 4.0)])
    assert judge(ok, rule, None).passed
    (none,) = candidates([_with_energy(golden_record, why="no energy sensor: rapl: /sys/class/powercap does not exist")])
    assert judge(none, rule, None).reasons == ("no energy sensor: rapl: /sys/class/powercap does not exist",) * 2
    (old,) = candidates([golden_record])  # a record from before the energy phase
    assert "no energy measured" in judge(old, rule, None).reasons[0]
