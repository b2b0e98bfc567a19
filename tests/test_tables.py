"""The results table a person reads: readable at 80 and 120 columns, every column with --wide."""

from __future__ import annotations

import dataclasses
import io

import pytest
from rich.console import Console

from controller.cli import results_table
from protocol import Validity
from protocol import fidelity as F


def _records(golden_record):
    import numpy as np

    ref = np.random.default_rng(0).random((8, 6))
    fid = F.compare([ref * 1.001, ref], [ref, ref], ["boxes", "scores"])
    long = dataclasses.replace(golden_record, model_name="face_detection_full_range_sparse", variant="tflite-dynamic-int8",
                               capability="openvino:HETERO:FPGA,CPU", precision="u8+bf16+i8", fidelity=fid,
                               from_source=True, validity=Validity(False, ("p99 needs at least 662 samples",)))  # fmt: skip
    return [golden_record, long]


def _render(table, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_numbers_never_wrap_and_lines_fit(golden_record, width):
    records = _records(golden_record)
    text = _render(results_table(records, width=width), width)
    assert max(len(ln) for ln in text.splitlines()) <= width
    p50 = f"{records[0].stats.p50_ms:.3f}"
    assert p50 in text  # whole, on one line
    # a long name wraps (folds) inside its column; nothing is cut off with an ellipsis
    assert "…" not in text
    cells = "".join(ln.split("│")[2].strip() for ln in text.splitlines() if ln.count("│") > 4)
    assert "tflite-dynamic-int8[2]" in cells
    assert "[1]" in text and "p99 needs at least 662 samples" in text.replace("\n", " ")
    assert "the user's own file" in text.replace("\n", " ")
    if width == 80:
        assert "not shown at this width" in text and "--wide" in text
    else:
        assert "ran in" in text and "u8+bf16+i8" in text and "KiB" in text


def test_wide_shows_every_column(golden_record):
    text = _render(results_table(_records(golden_record), wide=True), 400)
    for header in ("runtime", "threads", "cosine", "samples", "ran in", "KiB", "fidelity"):
        assert header in text
    assert "not shown" not in text and "no: p99 needs at least 662 samples" in text


def test_csv_and_the_store_take_their_values_from_one_flattening(golden_record, sqlite_store):
    import csv
    import io

    from controller.cli.render import CSV_COLUMNS, write_csv
    from controller.store.models import Result
    from protocol.flatten import record_fields

    flat = record_fields(golden_record)
    assert set(CSV_COLUMNS) <= set(flat)  # every CSV column is a flattened value
    out = io.StringIO()
    write_csv([golden_record], out)
    header, row = list(csv.reader(io.StringIO(out.getvalue())))
    assert header == CSV_COLUMNS
    got = dict(zip(header, row))
    assert got["p50_ms"] == str(golden_record.stats.p50_ms) and got["samples"] == str(len(golden_record.samples_ns))
    assert got["top1_agreement"] == ("" if golden_record.fidelity is None else str(golden_record.fidelity.top1_agreement))
    sqlite_store.add_result(golden_record)
    from sqlalchemy import select

    with sqlite_store._session() as session:
        stored = session.scalars(select(Result)).one()
    for column in ("p50_ms", "p99_ms", "threads", "hostname", "device_name", "valid", "from_source"):
        assert getattr(stored, column) == flat[column], column


def test_rows_that_differ_only_in_threads_show_the_threads(golden_record):
    two = dataclasses.replace(golden_record, settings=dataclasses.replace(golden_record.settings, threads=2))
    text = _render(results_table([golden_record, two], width=120), 120)
    assert "threads" in text.splitlines()[2]  # the header row
    assert "threads" not in _render(results_table([golden_record], width=120), 120)  # one setting: no column
