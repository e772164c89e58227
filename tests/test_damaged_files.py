"""Damaged and hostile files: fastnn.load and fastnn.datasets.load_idx raise
fastnn.io.InvalidFileError (a ValueError naming the file) and nothing else, never
allocate beyond what the file holds, and a fuzz test of random bit flips, truncations and
insertions allows only that error or a load identical to the original."""

import gzip
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import datasets, io, losses, nn, optim
from fastnn.io import InvalidFileError

st = pytest.importorskip("safetensors.numpy")


def write(path, tensors, metadata, checksum=True):
    """A safetensors file with ``metadata`` and, by default, a valid fastnn checksum."""
    metadata = {"format": "fastnn", **metadata}
    if checksum:
        metadata["sha256"] = io._digest(tensors, metadata)
    st.save_file(tensors, str(path), metadata=metadata)
    return path


def peak_bytes(fn):
    """The peak of Python and NumPy allocations while ``fn`` runs (tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def warm_load(tmp_path):
    """One load of a small damaged model file, unmeasured: the first load imports what it
    needs (over 1 MiB of tracemalloc's peak when a test ran alone)."""
    dense = {"class": "Dense", "config": {"in_features": 2, "out_features": 2}}
    path = write(tmp_path / "warm.safetensors", {"w": np.zeros(4, np.float32)},
                 {"model": json.dumps(dense)})
    with pytest.raises(InvalidFileError):
        fastnn.load(path)


def raises_invalid(fn, *names):
    with pytest.raises(InvalidFileError) as info:
        fn()
    for name in names:
        assert name in str(info.value)
    return info.value


# ----------------------------------------------------------------- sizes before allocation

@pytest.mark.parametrize("n", [20000, 40000])
@pytest.mark.parametrize("nested", [False, True])
def test_a_tiny_file_declaring_a_huge_model_fails_before_allocating(tmp_path, n, nested):
    dense = {"class": "Dense", "config": {"in_features": n, "out_features": n}}
    spec = {"class": "Sequential", "config": {"layers": [dense]}} if nested else dense
    path = write(tmp_path / "huge.safetensors", {"w": np.zeros(4, np.float32)},
                 {"model": json.dumps(spec)})
    assert path.stat().st_size < 400
    warm_load(tmp_path)
    peak = peak_bytes(lambda: raises_invalid(lambda: fastnn.load(path), str(path), "Dense"))
    assert peak < 1 << 20  # not the 4n^2 bytes the architecture declares


@pytest.mark.parametrize("layer", ["BatchNorm1d", "BatchNorm2d"])
def test_a_tiny_file_declaring_a_huge_batch_norm_fails_before_allocating(tmp_path, layer):
    """BatchNorm skipped the budget: 324 bytes made 3 GB of statistics (found by an attack)."""
    bn = {"class": layer, "config": {"num_features": 2_000_000}}
    spec = {"class": "Sequential", "config": {"layers": [bn]}}
    path = write(tmp_path / "bn.safetensors", {"0.weight": np.ones(1, np.float32)},
                 {"model": json.dumps(spec)})
    warm_load(tmp_path)
    peak = peak_bytes(lambda: raises_invalid(lambda: fastnn.load(path), str(path), layer))
    assert peak < 1 << 20  # not the 2e6 x 6 floats it declares


def test_a_gzip_idx_is_not_decompressed_beyond_its_header(tmp_path):
    path = tmp_path / "bomb-idx1-ubyte.gz"
    header = struct.pack(">BBBBI", 0, 0, 0x08, 1, 10)
    path.write_bytes(gzip.compress(header + bytes(64 << 20), compresslevel=1))
    peak = peak_bytes(lambda: raises_invalid(lambda: datasets.load_idx(path), str(path)))
    assert peak < 1 << 20


def test_an_idx_header_declaring_more_than_the_cap_is_refused_unread(tmp_path):
    path = tmp_path / "big-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x0E, 3, 60000, 60000, 60000)))
    raises_invalid(lambda: datasets.load_idx(path), str(path), "IDX_MAX_BYTES")


# ------------------------------------------------------------------ one exception, named

def model_json():
    return json.dumps({"class": "Sequential", "config": {"layers": [
        {"class": "Dense", "config": {"in_features": 2, "out_features": 2}}]}})


def weights():
    return {"0.weight": np.ones((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)}


@pytest.mark.parametrize("loss", ["x", 5, [1], None, {"class": "Loss"}, {"class": "MSE", "config": 3}])
def test_a_malformed_saved_loss_is_an_invalid_file(tmp_path, loss):
    training = {"optimizer": {"class": "SGD", "lr": 0.1}, "loss": loss, "metrics": []}
    path = write(tmp_path / "m.safetensors", {**weights(), "optimizer.step": np.array(0)},
                 {"model": model_json(), "training": json.dumps(training)})
    raises_invalid(lambda: fastnn.load(path), str(path))


@pytest.mark.parametrize("text", ["[" * 100000, '{"a":' * 100000, json.dumps(
    {"class": "Sequential", "config": {"layers": [
        {"class": "Sequential", "config": {"layers": []}}]}}).replace(
    '{"layers": []}', '{"layers": [{"class": "Sequential", "config": {"layers": []}}]}')])
def test_deeply_nested_or_odd_architecture_json_is_an_invalid_file(tmp_path, text):
    if text.startswith('{"class"'):  # a Sequential nested 3000 deep: valid JSON, deep recursion
        text = ('{"class": "Sequential", "config": {"layers": [' * 3000
                + "]}}" * 3000)
    path = write(tmp_path / "deep.safetensors", weights(), {"model": text})
    raises_invalid(lambda: fastnn.load(path), str(path))


def bf16_file(path, arrays):
    """A safetensors file of BF16 tensors, as torch writes them (no numpy bfloat16)."""
    header, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        blob = (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def test_bf16_tensors_load_as_float32(tmp_path):
    rng = np.random.default_rng(0)
    # Values with 8 significant bits are exact in bfloat16.
    w = (rng.integers(-128, 128, (3, 4)) / 64.0).astype(np.float32)
    b = np.array([0.5, -2.0, 3.0], np.float32)
    path = bf16_file(tmp_path / "torch.safetensors", {"0.weight": w, "0.bias": b})
    model = io.load_weights(nn.Sequential(nn.Dense(4, 3)), path)
    np.testing.assert_array_equal(model.layers[0].weight.data, w)
    np.testing.assert_array_equal(model.layers[0].bias.data, b)


def test_an_unloadable_dtype_is_refused_by_name(tmp_path):
    path = bf16_file(tmp_path / "f8.safetensors", {"0.weight": np.zeros((3, 4), np.float32)})
    raw = path.read_bytes().replace(b'"BF16"', b'"F8_E4M3"')
    # F8 takes one byte per value: halve the data and fix the header's offsets.
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])
    header["0.weight"]["data_offsets"] = [0, 12]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(12))
    raises_invalid(lambda: io.load_weights(nn.Sequential(nn.Dense(4, 3)), path), "F8_E4M3", str(path))


