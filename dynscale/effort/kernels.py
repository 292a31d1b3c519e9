"""Sparse CPU kernels for the effort knobs, compiled with numba, and the PyTorch code they must
equal (the tests compare them).

Eager PyTorch pays for every gather as a separate pass over memory, and at batch 1 a dense
convolution is cheaper than gathering the positions to skip. These kernels compute a
convolution directly at chosen output positions — and, with SPET, finish only the neurons
whose partial sum may be positive — reading the input in place, so skipped work costs nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

try:  # numba is a dependency; without it the PyTorch code below runs instead
    import numba
except ImportError:  # pragma: no cover - exercised only where numba cannot be installed
    numba = None

BACKENDS = ("auto", "numba", "torch")
_backend = "auto"


def set_backend(name: str) -> None:
    """``numba`` (the compiled kernels), ``torch`` (the PyTorch reference) or ``auto``
    (numba where it is installed).

    Raises:
        ValueError: for an unknown name, or numba asked for where it is missing.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown effort backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "numba" and numba is None:
        raise ValueError("numba is not installed; `pip install numba`, or choose the torch backend")
    _backend = name


def backend() -> str:
    """The backend in use: ``numba`` or ``torch``."""
    return "numba" if _backend in ("auto", "numba") and numba is not None else "torch"


def _positions_kernel(xp, w_first, w_rest, w_sums, bias, positions, stride, dilation, threshold, relu,
                      has_skip, skip, has_uniform, uniform, means, out, macs):
    """Computes the neurons still to compute at each chosen position.

    Args:
        xp: the padded input ``(B, C, Hp, Wp)``.
        w_first: ``(C1, kh, kw, O)``: the first C1 input channels' weights, outputs innermost.
        w_rest: ``(O, C2, kh, kw)``: the other channels' weights, one neuron's contiguous.
        w_sums: ``(C, O)``: each input channel's window weights summed (SFMA's Σw).
        bias: ``(O,)``.
        positions: ``(N, 3)`` rows of (example, row, column) of the output.
        stride, dilation: ``(2,)`` each.
        threshold: SPET's; a neuron whose partial sum is below it is 0 and not finished
            (``-inf`` finishes every neuron: the exact convolution).
        relu: apply ReLU.
        has_skip, skip: ``(B, O, H, W)``: neurons already filled (SDSS), left as they are.
        has_uniform, uniform, means: ``(B, C, H, W)`` each: input channels whose window is
            uniform at a position (SFMA), and the window's mean.
        out: ``(B, O, H, W)``, written at the positions.
        macs: ``(B,)``, increased by the multiply-accumulates performed.
    """
    c1, kh, kw, o_count = w_first.shape
    c2 = w_rest.shape[1]
    taps = kh * kw
    acc = np.empty(o_count, dtype=np.float32)
    active = np.empty(o_count, dtype=np.int64)
    for n in range(positions.shape[0]):
        b, h, w = positions[n, 0], positions[n, 1], positions[n, 2]
        top, left = h * stride[0], w * stride[1]
        k = 0
        for o in range(o_count):
            if not (has_skip and skip[b, o, h, w]):
                active[k] = o
                k += 1
            acc[o] = bias[o]
        if k == 0:
            continue
        every = k == o_count  # no neuron filled: the contiguous loop, which vectorises
        done = 0
        for c in range(c1):
            if has_uniform and uniform[b, c, h, w]:
                m = means[b, c, h, w]
                for t in range(k):
                    o = active[t]
                    acc[o] += m * w_sums[c, o]
                done += k
                continue
            for i in range(kh):
                for j in range(kw):
                    v = xp[b, c, top + i * dilation[0], left + j * dilation[1]]
                    if every:
                        for o in range(o_count):
                            acc[o] += v * w_first[c, i, j, o]
                    else:
                        for t in range(k):
                            o = active[t]
                            acc[o] += v * w_first[c, i, j, o]
            done += k * taps
        if c2 > 0:
            for t in range(k):
                o = active[t]
                if acc[o] < threshold:
                    acc[o] = 0.0  # predicted saturated: the rest is skipped
                    continue
                s = acc[o]
                for c in range(c2):
                    if has_uniform and uniform[b, c1 + c, h, w]:
                        s += means[b, c1 + c, h, w] * w_sums[c1 + c, o]
                        done += 1
                        continue
                    for i in range(kh):
                        for j in range(kw):
                            s += xp[b, c1 + c, top + i * dilation[0], left + j * dilation[1]] * w_rest[o, c, i, j]
                    done += taps
                acc[o] = s
        for t in range(k):
            o = active[t]
            v = acc[o]
            out[b, o, h, w] = v if (v > 0.0 or not relu) else 0.0
        macs[b] += done


