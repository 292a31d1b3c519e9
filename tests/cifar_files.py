"""Small CIFAR archives in the official binary format, shared by the tests that need CIFAR
without the internet (the loader's own tests, and ``reproduce idp --full`` on a tiny CIFAR-10)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

from dynscale.data import cifar


def records(n: int, label_bytes: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records in the official layout: label byte(s), then the R, G, B planes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 20, size=(n, label_bytes), dtype=np.uint8)
    labels[:, -1] = np.arange(n) % 10  # the class byte: every class in every file
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes(), labels, pixels.reshape(n, 3, 32, 32)


def make_archive(source: cifar.CifarSource, per_file: int = 10) -> tuple[bytes, dict]:
    """A small archive in ``source``'s official format (``per_file`` records in each record
    file), and what it holds: ``{"train": [(labels, pixels)…], "test": […]}``."""
    buffer, held = io.BytesIO(), {"train": [], "test": []}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        files = [(n, "train") for n in source.train] + [(n, "test") for n in source.test]
        for i, (name, split) in enumerate(files):
            data, labels, pixels = records(per_file, source.label_bytes, i)
            held[split].append((labels[:, source.label_at], pixels))
            info = tarfile.TarInfo(f"{source.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        names = "\n".join(f"class{k}" for k in range(10)).encode()
        info = tarfile.TarInfo(f"{source.folder}/{source.names}")
        info.size = len(names)
        tar.addfile(info, io.BytesIO(names))
    return buffer.getvalue(), held


def place_archive(monkeypatch, root: Path, name: str = "cifar10", per_file: int = 10) -> cifar.CifarSource:
    """Puts a small archive of ``name`` where a user puts the real one, ``ROOT/NAME/``, points
    ``$DYNSCALE_DATA`` at ``root``, and makes the archive's MD5 the official one for the test.

    Returns:
        The source as the loader now sees it.
    """
    source = cifar.CIFAR[name]
    data, _ = make_archive(source, per_file)
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / source.archive).write_bytes(data)
    local = dataclasses.replace(source, md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(cifar.CIFAR, name, local)
    monkeypatch.setenv("DYNSCALE_DATA", str(root))
    return local
