"""Issue 14, finding 2: a user's .npz is bounded by what it declares, before numpy inflates anything."""

import io
import zipfile

import numpy as np
import pytest

from controller.datasets import DatasetError, _read_npz
from protocol.npz import NpzError, check_npz


def _npz_with_header(path, shape, dtype="<f4", payload=b""):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", header.getvalue() + payload)
    return path


def test_a_header_that_declares_more_than_the_limit_is_refused(tmp_path):
    bomb = _npz_with_header(tmp_path / "lying.npz", (2**40,))  # 4 TiB declared in a file of a few hundred bytes
    with pytest.raises(NpzError, match="over the limit of 1 MiB"):
        check_npz(bomb, max_bytes=2**20)
    with pytest.raises(DatasetError) as exc:
        _read_npz(bomb)  # the default limit (8 GiB) refuses it too, as one line naming the file
    assert "lying.npz" in str(exc.value) and "FLEETBENCH_MAX_ARRAY_BYTES" in str(exc.value)
    wraps = _npz_with_header(tmp_path / "wraps.npz", (2**40, 2**40, 2**40))  # overflows int64 if multiplied in numpy
    with pytest.raises(NpzError, match="over the limit"):
        check_npz(wraps)


def test_object_arrays_and_other_members_are_refused(tmp_path):
    obj = _npz_with_header(tmp_path / "obj.npz", (2,), dtype="|O")
    with pytest.raises(NpzError, match="Python objects"):
        check_npz(obj)
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("run.sh", b"#!/bin/sh\n")
    with pytest.raises(NpzError, match="not an .npy array"):
        check_npz(tmp_path / "odd.npz")


def test_a_real_data_set_passes_with_its_shapes(tmp_path):
    np.savez_compressed(tmp_path / "ok.npz", x=np.zeros((10, 4, 4, 3), np.float32), y=np.arange(10))
    arrays = check_npz(tmp_path / "ok.npz", max_bytes=10 * 4 * 4 * 3 * 4 + 10 * 8)
    assert arrays["x"][0] == (10, 4, 4, 3) and arrays["y"][0] == (10,)
    with pytest.raises(NpzError):
        check_npz(tmp_path / "ok.npz", max_bytes=10 * 4 * 4 * 3 * 4)  # one byte of labels too many


@pytest.mark.parametrize("x, y, task, words", [
    (np.array([[0.5, np.nan]], np.float32), None, None, "1 NaN or infinite value(s)"),
    (np.array(["a", "b"]), None, None, "a data set's inputs are numbers"),
    (np.zeros((3, 2), np.float32), np.array([0, -1, 2]), "classification", "1 label(s) in 'y' are not class indices"),
    (np.zeros((3, 2), np.float32), np.array([0.0, 1.5, 2.0]), "classification", "1 label(s)"),
])  # fmt: skip
def test_bad_values_are_refused_with_one_line(tmp_path, x, y, task, words):
    """Issue 14, findings 12 and 13."""
    from controller.artifacts import ArtifactStore
    from controller.datasets import Preprocessing, prepare

    arrays = {"x": x, **({"y": y} if y is not None else {}), **({"task": np.array(task)} if task else {})}
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError) as exc:
        prepare(tmp_path / "d.npz", ArtifactStore(tmp_path / "a"), Preprocessing(), n_calibration=1)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_regression_targets_may_be_fractional(tmp_path):
    from controller.artifacts import ArtifactStore
    from controller.datasets import Preprocessing, prepare

    np.savez(tmp_path / "r.npz", x=np.zeros((4, 2), np.float32), y=np.array([0.5, -1.25, 2.0, 3.5]), task=np.array("regression"))
    ds = prepare(tmp_path / "r.npz", ArtifactStore(tmp_path / "a"), Preprocessing(), n_calibration=1)
    assert ds.labelled and ds.n_validation == 3