_compiled = numba.njit(fastmath=True, cache=True)(_positions_kernel) if numba is not None else None
_NONE_BOOL = np.zeros((1, 1, 1, 1), dtype=np.bool_)
_NONE_FLOAT = np.zeros((1, 1, 1, 1), dtype=np.float32)


def conv_at_positions(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, positions: torch.Tensor,
                      stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                      out: torch.Tensor, macs: torch.Tensor, first: int | None = None,
                      threshold: float = float("-inf"), relu: bool = True, skip: torch.Tensor | None = None,
                      uniform: torch.Tensor | None = None, means: torch.Tensor | None = None) -> None:
    """Writes the convolution's output at ``positions`` into ``out`` and adds the
    multiply-accumulates performed to ``macs``.

    With ``first`` < C_in, SPET: the partial sum over the first ``first`` input channels, the
    rest only for neurons that reach ``threshold``. With ``skip``, the neurons it marks are left
    as they are (SDSS filled them). With ``uniform``, an input channel whose window is uniform
    at a position contributes ``means · Σw`` (one product per neuron, SFMA) instead of its
    window's dot product.

    Args:
        x: input ``(B, C_in, H, W)``; weight ``(C_out, C_in, kh, kw)``; bias ``(C_out,)``.
        positions: ``(N, 3)`` (example, row, column) of the output.
        stride, padding, dilation: the convolution's.
        out: ``(B, C_out, H', W')`` float32, written in place.
        macs: ``(B,)`` float64, increased in place.
        first: input channels of the partial sum (all: no SPET).
        threshold: SPET's threshold.
        relu: apply ReLU to the output.
        skip: ``(B, C_out, H', W')`` bool, or None.
        uniform, means: ``(B, C_in, H', W')`` bool and float32, or None.
    """
    c_in = weight.shape[1]
    first = c_in if first is None else first
    if len(positions) == 0:
        return
    if backend() == "numba":
        xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0])).contiguous().numpy()
        w_first = weight[:, :first].permute(1, 2, 3, 0).contiguous().numpy()
        w_rest = weight[:, first:].contiguous().numpy()
        w_sums = weight.sum((2, 3)).t().contiguous().numpy()
        _compiled(xp, w_first, w_rest, w_sums, bias.contiguous().numpy(), positions.contiguous().numpy(),
                  np.asarray(stride, np.int64), np.asarray(dilation, np.int64),
                  np.float32(threshold if first < c_in else float("-inf")), relu,
                  skip is not None, _NONE_BOOL if skip is None else skip.contiguous().numpy(),
                  uniform is not None, _NONE_BOOL if uniform is None else uniform.contiguous().numpy(),
                  _NONE_FLOAT if means is None else means.contiguous().numpy(), out.numpy(), macs.numpy())
        return
    _torch_positions(x, weight, bias, positions, stride, padding, dilation, out, macs, first, threshold, relu,
                     skip, uniform, means)


def _costs(uniform: torch.Tensor | None, positions: torch.Tensor, c_in: int, taps: int) -> torch.Tensor:
    """``(N, C_in)``: an input channel's multiply-accumulates per neuron at each position (one
    product where SFMA found its window uniform, else the window's)."""
    if uniform is None:
        return torch.full((len(positions), c_in), taps, dtype=torch.float64)
    picked = uniform[positions[:, 0], :, positions[:, 1], positions[:, 2]]  # (N, C_in)
    return torch.where(picked, 1.0, float(taps)).to(torch.float64)


