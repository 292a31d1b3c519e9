"""dynscale: dynamic computation scaling for neural-network inference.

Layers, models, data and the cost model sit at the bottom; typed runs, the trainer and the
evaluation engine above them; the methods (``idp``, ``slimmable``, ``adaptive``) on top, each
registering its recipes, run kinds and operating points; ``export`` and the command line last.
"""

__version__ = "0.2.0"

try:  # the deploy runtime (dynscale.runtime) runs where PyTorch is not installed
    import torch  # noqa: F401
except ModuleNotFoundError as e:  # tested in a subprocess without torch (tests/test_deploy.py)
    if e.name != "torch":
        raise  # an installed torch that is broken: say so
    _TORCH = False
else:
    _TORCH = True

if _TORCH:
    from . import adaptive, dfs, effort, export, idp, slimmable  # noqa: F401  (each registers its recipes and run kinds)
    from .convert import convert
    from .errors import CheckpointError, DataError, DynscaleError, TrainingDiverged
    from .idp import calibrate_bn
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
    from .models import get_model, list_models, model_info, register_model
    from .profiles import list_profiles, make_profile
    from .runs import load_run, save_run

    __all__ = [
        "BinaryConv2d", "BinaryLinear", "CheckpointError", "DataError", "DynscaleError", "IncompleteBatchNorm1d",
        "IncompleteBatchNorm2d", "IncompleteConv2d", "IncompleteLinear", "TrainingDiverged", "calibrate_bn", "convert",
        "get_model", "kept_channels", "list_models", "list_profiles", "load_run", "make_profile", "model_info",
        "register_model", "save_run", "set_width", "width",
    ]
