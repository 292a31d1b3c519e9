"""Registered models. Each family lives in its own file and registers itself on import."""

from . import binarynet, mlp, mobilenet, resnet, vgg  # noqa: F401  (each registers its model)
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
