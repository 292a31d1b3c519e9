"""``trace(model, example)``: one ``torch.fx`` graph of a model, with shapes from an example.

Every method reads a model's structure here: its layers, the layers that feed a ReLU, its
residual blocks, the places it can be cut into stages, and (``groups``) the channels a width
may cut together.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .model import ModelGraph
from .nodes import eval_mode, place, short
from .types import GraphError, is_batchnorm, is_layer, overrides_forward


class _Tracer(fx.Tracer):
    """fx's tracer, with every layer the graph understands kept whole as one node.

    torch.nn's own modules are leaves (as in fx); so are the dynscale layers, and any
    subclass of a Conv2d/Linear/BatchNorm (refused after tracing if it overrides forward).
    Everything else, the user's own modules included, is traced through.
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_layer(m) or is_batchnorm(m) or overrides_forward(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example: torch.Tensor) -> ModelGraph:
    """Traces ``model`` with ``torch.fx`` and records every tensor's shape on ``example``.

    The model is traced in eval mode (Python branches on ``self.training`` take their
    evaluation path; the leaf layers of the graph keep following their own mode), and is not
    changed: its modes are restored and its parameters are shared with the graph.

    Args:
        model: the network.
        example: an input batch, ``(B, C, H, W)`` or ``(B, F)``.

    Returns:
        The :class:`ModelGraph`.

    Raises:
        GraphError: if fx cannot trace the model (data-dependent control flow), the example
            does not run through it, or a Conv2d/Linear/BatchNorm subclass overrides forward.
    """
    if not isinstance(example, torch.Tensor):
        raise GraphError(f"the example input must be a tensor, got {type(example).__name__}")
    with eval_mode(model):
        try:
            graph = _Tracer().trace(model)
        except Exception as e:  # tracing fails with many error types
            raise GraphError(f"torch.fx cannot trace the model ({short(e)}); give it a forward without "
                             "data-dependent control flow") from None
        gm = fx.GraphModule(model, graph, type(model).__name__)
        for node in gm.graph.nodes:
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                base = overrides_forward(module)
                if base is not None:
                    raise GraphError(f"module {node.target!r} ({type(module).__name__}) subclasses {base.__name__} "
                                     f"but overrides forward, which the graph cannot read ({place(node)}); use "
                                     f"a plain {base.__name__} and put the rest in another module")
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        except Exception as e:
            raise GraphError(f"the example input of shape {tuple(example.shape)} does not run through the model "
                             f"({short(e)})") from None
    return ModelGraph(model, gm, example)
