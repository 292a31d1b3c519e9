"""Layers whose cost scales with the model's width: incomplete, batch-norm, binary."""

from .batchnorm import (
    IncompleteBatchNorm1d,
    IncompleteBatchNorm2d,
    IncompleteBatchNormBase,
    _IncompleteBatchNorm,
    calibrated_widths,
    incomplete_batchnorms,
    switchable_widths,
    width_key,
)
from .binary import BinaryConv2d, BinaryLinear, Sign, binarize
from .incomplete import (
    PROFILE_GRADIENTS,
    IncompleteConv2d,
    IncompleteLayer,
    IncompleteLinear,
    incomplete_layers,
    set_profile_gradient,
)
from .plan import ChannelPlan
from .width import WidthScaled, check_width, kept_channels, set_width, width, width_scaled

__all__ = [
    "PROFILE_GRADIENTS", "BinaryConv2d", "BinaryLinear", "ChannelPlan", "IncompleteBatchNorm1d",
    "IncompleteBatchNorm2d", "IncompleteBatchNormBase", "_IncompleteBatchNorm", "IncompleteConv2d", "IncompleteLayer",
    "IncompleteLinear", "Sign", "WidthScaled", "binarize", "calibrated_widths",
    "check_width", "incomplete_batchnorms", "incomplete_layers", "kept_channels", "set_profile_gradient",
    "set_width", "switchable_widths", "width", "width_key", "width_scaled",
]
