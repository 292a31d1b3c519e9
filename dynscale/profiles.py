"""Channel profiles: the non-increasing coefficients γ_1 ≥ … ≥ γ_N > 0 of IDP (SPEC §1).

A profile is named (``"linear"``), given as a sequence, or given as a callable ``f(N)``
returning N coefficients. A sequence whose length differs from N is a *step* profile: the N
channels are split into ``len(seq)`` near-equal consecutive segments, segment s taking ``seq[s]``
(this is how the authors' step profiles ``[1, .5, .25]`` are defined).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import torch

ProfileSpec = Union[str, Sequence[float], Callable[[int], Sequence[float]], None]


def _all_one(n: int) -> list[float]:
    return [1.0] * n


def _linear(n: int) -> list[float]:
    return [1.0 - i / n for i in range(n)]


def _harmonic(n: int) -> list[float]:
    return [1.0 / (i + 1) for i in range(n)]


def _half_exp(n: int) -> list[float]:
    half = n // 2
    return [1.0 if i + 1 <= half else math.exp(-(i + 1 - half - 1)) for i in range(n)]


def _exp(n: int) -> list[float]:
    return [math.exp(-i) for i in range(n)]


PROFILES: dict[str, Callable[[int], Sequence[float]]] = {
    "all-one": _all_one,
    "linear": _linear,
    "harmonic": _harmonic,
    "half-exp": _half_exp,
    "exp": _exp,
    "step3": lambda n: _steps([1.0, 0.5, 0.25], n),
    "step4": lambda n: _steps([1.0, 0.75, 0.5, 0.25], n),
}


def list_profiles() -> list[str]:
    """Returns the names of the built-in profiles."""
    return sorted(PROFILES)


def _steps(levels: Sequence[float], n: int) -> list[float]:
    # Segment s covers channels [s*n/m, (s+1)*n/m): near-equal, in order.
    m = len(levels)
    return [float(levels[min(m - 1, (i * m) // n)]) for i in range(n)]


def validate_profile(values: Sequence[float]) -> None:
    """Checks that coefficients are finite, positive and non-increasing.

    Args:
        values: the coefficients γ_1..γ_N.

    Raises:
        ValueError: naming the first offending position.
    """
    if len(values) == 0:
        raise ValueError("profile is empty; give at least one coefficient")
    for i, v in enumerate(values):
        if not math.isfinite(v) or v <= 0:
            raise ValueError(
                f"profile coefficient {i + 1} is {v}; every coefficient must be finite and > 0"
            )
        if i > 0 and v > values[i - 1]:
            raise ValueError(
                f"profile increases at coefficient {i + 1} ({values[i - 1]} -> {v}); "
                "a profile must be non-increasing"
            )


def make_profile(spec: ProfileSpec, n: int) -> torch.Tensor:
    """Builds the coefficient vector of a profile for a layer with ``n`` input channels.

    Args:
        spec: a profile name (see :func:`list_profiles`), a sequence of coefficients (length
            ``n``, or any other length for a step profile), a callable ``f(n)``, or ``None``
            for all-one.
        n: number of input channels.

    Returns:
        A float32 tensor of shape ``(n,)``.

    Raises:
        ValueError: for an unknown name, or coefficients that increase or are not positive.
    """
    if n < 1:
        raise ValueError(f"a profile needs at least one channel, got n={n}")
    if spec is None:
        values: Sequence[float] = _all_one(n)
    elif isinstance(spec, str):
        if spec not in PROFILES:
            raise ValueError(
                f"unknown profile {spec!r}; choose one of {', '.join(list_profiles())} "
                "or give a sequence of coefficients"
            )
        values = PROFILES[spec](n)
    elif callable(spec):
        values = [float(v) for v in spec(n)]
        if len(values) != n:
            raise ValueError(f"profile callable returned {len(values)} values for n={n}")
    else:
        given = [float(v) for v in spec]
        validate_profile(given)
        values = given if len(given) == n else _steps(given, n)
    validate_profile(values)
    with np.errstate(over="ignore"):
        single = np.asarray(values, dtype=np.float64).astype(np.float32)  # what the buffer will hold
    bad = np.flatnonzero(~np.isfinite(single) | (single <= 0))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"profile coefficient {i + 1} is {values[i]}, which float32 cannot hold above 0; give "
                         "coefficients between 1e-30 and 1e30")
    return torch.tensor(values, dtype=torch.float32)


def profile_to_config(spec: ProfileSpec) -> str | list[float]:
    """Returns a JSON-serialisable form of a profile spec (callables become ``"custom"``)."""
    if spec is None:
        return "all-one"
    if isinstance(spec, str):
        return spec
    if callable(spec):
        return "custom"
    return [float(v) for v in spec]
