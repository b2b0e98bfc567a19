"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine: services,
build targets, the commands and flags they run exist, healthchecks and start order, ports kept on
this host by default, and every required variable documented."""

import re
import tomllib
from pathlib import Path

import click
import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVICES = COMPOSE["services"]


def stages() -> dict[str, str]:
    """Dockerfile stage name -> its text."""
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    return {re.match(r"\S+ AS (\S+)", p).group(1): p for p in parts}


def cli_commands() -> dict[str, click.Command]:
    from controller.cli import app

    group = typer.main.get_command(app)
    return dict(group.commands)


def test_the_services():
    assert set(SERVICES) == {"redis", "postgres", "controller-api", "converter", "agent-cpu", "dashboard"}
    for name, svc in SERVICES.items():
        assert "image" in svc or "build" in svc, name
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES and cond == {"condition": "service_healthy"}, (name, dep)
        assert svc.get("restart") == "unless-stopped", name


def test_build_targets_exist_and_the_agent_has_no_tensorflow():
    found = stages()
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert svc["build"]["target"] in found, f"{name}: no Dockerfile stage {svc['build']['target']}"
    assert 'pip install ".[agent]"' in found["agent"] and "controller]" not in found["agent"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("agent", "dashboard"):
        assert not any(d.lower().startswith(("tensorflow", "tf-", "keras")) for d in extras[extra]), extra
    assert any(d.startswith("tensorflow") for d in extras["controller"])


def test_commands_and_flags_exist():
    commands = cli_commands()
    scripts = PYPROJECT["project"]["scripts"]
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if not cmd or cmd[0] not in scripts:
            continue
        if cmd[0] == "fleetbench":
            assert cmd[1] in commands, f"{name}: fleetbench has no command {cmd[1]}"
            known = {opt for p in commands[cmd[1]].params for opt in p.opts}
        else:
            from agent.cli import _parser

            known = {opt for a in _parser()._actions for opt in a.option_strings}
        flags = [c for c in cmd if c.startswith("--")]
        assert set(flags) <= known, f"{name}: unknown flag(s) {set(flags) - known}"


def test_nothing_is_published_beyond_this_host_by_default():
    assert "ports" not in SERVICES["postgres"]
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert re.match(r"\$\{[A-Z_]+_BIND:-127\.0\.0\.1\}:", port), f"{name} publishes {port} beyond this host"


def test_redis_requires_its_password_everywhere():
    redis = SERVICES["redis"]
    assert "--requirepass" in redis["command"]
    urls = re.findall(r"redis://\S+", COMPOSE_TEXT)
    assert urls and all(u.startswith("redis://:${REDIS_PASSWORD") for u in urls), urls


@pytest.mark.parametrize("var", sorted(set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_TEXT))))
def test_required_variables_are_in_the_env_example(var):
    example = (ROOT / ".env.example").read_text()
    assert re.search(rf"^{var}=\S+", example, flags=re.M), f"{var} is required by docker-compose.yml"


def test_the_env_example_names_only_variables_the_stack_uses():
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_TEXT))
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert listed <= used, listed - used


def test_the_dashboard_container_has_the_token_it_needs_beyond_loopback():
    # `fleetbench dashboard --host 0.0.0.0` refuses to start without FLEETBENCH_API_TOKENS (or --insecure)
    dash = SERVICES["dashboard"]
    assert "0.0.0.0" in dash["command"] and "--insecure" not in dash["command"]
    assert "FLEETBENCH_API_TOKENS" in dash["environment"]