def test_a_metadata_change_is_caught_by_the_checksum(tmp_path):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 8), nn.Dropout(0.5, seed=1234), nn.Dense(8, 2))
    path = model.save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    assert raw.count(b"1234") == 1
    path.write_bytes(raw.replace(b"1234", b"1235"))  # same length: a valid file otherwise
    raises_invalid(lambda: fastnn.load(path), str(path), "checksum")


def test_a_missing_checksum_is_caught(tmp_path):
    path = write(tmp_path / "m.safetensors", weights(), {"model": model_json()}, checksum=False)
    raises_invalid(lambda: fastnn.load(path), str(path), "checksum")


def test_the_abstract_loss_is_refused_by_compile():
    model = nn.Sequential(nn.Dense(2, 2))
    with pytest.raises(TypeError, match="abstract"):
        model.compile(loss=losses.Loss(), optimizer="sgd")


@pytest.mark.parametrize("labels", [np.array([0, 2**63], np.uint64), np.array([0.0, 2.0**63]),
                                    np.array([0.0, -1.0]), np.array([0.0, -1e30])])
def test_huge_or_negative_labels_are_reported_as_they_are(labels):
    loss = losses.CrossEntropy()
    with pytest.raises(ValueError, match="outside") as info:
        loss(np.zeros((2, 3), np.float32), labels)
    assert str(labels[1]) in str(info.value)
    assert "-9223372036854775808" not in str(info.value)


def mnist_dir(tmp_path, labels):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 3)):
        datasets.save_idx(tmp_path / f"{split}-images-idx3-ubyte",
                          rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        datasets.save_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels[:n])
    return tmp_path


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, -1, 1, 0], np.int8),
                                    np.array([0, 1, 2, 1.5, 1, 0], np.float32),
                                    np.array([0, 1, 2, 3, 1, 0], np.float64)])
