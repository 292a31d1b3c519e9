"""Checksummed downloads of MNIST-format datasets into ``~/.cache/dynscale``."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..progress import progress_bar


@dataclass(frozen=True)
class IdxSource:
    """Where a dataset's four ``.gz`` files are published, and their MD5 sums."""

    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # file name -> MD5 of the file as published


MNIST = IdxSource(
    name="mnist",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


def cache_dir() -> Path:
    """The download cache: ``$DYNSCALE_CACHE``, else ``~/.cache/dynscale``."""
    return Path(os.environ.get("DYNSCALE_CACHE", Path.home() / ".cache" / "dynscale"))


def md5sum(path: Path) -> str:
    """Returns the hex MD5 of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest`` if its MD5 matches, with a progress bar; an interrupted
    download resumes where it stopped.

    The bytes go to ``.NAME.part`` beside ``dest``; when that file exists, the download asks
    the server for the rest (an HTTP ``Range`` request) and starts over if the server sends the
    whole file. ``dest`` appears only after the checksum passes (atomic rename); a file whose
    checksum fails is discarded.

    Args:
        url: the address to fetch.
        dest: the final path.
        md5: the expected hex MD5.
        timeout: seconds to wait for the server.

    Returns:
        ``dest``.

    Raises:
        DataError: if the download fails (the partial file is kept, to resume) or the checksum
            does not match (nothing is kept).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resumed = have > 0 and resp.status == 206
            total = resp.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total and total.isdigit() else None
            with open(part, "ab" if resumed else "wb") as out, \
                    progress_bar(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                                 desc=dest.name, leave=False) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part already holds the whole file
            pass
        else:
            raise DataError(f"cannot download {url}: {e}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download {url}: {e}; run the command again to resume") from None
    got = md5sum(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: expected MD5 {md5}, got {got}; the download is corrupt and "
                        "was discarded, try again or place the files yourself")
    os.replace(part, dest)
    return dest


def fetch_idx(source: IdxSource, directory: Path | None = None) -> Path:
    """Makes sure the four files of ``source`` are in the cache, downloading what is missing.

    ``$DYNSCALE_MIRROR``, if set, is a base URL tried before the official mirrors.

    Args:
        source: the dataset's files and checksums.
        directory: where to keep them (default: ``cache_dir() / source.name``).

    Returns:
        The directory holding the verified files.

    Raises:
        DataError: if a file cannot be fetched from any mirror with the right checksum.
    """
    directory = directory or cache_dir() / source.name
    mirrors = list(source.mirrors)
    if os.environ.get("DYNSCALE_MIRROR"):
        mirrors.insert(0, os.environ["DYNSCALE_MIRROR"])
    for filename, md5 in source.md5.items():
        dest = directory / filename
        if dest.is_file() and md5sum(dest) == md5:
            continue
        errors = []
        for base in mirrors:
            try:
                download_file(base.rstrip("/") + "/" + filename, dest, md5)
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(
                f"could not get {source.name} file {filename}: {' | '.join(errors)}"
            )
    return directory
