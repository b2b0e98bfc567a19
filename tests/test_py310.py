"""The agent's side runs on Python 3.10: NCS2 hosts run OpenVINO 2022.3, whose wheels stop at Python 3.10.

vermin (the `dev` extra) reads agent/ and protocol/ and names anything newer than 3.10: syntax (``except*``)
and the standard library (``tomllib``, ``datetime.UTC``, ``typing.Self``). ``--eval-annotations`` reads
annotations as evaluated, so a 3.11-only name written only in an annotation under ``from __future__ import
annotations`` is caught too, while ``X | None`` and ``list[int]`` (3.10) pass. The second test shows the check
fails where it should. What stays untested here: third-party packages' own Python floors (the agent's wheels).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parent.parent
VERMIN = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
          "--target=3.10-", "--violations", "--no-tips", "--eval-annotations"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def vermin_installed():
    if importlib.util.find_spec("vermin") is None:
        unavailable("vermin is not installed: run `make venv` (the `dev` extra has it)")


def test_agent_and_protocol_run_on_python_3_10():
    r = subprocess.run([*VERMIN, "agent", "protocol"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"vermin finds code newer than Python 3.10:\n{r.stdout}{r.stderr}"


def test_the_check_fails_on_3_11_code(tmp_path):
    source = tmp_path / "newer.py"
    source.write_text(
        "from __future__ import annotations\n\nimport tomllib\nfrom typing import Self\n\n\n"
        "def load(text) -> Self:\n    try:\n        return tomllib.loads(text)\n"
        "    except* ValueError:\n        raise\n"
    )
    r = subprocess.run([*VERMIN, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    for found in ("'tomllib' module requires !2, 3.11", "'typing.Self' member requires !2, 3.11",
                  "`except*` requires !2, 3.11", "Target versions not met:   3.10-"):  # fmt: skip
        assert found in r.stdout, r.stdout
