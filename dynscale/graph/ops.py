"""How each operation moves channels: the tables the channel walker reads.

Names are those of ``torch``/``torch.nn.functional``/``operator`` functions and of tensor
methods; a ``call_function`` counts only when its function comes from one of those modules.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

# Elementwise on every tensor argument (broadcast): the channels at one position stay together.
ELEMENTWISE = {
    "add", "iadd", "add_", "sub", "isub", "sub_", "rsub", "mul", "imul", "mul_", "truediv", "itruediv", "div", "div_",
    "neg", "pow", "relu", "relu_", "relu6", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "silu", "silu_",
    "hardswish", "hardswish_", "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
    "selu", "celu", "mish", "softplus", "exp", "log", "sqrt", "rsqrt", "abs", "clamp", "clamp_", "clip", "clamp_min",
    "clamp_max", "dropout", "dropout2d", "dropout1d", "alpha_dropout", "feature_alpha_dropout", "where", "maximum",
    "minimum", "sign", "erf", "reciprocal", "square", "floordiv", "mod", "sin", "cos", "logsigmoid", "softsign",
    "tanhshrink", "threshold", "eq", "ne", "lt", "le", "gt", "ge",
}
# Elementwise on their first argument only (a conversion or a copy).
UNARY = {"float", "double", "half", "to", "type_as", "clone", "detach", "type", "requires_grad_"}
# Data movement: computed by running the operation on the channel map itself.
MOVEMENT = {
    "view", "reshape", "flatten", "permute", "transpose", "t", "unsqueeze", "squeeze", "expand", "expand_as",
    "repeat", "cat", "concat", "concatenate", "stack", "roll", "flip", "pad", "movedim", "swapaxes", "unflatten",
    "getitem", "view_as", "reshape_as", "select", "contiguous",
}
# Per-sample scaling (stochastic depth / drop path, torchvision's and timm's): every channel alike.
PER_SAMPLE = {"stochastic_depth", "drop_path"}
RESHAPES = {"view", "reshape", "unflatten", "view_as", "reshape_as"}
SPLITS = {"split": 1, "chunk": 1, "tensor_split": 1, "unbind": 0, "narrow": 0}  # position of `dim` after the tensor
SPATIAL = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d", "interpolate", "upsample",
           "adaptive_avg_pool1d", "max_pool1d", "avg_pool1d", "lp_pool2d"}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "nansum",
              "nanmean", "std_mean", "var_mean"}
ALONG = {"softmax": "softmax", "log_softmax": "log-softmax", "normalize": "normalisation", "cumsum": "cumulative sum",
         "softmin": "softmin"}
MIXING = {
    "layer_norm": "layer normalisation mixes the channels it normalizes",
    "group_norm": "group normalisation mixes channels",
    "instance_norm": "instance normalisation with its own per-channel tensors",
    "local_response_norm": "local response normalisation mixes neighbouring channels",
    "batch_norm": "a functional batch-norm holds per-channel tensors that are not cut",
    "linear": "a functional F.linear (not an nn.Linear module) is not cut",
    "conv2d": "a functional F.conv2d (not an nn.Conv2d module) is not cut",
    "matmul": "a matrix product (attention) mixes channels", "bmm": "a matrix product (attention) mixes channels",
    "mm": "a matrix product mixes channels", "baddbmm": "a matrix product (attention) mixes channels",
    "einsum": "an einsum mixes channels", "scaled_dot_product_attention": "attention mixes channels",
}
# Results that are not tensors (shapes, sizes): nothing to track.
NON_TENSOR = {"size", "dim", "numel", "getattr", "shape", "len"}

FUNCTION_MODULES = ("torch", "torch.nn.functional", "_operator", "operator", "builtins", "torch._C._nn",
                    "torch._C._VariableFunctions", "torch.functional", "torch._tensor", "math")

PASS_THROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    nn.CELU, nn.SELU, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
)
SPATIAL_MODULES = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ZeroPad2d, nn.ConstantPad2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
    nn.LPPool2d,
)
MIXING_MODULES = {
    nn.LayerNorm: "layer normalisation mixes the channels it normalizes",
    nn.GroupNorm: "group normalisation mixes channels",
    nn.InstanceNorm2d: "instance normalisation with its own per-channel tensors",
    nn.LocalResponseNorm: "local response normalisation mixes neighbouring channels",
    nn.MultiheadAttention: "attention mixes channels",
    nn.Softmax2d: "softmax over channels",
}
SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)


def op_name(node) -> str | None:
    """The operation's name, or None for a function of another module (user code)."""
    if node.op == "call_method":
        return node.target
    target = node.target
    module = getattr(target, "__module__", None) or ""
    if target is getattr or target is len:
        return target.__name__
    if target in (operator.getitem,):
        return "getitem"
    if module in FUNCTION_MODULES or module.startswith("torch.nn.functional") or isinstance(
            target, type(torch.add)) and module.startswith("torch"):
        return getattr(target, "__name__", None)
    return None
