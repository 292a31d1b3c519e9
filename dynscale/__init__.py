"""dynscale: dynamic computation scaling for neural-network inference."""

from .errors import CheckpointError, DataError, DynscaleError
from .layers import IncompleteConv2d, IncompleteLinear, kept_channels, set_width, width
from .models import get_model, list_models, register_model
from .profiles import list_profiles, make_profile

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DataError", "DynscaleError", "IncompleteConv2d", "IncompleteLinear",
    "get_model", "kept_channels", "list_models", "list_profiles", "make_profile",
    "register_model", "set_width", "width",
]
