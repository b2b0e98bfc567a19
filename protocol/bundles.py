"""Offline bundle and results files: formats shared by the controller and the agents.

A bundle is a deterministic tar (:func:`protocol.packing.pack_files`) with
``bundle.json`` (``format``, ``schema_version``, ``bundle_id``, ``jobs``: job
spec dicts whose artifact URIs read ``bundle:<sha256>``) and
``artifacts/<sha256>`` files. A results file is JSON: ``format``,
``schema_version``, ``bundle_id``, ``agent_id``, ``finished_at`` and
``outcomes`` (JobOutcome dicts).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from protocol.records import ContractError, JobOutcome

BUNDLE_FORMAT = "fleetbench-bundle"
RESULTS_FORMAT = "fleetbench-results"


class BundleError(RuntimeError):
    """A bundle or results file cannot be used; the message says why."""


def bundle_uri(sha256: str) -> str:
    return f"bundle:{sha256}"


def read_results(path: str | Path) -> list[JobOutcome]:
    """The outcomes of a results file, validated."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a readable results file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        raise BundleError(f"{path}: not a fleetbench results file")
    try:
        outcomes = [JobOutcome.from_dict(o) for o in doc["outcomes"]]
    except (ContractError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: {exc}") from None
    for o in outcomes:  # what the store parses: a bad time is this file's fault, said here
        for key in ("started_at", "finished_at"):
            value = getattr(o.record, key, None) if o.record is not None else None
            try:
                if value is not None:
                    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except (ValueError, AttributeError):
                raise BundleError(f"{path}: JobOutcome.record.{key}: {value!r} is not an ISO 8601 time; "
                                  "the results file was changed after the run") from None  # fmt: skip
    return outcomes
