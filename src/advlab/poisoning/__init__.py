"""Backdoor poisoning: triggers and poisoned data sets, with clean accuracy and attack success."""

from advlab.poisoning.poison import (
    DEFAULT_TARGET,
    PoisonedDataset,
    apply_to_dataset,
    attack_success_rate,
    clean_accuracy,
    poison_dataset,
    save_poisoned_folder,
    triggered_test_set,
)
from advlab.poisoning.triggers import (
    SPECTRE_PIXELS,
    TRIGGERS,
    BlendTrigger,
    PatchTrigger,
    PeriodicTrigger,
    PixelTrigger,
    Trigger,
    make_trigger,
)

__all__ = ["DEFAULT_TARGET", "SPECTRE_PIXELS", "TRIGGERS", "BlendTrigger", "PatchTrigger", "PeriodicTrigger",
           "PixelTrigger", "PoisonedDataset", "Trigger", "apply_to_dataset", "attack_success_rate", "clean_accuracy",
           "make_trigger", "poison_dataset", "save_poisoned_folder", "triggered_test_set"]
