"""Models: plain ``nn.Module``s from images in [0, 1] to logits, each normalizing its own input."""

from advlab.models.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_model,
    read_checkpoint,
    read_metadata,
    save_checkpoint,
    validate_metadata,
)
from advlab.models.layers import Normalize
from advlab.models.registry import ARCHITECTURES, architecture, build_model, create_model, model_args
from advlab.models.spec import ModelInfo, SpecOptions, check_model_fits, load_spec, model_metadata

__all__ = ["ARCHITECTURES", "CheckpointMeta", "ModelInfo", "Normalize", "SpecOptions", "architecture", "build_model",
           "check_model_fits", "create_model", "load_checkpoint", "load_model", "load_spec", "model_args",
           "model_metadata", "read_checkpoint", "read_metadata", "save_checkpoint", "validate_metadata"]
