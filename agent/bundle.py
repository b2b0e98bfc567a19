"""Offline bundles for air-gapped devices.

    fleetbench-agent run-bundle BUNDLE [--out RESULTS.json]

A bundle is a tar made by the controller (``fleetbench bundle``) holding
``bundle.json`` (job specs whose artifact URIs read ``bundle:<sha256>``) and
``artifacts/<sha256>`` files. Each job runs in a benchmark child process, as
under Celery; every artifact is verified by sha256 before it runs. The
results file holds one :class:`protocol.JobOutcome` per job, for
``fleetbench import``.

A run of a bundle is its own attempt: each run mints a run id, and a job's id
in the results is derived from the bundle's job id and that run id. So the
same bundle run on two devices (or twice on one) gives records that are all
kept, while importing one results file twice stores nothing new.

Needs only numpy and a runtime: no celery, no broker, no controller.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from agent.runner import run_job
from protocol import SCHEMA_VERSION, utc_now
from protocol.bundles import BUNDLE_FORMAT, RESULTS_FORMAT, BundleError
from protocol.hashing import SHA256_HEX
from protocol.packing import unpack


def _localize(ref: dict | None, root: Path) -> dict | None:
    if ref is None:
        return None
    if not isinstance(ref, dict):
        raise BundleError(f"an artifact in its bundle.json is {type(ref).__name__}, not an object with `uri` and `sha256`")
    uri = ref.get("uri")
    what = ref.get("filename") or str(ref.get("sha256") or "?")[:12]
    if not isinstance(uri, str) or not uri:
        raise BundleError(f"artifact {what} has no `uri` in its bundle.json; make the bundle again with `fleetbench bundle`")
    name = uri.removeprefix("bundle:")
    if not uri.startswith("bundle:") or not SHA256_HEX.fullmatch(name):
        raise BundleError(f"artifact {what} is not inside the bundle ({uri})")
    path = root / "artifacts" / name
    return dict(ref, uri=path.resolve().as_uri())


def read_bundle(bundle: Path, dest: Path) -> tuple[dict, list[dict]]:
    """Unpack ``bundle`` into ``dest``; return its manifest and job specs with local file URIs."""
    if not bundle.exists():
        raise BundleError(f"{bundle}: no such file")
    if not bundle.is_file():
        raise BundleError(f"{bundle}: not a file; give the bundle file `fleetbench bundle` wrote")
    try:
        unpack(bundle, dest)
        manifest = json.loads((dest / "bundle.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{bundle}: not a fleetbench bundle (no bundle.json inside)") from None
    except Exception as exc:  # noqa: BLE001 - tarfile and json raise several types
        why = " ".join(str(exc).split()) or type(exc).__name__  # tarfile's message spans several lines
        raise BundleError(f"{bundle}: not a readable fleetbench bundle ({why})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle}: not a fleetbench bundle (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{bundle}: made for schema {manifest.get('schema_version')}, this agent speaks {SCHEMA_VERSION}; "
            "use the same fleetbench release on both sides"
        )
    if not isinstance(manifest.get("jobs"), list):
        raise BundleError(f"{bundle}: its bundle.json lists no jobs")
    jobs = []
    for spec in manifest["jobs"]:
        if not isinstance(spec, dict):
            raise BundleError(f"{bundle}: a job in its bundle.json is {type(spec).__name__}, not an object")
        spec = dict(spec)
        for key in ("artifact", "dataset", "reference"):
            spec[key] = _localize(spec.get(key), dest)
        jobs.append(spec)
    return manifest, jobs


@contextlib.contextmanager
def _file_roots(root: Path):
    """Benchmark children read file:// artifacts from the unpacked bundle only."""
    from agent.artifacts import FILE_ROOTS_ENV

    before = os.environ.get(FILE_ROOTS_ENV)
    os.environ[FILE_ROOTS_ENV] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FILE_ROOTS_ENV, None)
        else:
            os.environ[FILE_ROOTS_ENV] = before


def run_job_id(bundle_job_id: str, run_id: str) -> str:
    """The id a bundle's job has in one run of it (32 hex digits, like every job id)."""
    return hashlib.sha256(f"{bundle_job_id}:{run_id}".encode()).hexdigest()[:32]


def run_bundle(bundle: Path, agent_id: str, on_job=lambda i, n, spec, outcome: None) -> dict:
    """Run every job of ``bundle``; return the results document."""
    run_id = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="fleetbench-bundle-") as tmp, _file_roots(Path(tmp).resolve()):
        manifest, jobs = read_bundle(bundle, Path(tmp))
        outcomes = []
        for i, spec in enumerate(jobs, 1):
            spec = dict(spec, job_id=run_job_id(str(spec.get("job_id", i)), run_id))
            outcome = run_job(spec, agent_id)
            outcomes.append(outcome)
            on_job(i, len(jobs), spec, outcome)
    return {
        "format": RESULTS_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "bundle_id": manifest.get("bundle_id", ""),
        "run_id": run_id,
        "agent_id": agent_id,
        "finished_at": utc_now(),
        "outcomes": [o.to_dict() for o in outcomes],
    }


def main(argv: list[str]) -> int:
    from agent.oneline import OneLineParser

    p = OneLineParser(prog="fleetbench-agent run-bundle", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, help="results file (default: BUNDLE with .results.json)")
    p.add_argument("--agent-id", default=os.environ.get("FLEETBENCH_AGENT_ID") or f"offline-{os.uname().nodename}")
    args = p.parse_args(argv)
    out = args.out or args.bundle.with_suffix(".results.json")
    if not out.parent.is_dir():
        print(f"error: --out {out}: the folder {out.parent} does not exist; create it or write elsewhere", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the unpacked bundle (fleetbench-bundle-* in $TMPDIR) is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def report(i, n, spec, outcome):
        what = f"{spec.get('model_name')} {spec.get('variant')} on {spec.get('capability')}"
        if outcome.ok:
            s = outcome.record.stats
            print(f"[{i}/{n}] {what}: p50 {s.p50_ms:.3f} ms, p90 {s.p90_ms:.3f} ms ({s.count} samples)", flush=True)
        else:
            print(f"[{i}/{n}] {what}: FAILED ({outcome.error_kind}) {outcome.error}", flush=True)

    try:
        doc = run_bundle(args.bundle, args.agent_id, report)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        print(f"error: cannot write the results file {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    failed = sum(1 for o in doc["outcomes"] if not o["ok"])
    print(f"wrote {out}: {len(doc['outcomes']) - failed} result(s), {failed} failed; "
          "bring it to the controller and run `fleetbench import` on it")  # fmt: skip
    return 1 if failed else 0
