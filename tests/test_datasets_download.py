"""datasets.load(..., download=True) against an HTTP server on 127.0.0.1 started here,
serving small files in the official formats (gzip'd IDX, CIFAR's binary tar.gz), with
the URL table pointed at it: no real network is touched."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fastnn import datasets

IDX = datasets._IDX_FILES


class Server:
    """Serves ``files`` (name -> bytes) under /data/; ``plan[name]`` lists what the next
    requests for ``name`` get: "500", "truncate" (a Content-Length larger than what is
    sent), "404"; then the file. Every request is recorded in ``requests``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.plan: dict[str, list[str]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.removeprefix("/data/")  # anything else: 404
                server.requests.append(self.path)
                todo = server.plan.get(name)
                what = todo.pop(0) if todo else "send"
                body = server.files.get(name)
                if what in ("500", "404") or body is None:
                    self.send_error(404 if body is None else int(what))
                    return
                self.send_response(200)
                extra = 1000 if what == "truncate" else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body[:len(body) - 10] if extra else body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def point(self, monkeypatch: pytest.MonkeyPatch, name: str, mirrors: tuple[str, ...] = (),
              sha256: dict[str, str] | None = None) -> None:
        """Make ``name``'s table entry download the files served here."""
        digests = sha256 or {f: hashlib.sha256(self.files[f]).hexdigest()
                             for f in datasets._REMOTE[name].sha256}
        monkeypatch.setitem(datasets._REMOTE, name,
                            datasets._Remote(mirrors + (self.base,), digests, 1))


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "RETRY_DELAY", 0.0)
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def idx_gz(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array``, gzip'd: magic 0 0 8 ndim, big-endian dims, bytes."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def mnist_files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    arrays = {"train_x": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "train_y": np.arange(20, dtype=np.uint8) % 10,
              "test_x": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "test_y": np.arange(10, dtype=np.uint8)[::-1].copy()}
    files = dict(zip(IDX, (idx_gz(arrays[k]) for k in ("train_x", "train_y", "test_x", "test_y"))))
    return files, arrays


def tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def cifar_records(pixels: np.ndarray, *labels: np.ndarray) -> bytes:
    """CIFAR's binary records: the label bytes, then the 3,072 pixel bytes (R, G, B planes)."""
    return np.concatenate([np.stack(labels, 1).astype(np.uint8),
                           pixels.reshape(len(pixels), -1)], 1).tobytes()


def test_download_then_load_then_the_cache(server, tmp_path, monkeypatch, capsys):
    server.files, arrays = mnist_files(np.random.default_rng(0))
    server.point(monkeypatch, "mnist")
    assert not datasets.is_available("mnist")
    X_train, y_train, X_test, y_test = datasets.load("mnist")
    np.testing.assert_allclose(X_train, arrays["train_x"].reshape(20, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, arrays["train_y"])
    np.testing.assert_allclose(X_test, arrays["test_x"].reshape(10, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, arrays["test_y"])
    assert len(server.requests) == 4
    # FASTNN_DATA is where they went, under their own names, with nothing else beside them.
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(IDX)
    assert "downloading train-images-idx3-ubyte.gz" in capsys.readouterr().err
    assert datasets.is_available("mnist")
    again = datasets.load("mnist", download=False)
    np.testing.assert_array_equal(again[0], X_train)
    datasets.load("mnist")
    assert len(server.requests) == 4  # the cache: no second request


def test_xdg_cache_home_without_fastnn_data(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.data_dir() == tmp_path / "fastnn" / "datasets"
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "mine"))
    assert datasets.data_dir() == tmp_path / "mine"


def test_download_false_makes_no_request(server, monkeypatch):
    server.files, _ = mnist_files(np.random.default_rng(0))
    server.point(monkeypatch, "kmnist")
    with pytest.raises(datasets.DatasetUnavailable,
                       match=r"'kmnist' is not in .*cache/kmnist.*download=False.*download=True"):
        datasets.load("kmnist", download=False)
    assert server.requests == []


def test_checksum_mismatch_deletes_the_file_and_says_so(server, tmp_path, monkeypatch):
    server.files, _ = mnist_files(np.random.default_rng(0))
    wanted = "0" * 64
    served = hashlib.sha256(server.files[IDX[0]]).hexdigest()
    server.point(monkeypatch, "mnist", sha256={f: wanted for f in IDX})
    with pytest.raises(datasets.DownloadError) as err:
        datasets.load("mnist")
    message = str(err.value)
    assert IDX[0] in message and server.base + IDX[0] in message
    assert served in message and wanted in message and "deleted" in message
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []  # no file, no temporary one


def test_a_cached_file_that_no_longer_matches_is_fetched_again(server, tmp_path, monkeypatch):
    server.files, arrays = mnist_files(np.random.default_rng(0))
    server.point(monkeypatch, "mnist")
    datasets.load("mnist")
    (tmp_path / "cache" / "mnist" / IDX[1]).write_bytes(b"damaged")
    _, y_train, _, _ = datasets.load("mnist")
    np.testing.assert_array_equal(y_train, arrays["train_y"])
    assert len(server.requests) == 5


def test_truncated_transfer_is_retried_then_given_up(server, tmp_path, monkeypatch):
    server.files, arrays = mnist_files(np.random.default_rng(0))
    server.point(monkeypatch, "mnist")
    server.plan[IDX[0]] = ["truncate"]
    X_train = datasets.load("mnist")[0]  # one cut transfer, then the whole file
    np.testing.assert_allclose(X_train, arrays["train_x"].reshape(20, 784) / 255.0, rtol=1e-6)
    assert server.requests.count("/data/" + IDX[0]) == 2

    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "other"))
    server.plan[IDX[0]] = ["truncate"] * datasets.RETRIES
    with pytest.raises(datasets.DownloadError, match=rf"truncated transfer.*{datasets.RETRIES} tries"):
        datasets.load("mnist")
    assert list((tmp_path / "other" / "mnist").iterdir()) == []


