"""Raw samples in their compact form (protocol.samples): exact round trips, hostile blobs, the wire."""

import base64
import json
import struct
import zlib

import numpy as np
import pytest

from protocol import ContractError, JobOutcome, ResultRecord
from protocol.samples import MAX_SAMPLES, Samples, SamplesError, decode, encode


@pytest.mark.parametrize("top", [0, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1])
def test_every_width_round_trips_exactly(top):
    values = np.array([0, top, top // 2, 1, top], dtype=np.int64)
    blob = encode(values)
    assert decode(blob).tolist() == values.tolist()
    assert Samples.from_blob(blob) == Samples(values.tolist())


def test_real_samples_take_at_most_four_bytes_each(golden_record):
    """The issue's bound, on a record a real demo run made (LiteRT on CPU, 700 samples)."""
    blob = Samples(golden_record.samples_ns.tolist()).to_blob()
    assert len(blob) / len(golden_record.samples_ns) <= 4
    assert len(golden_record.samples_ns.to_text()) < len(json.dumps(golden_record.samples_ns.tolist())) / 2


def test_a_blob_is_read_lazily_and_its_length_needs_no_decoding():
    s = Samples.from_blob(encode(np.arange(1000, dtype=np.int64)))
    assert len(s) == 1000 and s._arr is None  # the header says how many
    assert s[3] == 3 and s[-2:] == (998, 999) and s._arr is not None
    assert np.asarray(s, dtype=np.float64).sum() == sum(range(1000))


def _header(width: int, count: int) -> bytes:
    return struct.pack("<4sBI", b"FBS1", width, count)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"FBS", "too short"),
        (b"XXXX" + b"\0" * 10, "not FBS1"),
        (_header(3, 2) + zlib.compress(b"\0" * 6), "not FBS1"),
        (_header(1, 4) + zlib.compress(b"\1\2\3"), "other than the 4 samples"),
        (_header(1, 2) + zlib.compress(b"\1\2\3"), "other than the 2 samples"),
        (_header(1, 2) + zlib.compress(b"\1\2") + b"junk", "other than the 2 samples"),
        (_header(1, 2) + b"not zlib", "does not decompress"),
        (_header(8, 1) + zlib.compress(b"\xff" * 8), r"at or above 2\*\*63"),
        (_header(8, MAX_SAMPLES + 1) + zlib.compress(b""), "more than the 10,000,000"),
    ],
)
def test_a_hostile_blob_is_one_clear_error(blob, message):
    with pytest.raises(SamplesError, match=message):
        decode(blob)


def test_a_zlib_bomb_that_claims_no_samples_is_not_inflated_either():
    """Review of issue 16: zlib's max_length 0 means no limit, so a header of 0 samples must still bound it."""
    bomb = _header(1, 0) + zlib.compress(b"\0" * 50_000_000)
    with pytest.raises(SamplesError, match="other than the 0 samples"):
        decode(bomb)


def test_a_zlib_bomb_is_not_inflated_past_its_header():
    bomb = _header(1, 10) + zlib.compress(b"\0" * 50_000_000)  # 50 MB of zeros in ~50 kB
    assert len(bomb) < 100_000
    with pytest.raises(SamplesError, match="other than the 10 samples"):
        decode(bomb)


@pytest.mark.parametrize(
    "values, message",
    [
        ([1, 2, 1.5], r"\[2\]: expected an integer, got float"),
        ([1, True], r"\[1\]: expected an integer, got bool"),
        ([1, "x", 3], r"\[1\]: expected an integer, got str"),
        ([1, 2**64], r"\[1\]: 18446744073709551616 is out of range"),
        ([5, -1], r"\[1\]: a latency cannot be negative"),
        ([[1, 2]], "flat list"),
        ("12", "expected a list of integers"),
        ({"a": 1}, "expected a list, got dict"),
    ],
)
def test_samples_that_are_not_latencies_name_the_first_bad_one(values, message):
    with pytest.raises(SamplesError, match=message):
        Samples.coerce(values)


def test_the_wire_carries_the_compact_form_and_both_forms_read_back(golden_record):
    outcome = JobOutcome(job_id=golden_record.job_id, attempt=1, ok=True, record=golden_record,
                         agent_id=golden_record.agent_id)  # fmt: skip
    wire = json.loads(outcome.to_json(samples="text"))
    assert wire["record"]["samples_ns"].startswith("fbs1:")
    back = JobOutcome.from_json(json.dumps(wire))
    assert back == outcome and back.record.samples_ns.tolist() == golden_record.samples_ns.tolist()
    back.record.check_consistent()
    listed = json.loads(outcome.to_json())  # people and tools get a plain list
    assert listed["record"]["samples_ns"] == golden_record.samples_ns.tolist()
    assert JobOutcome.from_json(json.dumps(listed)) == outcome
    assert "samples_ns" not in golden_record.to_dict(samples="omit")


@pytest.mark.parametrize(
    "text, message",
    [
        ("fbs1:@@@@", "not valid base64"),
        ("fbs1:" + base64.b64encode(b"XXXXXXXXXX").decode(), "not FBS1"),
        ("fbs1:" + base64.b64encode(_header(1, 9) + zlib.compress(b"\1")).decode(), "other than the 9 samples"),
    ],
)
def test_a_bad_wire_form_is_a_contract_error_naming_the_field(golden_record, text, message):
    data = golden_record.to_dict()
    data["samples_ns"] = text
    with pytest.raises(ContractError, match=f"ResultRecord.samples_ns: .*{message}"):
        ResultRecord.from_dict(data)


def test_a_record_built_from_a_tuple_holds_samples_and_compares_equal(golden_record):
    import dataclasses

    again = dataclasses.replace(golden_record, samples_ns=tuple(golden_record.samples_ns))
    assert type(again.samples_ns) is Samples and again == golden_record
    assert again.samples_ns == tuple(golden_record.samples_ns) and again.samples_ns == list(golden_record.samples_ns)
    with pytest.raises(ContractError, match="samples_ns"):
        dataclasses.replace(golden_record, samples_ns=(1, -2))
