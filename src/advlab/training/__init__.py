"""Training: one loop for every model and recipe, and a cache of trained models by config hash."""

from advlab.training.cache import cached_checkpoint_path, config_hash, train_model
from advlab.training.resolve import resolve_model
from advlab.training.trainer import (
    DEFAULTS,
    BatchLoss,
    DataRecipe,
    EpochEnd,
    TrainConfig,
    choose_recipe,
    cross_entropy_loss,
    default_config,
    fit,
    random_crop_flip,
)

__all__ = ["DEFAULTS", "DataRecipe", "choose_recipe",
           "BatchLoss", "EpochEnd", "TrainConfig", "cached_checkpoint_path", "config_hash",
           "cross_entropy_loss", "default_config", "fit", "random_crop_flip", "resolve_model", "train_model"]
