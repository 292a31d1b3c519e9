"""Channel-dependency groups: which channels a width must keep or cut together.

Every channel a layer produces (and every channel of the input) gets an id. The walker runs the
traced graph on the example and, beside each tensor, a *map* of the same shape holding the id
of the channel each element belongs to (-1: no channel, a constant). Data movement (reshape,
permute, concatenation, flatten, ...) is computed by running the operation on the map itself,
so every layout is followed exactly. Operations that combine tensors elementwise (a residual
addition, a squeeze-excitation product) tie the ids they combine; a layer ties the ids that
share one of its weight columns. Operations that mix channels (normalisation over channels,
attention, a reduction over channels, a reshape that splits channels into heads) keep theirs
whole; an operation the walker does not know is refused where it touches channels that would
otherwise be cut.

The ids of each producer are then cut into *segments* so that every tie joins whole segments
at equal offsets; tied segments form a :class:`ChannelGroup`. At width p each segment keeps its
first ``ceil(p·size)`` channels (in whole units for grouped convolutions), so concatenated
parts each keep their own prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..layers.plan import ChannelPlan
from ..layers.width import kept_channels
from . import ops
from .nodes import eval_mode, place
from .types import GraphError, is_batchnorm, is_conv, is_linear

NONE = -1.0  # the id of "no channel" in a map


@dataclass
class Segment:
    """``size`` channels of ``tensor`` (a layer's name, or the fx node that made them) from ``start``."""

    tensor: str
    start: int
    size: int


@dataclass
class ChannelGroup:
    """Channel ranges that must keep the same channels, in the same order.

    Attributes:
        segments: the tied ranges (all of ``size`` channels).
        size: channels per segment.
        unit: channels are kept in whole units of this (grouped convolutions).
        whole: why the group is never cut, or None.
    """

    segments: list[Segment]
    size: int
    unit: int = 1
    whole: str | None = None

    def kept(self, p: float) -> int:
        """Channels each segment keeps at width ``p`` (its prefix)."""
        return self.size if self.whole else kept_channels(self.size, p, self.unit)


def _ids(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(-1).to(torch.int64).numpy()


class _Walker(fx.Interpreter):
    """Runs the graph on the example and builds every tensor's channel map beside it."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.maps: dict[fx.Node, object] = {}
        self.atoms: list[tuple[str, int, int]] = []  # (name, first id, size)
        self.next_id = 0
        self.pieces: list[tuple[int, int, int]] = []  # ids [a, a+n) tied to [b, b+n)
        self.whole: list[tuple[np.ndarray, str]] = []
        self.unknown: list[tuple[fx.Node, np.ndarray, str]] = []
        self.layer_in: dict[str, np.ndarray] = {}
        self.layer_out: dict[str, tuple[int, int]] = {}
        self.norm_ids: dict[str, np.ndarray] = {}
        self.grouped: list[tuple[str, np.ndarray, int, int, int]] = []  # name, input ids, out id, out size, groups
        self.axis: dict[str, tuple[int, int]] = {}  # layer -> (input dim, output dim) of its channels

    # ---- ids and ties --------------------------------------------------------------------
    def fresh(self, name: str, size: int) -> int:
        lo = self.next_id
        self.atoms.append((name, lo, size))
        self.next_id += size
        return lo

    def mark_whole(self, ids: np.ndarray, why: str) -> None:
        ids = np.unique(ids[ids >= 0])
        if len(ids):
            self.whole.append((ids, why))

    def tie(self, a: np.ndarray, b: np.ndarray, why: str = "it is combined with a constant or a parameter") -> None:
        """Ties ids position by position; an id against "no channel" is kept whole."""
        keep = (a >= 0) | (b >= 0)
        a, b = a[keep], b[keep]
        const = (a < 0) | (b < 0)
        if const.any():
            self.mark_whole(np.concatenate([a[const], b[const]]), why)
        a, b = a[~const], b[~const]
        differ = a != b
        a, b = a[differ], b[differ]
        if not len(a):
            return
        pairs = np.unique(np.stack([a, b], 1), axis=0)
        a, b = pairs[:, 0], pairs[:, 1]
        starts = np.ones(len(a), bool)
        starts[1:] = ~((a[1:] == a[:-1] + 1) & (b[1:] == b[:-1] + 1))
        first = np.flatnonzero(starts)
        for s, e in zip(first, [*first[1:], len(a)], strict=True):
            self.pieces.append((int(a[s]), int(b[s]), int(e - s)))

    def axis_ids(self, m: torch.Tensor, dim: int) -> np.ndarray:
        """The ids along ``dim``; ids met at one index along the other dimensions are tied
        (they all meet the same weights)."""
        rows = m.movedim(dim, -1).reshape(-1, m.shape[dim])
        first = rows[0]
        if rows.shape[0] > 1 and not bool((rows == first).all()):
            rows = torch.unique(rows, dim=0)
            first = rows[0]
            for other in rows[1:]:
                self.tie(_ids(first), _ids(other))
        return _ids(first)

    def along(self, shape: torch.Size, dim: int, ids: np.ndarray) -> torch.Tensor:
        view = [1] * len(shape)
        view[dim] = len(ids)
        return torch.as_tensor(ids, dtype=torch.float64).view(view).expand(shape)

    def all_ids(self, *maps) -> np.ndarray:
        found = [_ids(m) for m in maps if isinstance(m, torch.Tensor)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

    # ---- the walk --------------------------------------------------------------------------
    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        self.maps[n] = self.channel_map(n, value)
        for dead in self.user_to_last_uses.get(n, []):
            self.maps.pop(dead, None)
        return value

    def map_of(self, a):
        return fx.node.map_aggregate(a, lambda x: self.maps.get(x) if isinstance(x, fx.Node) else x)

    def constant_map(self, value):
        return fx.node.map_aggregate(
            value, lambda v: torch.full(v.shape, NONE, dtype=torch.float64) if isinstance(v, torch.Tensor) else None)

    def channel_map(self, n: fx.Node, value):
        if n.op == "placeholder":
            if not isinstance(value, torch.Tensor):
                return None
            dim = 1 if value.dim() > 1 else 0
            lo = self.fresh(n.name, value.shape[dim])
            ids = np.arange(lo, lo + value.shape[dim])
            self.mark_whole(ids, "it is the network's input")
            return self.along(value.shape, dim, ids)
        if n.op == "get_attr":
            return self.constant_map(value)
        if n.op == "output":
            self._whole_everywhere(self.map_of(n.args[0]), "it is an output of the network")
            return None
        if n.op == "call_module":
            return self.module_map(n, self.module.get_submodule(n.target), value)
        return self.function_map(n, value)

    def _whole_everywhere(self, m, why: str) -> None:
        if isinstance(m, torch.Tensor):
            self.mark_whole(_ids(m), why)
        elif isinstance(m, dict):
            for v in m.values():
                self._whole_everywhere(v, why)
        elif isinstance(m, (tuple, list)):
            for v in m:
                self._whole_everywhere(v, why)

    def _inputs(self, n: fx.Node) -> list[torch.Tensor]:
        found = []
        fx.node.map_aggregate(self.map_of((n.args, n.kwargs)),
                              lambda m: found.append(m) if isinstance(m, torch.Tensor) else None)
        return found

    def module_map(self, n: fx.Node, module: nn.Module, value):
        x = self.maps.get(n.args[0]) if n.args and isinstance(n.args[0], fx.Node) else None
        if is_conv(module) or is_linear(module):
            dim_in = 1 if is_conv(module) else -1
            ids = self.axis_ids(x, dim_in)
            if n.target in self.layer_in:
                self.tie(self.layer_in[n.target], ids)
            else:
                self.layer_in[n.target] = ids
            c_out = value.shape[1] if is_conv(module) else value.shape[-1]
            if n.target not in self.layer_out:
                self.layer_out[n.target] = (self.fresh(n.target, c_out), c_out)
            lo = self.layer_out[n.target][0]
            out = np.arange(lo, lo + c_out)
            self.axis[n.target] = (dim_in, 1 if is_conv(module) else -1)
            groups = getattr(module, "groups", 1)
            if groups > 1:
                if module.in_channels == groups and module.out_channels == groups:
                    self.tie(ids, out)  # depthwise: output channel c is input channel c
                else:
                    self.grouped.append((n.target, ids, lo, c_out, groups))
            return self.along(value.shape, 1 if is_conv(module) else value.dim() - 1, out)
        if is_batchnorm(module):
            ids = self.axis_ids(x, 1)
            if n.target in self.norm_ids:
                self.tie(self.norm_ids[n.target], ids)
            else:
                self.norm_ids[n.target] = ids
            return x
        if isinstance(module, ops.PASS_THROUGH_MODULES) and type(module).forward in [
                c.forward for c in ops.PASS_THROUGH_MODULES]:
            return x
        if type(module) is nn.PReLU:
            if module.num_parameters > 1:
                self.mark_whole(self.axis_ids(x, 1), f"PReLU {n.target!r} has a slope per channel that is not cut")
            return x
        if type(module) in ops.SPATIAL_MODULES:
            return self.along(value.shape, 1, self.axis_ids(x, 1))
        if type(module) is nn.Flatten:
            return module(x)
        if type(module) in ops.SOFTMAX_MODULES:
            self._along_dim(x, module.dim, f"softmax {n.target!r}")
            return x
        if type(module) in ops.MIXING_MODULES:
            for m in self._inputs(n):
                self.mark_whole(_ids(m), f"{ops.MIXING_MODULES[type(module)]} ({place(n)})")
            return self.constant_map(value) if type(module) is nn.MultiheadAttention else x
        self.unknown.append((n, self.all_ids(*self._inputs(n)), f"module {n.target!r} ({type(module).__name__})"))
        return self.constant_map(value)

    def _along_dim(self, m, dim, what: str) -> None:
        """An operation along ``dim`` mixes the ids it meets there unless they are all one."""
        if m is None:
            return
        dim = m.dim() - 1 if dim is None else dim
        lo, hi = m.amin(dim=dim), m.amax(dim=dim)
        if not bool((lo == hi).all()):
            self.mark_whole(_ids(m), f"{what} runs over channels")

    def function_map(self, n: fx.Node, value):
        name = ops.op_name(n)
        inputs = self._inputs(n)
        if not isinstance(value, (torch.Tensor, tuple, list)) or name in ops.NON_TENSOR:
            return None
        if not inputs:
            return self.constant_map(value)
        if name == "getitem" and not isinstance(self.maps.get(n.args[0]), torch.Tensor):
            container = self.maps.get(n.args[0])
            return container[n.args[1]] if container is not None else None
        if getattr(n.target, "__name__", None) in ops.PER_SAMPLE:
            return self.maps.get(n.args[0])
        if name is None:
            self.unknown.append((n, self.all_ids(*inputs), f"function {getattr(n.target, '__name__', n.target)}"))
            return self.constant_map(value)
        if name in ops.UNARY:
            return self.maps.get(n.args[0])
        if name in ops.ELEMENTWISE:
            return self._elementwise(n, value)
        if name in ops.SPLITS:
            self._split(n, name)
            return self._probe(n, name)
        if name in ops.MOVEMENT:
            out = self._probe(n, name)
            self._check_movement(n, name, out)
            return out
        if name in ops.SPATIAL:
            return self.along(value.shape, 1, self.axis_ids(self.maps[n.args[0]], 1))
        if name in ops.REDUCTIONS:
            return self._reduction(n, name, value)
        if name in ops.ALONG:
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else (1 if name == "normalize" else None))
            self._along_dim(self.maps[n.args[0]], dim, f"{ops.ALONG[name]} ({place(n)})")
            return self.maps[n.args[0]]
        if name in ops.MIXING:
            for m in inputs:
                self.mark_whole(_ids(m), f"{ops.MIXING[name]} ({place(n)})")
            return self.constant_map(value)
        self.unknown.append((n, self.all_ids(*inputs), f"operation {name!r}"))
        return self.constant_map(value)

    def _elementwise(self, n: fx.Node, value):
        maps = []
        for a in [*n.args, *n.kwargs.values()]:
            if isinstance(a, fx.Node) and isinstance(self.maps.get(a), torch.Tensor):
                real = self.env.get(a)
                if isinstance(real, torch.Tensor) and real.numel() == 1:
                    continue  # a scalar tensor broadcasts over every channel alike
                maps.append(self.maps[a])
        if not isinstance(value, torch.Tensor) or not maps:
            return self.constant_map(value)
        maps = [m.expand(value.shape) if m.shape != value.shape else m for m in
                torch.broadcast_tensors(*maps)] if len(maps) > 1 else [maps[0].expand(value.shape)]
        out = maps[0].clone()
        for m in maps[1:]:
            if not torch.equal(m, maps[0]):
                self.tie(_ids(maps[0]), _ids(m), f"it is combined with a constant ({place(n)})")
                out = torch.where(out < 0, m, out)
        return out

    def _probe(self, n: fx.Node, name: str):
        def sub(a):
            return self.maps[a] + 1 if isinstance(a, fx.Node) and isinstance(self.maps.get(a), torch.Tensor) else a

        if name in ("cat", "concat", "concatenate", "stack"):
            args = (fx.node.map_aggregate(n.args[0], lambda a: sub(a) if isinstance(a, fx.Node) else a), *[
                self.env[a] if isinstance(a, fx.Node) else a for a in n.args[1:]])
        else:
            args = (sub(n.args[0]), *fx.node.map_aggregate(
                n.args[1:], lambda a: self.env[a] if isinstance(a, fx.Node) else a))
        kwargs = fx.node.map_aggregate(n.kwargs, lambda a: self.env[a] if isinstance(a, fx.Node) else a)
        if n.op == "call_method":
            out = getattr(args[0], n.target)(*args[1:], **kwargs)
        else:
            out = n.target(*args, **kwargs)
        return fx.node.map_aggregate(out, lambda m: m - 1 if isinstance(m, torch.Tensor) else m)

    def _varying(self, m: torch.Tensor) -> list[int]:
        return [d for d in range(1, m.dim()) if m.shape[d] > 1 and not bool((m.amin(d) == m.amax(d)).all())]

    def _check_movement(self, n: fx.Node, name: str, out) -> None:
        x = self.maps.get(n.args[0])
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
            return
        if name in ops.RESHAPES and len(self._varying(out)) > 1 and len(self._varying(x)) <= 1:
            self.mark_whole(_ids(x), f"a reshape splits channels into several dimensions ({place(n)})")
        if name in ("getitem", "select"):
            lost = np.setdiff1d(self.all_ids(x), self.all_ids(out))
            if len(lost):
                self.mark_whole(self.all_ids(x), f"a slice selects some channels ({place(n)})")

    def _split(self, n: fx.Node, name: str) -> None:
        x = self.maps.get(n.args[0])
        if not isinstance(x, torch.Tensor):
            return
        position = ops.SPLITS[name]
        dim = n.kwargs.get("dim", n.args[position + 1] if len(n.args) > position + 1 else 0)
        if name == "unbind":
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
        dim = dim % x.dim()
        if dim in self._varying(x):
            self.mark_whole(_ids(x), f"{name} along the channels ({place(n)}): its sizes do not follow the width")

    def _reduction(self, n: fx.Node, name: str, value):
        x = self.maps[n.args[0]]
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 and not isinstance(n.args[1], bool) else None)
        keepdim = n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 and isinstance(n.args[2], bool) else False)
        dims = list(range(x.dim())) if dim is None else ([dim] if isinstance(dim, int) else list(dim))
        dims = [d % x.dim() for d in dims]
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        if not bool((lo == hi).all()):
            self.mark_whole(_ids(x), f"{name} over channels ({place(n)})")
        out = hi if keepdim else hi.squeeze(dims) if dims else hi
        if isinstance(value, torch.Tensor):
            return out.expand(value.shape) if out.dim() == value.dim() else self.constant_map(value)
        return fx.node.map_aggregate(value, lambda v: (out.expand(v.shape) if out.dim() == v.dim() else
                                                       torch.full(v.shape, NONE, dtype=torch.float64))
                                     if isinstance(v, torch.Tensor) else None)


class ChannelGroups:
    """The resolved groups of one traced graph, and the plans a width cuts by."""

    def __init__(self, gm: fx.GraphModule, example: torch.Tensor, keep_input: str | None = None,
                 keep_output: str | None = None) -> None:
        w = _Walker(gm)
        with torch.no_grad(), eval_mode(gm):
            w.run(example)
        if keep_input is not None:
            w.mark_whole(w.layer_in[keep_input], f"keep names {keep_input!r}")
        if keep_output is not None:
            lo, size = w.layer_out[keep_output]
            w.mark_whole(np.arange(lo, lo + size), f"keep names {keep_output!r}")
        self.walker = w
        self._resolve()

    # ---- segments --------------------------------------------------------------------------
    def _resolve(self) -> None:
        w = self.walker
        cuts = {lo for _, lo, _ in w.atoms} | {w.next_id}
        pieces = np.array(w.pieces, dtype=np.int64).reshape(-1, 3)
        while True:
            arr = np.array(sorted(cuts))
            new: set[int] = set()
            for a, b, n in pieces:
                new.update((a, a + n, b, b + n))
                for lo, other in ((a, b), (b, a)):
                    i, j = np.searchsorted(arr, lo, "right"), np.searchsorted(arr, lo + n, "left")
                    new.update((arr[i:j] - lo + other).tolist())
            new -= cuts
            if not new:
                break
            cuts |= new
        self.cuts = np.array(sorted(cuts))
        count = len(self.cuts) - 1
        self.parent = list(range(count))
        for a, b, n in pieces:
            i, j = self.segment_of(a), self.segment_of(b)
            k = self.segment_of(a + n - 1) - i + 1
            for d in range(k):
                self._union(i + d, j + d)
        self.whole: dict[int, str] = {}
        for ids, why in w.whole:
            for s in np.unique(self.segment_of(ids)):
                self.whole.setdefault(self.find(int(s)), why)
        self.unit: dict[int, int] = {}
        self._units()
        for node, ids, what in w.unknown:
            cut = [int(i) for i in ids if self._cuttable(int(i))]
            if cut:
                raise GraphError(f"{what} ({place(node)}) works on channels that a width would cut, and the graph "
                                 "does not know how it treats them; replace it with standard layers or operations")

    def segment_of(self, ids):
        return np.searchsorted(self.cuts, ids, "right") - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def size(self, s: int) -> int:
        return int(self.cuts[s + 1] - self.cuts[s])

    def _cuttable(self, i: int) -> bool:
        r = self.find(int(self.segment_of(i)))
        return r not in self.whole and self.unit.get(r, 1) < self.size(r)

    def _units(self) -> None:
        """Grouped convolutions keep whole groups: their input and output keep as many units."""
        ties = []
        for name, ids, out_lo, out_size, groups in self.walker.grouped:
            s_in, s_out = self.segment_of(ids[0]), self.segment_of(out_lo)
            one_block = (bool((ids == np.arange(ids[0], ids[0] + len(ids))).all()) and ids[0] == self.cuts[s_in]
                         and self.size(s_in) == len(ids) and self.size(s_out) == out_size)
            r_in, r_out = self.find(int(s_in)), self.find(int(s_out))
            if not one_block:
                why = f"the grouped convolution {name!r} reads channels that are not one block"
                self.whole.setdefault(r_in, why)
                self.whole.setdefault(r_out, why)
                continue
            self.unit[r_in] = math.lcm(self.unit.get(r_in, 1), len(ids) // groups)
            self.unit[r_out] = math.lcm(self.unit.get(r_out, 1), out_size // groups)
            ties.append((r_in, r_out))
        changed = True
        while changed:
            changed = False
            for r_in, r_out in ties:
                k_in, k_out = self.size(r_in) // self.unit[r_in], self.size(r_out) // self.unit[r_out]
                if k_in != k_out:
                    k = math.gcd(k_in, k_out)
                    self.unit[r_in], self.unit[r_out] = self.size(r_in) // k, self.size(r_out) // k
                    changed = True
            for r_in, r_out in ties:  # a whole side keeps the other whole
                if (r_in in self.whole) != (r_out in self.whole):
                    why = self.whole.get(r_in) or self.whole.get(r_out)
                    self.whole.setdefault(r_in, why)
                    self.whole.setdefault(r_out, why)
                    changed = True

    # ---- results ---------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        names = self.walker.atoms
        starts = np.array([lo for _, lo, _ in names])
        found: dict[int, ChannelGroup] = {}
        for s in range(len(self.cuts) - 1):
            r = self.find(s)
            lo = int(self.cuts[s])
            atom = int(np.searchsorted(starts, lo, "right") - 1)
            name, first, _ = names[atom]
            if r not in found:
                found[r] = ChannelGroup([], self.size(s), self.unit.get(r, 1), self.whole.get(r))
            found[r].segments.append(Segment(name, lo - first, self.size(s)))
        return list(found.values())

    def plan(self, ids: np.ndarray) -> ChannelPlan:
        """The plan of a channel axis holding ``ids`` (-1: always kept)."""
        ids = np.asarray(ids)
        valid = ids >= 0
        seg = np.where(valid, self.segment_of(np.where(valid, ids, 0)), -1)
        used = sorted(set(seg[valid].tolist()))
        index = {s: i for i, s in enumerate(used)}
        compact = np.array([index[s] if s >= 0 else -1 for s in seg.tolist()], dtype=np.int64)
        offset = np.where(valid, ids - self.cuts[np.maximum(seg, 0)], 0)
        sizes = [self.size(s) for s in used]
        units = [self.size(s) if self.find(s) in self.whole else self.unit.get(self.find(s), 1) for s in used]
        return ChannelPlan(torch.as_tensor(compact), torch.as_tensor(offset), sizes, units)

    def layer_plans(self, name: str) -> tuple[ChannelPlan, ChannelPlan]:
        """(input plan, output plan) of a Conv2d/Linear."""
        lo, size = self.walker.layer_out[name]
        return self.plan(self.walker.layer_in[name]), self.plan(np.arange(lo, lo + size))

    def norm_plan(self, name: str) -> ChannelPlan:
        """The plan of a batch-norm's channels."""
        return self.plan(self.walker.norm_ids[name])
