"""Registered models. Each family lives in its own file and registers itself on import."""

from . import binarynet, converted, mlp, mobilenet, resnet, vgg  # noqa: F401  (each registers its model)
from .multiprofile import MultiProfileModel, build_multi_profile, parse_profile_ranges
from .registry import ModelInfo, check_options, get_model, list_models, model_info, model_name, register_model

__all__ = ["ModelInfo", "MultiProfileModel", "build_multi_profile", "check_options", "get_model", "list_models",
           "model_info", "model_name", "parse_profile_ranges", "register_model"]
