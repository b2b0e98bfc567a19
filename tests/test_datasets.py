"""Data sets: .npz and image folders, declared preprocessing, seeded splits."""

import numpy as np
import pytest

from controller.artifacts import ArtifactStore
from controller.datasets import DatasetError, Preprocessing, apply_preprocessing, prepare, split3, split_indices


def _load(store, ref):
    with np.load(store.path_for(ref.sha256), allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def npz(tmp_path):
    x = np.arange(50 * 4 * 4 * 3, dtype=np.float32).reshape(50, 4, 4, 3)
    y = np.arange(50) % 5
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


def test_split_is_fixed_by_the_seed_and_disjoint():
    cal, val = split_indices(50, seed=3, n_calibration=10)
    assert len(cal) == 10 and len(val) == 40 and not set(cal) & set(val)
    cal2, val2 = split_indices(50, seed=3, n_calibration=10)
    assert (cal == cal2).all() and (val == val2).all()
    assert not (split_indices(50, seed=4, n_calibration=10)[0] == cal).all()
    # never leaves validation empty
    assert len(split_indices(5, seed=0, n_calibration=100)[1]) == 1


def test_npz_prepared_into_calibration_and_validation(store, npz):
    path, x, y = npz
    ds = prepare(path, store, Preprocessing(scale=0.5), seed=1, n_calibration=10)
    cal, val = _load(store, ds.calibration), _load(store, ds.validation)
    assert cal["x"].shape == (10, 4, 4, 3) and val["x"].shape == (40, 4, 4, 3) and val["y"].shape == (40,)
    assert ds.n_calibration == 10 and ds.n_validation == 40 and ds.labelled and ds.sample_shape == (4, 4, 3)
    cal_idx, val_idx = split_indices(50, 1, 10)
    np.testing.assert_allclose(val["x"], x[val_idx] * 0.5)
    np.testing.assert_array_equal(val["y"], y[val_idx])
    np.testing.assert_allclose(cal["x"], x[cal_idx] * 0.5)
    # same inputs -> same id; another seed or preprocessing -> another id
    assert prepare(path, store, Preprocessing(scale=0.5), seed=1, n_calibration=10).dataset_id == ds.dataset_id
    assert prepare(path, store, Preprocessing(scale=0.5), seed=2, n_calibration=10).dataset_id != ds.dataset_id
    assert prepare(path, store, Preprocessing(scale=0.25), seed=1, n_calibration=10).dataset_id != ds.dataset_id


def test_a_training_split_sits_between_calibration_and_validation(store, npz):
    path, x, y = npz
    cal, train, val = split3(50, seed=1, n_calibration=10, n_train=15)
    assert (len(cal), len(train), len(val)) == (10, 15, 25)
    assert not set(cal) & set(train) and not set(train) & set(val) and not set(cal) & set(val)
    assert set(cal) | set(train) | set(val) == set(range(50))
    # calibration is the same as without a training split; validation is what the training split leaves
    assert (cal == split_indices(50, 1, 10)[0]).all() and set(val) < set(split_indices(50, 1, 10)[1])
    plain = prepare(path, store, seed=1, n_calibration=10)
    ds = prepare(path, store, seed=1, n_calibration=10, n_train=15)
    assert plain.train is None and plain.n_train == 0
    assert ds.dataset_id != plain.dataset_id and ds.calibration == plain.calibration and ds.n_validation == 25
    t = _load(store, ds.train)
    np.testing.assert_array_equal(t["x"], x[train])
    np.testing.assert_array_equal(t["y"], y[train])
    with pytest.raises(DatasetError, match="leaves none to validate: the data set has 50, 10 of them for calibration; ask for at most 39"):
        prepare(path, store, seed=1, n_calibration=10, n_train=40)
    np.savez(path.with_name("unlabelled.npz"), x=x)
    with pytest.raises(DatasetError, match="a training split needs labels"):
        prepare(path.with_name("unlabelled.npz"), store, n_train=5)


def test_preprocessing_mean_std_and_layout():
    x = np.ones((2, 3, 3, 2), dtype=np.float32) * np.array([10.0, 20.0], dtype=np.float32)
    out = apply_preprocessing(x, Preprocessing(scale=0.1, mean=(1.0, 1.0), std=(2.0, 4.0), layout="NCHW"))
    assert out.shape == (2, 2, 3, 3) and out.dtype == np.float32
    assert np.allclose(out[:, 0], 0.0) and np.allclose(out[:, 1], 0.25)  # (1-1)/2 and (2-1)/4


def test_image_folder(tmp_path, store):
    from PIL import Image

    root = tmp_path / "imgs"
    for cls, value in [("cat", 10), ("dog", 200)]:
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (6, 4), (value, value, value)).save(root / cls / f"{i}.png")
    ds = prepare(root, store, Preprocessing(resize=(8, 8), scale=1 / 255), n_calibration=2)
    assert ds.classes == ("cat", "dog") and ds.sample_shape == (8, 8, 3)
    val = _load(store, ds.validation)
    for img, label in zip(val["x"], val["y"]):
        assert np.allclose(img, (10 if label == 0 else 200) / 255, atol=1e-6)


def test_image_folder_of_mixed_sizes_needs_a_resize(tmp_path, store):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "1.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DatasetError, match="2.png: 5x4, but earlier images are 4x4; declare a size"):
        prepare(tmp_path, store)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"images": np.zeros((3, 2))}, "needs an array named 'x'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "'x' has 3 samples but 'y' has 2 labels"),
        ({"x": np.zeros((1, 2))}, "at least 2 samples"),
    ],
)
def test_bad_npz(tmp_path, store, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        prepare(path, store)


def test_corrupt_npz_and_wrong_kind(tmp_path, store):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        prepare(bad, store)
    csv = tmp_path / "data.csv"
    csv.write_text("1,2,3")
    with pytest.raises(DatasetError, match="an .npz file or a folder of images"):
        prepare(csv, store)


def test_bad_preprocessing_is_refused(store, npz):
    with pytest.raises(DatasetError, match="mean and std need the same number"):
        prepare(npz[0], store, Preprocessing(mean=(1.0,), std=()))
    with pytest.raises(DatasetError, match="layout must be NHWC or NCHW"):
        prepare(npz[0], store, Preprocessing(layout="CHW"))