def test_server_error_then_success_and_a_refusing_mirror(server, monkeypatch):
    server.files, arrays = mnist_files(np.random.default_rng(0))
    # The first mirror answers 404 to everything: the next one is tried.
    server.point(monkeypatch, "fashion-mnist", mirrors=(server.base + "missing/",))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", datasets.data_dir() / "not-debian")
    server.plan[IDX[2]] = ["500", "500"]
    _, _, X_test, y_test = datasets.load("fashion-mnist", flatten=False)
    np.testing.assert_allclose(X_test, arrays["test_x"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, arrays["test_y"])
    served = [r for r in server.requests if r.endswith(IDX[2])]
    assert served == ["/data/missing/" + IDX[2]] + ["/data/" + IDX[2]] * 3


def test_every_mirror_failing_names_each(server, monkeypatch):
    server.files, _ = mnist_files(np.random.default_rng(0))
    server.point(monkeypatch, "mnist")
    server.plan[IDX[0]] = ["500"] * datasets.RETRIES
    with pytest.raises(datasets.DownloadError, match=rf"{IDX[0]}.*HTTP 500.*{datasets.RETRIES} tries"):
        datasets.load("mnist")


def cifar10_archive(pixels, labels, per_batch):
    """CIFAR-10's binary archive: five training batches of per_batch images, the rest the
    test batch, and the class-name file (its first name only)."""
    folder = "cifar-10-batches-bin/"
    members = {f"{folder}data_batch_{i}.bin": cifar_records(pixels[(i - 1) * per_batch:i * per_batch],
                                                           labels[(i - 1) * per_batch:i * per_batch])
               for i in range(1, 6)}
    members[folder + "test_batch.bin"] = cifar_records(pixels[5 * per_batch:], labels[5 * per_batch:])
    members[folder + "batches.meta.txt"] = b"airplane\n"
    return tar_gz(members)


def test_cifar10_nchw_nhwc_and_class_names(server, monkeypatch):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (14, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(14) % 10
    server.files = {"cifar-10-binary.tar.gz": cifar10_archive(pixels, labels, 2)}
    server.point(monkeypatch, "cifar10")

    X_train, y_train, X_test, y_test = datasets.load("cifar10", flatten=False)
    assert X_train.shape == (10, 3, 32, 32) and X_train.dtype == np.float32
    np.testing.assert_allclose(X_train, pixels[:10] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(X_test, pixels[10:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, labels[:10])
    np.testing.assert_array_equal(y_test, labels[10:])
    assert y_train.dtype == np.int64

    nhwc = datasets.load("cifar10", flatten=False, channels_last=True)[0]
    assert nhwc.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(nhwc[4, 7, 9], pixels[4, :, 7, 9] / np.float32(255))
    rows = datasets.load("cifar10", normalize=False)[0]
    np.testing.assert_array_equal(rows, pixels[:10].reshape(10, 3072))
    assert datasets.info("cifar10").classes[0] == "airplane"
    assert datasets.info("cifar10").image_shape == (3, 32, 32)
    assert len(server.requests) == 1
    with pytest.raises(ValueError, match="channels_last=True applies to colour images"):
        datasets.load("mnist", channels_last=True, download=False)


def test_cifar100_fine_and_coarse_labels(server, monkeypatch):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    coarse, fine = np.array([19, 0, 3, 4, 5, 6]), np.array([99, 0, 50, 7, 8, 9])
    members = {"cifar-100-binary/train.bin": cifar_records(pixels[:4], coarse[:4], fine[:4]),
               "cifar-100-binary/test.bin": cifar_records(pixels[4:], coarse[4:], fine[4:])}
    server.files = {"cifar-100-binary.tar.gz": tar_gz(members)}
    server.point(monkeypatch, "cifar100")
    X_train, y_train, X_test, y_test = datasets.load("cifar100", flatten=False)
    np.testing.assert_array_equal(y_train, fine[:4])
    np.testing.assert_array_equal(y_test, fine[4:])
    np.testing.assert_allclose(X_test, pixels[4:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(datasets.load("cifar100", coarse=True)[1], coarse[:4])
    classes = datasets.info("cifar100").classes
    assert len(classes) == 100 and classes[99] == "worm" and classes[0] == "apple"
    assert datasets.CIFAR100_COARSE_CLASSES[19] == "vehicles_2"


def test_cli_trains_a_cnn_on_downloaded_cifar10(server, monkeypatch, capsys):
    from fastnn import cli

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(60) % 10
    server.files = {"cifar-10-binary.tar.gz": cifar10_archive(pixels, labels, 10)}
    server.point(monkeypatch, "cifar10")
    assert cli.main(["train", "--data", "cifar10", "--conv", "4", "--hidden", "8",
                     "--epochs", "1", "--batch-size", "10"]) == 0
    assert "test" in capsys.readouterr().out
    assert cli.main(["datasets"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("cifar10 "))
    assert row.split()[1:3] == ["yes", "3x32x32"]
