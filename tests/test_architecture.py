"""The code's shape: no import cycles, arrows that point one way, one list of error kinds, backends that
satisfy the Backend protocol, and docs/architecture.md saying what the code does."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from protocol.errors import ErrorKind, is_retryable

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "agent", "controller", "dashboard")
ARCH = ROOT / "docs" / "architecture.md"

#: Which fleetbench packages each package may import (a module of its own is always allowed).
ALLOWED = {
    "protocol": set(),
    "agent": {"protocol"},
    "controller": {"protocol"},
    "dashboard": {"protocol", "controller"},
}
#: Single imports across the arrows, each with its reason. Anything else across them fails.
EXCEPTIONS = {
    ("controller.cli.fleet", "agent.cli"): "`fleetbench agent start` runs the agent's own command line",
    ("controller.cli.fleet", "dashboard.data"): "`fleetbench dashboard` checks the database before it starts Streamlit",
    ("controller.cli.fleet", "dashboard.ui"): "`fleetbench dashboard` shares the dashboard's URL check",
}
#: What the dashboard may import from the controller: the store's tables and shared, read-only helpers.
DASHBOARD_MAY_IMPORT = ("controller.store.models", "controller.jobs", "controller.analysis", "controller.config")
#: Cycles that exist today, each broken by a later step of the restructuring (issue 15). The test fails on a
#: cycle that is not listed, and on a listed one that is gone (so this list only shrinks).
KNOWN_CYCLES: dict[frozenset[str], str] = {}
#: Wrong arrows that exist today, each removed by a later step of issue 15 (this list, too, only shrinks).
KNOWN_VIOLATIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" not in path.parts:  # Alembic loads those by path, never by import
                found[_module_name(path)] = path
    return found


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """module -> the fleetbench modules it imports anywhere in its body (lazy imports count too)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out.update(r for a in node.names if (r := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                for a in node.names:
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                    if r := resolve(target):
                        out.add(r)
        out.discard(mod)
        graph[mod] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.add(frozenset(comp))
    return found


def arrow_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        pkg = mod.split(".")[0]
        for target in sorted(targets):
            tpkg = target.split(".")[0]
            if tpkg == pkg or (mod, target) in EXCEPTIONS:
                continue
            if tpkg not in ALLOWED[pkg]:
                bad.append(f"{mod} imports {target}: {pkg} may import only {sorted(ALLOWED[pkg]) or 'nothing'}")
            elif pkg == "dashboard" and tpkg == "controller" and not target.startswith(DASHBOARD_MAY_IMPORT):
                bad.append(f"{mod} imports {target}: the dashboard may import only {', '.join(DASHBOARD_MAY_IMPORT)}")
        if mod.startswith("controller.api") and any(t.startswith("controller.cli") for t in targets - {mod}):
            bad.append(f"{mod} imports the CLI ({sorted(t for t in targets if t.startswith('controller.cli'))})")
    return bad


def test_the_import_graph_has_no_cycle_beyond_the_known_ones():
    found = cycles(import_graph())
    assert found - set(KNOWN_CYCLES) == set(), f"new import cycle(s): {[sorted(c) for c in found - set(KNOWN_CYCLES)]}"
    assert set(KNOWN_CYCLES) - found == set(), "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_the_cycle_finder_finds_a_cycle_and_the_arrow_check_a_wrong_arrow():
    # the checks themselves can fail: a made-up graph with a cycle and an agent importing the controller
    graph = {
        "agent.a": {"agent.b"},
        "agent.b": {"agent.c"},
        "agent.c": {"agent.a", "controller.x"},
        "controller.x": set(),
    }
    assert cycles(graph) == {frozenset({"agent.a", "agent.b", "agent.c"})}
    assert arrow_violations(graph) == ["agent.c imports controller.x: agent may import only ['protocol']"]
    assert arrow_violations({"dashboard.p": {"controller.sweeps"}, "controller.sweeps": set()}) == [
        "dashboard.p imports controller.sweeps: the dashboard may import only " + ", ".join(DASHBOARD_MAY_IMPORT)
    ]
    assert arrow_violations({"controller.api": {"controller.cli"}, "controller.cli": set()})


def test_arrows_point_one_way():
    found = set(arrow_violations(import_graph()))
    assert found - set(KNOWN_VIOLATIONS) == set()
    assert set(KNOWN_VIOLATIONS) - found == set(), "a known wrong arrow is gone: remove it from KNOWN_VIOLATIONS"


def test_every_exception_to_the_arrows_is_still_an_import():
    graph = import_graph()
    assert [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())] == []


def test_the_package_table_in_architecture_md_matches_the_arrows():
    text = ARCH.read_text(encoding="utf-8")
    section = text[text.index("## Packages") :].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    table = {pkg: {w for w in re.findall(r"\b(protocol|agent|controller|dashboard)\b", cell)} for pkg, cell in rows}
    expected = {pkg: set(ALLOWED[pkg]) | {t.split(".")[0] for (m, t) in EXCEPTIONS if m.split(".")[0] == pkg}
                for pkg in PACKAGES}  # fmt: skip
    assert table == expected


def test_the_error_kinds_in_architecture_md_are_the_enum():
    text = ARCH.read_text(encoding="utf-8")
    section = text[text.index("## Error kinds") :].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| (yes|no) \| (.+) \|$", section, re.M)
    want = [(k.value, "yes" if k.retryable else "no", k.meaning) for k in ErrorKind]
    assert rows == want, "regenerate the table: " + "\n".join(f"| `{k}` | {r} | {m} |" for k, r, m in want)


def test_retried_kinds_are_the_machines_failures():
    # the store's rule before ErrorKind existed, plus bad-result (a result set aside was always sent again) and
    # device-busy (an agent that refuses busy devices: another agent, or this one later, may be quiet)
    retried = {k.value for k in ErrorKind if k.retryable}
    assert retried == {"crashed", "timeout", "agent-lost", "internal", "fetch-failed", "bad-result", "device-busy"}
    assert is_retryable("crashed") and is_retryable(ErrorKind.TIMEOUT)
    assert not is_retryable("bad-spec") and not is_retryable(None) and not is_retryable("a-newer-agents-kind")


def test_an_unknown_error_kind_cannot_be_raised():
    from agent.errors import JobError
    from controller.convert.engine import ConversionError

    assert JobError(ErrorKind.BAD_DATASET, "x").kind == "bad-dataset" and type(JobError("timeout", "x").kind) is str
    for cls in (JobError, ConversionError):
        with pytest.raises(ValueError, match="unknown error kind 'bad-dataste'"):
            cls("bad-dataste", "a typo")


def test_an_error_kind_travels_as_its_plain_string():
    from protocol import JobOutcome

    outcome = JobOutcome(job_id="j", attempt=1, ok=False, error="e", error_kind=ErrorKind.CRASHED)
    assert type(outcome.error_kind) is str and outcome.to_dict()["error_kind"] == "crashed"
    assert JobOutcome.from_json(outcome.to_json()) == outcome


_KIND_ARGS = {"JobError": 0, "ConversionError": 0, "_refusal": 1, "_failed": 1, "fail_rest": 1}


def _kind_literals(path: Path) -> list[str]:
    """Error kinds written as string literals where a kind is passed, instead of an ErrorKind member."""
    kinds = {k.value for k in ErrorKind}
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        args = [kw.value for kw in node.keywords if kw.arg in ("error_kind", "kind")]
        if name in _KIND_ARGS and len(node.args) > _KIND_ARGS[name]:
            args.append(node.args[_KIND_ARGS[name]])
        hits += [f"{where}:{a.lineno} {a.value!r}" for a in args
                 if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value in kinds]  # fmt: skip
    return hits


def test_error_kinds_are_named_through_the_enum_not_as_strings():
    hits = [h for pkg in ("agent", "controller") for p in sorted((ROOT / pkg).rglob("*.py")) for h in _kind_literals(p)]
    assert hits == []


def test_the_literal_check_finds_a_literal(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text('raise JobError("bad-spec", "x")\nJobOutcome(error_kind="crashed")\nJobError(ErrorKind.X, "y")\n')
    assert [h.split()[1] for h in _kind_literals(bad)] == ["'bad-spec'", "'crashed'"]


def test_every_registered_backend_satisfies_the_backend_protocol():
    import importlib

    from agent.backends import REGISTRY
    from agent.backends.base import Backend

    for runtime, module in REGISTRY.items():
        backend = importlib.import_module(module).Backend()  # importing a backend never imports its runtime
        assert isinstance(backend, Backend), f"{module}.Backend lacks part of agent.backends.base.Backend"
        assert backend.runtime == runtime


def test_the_backend_protocol_check_can_fail():
    from agent.backends.base import Backend

    class Half:
        runtime, unavailable = "half", {}

        def probe(self):
            return []

    assert not isinstance(Half(), Backend)


MODULE_LINES, FUNCTION_LINES = 400, 60


def size_violations(path: Path, text: str) -> list[str]:
    """A module over MODULE_LINES or a function over FUNCTION_LINES lines, without a ``# size: <reason>`` comment
    (for a module: in its first 15 lines; for a function: on the line above its def or its decorators)."""
    lines = text.splitlines()
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    bad = []
    if len(lines) > MODULE_LINES and not any(ln.startswith("# size: ") for ln in lines[:15]):
        bad.append(f"{where}: {len(lines)} lines")
    for node in ast.walk(ast.parse(text)):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
        ):
            top = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if not (top >= 2 and lines[top - 2].strip().startswith("# size: ")):
                bad.append(f"{where}:{node.lineno} {node.name}(): {node.end_lineno - node.lineno + 1} lines")
    return bad


def test_no_module_or_function_is_long_without_a_written_reason():
    found = [v for path in sorted(_modules().values()) for v in size_violations(path, path.read_text(encoding="utf-8"))]
    assert found == [], "split these, or write why they are long in a `# size:` comment at their top"


def test_the_size_check_finds_a_long_function_and_takes_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    plain = tmp_path / "plain.py"
    assert size_violations(plain, f"def long():\n{body}\n") == ["plain.py:1 long(): 61 lines"]
    assert size_violations(plain, f"# size: a table of cases\n@decorated\ndef long():\n{body}\n") == []
    assert size_violations(plain, '"""doc"""\n' + "x = 1\n" * MODULE_LINES) == [f"plain.py: {MODULE_LINES + 1} lines"]


def test_latency_stats_carry_every_statistic_of_a_summary_and_nothing_else():
    import dataclasses

    from protocol.records import _LOAD_FIELDS, LatencyStats
    from protocol.stats import Summary

    stats = {f.name for f in dataclasses.fields(LatencyStats)} - set(_LOAD_FIELDS)
    assert stats == {f.name for f in dataclasses.fields(Summary)} - {"invalid_reasons"}


def test_no_table_group_of_the_store_calls_another_groups_methods():
    store = ROOT / "controller" / "store"
    base = {n.name for n in ast.walk(ast.parse((store / "base.py").read_text())) if isinstance(n, ast.FunctionDef)}
    base |= {"_session", "engine", "url"}  # StoreBase's attributes
    crossing = {}
    for group in ("results", "catalog", "agents", "jobs"):
        tree = ast.parse((store / f"{group}.py").read_text())
        own = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        used = {n.attr for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}  # fmt: skip
        if used - own - base:
            crossing[group] = sorted(used - own - base)
    assert crossing == {}
