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
from .trainer import Trainer, train

__all__ = ["OPTIMIZERS", "SCHEDULES", "Recipe", "TrainConfig", "Trainer", "get_recipe", "list_recipes",
           "make_optimizer", "make_schedule", "recipe_from_dict", "register_recipe", "seed_everything", "sized_for",
           "train", "training_subset"]
