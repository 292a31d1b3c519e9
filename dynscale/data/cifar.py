"""CIFAR-10 and CIFAR-100 from their official *binary* archives (never the pickled Python
version: nothing is unpickled), verified by the official MD5s and read record by record.

A CIFAR-10 record is one label byte and 3,072 pixel bytes (the red, green and blue 32×32
planes, row-major); a CIFAR-100 record has two label bytes (coarse, then fine: the fine label is
the class) before the pixels. The archive is looked for as ``$DYNSCALE_DATA/NAME/`` (the archive
itself or its extracted folder), else downloaded into the cache (``$DYNSCALE_MIRROR`` first).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import cache_dir, download_file, md5sum

RECORD_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSource:
    """One CIFAR archive: where it is published, its MD5, and the layout of its records."""

    name: str
    archive: str
    md5: str
    folder: str  # the folder the archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # bytes before the pixels
    label_at: int  # which of them is the class
    names: str  # the file of class names, one per line
    url: str = "https://www.cs.toronto.edu/~kriz/"


CIFAR10 = CifarSource("cifar10", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                      "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
                      1, 0, "batches.meta.txt")
CIFAR100 = CifarSource("cifar100", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                       "cifar-100-binary", ("train.bin",), ("test.bin",), 2, 1, "fine_label_names.txt")
CIFAR = {s.name: s for s in (CIFAR10, CIFAR100)}


def read_records(path: Path, source: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` of one binary file.

    Raises:
        DataError: if the file's size is not a whole number of records.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    size = source.label_bytes + RECORD_PIXELS
    if raw.size == 0 or raw.size % size:
        raise DataError(f"{path} holds {raw.size} bytes, not a whole number of {source.name} records of {size} bytes; "
                        "the file is damaged, remove it to download it again")
    records = raw.reshape(-1, size)
    return records[:, source.label_bytes:].reshape(-1, 3, 32, 32), records[:, source.label_at].astype(np.int64)


def _extract(archive: Path, source: CifarSource, into: Path) -> Path:
    """Extracts the archive's record and name files (nothing else, no path outside ``into``)."""
    wanted = {f"{source.folder}/{n}" for n in (*source.train, *source.test, source.names)}
    target = into / source.folder
    tmp = into / f".{source.folder}.{os.getpid()}.tmp"  # one per process: several may extract at once
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name in wanted and member.isfile():
                    with tar.extractfile(member) as f, open(tmp / Path(member.name).name, "wb") as out:
                        out.write(f.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} cannot be read as the {source.name} archive ({e}); remove it to download it "
                        "again") from None
    missing = sorted(n for n in wanted if not (tmp / Path(n).name).is_file())
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} lacks {missing[0]}; it is not the official {source.archive}")
    if target.exists():  # another process extracted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def _local_roots(source: CifarSource) -> list[Path]:
    """Where ``source`` is looked for on this machine, in order: ``$DYNSCALE_DATA/NAME``, the cache."""
    roots = [Path(os.environ["DYNSCALE_DATA"]) / source.name] if os.environ.get("DYNSCALE_DATA") else []
    return [*roots, cache_dir() / source.name]


def _extracted(root: Path, source: CifarSource) -> bool:
    return all((root / source.folder / n).is_file() for n in (*source.train, *source.test))


def local_cifar(name: str) -> Path | None:
    """Where CIFAR ``name`` (``cifar10``, ``cifar100``) already is on this machine, found the
    way :func:`locate_cifar` looks, without downloading or reading anything.

    Args:
        name: a key of ``CIFAR``.

    Returns:
        The first root (``$DYNSCALE_DATA/NAME``, then the cache) holding the extracted record
        files or the archive (its MD5 is checked only when it is loaded), else None.
    """
    source = CIFAR[name]
    return next((root for root in _local_roots(source)
                 if _extracted(root, source) or (root / source.archive).is_file()), None)


def locate_cifar(source: CifarSource) -> Path:
    """The folder of ``source``'s binary files: ``$DYNSCALE_DATA/NAME`` (extracted, or the
    archive, checked by MD5), else the cache, downloading the archive if needed.

    Raises:
        DataError: naming where to put the archive when it is missing and cannot be downloaded.
    """
    for root in _local_roots(source):
        if _extracted(root, source):
            return root / source.folder
        archive = root / source.archive
        if archive.is_file():
            if md5sum(archive) != source.md5:
                raise DataError(f"{archive} does not have the official MD5 {source.md5}; remove it to download it "
                                "again")
            return _extract(archive, source, root)
    cache = cache_dir() / source.name
    mirrors = [os.environ["DYNSCALE_MIRROR"]] if os.environ.get("DYNSCALE_MIRROR") else []
    errors = []
    for base in [*mirrors, source.url]:
        try:
            archive = download_file(base.rstrip("/") + "/" + source.archive, cache / source.archive, source.md5)
            return _extract(archive, source, cache)
        except DataError as e:
            errors.append(str(e))
    raise DataError(f"{source.name} is not here and could not be downloaded ({' | '.join(errors)}); put "
                    f"{source.archive} (from {source.url}) in $DYNSCALE_DATA/{source.name}/")


def load_cifar_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10 (``cifar10``) or CIFAR-100 (``cifar100``): train and test images ``(N, 3, 32,
    32)`` uint8, labels, and the class names."""
    source = CIFAR[name]
    folder = locate_cifar(source)
    train = [read_records(folder / f, source) for f in source.train]
    test = [read_records(folder / f, source) for f in source.test]
    names = load_cifar_names(name)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            np.concatenate([x for x, _ in test]), np.concatenate([y for _, y in test]), names)


def load_cifar_names(name: str) -> list[str]:
    """The class names of CIFAR-10 or CIFAR-100, from the archive's names file."""
    source = CIFAR[name]
    path = locate_cifar(source) / source.names
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
