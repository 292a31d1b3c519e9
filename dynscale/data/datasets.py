"""Datasets as tensors: ``digits``, ``mnist``, ``fashion-mnist``, ``idx:DIR``, ``synthetic``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from ..errors import DataError
from .augment import Augment, AugmentedLoader
from .cifar import CIFAR, load_cifar_arrays, load_cifar_names
from .download import FASHION_MNIST, MNIST, IdxSource, fetch_idx
from .folder import folder_classes, load_folder_arrays
from .idx import find_idx_files, read_idx
from .sampler import ShardedBatchSampler

DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
SOURCES: dict[str, IdxSource] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


@dataclass
class Dataset:
    """Train and test tensors of an image-classification dataset.

    Images are float32 shaped (N, C, H, W): in [0, 1], or, where ``mean`` and ``std`` are set,
    ``(pixel / scale - mean) / std`` per channel; labels are int64 shaped (N,).
    """

    name: str
    train_x: torch.Tensor  # (N, C, H, W)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor  # (M, C, H, W)
    test_y: torch.Tensor  # (M,)
    num_classes: int
    augment: Augment | None = None  # what the shuffled training loader does to each batch
    mean: tuple[float, ...] | None = None  # per channel, subtracted from the [0, 1] images (None: not normalised)
    std: tuple[float, ...] | None = None  # per channel, divided by after the mean

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[-1]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x, y)`` of ``"train"`` or ``"test"``."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)

    def limit(self, n: int, seed: int = 0) -> Dataset:
        """A copy whose train split is ``n`` examples drawn by a fixed shuffle (test unchanged)."""
        if n >= len(self.train_y):
            return self
        keep = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(seed))[:n]
        return dataclasses.replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep])

    def split_holdout(self, n: int) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
        """Sets ``n`` training examples aside, for fitting policies and thresholds on data the
        networks never trained on.

        The held-out examples are the first ``n`` of one fixed shuffle (seed 0, whatever the
        training seed), so every run trained with the same ``n`` holds out the same examples.

        Returns:
            A copy without them (test unchanged), and the held-out ``(x, y)``.

        Raises:
            ValueError: unless 0 < n < the number of training examples.
        """
        total = len(self.train_y)
        if not 0 < n < total:
            raise ValueError(f"the held-out split (--holdout) must be between 1 and {total - 1} examples of "
                             f"{self.name}'s {total} training examples, got {n}")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(0))
        held, rest = order[:n], order[n:]
        kept = dataclasses.replace(self, train_x=self.train_x[rest], train_y=self.train_y[rest])
        return kept, (self.train_x[held], self.train_y[held])

    def loader(self, split: str, batch_size: int, shuffle: bool = False,
               seed: int = 0, generator: torch.Generator | None = None,
               shard: tuple[int, int] | None = None) -> DataLoader:
        """Returns a DataLoader over a split yielding ``(x, y)`` batches.

        Args:
            split: ``"train"`` or ``"test"``.
            batch_size: examples per batch.
            shuffle: reshuffle every epoch, reproducibly from ``seed``.
            seed: seed of the shuffling generator.
            generator: the shuffling generator itself (its state then decides the order; a
                trainer saves it to resume mid-epoch); overrides ``seed``.
            shard: ``(rank, processes)``: this process's share of every batch (see
                :class:`~dynscale.data.sampler.ShardedBatchSampler`); ``batch_size`` is then the
                global batch, and every process must use the same seed or generator state.

        The shuffled training split passes through the dataset's ``augment`` (CIFAR: random
        crop with 4 pixels of padding and a horizontal flip), drawn from the same generator.
        """
        x, y = self.tensors(split)
        data = TensorDataset(x, y)
        # Whole batches are indexed at once: much faster than collating single examples.
        generator = generator or torch.Generator().manual_seed(seed)
        base = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
        batches = BatchSampler(base, batch_size, drop_last=False)
        sharded = ShardedBatchSampler(batches, *shard) if shard is not None else None
        loader = DataLoader(data, batch_size=None, sampler=sharded or batches)
        if shuffle and split == "train" and self.augment is not None:
            return AugmentedLoader(loader, self.augment, generator, sharded)  # the same generator: one seed decides all
        return loader


def _from_arrays(name: str, tr_x: np.ndarray, tr_y: np.ndarray, te_x: np.ndarray,
                 te_y: np.ndarray, scale: float) -> Dataset:
    """A dataset from image and label arrays, checked: square images, labels 0..K-1 with every
    class in the training split.

    Raises:
        DataError: naming the problem.
    """
    def images(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) / scale)
        return t.unsqueeze(1) if t.dim() == 3 else t  # (N, H, W) -> (N, 1, H, W)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    for split, x in (("train", tr_x), ("test", te_x)):
        if x.shape[-1] != x.shape[-2]:
            raise DataError(f"{name}: the {split} images are {x.shape[-2]}×{x.shape[-1]}; dynscale's models take "
                            "square images, so crop or pad them to a square first")
        if not np.isfinite(x).all():
            raise DataError(f"{name}: the {split} images hold NaN or infinite values; fix the data")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(f"{name}: train images are {tr_x.shape[1:]} but test images {te_x.shape[1:]}; "
                        "both splits must have the same shape")
    if len(tr_y) == 0 or len(te_y) == 0:
        raise DataError(f"{name}: a split is empty; both need examples")
    num_classes = int(max(tr_y.max(), te_y.max())) + 1
    if num_classes < 2:
        raise DataError(f"{name}: every label is 0; a classifier needs at least two classes")
    missing = sorted(set(range(num_classes)) - set(np.unique(tr_y).tolist()))
    if min(tr_y.min(), te_y.min()) < 0 or missing:
        stray = int(max(tr_y.max(), te_y.max()))
        raise DataError(f"{name}: the labels are not the classes 0..K-1 (label {stray} would make a "
                        f"{num_classes}-class model, but the training split has no example of class "
                        f"{', '.join(map(str, missing[:5]))}{'…' if len(missing) > 5 else ''}); fix the labels")
    return Dataset(name, images(tr_x), labels(tr_y), images(te_x), labels(te_y), num_classes)


def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits with a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = bunch.images  # (1797, 8, 8), values 0..16
    tr_x, te_x, tr_y, te_y = train_test_split(
        x, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0)
    return _from_arrays("digits", tr_x, tr_y, te_x, te_y, scale=16.0)


def load_idx_dir(directory: Path, name: str | None = None) -> Dataset:
    """Loads the four MNIST-format files of ``directory``.

    Raises:
        DataError: if a file is missing, corrupt, or the images and labels disagree.
    """
    files = find_idx_files(directory)
    if files is None:
        raise DataError(
            f"{directory} does not hold the four MNIST-format files "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, each optionally .gz)"
        )
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or labs.ndim != 1 or len(imgs) != len(labs):
            raise DataError(
                f"{directory}: {split} images {imgs.shape} and labels {labs.shape} do not match"
            )
    return _from_arrays(name or f"idx:{directory}", arrays["train_images"],
                        arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                        scale=255.0)


def locate_idx(name: str) -> Path:
    """Finds a named MNIST-format dataset: ``$DYNSCALE_DATA/NAME``, then the Debian package's
    directory, then the download cache (downloading with checksums if needed)."""
    candidates = []
    if os.environ.get("DYNSCALE_DATA"):
        candidates.append(Path(os.environ["DYNSCALE_DATA"]) / name)
    if name in DEBIAN_DIRS:
        candidates.append(DEBIAN_DIRS[name])
    for directory in candidates:
        if find_idx_files(directory) is not None:
            return directory
    return fetch_idx(SOURCES[name])


def make_synthetic(num_train: int = 1000, num_test: int = 300, num_classes: int = 10,
                   size: int = 8, seed: int = 0) -> Dataset:
    """A deterministic toy dataset: one random prototype image per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, 1, size, size, generator=g)  # (K, 1, S, S)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        x = prototypes[y] + 0.35 * torch.randn(n, 1, size, size, generator=g)
        return x.clamp(0, 1), y

    tr_x, tr_y = draw(num_train)
    te_x, te_y = draw(num_test)
    return Dataset("synthetic", tr_x, tr_y, te_x, te_y, num_classes)


DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic", "idx:DIR", "folder:PATH")


def load_dataset(name: str) -> Dataset:
    """Loads a dataset by name.

    Args:
        name: ``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100`` (the official
            binary archives), ``synthetic``, ``idx:DIR`` or ``folder:PATH`` (class directories of
            PNG/JPEG images, ``dynscale.data.folder``).

    Returns:
        The dataset.

    Raises:
        DataError: if the name is unknown or the data is missing or corrupt.
    """
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        return make_synthetic()
    if name in SOURCES:
        return load_idx_dir(locate_idx(name), name=name)
    if name in CIFAR:
        tr_x, tr_y, te_x, te_y, _ = load_cifar_arrays(name)
        data = normalised(_from_arrays(name, tr_x, tr_y, te_x, te_y, scale=255.0), *CIFAR_STATISTICS[name])
        return dataclasses.replace(data, augment=Augment(fill=tuple(-m / s for m, s in zip(data.mean, data.std,
                                                                                               strict=True))))
    if name.startswith("folder:"):
        tr_x, tr_y, te_x, te_y, _ = load_folder_arrays(name[len("folder:"):])
        data = _from_arrays(name, tr_x, tr_y, te_x, te_y, scale=255.0)
        mean, std = data.train_x.mean((0, 2, 3)), data.train_x.std((0, 2, 3)).clamp_min(1e-3)  # (C,) of the train split
        return normalised(data, tuple(mean.tolist()), tuple(std.tolist()))
    if name.startswith("idx:"):
        directory = Path(name[4:]).expanduser()
        if not directory.is_dir():
            raise DataError(f"{directory} is not a directory; give idx:DIR with the four files")
        return load_idx_dir(directory, name=name)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "digits": tuple(str(d) for d in range(10)),
}
RAW_SCALE = {"digits": 16.0, "fashion-mnist": 255.0, "mnist": 255.0,  # raw pixel value of 1.0
             "cifar10": 255.0, "cifar100": 255.0}  # raw pixel value of 1.0


