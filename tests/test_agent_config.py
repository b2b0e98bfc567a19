"""AgentConfig: flags win over the environment, the environment over the config file, the file over defaults;
child_env is what the benchmark children and probes inherit."""

from __future__ import annotations

import os

import pytest

from agent.cli import _parser
from agent.config import AgentConfig
from protocol import JOB_TIME_LIMIT_S, VISIBILITY_TIMEOUT_S


def _resolve(argv, file=None, env=None, monkeypatch=None):
    for k in [k for k in os.environ if k.startswith("FLEETBENCH_")]:
        monkeypatch.delenv(k)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return AgentConfig.resolve(_parser().parse_args(argv), file or {})  # the parser's defaults read the environment


CASES = [
    # (name, argv, file, env, attribute, expected)
    ("defaults", [], {}, {}, "visibility_timeout_s", VISIBILITY_TIMEOUT_S),
    ("defaults: job limit", [], {}, {}, "job_time_limit_s", JOB_TIME_LIMIT_S),
    ("the file sets the broker", [], {"broker": "redis://f"}, {}, "broker", "redis://f"),
    ("the environment beats the file", [], {"broker": "redis://f"}, {"FLEETBENCH_BROKER_URL": "redis://e"}, "broker", "redis://e"),
    ("a flag beats both", ["--broker", "redis://a"], {"broker": "redis://f"}, {"FLEETBENCH_BROKER_URL": "redis://e"}, "broker", "redis://a"),
    ("the file's capabilities", [], {"capabilities": ["litert:cpu"]}, {}, "capabilities", ("litert:cpu",)),
    ("flags' capabilities win", ["--capability", "openvino:CPU"], {"capabilities": ["litert:cpu"]}, {}, "capabilities", ("openvino:CPU",)),
    ("the environment's token beats the file's", [], {"token": "f"}, {"FLEETBENCH_AGENT_TOKEN": "e"}, "token", "e"),
    ("the file's token", [], {"token": "f"}, {}, "token", "f"),
    ("file roots from the file", [], {"file_roots": ["/srv/a"]}, {}, "file_roots", ("/srv/a",)),
    ("file roots from the environment", [], {"file_roots": ["/srv/a"]}, {"FLEETBENCH_AGENT_FILE_ROOTS": "/e1:/e2"}, "file_roots", ("/e1", "/e2")),
    ("the file's OpenVINO devices replace the environment's", [], {"openvino_devices": ["AUTO:CPU"]},
     {"FLEETBENCH_OPENVINO_DEVICES": "HETERO:FPGA,CPU"}, "openvino_devices", ("AUTO:CPU",)),
    ("time limits from the file", [], {"job_time_limit_s": 60}, {}, "job_time_limit_s", 60.0),
    ("a time-limit flag wins", ["--job-time-limit", "30"], {"job_time_limit_s": 60}, {}, "job_time_limit_s", 30.0),
    ("insecure broker from the file", [], {"allow_insecure_broker": True}, {}, "allow_insecure_broker", True),
    ("no waits before jobs by default", [], {}, {}, "on_disturbance", "record"),
    ("cooldown from the file", [], {"cooldown_within_c": 3, "cooldown_s": 120}, {}, "cooldown_s", 120.0),
    ("a cooldown flag wins", ["--cooldown-s", "10"], {"cooldown_s": 120}, {}, "cooldown_s", 10.0),
    ("on_disturbance from a flag", ["--on-disturbance", "refuse"], {"on_disturbance": "wait"}, {}, "on_disturbance", "refuse"),
]  # fmt: skip


@pytest.mark.parametrize("name, argv, file, env, attr, expected", CASES, ids=[c[0] for c in CASES])
def test_where_each_setting_comes_from(monkeypatch, name, argv, file, env, attr, expected):
    assert getattr(_resolve(argv, file, env, monkeypatch), attr) == expected


def test_a_file_root_flag_is_made_absolute_and_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    c = _resolve(
        ["--file-root", "models"], {"file_roots": ["/srv/a"]}, {"FLEETBENCH_AGENT_FILE_ROOTS": "/e"}, monkeypatch
    )
    assert c.file_roots == (str(tmp_path / "models"),)


def test_child_env_hands_over_what_other_processes_read(monkeypatch):
    c = _resolve(["--state-dir", "/var/fb"], {"delegates": {"edgetpu": {"path": "libedgetpu.so.1"}}, "token": "t",
                                               "file_roots": ["/a", "/b"]}, {}, monkeypatch).with_agent_id("pi-7")  # fmt: skip
    env = c.child_env()
    assert env["FLEETBENCH_AGENT_ID"] == "pi-7" and env["FLEETBENCH_AGENT_STATE"] == "/var/fb"
    assert env["FLEETBENCH_AGENT_TOKEN"] == "t" and env["FLEETBENCH_AGENT_FILE_ROOTS"] == os.pathsep.join(["/a", "/b"])
    assert '"edgetpu"' in env["FLEETBENCH_DELEGATES"]
    assert "FLEETBENCH_OPENVINO_DEVICES" not in env  # unset settings are not handed over as empty strings
    with pytest.raises(Exception):
        c.broker = "redis://elsewhere"  # frozen


def test_an_environment_variable_set_empty_still_wins_over_the_file(monkeypatch):
    c = _resolve([], {"token": "from-file", "file_roots": ["/srv/a"]},
                 {"FLEETBENCH_AGENT_TOKEN": "", "FLEETBENCH_AGENT_FILE_ROOTS": ""}, monkeypatch)  # fmt: skip
    assert c.token == "" and c.file_roots == ()


def test_probing_in_process_leaves_no_agent_id_behind(monkeypatch):
    """`--probe` hands its settings to the probes but mints no agent id: a process that probes (a test, a
    CLI) must not pass a made-up id on to every agent it starts afterwards."""
    from agent.cli import main

    monkeypatch.delenv("FLEETBENCH_AGENT_ID", raising=False)
    monkeypatch.setenv("FLEETBENCH_DISABLE_GPU_PROBE", "1")
    main(["--probe"])
    assert "FLEETBENCH_AGENT_ID" not in os.environ


def test_the_waits_before_jobs_are_built_from_the_settings_and_refused_when_wrong(monkeypatch):
    prejob = _resolve(["--cooldown-within-c", "3"], {"on_disturbance": "wait", "quiet_wait_s": 20}, monkeypatch=monkeypatch).prejob()
    assert prejob.active and prejob.within_c == 3.0 and prejob.cooldown_s == 300.0  # the most a target waits, by default
    assert prejob.max_wait_s == 300.0 + 20.0 + 2 * prejob.probe_s
    assert not _resolve([], monkeypatch=monkeypatch).prejob().active
    with pytest.raises(ValueError, match="on_disturbance must be one of record, wait, refuse, not 'sometimes'"):
        _resolve([], {"on_disturbance": "sometimes"}, monkeypatch=monkeypatch).prejob()
