"""CIFAR-10/100 from their official binary archives: read record by record, verified by MD5,
downloaded from a loopback server (never the internet), resumed after an interruption."""

import dataclasses
import hashlib
import http.server
import threading

import numpy as np
import pytest

from dynscale.data import cifar, load_dataset
from dynscale.data.datasets import CIFAR_STATISTICS, class_names, input_description
from dynscale.errors import DataError

from cifar_files import make_archive


def raw(data, x) -> np.ndarray:
    """Images in [0, 1] again, from a normalised dataset's tensors."""
    mean = np.asarray(data.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(data.std, dtype=np.float32)[None, :, None, None]
    return x.numpy() * std + mean


def cifar_statistics(name):
    return CIFAR_STATISTICS[name]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name -> bytes), honouring ``Range: bytes=N-``; records each request."""

    files: dict = {}
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        self.seen.append((name, self.headers.get("Range")))
        if name not in self.files:
            self.send_error(404)
            return
        data, start = self.files[name], 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    handler = type("Handler", (RangeHandler,), {"files": {}, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    monkeypatch.setenv("DYNSCALE_MIRROR", url)
    monkeypatch.setenv("DYNSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DYNSCALE_DATA", raising=False)
    yield handler, url
    httpd.shutdown()


def serve(monkeypatch, handler, url, name):
    """Serves a small archive of ``name`` in place of the official one (its MD5 the test's)."""
    source = cifar.CIFAR[name]
    data, held = make_archive(source)
    local = dataclasses.replace(source, md5=hashlib.md5(data).hexdigest(), url=url + "not-the-internet/")
    monkeypatch.setitem(cifar.CIFAR, name, local)
    handler.files[source.archive] = data
    return local, data, held


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_the_binary_archive_is_downloaded_verified_and_read_record_by_record(name, server, monkeypatch):
    handler, url = server
    source, _, held = serve(monkeypatch, handler, url, name)
    data = load_dataset(name)
    want_x = np.concatenate([p for _, p in held["train"]])
    want_y = np.concatenate([y for y, _ in held["train"]])
    assert data.train_x.shape == (10 * len(source.train), 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    assert np.array_equal((raw(data, data.train_x) * 255).round().astype(np.uint8), want_x)
    assert data.mean == cifar_statistics(name)[0] and abs(float(data.train_x.mean())) < 2  # normalised per channel
    assert input_description(data)["mean"] == list(data.mean) and data.augment.fill[0] < 0
    assert np.array_equal(data.train_y.numpy(), want_y)  # CIFAR-100: the fine label, the second byte
    expected = ["class0", "class1"] if name == "cifar100" else ["airplane", "automobile"]  # the archive's / CIFAR-10's
    assert class_names(data)[:2] == expected
    assert [r for _, r in handler.seen] == [None]  # one request; a second load reads the cache
    load_dataset(name)
    assert len(handler.seen) == 1


def test_an_interrupted_download_resumes_where_it_stopped(server, monkeypatch, tmp_path):
    handler, url = server
    source, data, _ = serve(monkeypatch, handler, url, "cifar10")
    part = tmp_path / "cache" / "cifar10" / f".{source.archive}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])  # what an interrupted download left
    load_dataset("cifar10")
    assert handler.seen == [(source.archive, "bytes=1000-")]
    assert not part.exists() and (part.parent / source.archive).is_file()


def test_a_corrupt_download_or_archive_is_refused_and_nothing_is_kept(server, monkeypatch, tmp_path):
    handler, url = server
    source, data, _ = serve(monkeypatch, handler, url, "cifar10")
    handler.files[source.archive] = data[:-10] + b"0123456789"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10")
    assert not any((tmp_path / "cache" / "cifar10").iterdir())
    placed = tmp_path / "data" / "cifar10"
    placed.mkdir(parents=True)
    (placed / source.archive).write_bytes(b"not an archive")
    monkeypatch.setenv("DYNSCALE_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match="official MD5"):
        load_dataset("cifar10")


def test_a_record_file_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\0" * 3073 * 2 + b"\0")
    with pytest.raises(DataError, match="not a whole number of cifar10 records"):
        cifar.read_records(path, cifar.CIFAR10)
    path.write_bytes(b"\0" * 3073 * 2)
    x, y = cifar.read_records(path, cifar.CIFAR10)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 0]


def test_no_unpickling_anywhere_in_the_loader():
    import inspect

    text = inspect.getsource(cifar)
    assert "import pickle" not in text and "np.load(" not in text and "torch.load(" not in text



# --- folder:PATH -----------------------------------------------------------------------------------

def write_images(directory, count, size=(8, 8), mode="L", seed=0):
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(directory / f"img{i:02d}.png")


def test_one_folder_of_class_directories_is_split_the_same_way_every_time(tmp_path):
    for k, name in enumerate(["cat", "dog", "emu"]):
        write_images(tmp_path / "pets" / name, 10, seed=k)
    data = load_dataset(f"folder:{tmp_path / 'pets'}")
    assert data.train_x.shape == (24, 1, 8, 8) and data.test_x.shape == (6, 1, 8, 8)
    assert data.num_classes == 3 and sorted(set(data.test_y.tolist())) == [0, 1, 2]
    assert class_names(data) == ["cat", "dog", "emu"]
    again = load_dataset(f"folder:{tmp_path / 'pets'}")
    assert np.array_equal(again.test_x.numpy(), data.test_x.numpy())  # deterministic split
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "pets" / "cat" / "img00.png"))
    assert any(np.array_equal((x[0] * 255).round().astype(np.uint8), first)
               for x in raw(data, torch_cat(data.train_x, data.test_x)))
    assert data.mean is not None and len(data.mean) == 1  # the training split's own statistics


