import math

import pytest
import torch

from dynscale.profiles import list_profiles, make_profile, profile_to_config


def values(spec, n):
    return make_profile(spec, n).tolist()


def test_all_one():
    assert values("all-one", 4) == [1.0] * 4
    assert values(None, 3) == [1.0] * 3


def test_linear_is_one_minus_i_over_n():
    assert values("linear", 4) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_harmonic_is_one_over_i():
    assert values("harmonic", 4) == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])


def test_half_exp_keeps_first_half_at_one_then_decays():
    # N = 5: floor(N/2) = 2 ones, then exp(-(i - 2 - 1)) for i = 3, 4, 5.
    assert values("half-exp", 5) == pytest.approx([1, 1, 1, math.exp(-1), math.exp(-2)])
    assert values("half-exp", 4) == pytest.approx([1, 1, 1, math.exp(-1)])


def test_exp():
    assert values("exp", 3) == pytest.approx([1, math.exp(-1), math.exp(-2)])


def test_step_profiles_split_channels_into_equal_segments():
    assert values("step3", 6) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    assert values("step4", 8) == pytest.approx([1, 1, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25])


def test_user_sequence_of_full_length_is_used_as_is():
    assert values([3.0, 2.0, 2.0, 1.0], 4) == [3.0, 2.0, 2.0, 1.0]


def test_user_sequence_of_other_length_is_a_step_profile():
    assert values([1.0, 0.5], 4) == [1.0, 1.0, 0.5, 0.5]


def test_user_callable():
    assert values(lambda n: [1.0 / (i + 2) for i in range(n)], 3) == pytest.approx([1 / 2, 1 / 3, 1 / 4])


def test_every_builtin_is_non_increasing_positive():
    for name in list_profiles():
        for n in (1, 2, 7, 100):
            v = make_profile(name, n)
            assert v.shape == (n,) and v.dtype == torch.float32
            assert (v > 0).all() and (v[1:] <= v[:-1]).all(), name


@pytest.mark.parametrize("bad, match", [
    ([1.0, 2.0], "increases"),
    ([1.0, 0.0], "> 0"),
    ([1.0, -0.5], "> 0"),
    ([1.0, float("nan")], "finite"),
    ([], "empty"),
    ("quadratic", "unknown profile"),
])
def test_bad_profiles_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        make_profile(bad, 4)


def test_increasing_callable_is_rejected():
    with pytest.raises(ValueError, match="increases"):
        make_profile(lambda n: list(range(1, n + 1)), 3)


def test_callable_with_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="returned 2 values"):
        make_profile(lambda n: [1.0, 1.0], 3)


def test_profile_to_config():
    assert profile_to_config("linear") == "linear"
    assert profile_to_config(None) == "all-one"
    assert profile_to_config((1, 0.5)) == [1.0, 0.5]
    assert profile_to_config(lambda n: [1.0] * n) == "custom"
