"""``ModelGraph``: the structure queries every method reads, on one traced graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from .groups import ChannelGroup, ChannelGroups
from .nodes import is_add, is_relu, tensor_shape
from .types import GraphError, is_batchnorm, is_layer


@dataclass
class Chain:
    """A Conv2d/Linear ``layer`` whose output is used only by an optional batch-norm ``bn``
    (itself used only by) a ReLU ``act``: a module name, or the fx node name of ``F.relu`` and
    the like (``act_is_module`` tells which)."""

    layer: str
    bn: str | None
    act: str
    act_is_module: bool


@dataclass
class Block:
    """A residual block: ``add`` (fx node name) sums a ``body`` branch holding layers and a
    ``shortcut`` (its layers; empty for an identity), both starting from the same tensor.

    Attributes:
        name: qualified name of the smallest submodule holding the whole block ("" at the root).
        add: the fx node name of the residual addition.
        body: layer names on the branch that is not the shortcut, in execution order.
        shortcut: layer names on the shortcut (a downsampling projection), or empty.
        input_shape: (C, H, W) of the block's input on the example.
        output_shape: (C, H, W) of the sum on the example.
        input: the fx node name of the block's input (the tensor both branches start from).
        output: the fx node name of the block's output: the last node the module ``name``
            runs (the sum, or what follows it there, a ReLU say); None at the root.
    """

    name: str
    add: str
    body: list[str]
    shortcut: list[str]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input: str | None = None
    output: str | None = None


@dataclass
class Boundary:
    """A place where exactly one value is live: the network can be cut there.

    Attributes:
        name: the qualified name of the largest module whose output this is, else ``node``.
        node: the fx node name of the tensor.
        shape: its shape on the example, batch included.
    """

    name: str
    node: str
    shape: tuple[int, ...]


@dataclass
class ModelGraph:
    """A model traced by :func:`dynscale.graph.trace`.

    Attributes:
        module: the model traced (not changed by the graph).
        gm: the ``torch.fx.GraphModule``; it shares the model's modules and parameters.
    """

    module: nn.Module
    gm: fx.GraphModule
    example: torch.Tensor | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    # ---- helpers ------------------------------------------------------------------------
    def nodes(self) -> list[fx.Node]:
        return list(self.gm.graph.nodes)

    def node(self, name: str) -> fx.Node:
        for n in self.gm.graph.nodes:
            if n.name == name:
                return n
        raise GraphError(f"the graph has no node {name!r}")

    def submodule(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def _is_layer_node(self, node: fx.Node) -> bool:
        return node.op == "call_module" and is_layer(self.gm.get_submodule(node.target))

    def _is_bn_node(self, node: fx.Node) -> bool:
        return node.op == "call_module" and is_batchnorm(self.gm.get_submodule(node.target))

    def dynamic(self) -> set[fx.Node]:
        """Nodes that depend on the input (the rest are parameters and constants)."""
        if "dynamic" not in self._cache:
            found: set[fx.Node] = set()
            for n in self.gm.graph.nodes:
                if n.op == "placeholder" or any(a in found for a in n.all_input_nodes):
                    found.add(n)
            self._cache["dynamic"] = found
        return self._cache["dynamic"]

    def _ancestors(self, node: fx.Node) -> set[fx.Node]:
        """The node and every input-dependent node it is computed from."""
        dynamic, seen, todo = self.dynamic(), {node}, [node]
        while todo:
            for a in todo.pop().all_input_nodes:
                if a in dynamic and a not in seen:
                    seen.add(a)
                    todo.append(a)
        return seen

    def _layers_in(self, nodes: set[fx.Node]) -> list[str]:
        names: list[str] = []
        for n in self.gm.graph.nodes:
            if n in nodes and self._is_layer_node(n) and n.target not in names:
                names.append(n.target)
        return names

    def channels(self, keep_input: str | None = None, keep_output: str | None = None) -> ChannelGroups:
        """The channel-dependency analysis (computed once, on the example).

        Args:
            keep_input: a layer whose input channels stay whole.
            keep_output: a layer whose output channels stay whole.
        """
        key = ("channels", keep_input, keep_output)
        if key not in self._cache:
            self._cache[key] = ChannelGroups(self.gm, self.example, keep_input, keep_output)
        return self._cache[key]

    def groups(self) -> list[ChannelGroup]:
        """The channel-dependency groups: ranges of channels that must keep the same channels in
        the same order (see :mod:`dynscale.graph.groups`).

        Raises:
            GraphError: for an operation the graph does not know on channels a width would cut.
        """
        return self.channels().groups()

    # ---- queries ------------------------------------------------------------------------
    def layers(self) -> list[str]:
        """The Conv2d and Linear module names (plain, incomplete or binary), in execution order."""
        return self._layers_in(set(self.gm.graph.nodes))

    def relu_chains(self) -> list[Chain]:
        """Every layer whose output goes only to a ReLU, possibly through one batch-norm."""
        chains = []
        for n in self.gm.graph.nodes:
            if not self._is_layer_node(n) or len(n.users) != 1:
                continue
            nxt, bn = next(iter(n.users)), None
            if self._is_bn_node(nxt):
                if len(nxt.users) != 1:
                    continue
                bn, nxt = nxt.target, next(iter(nxt.users))
            if is_relu(nxt, self.gm):
                module = nxt.op == "call_module"
                chains.append(Chain(n.target, bn, nxt.target if module else nxt.name, module))
        return chains

    def residual_blocks(self) -> list[Block]:
        """Every addition of two equal-shaped tensors computed from one tensor, one branch
        holding layers, each branch used only inside the block."""
        index = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        blocks = []
        for add in self.gm.graph.nodes:
            if not is_add(add):
                continue
            a, b = add.args[0], add.args[1]
            if tensor_shape(a) != tensor_shape(b) or a not in self.dynamic() or b not in self.dynamic():
                continue
            up_a, up_b = self._ancestors(a), self._ancestors(b)
            common = up_a & up_b
            if not common:
                continue
            start = max(common, key=index.__getitem__)
            before = self._ancestors(start)
            branch_a, branch_b = up_a - before, up_b - before
            inside = branch_a | branch_b
            if any(x not in inside and x != start and x in self.dynamic() for n in inside for x in n.all_input_nodes):
                continue  # another tensor enters the block
            if any(u not in inside and u is not add for n in inside for u in n.users):
                continue  # a tensor of the block is used outside it
            layers_a, layers_b = self._layers_in(branch_a), self._layers_in(branch_b)
            if not layers_a and not layers_b:
                continue
            body, shortcut = (layers_a, layers_b) if len(layers_a) >= len(layers_b) else (layers_b, layers_a)
            holder = self._holder(inside | {add})
            blocks.append(Block(holder, add.name, body, shortcut, tensor_shape(start)[1:], tensor_shape(add)[1:],
                                start.name, self._last_in(holder)))
        return blocks

    def _last_in(self, holder: str) -> str | None:
        """The fx node name of the last node that module ``holder`` runs (None for the root)."""
        if not holder:
            return None
        inside = [n for n in self.gm.graph.nodes
                  if any(qualname == holder for qualname, _ in (n.meta.get("nn_module_stack") or {}).values())]
        return inside[-1].name if inside else None

    def _holder(self, nodes: set[fx.Node]) -> str:
        """The qualified name of the smallest module whose forward runs all of ``nodes``."""
        stacks = [list((n.meta.get("nn_module_stack") or {}).items()) for n in nodes]
        common = []
        for level in zip(*stacks, strict=False):
            if any(item[0] != level[0][0] for item in level):
                break
            common.append(level[0])
        return common[-1][1][0] if common else ""

    def stage_boundaries(self) -> list[Boundary]:
        """The tensors at which exactly one value is live: the network cut there gives
        segments that pass one tensor on (see :meth:`split`). The input and the outputs are not
        boundaries."""
        if "boundaries" in self._cache:
            return self._cache["boundaries"]
        nodes, dynamic = self.nodes(), self.dynamic()
        index = {n: i for i, n in enumerate(nodes)}
        ends_at: dict[int, int] = {}
        for n in nodes:
            if n in dynamic and n.users:
                last = max(index[u] for u in n.users)
                ends_at[last] = ends_at.get(last, 0) + 1
        live, found, used = 0, [], set()
        for i, n in enumerate(nodes):
            live -= ends_at.get(i, 0)
            if n in dynamic and n.users:
                live += 1
            if (live == 1 and n in dynamic and n.op not in ("placeholder", "output") and n.users
                    and all(u.op != "output" for u in n.users) and tensor_shape(n) is not None):
                name = self._produced_by(n, nodes, i)
                name = n.name if name in used or not name else name
                used.add(name)
                found.append(Boundary(name, n.name, tensor_shape(n)))
        self._cache["boundaries"] = found
        return found

    def _produced_by(self, n: fx.Node, nodes: list[fx.Node], i: int) -> str:
        """The largest module whose forward ends with ``n``."""
        stack = list((n.meta.get("nn_module_stack") or {}).items())
        later = nodes[i + 1] if i + 1 < len(nodes) else None
        after = set((later.meta.get("nn_module_stack") or {}) if later is not None else {})
        for key, (qualname, _) in stack:  # outermost first
            if key not in after:
                return qualname
        return ""

    def split(self, boundaries: list[str]) -> list[nn.Module]:
        """Cuts the network at ``boundaries`` (names or node names from :meth:`stage_boundaries`).

        Returns:
            ``len(boundaries) + 1`` GraphModules sharing the model's parameters; run one after
            the other, they compute the model's forward.

        Raises:
            GraphError: for a name that is not a boundary.
        """
        known = {b.name: b.node for b in self.stage_boundaries()} | {b.node: b.node for b in self.stage_boundaries()}
        nodes = self.nodes()
        index = {n.name: i for i, n in enumerate(nodes)}
        cuts = []
        for name in boundaries:
            if name not in known:
                raise GraphError(f"{name!r} is not a stage boundary of the model; its boundaries are "
                                 f"{', '.join(b.name for b in self.stage_boundaries()) or 'none'}")
            cuts.append(index[known[name]])
        if len(set(cuts)) != len(cuts):
            raise GraphError(f"the boundaries {boundaries} name one place twice")
        cuts.sort()
        segments, start = [], -1
        for end in [*cuts, len(nodes) - 1]:
            segments.append(self._segment(nodes, start, end, len(segments)))
            start = end
        return segments

    def _segment(self, nodes: list[fx.Node], start: int, end: int, number: int) -> fx.GraphModule:
        """Nodes ``start+1 … end`` as a GraphModule taking node ``start`` (or the inputs)."""
        graph, env, dynamic = fx.Graph(), {}, self.dynamic()

        def lookup(a: fx.Node) -> fx.Node:
            if a not in env:  # a parameter or constant: copied into each segment that uses it
                env[a] = graph.node_copy(a, lookup)
            return env[a]

        if start >= 0:
            env[nodes[start]] = graph.placeholder(nodes[start].name)
        for n in nodes[start + 1:end + 1]:
            if n.op == "output":
                graph.output(fx.node.map_arg(n.args[0], lookup))
            elif n in dynamic:
                env[n] = graph.node_copy(n, lookup)
        if nodes[end].op != "output":
            graph.output(env[nodes[end]])
        return fx.GraphModule(self.gm, graph, f"{type(self.module).__name__}Segment{number}")