def torch_cat(a, b):
    import torch

    return torch.cat([a, b])


def test_train_and_test_folders_colour_images_and_bad_folders(tmp_path, capsys):
    from dynscale.cli import main

    for split, count in (("train", 4), ("test", 2)):
        for k, name in enumerate(["a", "b"]):
            write_images(tmp_path / "rgb" / split / name, count, mode="RGB", seed=k)
    data = load_dataset(f"folder:{tmp_path / 'rgb'}")
    assert data.train_x.shape == (8, 3, 8, 8) and data.test_x.shape == (4, 3, 8, 8)
    write_images(tmp_path / "mixed" / "a", 3)
    write_images(tmp_path / "mixed" / "b", 3, size=(9, 9))
    with pytest.raises(DataError, match="resize the dataset's images to one size"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")
    write_images(tmp_path / "one" / "a", 3)
    with pytest.raises(DataError, match="at least two"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    write_images(tmp_path / "bad" / "a", 3)
    write_images(tmp_path / "bad" / "b", 3)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be read as an image"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    with pytest.raises(SystemExit) as exit_status:  # refused while the options are parsed
        main(["train", "--model", "mlp", "--data", f"folder:{tmp_path / 'missing'}", "--epochs", "1",
              "--out", str(tmp_path / "run")])
    assert exit_status.value.code == 2 and "folder:PATH" in capsys.readouterr().err


# --- augmentation ----------------------------------------------------------------------------------

def test_augmentation_crops_and_flips_each_example_reproducibly_by_seed():
    import torch

    from dynscale.data import Dataset
    from dynscale.data.augment import Augment

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    out = Augment(padding=1, flip=False)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):  # every output is a 4×4 window of the zero-padded image
        padded = torch.nn.functional.pad(x[i, 0], (1, 1, 1, 1))
        assert any(torch.equal(out[i, 0], padded[r:r + 4, c:c + 4]) for r in range(3) for c in range(3))
    flipped = Augment(padding=0, flip=True)(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1))
    kinds = {torch.equal(f, x[j % 2]) for j, f in enumerate(flipped)}
    assert kinds == {True, False}  # some flipped, some not
    data = Dataset("toy", x.repeat(8, 1, 1, 1), torch.arange(16) % 2, x, torch.arange(2), 2, augment=Augment(1))
    first = [b for b, _ in data.loader("train", 4, shuffle=True, seed=3)]
    again = [b for b, _ in data.loader("train", 4, shuffle=True, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # one seed decides all
    assert len(data.loader("train", 4, shuffle=True)) == 4
    plain = [b for b, _ in data.loader("test", 4)]
    assert torch.equal(plain[0], x)  # the test split is never augmented
    assert data.limit(4).augment == data.augment and data.split_holdout(4)[0].augment == data.augment


def test_a_normalised_dataset_pads_with_what_a_black_pixel_became_and_checks_its_statistics():
    import torch

    from dynscale.data import make_synthetic
    from dynscale.data.augment import Augment
    from dynscale.data.datasets import normalised

    x = torch.ones(64, 1, 4, 4)
    out = Augment(padding=2, flip=False, fill=(-5.0,))(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {1.0, -5.0} and (out == -5.0).any()  # the border is the fill
    data = normalised(make_synthetic(), (0.5,), (0.25,))
    assert data.mean == (0.5,) and float(data.train_x.max()) <= 2.0 + 1e-6  # (1 - 0.5) / 0.25
    with pytest.raises(DataError, match="a mean and a positive std per channel"):
        normalised(make_synthetic(), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
