import functools
import gzip
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dynscale.data import FASHION_MNIST, MNIST, IdxSource, fetch_idx, load_dataset, read_idx
from dynscale.data.download import md5sum
from dynscale.errors import DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def make_idx_dir(directory: Path, gz: bool, n_train=20, n_test=10, size=4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, size, size)), gz)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % 3, gz)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, size, size)), gz)
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % 3, gz)
    return directory


def test_digits_is_a_fixed_stratified_80_20_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert a.train_x.dtype == torch.float32 and 0 <= a.train_x.min() and a.train_x.max() <= 1
    assert torch.equal(a.test_y, b.test_y) and torch.equal(a.train_x, b.train_x)
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each class
    assert a.num_classes == 10 and a.in_channels == 1 and a.input_size == 8


def test_synthetic_is_deterministic():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gzipped_or_not(tmp_path, gz):
    make_idx_dir(tmp_path, gz)
    data = load_dataset(f"idx:{tmp_path}")
    assert data.train_x.shape == (20, 1, 4, 4) and data.test_y.shape == (10,)
    assert data.num_classes == 3


def test_loaders_share_one_interface(synthetic):
    loader = synthetic.loader("train", batch_size=64, shuffle=True, seed=1)
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)
    again = next(iter(synthetic.loader("train", batch_size=64, shuffle=True, seed=1)))
    assert torch.equal(y, again[1])
    assert sum(len(b[1]) for b in synthetic.loader("test", 100)) == len(synthetic.test_y)


def test_missing_idx_files_are_named(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="does not hold the four MNIST-format files"):
        load_dataset(f"idx:{tmp_path}")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"idx:{tmp_path / 'nope'}")


def test_truncated_idx_file_is_rejected(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_corrupt_gzip_is_rejected(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"idx:{tmp_path}")


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_mismatched_images_and_labels(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5), gz=False)
    with pytest.raises(DataError, match="do not match"):
        load_dataset(f"idx:{tmp_path}")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'cifar-11'.*digits"):
        load_dataset("cifar-11")


def test_dynscale_data_is_searched_first(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "mnist", gz=True)
    monkeypatch.setenv("DYNSCALE_DATA", str(tmp_path))
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))
    data = load_dataset("mnist")
    assert data.name == "mnist" and data.train_x.shape == (20, 1, 4, 4)
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNSCALE_DATA", str(tmp_path))  # empty: falls through to Debian's files
    data = load_dataset("fashion-mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10 and torch.bincount(data.test_y).tolist() == [1000] * 10


def test_official_checksum_tables_cover_the_four_files():
    for source in (MNIST, FASHION_MNIST):
        assert sorted(source.md5) == sorted(
            f"{stem}.gz" for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
        assert all(len(v) == 32 for v in source.md5.values())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serves a directory on 127.0.0.1; yields (directory, base URL, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(_Quiet):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/", requests
    server.shutdown()
    server.server_close()


def test_download_with_checksums_then_cache(http_dir, tmp_path):
    served, url, requests = http_dir
    make_idx_dir(served, gz=True)
    source = IdxSource("toy", (url,), {p.name: md5sum(p) for p in served.iterdir()})
    cache = tmp_path / "cache"
    directory = fetch_idx(source, cache)
    assert sorted(p.name for p in directory.iterdir()) == sorted(source.md5)
    data = load_dataset(f"idx:{directory}")
    assert data.train_x.shape == (20, 1, 4, 4)
    assert len(requests) == 4
    fetch_idx(source, cache)  # cached: no new request
    assert len(requests) == 4


def test_corrupted_download_is_rejected_and_not_cached(http_dir, tmp_path):
    served, url, _ = http_dir
    make_idx_dir(served, gz=True)
    md5 = {p.name: md5sum(p) for p in served.iterdir()}
    bad = served / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10] + b"0123456789")  # same size, different bytes
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch for .*train-images"):
        fetch_idx(IdxSource("toy", (url,), md5), cache)
    assert not (cache / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no partial file may remain"


def test_named_dataset_download_path_checks_official_sums(http_dir, tmp_path, monkeypatch):
    served, url, requests = http_dir
    make_idx_dir(served, gz=True)  # not the real MNIST: every official checksum must fail
    monkeypatch.setenv("DYNSCALE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))
    # The loopback server replaces the official mirrors, so nothing leaves this machine.
    monkeypatch.setattr("dynscale.data.datasets.SOURCES", {"mnist": IdxSource("mnist", (url,), MNIST.md5)})
    with pytest.raises(DataError, match="could not get mnist file .*checksum mismatch"):
        load_dataset("mnist")
    assert requests, "the loopback server was asked"
    assert not list((tmp_path / "cache" / "mnist").glob("*ubyte*"))


def test_unreachable_mirror_is_a_data_error(tmp_path):
    source = IdxSource("toy", ("http://127.0.0.1:9/",), {"a.gz": "0" * 32})
    with pytest.raises(DataError, match="cannot download"):
        fetch_idx(source, tmp_path)


def test_dynscale_mirror_is_tried_first(http_dir, tmp_path, monkeypatch):
    served, url, requests = http_dir
    make_idx_dir(served, gz=True)
    monkeypatch.setenv("DYNSCALE_MIRROR", url)
    fetch_idx(IdxSource("toy", (), {p.name: md5sum(p) for p in served.iterdir()}), tmp_path)
    assert len(requests) == 4
