"""Training: the shared settings, the one :class:`Trainer`, the recipe registry, and the one
skeleton of a training that writes a run (:func:`train_and_save`)."""

from ..runs import RunConfig, register_config_check
from ..schema import check_fields
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
from .distributed import ExecutionRecord, Replica, replicate
from .recipe import (
    Recipe,
    check_recipe_dict,
    get_recipe,
    list_recipes,
    recipe_class,
    recipe_from_dict,
    register_recipe,
    unregister_recipe,
)
from .run import Training, check_holdout, train_and_save
from .state import fit_resumable, load_state, prepare_state, save_state, state_directory, stop_on_signals
from .trainer import Trainer, train


@register_config_check
def _check_training_settings(config: RunConfig) -> None:
    """Every opened run's training settings and recipe match their dataclasses."""
    TrainConfig.check_dict(config.training)
    if "execution" in config.training:
        check_fields(ExecutionRecord, config.training["execution"], "training.execution")
    if config.recipe:
        check_recipe_dict(config.recipe)


__all__ = ["OPTIMIZERS", "SCHEDULES", "ExecutionRecord", "Recipe", "Replica", "TrainConfig", "Trainer", "Training",
           "check_holdout", "check_recipe_dict", "fit_resumable", "get_recipe", "list_recipes", "load_state",
           "make_optimizer", "make_schedule", "prepare_state", "recipe_class", "recipe_from_dict",
           "register_recipe", "replicate", "save_state", "seed_everything", "sized_for", "state_directory",
           "stop_on_signals", "train", "train_and_save", "training_subset", "unregister_recipe"]
