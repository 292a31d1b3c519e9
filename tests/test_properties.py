"""Property tests of the public API with hypothesis: whatever a user passes, the answer is a
valid value or one clear error (ValueError or a DynscaleError), never another exception."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynscale import get_model, kept_channels, set_width
from dynscale.data import read_idx
from dynscale.data.datasets import load_idx_dir
from dynscale.errors import DataError
from dynscale.idp import parse_widths
from dynscale.layers import check_width
from dynscale.models import check_options
from dynscale.profiles import make_profile

# Derandomized: CI sees the same examples every run (a search found the float32 and huge-model cases
# fixed above); run with --hypothesis-seed=random to search anew.
FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10))


@FAST
@given(st.text(max_size=30))
def test_width_text_is_widths_or_one_clear_error(text):
    try:
        widths = parse_widths(text)
    except ValueError as e:
        assert "width" in str(e)
    else:
        assert widths and all(0 < w <= 1 for w in widths)


@FAST
@given(numbers)
def test_a_width_is_in_zero_one_or_refused(p):
    try:
        w = check_width(p)
    except ValueError:
        assert not (isinstance(p, (int, float)) and 0 < p <= 1 and not math.isnan(p))
    else:
        assert 0 < w <= 1


@FAST
@given(st.integers(1, 2000), st.floats(0.0001, 1.0), st.integers(1, 8))
def test_kept_channels_is_a_prefix_within_bounds(n, p, multiple):
    n = n * multiple
    k = kept_channels(n, p, multiple)
    assert multiple <= k <= n and k % multiple == 0
    assert k >= min(n, p * n - 1e-6)


@FAST
@given(st.lists(numbers, max_size=12), st.integers(1, 40))
def test_a_profile_is_positive_non_increasing_or_refused(values, n):
    try:
        gamma = make_profile(values, n)
    except ValueError as e:
        assert "profile" in str(e)
    else:
        assert gamma.shape == (n,) and bool((gamma > 0).all()) and bool((gamma[1:] <= gamma[:-1]).all())


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(), st.text(max_size=5)),
                           lambda children: st.lists(children, max_size=4), max_leaves=8)


@FAST
@given(st.sampled_from(["hidden", "num_classes", "in_channels", "input_size", "profile", "width_mult",
                        "blocks_per_stage", "filters", "depth"]),
       json_values, st.sampled_from(["mlp", "resnet", "binarynet"]))
def test_model_options_build_a_model_or_give_one_clear_error(key, value, model):
    try:
        options = check_options(model, {key: value})
    except ValueError as e:
        assert model in str(e)
        return
    options = {"in_channels": 1, "input_size": 8, **options}
    try:
        with torch.device("meta"):
            net = get_model(model, **options)
    except ValueError:
        return  # a structural limit of the family (three BinaryNet blocks…), stated by the model
    assert net.config is not None


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@FAST
@given(st.binary(max_size=64), st.booleans())
def test_any_bytes_read_as_idx_give_an_array_or_a_data_error(tmp_path_factory, raw, gz):
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert array.dtype == np.uint8


@FAST
@given(st.integers(0, 40), st.sampled_from(["truncate", "pad", "magic", "float", "count"]))
def test_damaged_idx_files_are_refused(tmp_path_factory, cut, damage):
    good = idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    if damage == "truncate":
        raw = good[:min(cut, len(good) - 1)]
    elif damage == "pad":
        raw = good + bytes(cut + 1)
    elif damage == "magic":
        raw = bytes([1]) + good[1:]
    elif damage == "float":  # an IDX file of float32 values (type 0x0D), a NaN among them
        values = np.full((2, 3, 3), np.nan, dtype=">f4")
        raw = bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 2, 3, 3) + values.tobytes()
    else:  # the header promises more images than there are
        raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2 + cut + 1, 3, 3) + good[16:]
    path = tmp_path_factory.mktemp("idx") / "f"
    path.write_bytes(raw)
    with pytest.raises(DataError):
        read_idx(path)


@FAST
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 4))
def test_images_and_labels_that_disagree_are_refused(tmp_path_factory, n_images, n_labels, classes):
    directory = tmp_path_factory.mktemp("data")
    images = np.zeros((n_images, 4, 4), dtype=np.uint8)
    labels = (np.arange(n_labels) % classes).astype(np.uint8)
    for prefix in ("train", "t10k"):
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    try:
        data = load_idx_dir(directory)
    except DataError:
        assert n_images != n_labels or min(classes, n_labels) < 2
        return
    assert n_images == n_labels and data.num_classes == min(classes, n_labels) >= 2


@FAST
@given(st.floats(0.01, 1.0))
def test_a_model_at_any_width_runs_and_costs_no_more_than_at_full_width(p):
    from dynscale.cost import count_macs

    model = get_model("mlp", in_channels=1, input_size=4, hidden=[10, 10]).eval()
    x = torch.rand(2, 1, 4, 4)
    full = count_macs(model, x[:1])
    set_width(model, p)
    assert model(x).shape == (2, 10) and count_macs(model, x[:1]) <= full
