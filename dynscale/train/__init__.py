"""Training: the shared settings, the one :class:`Trainer`, and the recipe registry."""

from .config import (
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    make_optimizer,
    make_schedule,
    seed_everything,
    sized_for,
    training_subset,
)
from .recipe import Recipe, get_recipe, list_recipes, recipe_from_dict, register_recipe
from .state import fit_resumable, load_state, prepare_state, save_state, state_directory, stop_on_signals
from .trainer import Trainer, train

__all__ = ["OPTIMIZERS", "SCHEDULES", "Recipe", "TrainConfig", "Trainer", "fit_resumable", "get_recipe",
           "list_recipes", "load_state", "make_optimizer", "make_schedule", "prepare_state", "recipe_from_dict",
           "register_recipe", "save_state", "seed_everything", "sized_for", "state_directory", "stop_on_signals",
           "train", "training_subset"]