def test_idx_labels_that_are_negative_or_floats_are_refused(tmp_path, labels):
    directory = mnist_dir(tmp_path, labels)
    raises_invalid(lambda: datasets.load("mnist", path=directory), "train-labels-idx1-ubyte")


@pytest.mark.parametrize("damage", ["empty", "magic", "short header", "short data", "long data",
                                    "gzip truncated", "gzip crc", "not gzip", "gzip garbage"])
def test_damaged_idx_files_raise_invalid_file_error(tmp_path, damage):
    raw = struct.pack(">BBBBII", 0, 0, 0x08, 2, 3, 4) + bytes(range(12))
    gz = gzip.compress(raw)
    name, content = {
        "empty": ("a-idx", b""),
        "magic": ("a-idx", b"\1" + raw[1:]),
        "short header": ("a-idx", raw[:9]),
        "short data": ("a-idx", raw[:-1]),
        "long data": ("a-idx", raw + b"\0"),
        "gzip truncated": ("a-idx.gz", gz[:-6]),
        "gzip crc": ("a-idx.gz", gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:]),
        "not gzip": ("a-idx.gz", raw),
        "gzip garbage": ("a-idx.gz", gz[:10] + b"\xff" * 20 + gz[30:]),
    }[damage]
    path = tmp_path / name
    path.write_bytes(content)
    raises_invalid(lambda: datasets.load_idx(path), str(path))


# -------------------------------------------------------------------------------- fuzz

def damaged(rng, raw, protect_after=None):
    """``raw`` with a random bit flip (in the first ``protect_after`` bytes, if given),
    truncation or insertion of random bytes."""
    kind = rng.integers(3)
    if kind == 0:
        out = bytearray(raw)
        i = int(rng.integers(protect_after or len(raw)))
        out[i] ^= 1 << int(rng.integers(8))
        return bytes(out)
    if kind == 1:
        return raw[:int(rng.integers(len(raw)))]
    i = int(rng.integers(len(raw) + 1))
    return raw[:i] + rng.bytes(int(rng.integers(1, 9))) + raw[i:]


def model_fingerprint(model):
    """Everything load restores: architecture, weights, and the training state if any."""
    out = {"config": model.get_config(), "weights": {k: v.tobytes() for k, v in model.state_dict().items()}}
    compiled = getattr(model, "compiled", None)
    if compiled is not None:
        out.update(optimizer=compiled.optimizer.get_config(), loss=repr(compiled.loss),
                   state={k: v.tobytes() for k, v in compiled.optimizer.state_arrays().items()},
                   run=compiled.resume)
    return out


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_fuzz_damaged_model_files(tmp_path, with_optimizer):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(6, 5, activation="relu"), nn.Dropout(0.3), nn.Dense(5, 3))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
    rng = np.random.default_rng(1)
    model.fit(rng.random((40, 6), dtype=np.float32), rng.integers(0, 3, 40), epochs=2, verbose=0,
              seed=0)
    original = model.save(tmp_path / "m.safetensors", include_optimizer=with_optimizer)
    expected = model_fingerprint(fastnn.load(original))
    raw = original.read_bytes()
    path = tmp_path / "damaged.safetensors"
    outcomes = {"error": 0, "identical": 0}
    for _ in range(300):
        path.write_bytes(damaged(rng, raw))
        try:
            loaded = fastnn.load(path)
        except InvalidFileError as err:
            assert str(path) in str(err)
            outcomes["error"] += 1
            continue
        assert model_fingerprint(loaded) == expected
        outcomes["identical"] += 1
    assert outcomes["error"] > 250


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fuzz_damaged_idx_files(tmp_path, suffix):
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    good = tmp_path / f"good-idx3-ubyte{suffix}"
    datasets.save_idx(good, original)
    raw = good.read_bytes()
    path = tmp_path / f"damaged-idx3-ubyte{suffix}"
    header = 4 + 4 * 3
    for _ in range(300):
        # A raw IDX file has no checksum: its data bytes can change undetected, so flips
        # go to the header there; gzip's CRC covers everything.
        path.write_bytes(damaged(rng, raw, protect_after=None if suffix else header))
        try:
            loaded = datasets.load_idx(path)
        except InvalidFileError as err:
            assert str(path) in str(err)
            continue
        assert loaded.shape == original.shape
        if suffix or loaded.dtype == original.dtype:
            np.testing.assert_array_equal(loaded, original)
        else:  # a raw file's type code 0x08 (uint8) flipped to 0x09 (int8): the same bytes
            assert loaded.dtype == np.int8 and loaded.tobytes() == original.tobytes()


