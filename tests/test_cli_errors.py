"""Issue 14, finding 12: output paths in a missing folder and bogus database URLs are one `error:` line, never a traceback."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, words", [
    (["bundle", "some-model", "-o", "{tmp}/no/such/dir/lab.fbb"], "-o {tmp}/no/such/dir/lab.fbb: the folder"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/b.yaml", "--junit", "{tmp}/missing/r.xml"], "--junit {tmp}/missing/r.xml: the folder"),
    (["readiness", "--model", "m", "--budgets", "{tmp}/b.yaml", "--report", "{tmp}/missing/r.html"], "--report"),
    (["results", "--db", "foo://u:pw@x"], "foo://u:***@x is not a database URL"),
    (["models", "--db", "notaurl"], "notaurl is not a database URL"),
])  # fmt: skip
def test_bad_paths_and_urls_are_one_line(tmp_path, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "controller.cli", *argv, "--data-dir", str(tmp_path / "fb")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert words.replace("{tmp}", str(tmp_path)) in " ".join(out.split()) and out.count("error:") == 1, out
