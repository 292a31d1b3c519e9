"""Datasets: bundled digits, MNIST-format files, checksummed downloads, synthetic data."""

from .datasets import DATASETS, Dataset, class_names, input_description, load_dataset, load_idx_dir, make_synthetic
from .download import FASHION_MNIST, MNIST, IdxSource, download_file, fetch_idx
from .idx import read_idx

__all__ = ["DATASETS", "Dataset", "class_names", "input_description", "load_dataset", "load_idx_dir", "make_synthetic",
           "FASHION_MNIST", "MNIST", "IdxSource", "download_file", "fetch_idx", "read_idx"]
