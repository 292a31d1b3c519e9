"""Small readers of fx nodes: shapes, places for messages, additions and ReLUs."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator

import torch
import torch.fx as fx
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Runs the block with every module in eval mode, restoring each one's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def place(node: fx.Node) -> str:
    """Where a node is, for messages: its fx name and the module that runs it."""
    stack = node.meta.get("nn_module_stack") or {}
    path = node.target if node.op == "call_module" else (list(stack.values())[-1][0] if stack else "")
    return f"fx node {node.name!r} in module {path or '<root>'!r}"


def short(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def is_add(node: fx.Node) -> bool:
    """An addition of two tensors (``+``, ``+=``, ``torch.add``, ``Tensor.add``/``add_``)."""
    if node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
        pass
    elif node.op == "call_method" and node.target in ("add", "add_"):
        pass
    else:
        return False
    args = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    return len(args) == 2 and all(tensor_shape(a) is not None for a in args) and "alpha" not in node.kwargs


RELU_FUNCTIONS = (torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_)


def is_relu(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The node's tensor shape on the example, or None for a non-tensor value."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