@pytest.mark.parametrize("which", ["y_true", "y_pred"])
def test_metrics_report_a_uint64_label_beyond_int64_as_it_is(which):
    from fastnn import metrics

    big = np.array([0, 2**63], np.uint64)
    small = np.array([0, 1], np.uint64)
    args = (big, small) if which == "y_true" else (small, big)
    with pytest.raises(ValueError, match=f"{which} holds label 9223372036854775808"):
        metrics.accuracy(*args)


@pytest.mark.parametrize("config", [{"p": 0.5, "seed": 2**64}, {"p": 0.5, "seed": 1, "offset": 2**64},
                                    {"p": 0.5, "seed": 1, "offset": -1}])
def test_a_random_stream_position_out_of_range_is_an_invalid_file(tmp_path, config):
    model = json.dumps({"class": "Sequential", "config": {"layers": [
        {"class": "Dense", "config": {"in_features": 2, "out_features": 2}},
        {"class": "Dropout", "config": config}]}})
    path = write(tmp_path / "m.safetensors", weights(), {"model": model})
    raises_invalid(lambda: fastnn.load(path), str(path), "2**64")


def _checkpoint(tmp_path, optimizer):
    """A checkpoint of a fit with an Augment, saved with its optimizer and fit state."""
    X = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    y = np.arange(8) % 2
    model = nn.Sequential(nn.Dense(4, 2))
    model.compile(loss="cross_entropy", optimizer=optimizer)
    augment = fastnn.data.Augment((2, 2), noise_std=0.1, seed=1)
    model.fit(X, y, epochs=1, batch_size=4, verbose=0, augment=augment, seed=0)
    path = model.save(tmp_path / "ck.safetensors", include_optimizer=True)
    return path, X, y


def _resign(path, metadata, tensors):
    metadata["sha256"] = io._digest(tensors, metadata)
    st.save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("field,value", [("seed", 2**64), ("offset", 2**64), ("offset", 2**70)])
def test_a_resume_state_whose_augment_stream_is_out_of_range_is_refused_at_load(tmp_path, field,
                                                                                 value):
    """Found by an attack: it loaded, and the next fit failed in augment_images."""
    path, X, y = _checkpoint(tmp_path, optim.SGD(lr=0.1))
    metadata, tensors = io._read(path)
    training = json.loads(metadata["training"])
    training["run"]["augment"][("seed", "offset").index(field)] = value
    metadata["training"] = json.dumps(training)
    _resign(path, metadata, tensors)
    raises_invalid(lambda: fastnn.load(path), str(path), f"augment {field} is {value}", "2**64")


@pytest.mark.parametrize("optimizer", [optim.Adam, optim.SGD, optim.Adagrad])
def test_an_optimizer_step_no_training_reaches_is_refused_at_load(tmp_path, optimizer):
    """Found by an attack: step 2**63 - 2 loaded, and the next fit failed in adam_step (or
    adagrad_step; SGD's count went past int64 silently)."""
    path, X, y = _checkpoint(tmp_path, optimizer())
    metadata, tensors = io._read(path)
    tensors["optimizer.step"] = np.array(2**63 - 2, np.int64)
    _resign(path, metadata, tensors)
    raises_invalid(lambda: fastnn.load(path), str(path), "'step'", str(2**63 - 2))
    tensors["optimizer.step"] = np.array(io.MAX_STEP, np.int64)
    _resign(path, metadata, tensors)
    fastnn.load(path).fit(X, y, epochs=2, batch_size=4, verbose=0)  # resumes, as far as it may


def test_a_file_describing_millions_of_layers_without_weights_is_refused_before_building(tmp_path):
    """Found by an attack: layers without weights cost no parameter budget, and 3.5 million
    ReLUs in 70 MB of JSON took 2.3 GB to build and ended in a bare MemoryError; 100,000
    (2 MB) took 65 MB. Refused before building; a deep but real model still loads."""
    many = json.dumps({"class": "Sequential", "config": {"layers": [{"class": "ReLU"}] * 100_001}})
    path = write(tmp_path / "m.safetensors", {}, {"model": many})
    peak = peak_bytes(lambda: raises_invalid(lambda: fastnn.load(path), str(path), "100,002 layers"))  # the Sequential too
    assert peak < 64 * 2**20, peak
    deep = nn.Sequential(*[layer for _ in range(300) for layer in (nn.Dense(4, 4), nn.Tanh())])
    back = fastnn.load(deep.save(tmp_path / "deep.safetensors"))
    assert len(back.layers) == 600
