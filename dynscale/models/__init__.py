"""Registered models. Each family lives in its own file and registers itself on import."""

from . import mlp  # noqa: F401  (registers the model)
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