def class_names(data: Dataset) -> list[str]:
    """The dataset's class names by label (the label itself where the dataset names none)."""
    names = CLASS_NAMES.get(data.name)
    if data.name == "cifar100":
        names = load_cifar_names(data.name)
    elif data.name.startswith("folder:"):
        names = folder_classes(data.name[len("folder:"):])
    return list(names) if names is not None and len(names) == data.num_classes else \
        [str(k) for k in range(data.num_classes)]


def input_description(data: Dataset) -> dict:
    """How a model of ``data`` expects its input prepared: float32, NCHW, each raw pixel divided
    by its scale, then, where the dataset is normalised, the mean subtracted and divided by the
    standard deviation, per channel."""
    name = data.name
    scale = RAW_SCALE.get(name, 255.0 if name.startswith(("idx:", "folder:")) else None)
    how = f"raw pixel / {scale:g}, in [0, 1]" if scale else "as the dataset's loader makes it"
    if data.mean is not None:
        how += ", then (x - mean) / std per channel"
    return {"dtype": "float32", "layout": "NCHW", "scale": scale,
            "mean": list(data.mean) if data.mean is not None else None,
            "std": list(data.std) if data.std is not None else None, "prepare": how}


# Per-channel mean and standard deviation of the training images in [0, 1] (the usual values).
CIFAR_STATISTICS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


def normalised(data: Dataset, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """``data`` with both splits normalised per channel: ``(x - mean) / std``.

    Raises:
        DataError: for statistics that do not match the images' channels, or a std <= 0.
    """
    if len(mean) != data.in_channels or len(std) != data.in_channels or min(std) <= 0:
        raise DataError(f"{data.name}: normalisation needs a mean and a positive std per channel "
                        f"({data.in_channels}), got {mean} and {std}")
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]  # (1, C, 1, 1)
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return dataclasses.replace(data, train_x=(data.train_x - m) / s, test_x=(data.test_x - m) / s,
                               mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))