def _write(out: torch.Tensor, macs: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
           active: torch.Tensor | None, counts: torch.Tensor, relu: bool) -> None:
    """Writes ``values`` ``(N, C_out)`` at the positions' active neurons and adds the counts."""
    b, h, w = positions[:, 0], positions[:, 1], positions[:, 2]
    values = F.relu(values) if relu else values
    if active is not None:
        values = torch.where(active, values, out[b, :, h, w])
    out[b, :, h, w] = values
    macs.index_add_(0, b, counts)


def _torch_positions(x, weight, bias, positions, stride, padding, dilation, out, macs, first, threshold, relu,
                     skip=None, uniform=None, means=None):
    """The PyTorch reference of :func:`conv_at_positions`: gathers each position's window (SFMA's
    uniform windows replaced by their mean, which gives mean · Σw), then one matmul."""
    from .primitive import gather_windows

    kh, kw = weight.shape[2:]
    c_in = weight.shape[1]
    b, h, w = positions[:, 0], positions[:, 1], positions[:, 2]
    windows = gather_windows(x, positions, (kh, kw), stride, padding, dilation)  # (N, C_in, kh, kw)
    if uniform is not None:
        windows = torch.where(uniform[b, :, h, w][:, :, None, None], means[b, :, h, w][:, :, None, None], windows)
    flat = windows.flatten(1)  # (N, C_in·kh·kw), channels first
    split = first * kh * kw
    values = flat[:, :split] @ weight[:, :first].flatten(1).t() + bias  # (N, C_out)
    costs = _costs(uniform, positions, c_in, kh * kw)
    active = None if skip is None else ~skip[b, :, h, w]  # (N, C_out)
    computed = torch.full_like(values, True, dtype=torch.bool) if active is None else active
    counts = computed.sum(1).to(torch.float64) * costs[:, :first].sum(1)
    if first < c_in:
        finish = computed & (values >= threshold)  # (N, C_out)
        pairs = finish.nonzero()
        rest = weight[:, first:].flatten(1)
        for start in range(0, len(pairs), 65536):  # bounded memory
            chunk = pairs[start:start + 65536]
            values[chunk[:, 0], chunk[:, 1]] += torch.einsum("nk,nk->n", flat[chunk[:, 0], split:], rest[chunk[:, 1]])
        values = torch.where(finish, values, torch.zeros_like(values))
        counts += finish.sum(1).to(torch.float64) * costs[:, first:].sum(1)
    _write(out, macs, positions, values, active, counts, relu)


def simulate_positions(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, positions: torch.Tensor,
                       stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                       out: torch.Tensor, macs: torch.Tensor, first: int | None = None,
                       threshold: float = float("-inf"), relu: bool = True, skip: torch.Tensor | None = None,
                       uniform: torch.Tensor | None = None, means: torch.Tensor | None = None) -> None:
    """What :func:`conv_at_positions` writes and counts, computed with dense convolutions over
    every position (fast, for tuning: the search only needs the outputs and the counts).

    With SFMA's uniform windows it runs :func:`conv_at_positions` itself: a window read as
    its mean has no dense form cheaper than the sparse kernel.
    """
    if len(positions) == 0:
        return
    if uniform is not None:
        conv_at_positions(x, weight, bias, positions, stride, padding, dilation, out, macs, first, threshold, relu,
                          skip, uniform, means)
        return
    c_in = weight.shape[1]
    first = c_in if first is None else first
    kh, kw = weight.shape[2:]
    b, h, w = positions[:, 0], positions[:, 1], positions[:, 2]
    values = F.conv2d(x, weight, bias, stride, padding, dilation)[b, :, h, w]  # (N, C_out)
    costs = _costs(None, positions, c_in, kh * kw)
    active = None if skip is None else ~skip[b, :, h, w]
    computed = torch.full_like(values, True, dtype=torch.bool) if active is None else active
    counts = computed.sum(1).to(torch.float64) * costs[:, :first].sum(1)
    if first < c_in:
        partial = F.conv2d(x[:, :first], weight[:, :first], bias, stride, padding, dilation)[b, :, h, w]
        finish = computed & (partial >= threshold)
        values = torch.where(finish, values, torch.zeros_like(values))
        counts += finish.sum(1).to(torch.float64) * costs[:, first:].sum(1)
    _write(out, macs, positions, values, active, counts, relu)
