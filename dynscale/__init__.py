"""dynscale: dynamic computation scaling for neural-network inference."""

from . import export  # noqa: F401  (dynscale.export.dense)
from .calibration import calibrate_bn
from .convert import convert
from .errors import CheckpointError, DataError, DynscaleError
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    IncompleteBatchNorm1d,
    IncompleteBatchNorm2d,
    IncompleteConv2d,
    IncompleteLinear,
    kept_channels,
    set_width,
    width,
)
from .models import get_model, list_models, register_model
from .profiles import list_profiles, make_profile

__version__ = "0.1.0"

__all__ = [
    "BinaryConv2d", "BinaryLinear", "CheckpointError", "DataError", "DynscaleError",
    "IncompleteBatchNorm1d", "IncompleteBatchNorm2d", "IncompleteConv2d", "IncompleteLinear",
    "calibrate_bn", "convert", "get_model", "kept_channels", "list_models", "list_profiles", "make_profile",
    "register_model", "set_width", "width",
]
