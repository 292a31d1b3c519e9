"""``folder:PATH``: an image-classification dataset in class directories (ImageFolder-style),
PNG or JPEG read with Pillow.

``PATH/train/CLASS/*.png`` and ``PATH/test/CLASS/*.png`` give the two splits; a single
``PATH/CLASS/*.png`` is split deterministically, 20% of each class's images (by a shuffle of
their sorted names with a fixed seed) for the test split. The classes are the directory names
in sorted order (label 0 is the first). Every image must have the same size; an all-grey
dataset has one channel, any colour image makes every image RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_SHARE = 0.2
SPLIT_SEED = 0


def _classes(root: Path) -> list[Path]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root} holds {len(classes)} class directories; a folder dataset needs one directory per "
                        "class (at least two), each holding its PNG or JPEG images")
    return classes


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())


def _read(paths: list[Path], rgb: bool) -> np.ndarray:
    """The images ``(N, C, H, W)`` uint8, all of the first one's size."""
    from PIL import Image, UnidentifiedImageError

    arrays, size = [], None
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB" if rgb else "L")
                if size is None:
                    size = image.size
                elif image.size != size:
                    raise DataError(f"{path} is {image.size[0]}×{image.size[1]} but {paths[0]} is {size[0]}×{size[1]}; "
                                    "resize the dataset's images to one size first")
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path} cannot be read as an image ({e}); remove it or replace it") from None
        arrays.append(array.transpose(2, 0, 1) if rgb else array[None])
    return np.stack(arrays)


def _is_rgb(paths: list[Path]) -> bool:
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "1", "I;16", "I", "F", "LA"):
                    return True
        except OSError:
            continue  # _read names the file
    return False


def load_folder_arrays(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Train and test images ``(N, C, H, W)`` uint8 and labels of a folder dataset, and the
    class names.

    Raises:
        DataError: for a missing directory, fewer than two classes, a class without images,
            an unreadable image or images of different sizes.
    """
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("folder datasets read images with Pillow; install it with `pip install pillow`") from None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; give folder:PATH with one directory per class")
    splits = {s: root / s for s in ("train", "test")}
    if all(p.is_dir() for p in splits.values()):
        classes = [c.name for c in _classes(splits["train"])]
        test_classes = [c.name for c in _classes(splits["test"])]
        if test_classes != classes:
            raise DataError(f"{root}: train has the classes {classes} but test {test_classes}; give both the same")
        files = {s: [(_images(splits[s] / c), k) for k, c in enumerate(classes)] for s in splits}
    else:
        class_dirs = _classes(root)
        classes = [c.name for c in class_dirs]
        files = {"train": [], "test": []}
        for k, directory in enumerate(class_dirs):
            images = _images(directory)
            order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
            cut = max(1, round(TEST_SHARE * len(images))) if len(images) > 1 else 0
            files["test"].append(([images[i] for i in sorted(order[:cut])], k))
            files["train"].append(([images[i] for i in sorted(order[cut:])], k))
    for split, per_class in files.items():
        for images, k in per_class:
            if not images:
                raise DataError(f"{root}: class {classes[k]!r} has no PNG or JPEG image in its {split} split; give "
                                "every class images (at least two when one folder is split)")
    everything = [p for per_class in files.values() for images, _ in per_class for p in images]
    rgb = _is_rgb(everything)
    out = []
    for split in ("train", "test"):
        paths = [p for images, _ in files[split] for p in images]
        labels = np.concatenate([np.full(len(images), k, dtype=np.int64) for images, k in files[split]])
        out += [_read(paths, rgb), labels]
    return out[0], out[1], out[2], out[3], classes


def folder_classes(root: str | Path) -> list[str]:
    """The class names of a folder dataset (its class directories, sorted)."""
    root = Path(root).expanduser()
    base = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
    return [c.name for c in _classes(base)]
