"""Resumable training: the whole state of a run after each epoch, written atomically, read back on restart.

A killed run (SIGKILL, power loss, Ctrl-C) loses at most the epoch it was in. The state holds the
weights, the optimizer's state, every random number generator the run draws from (the data order
and augmentation generator, torch's, NumPy's and Python's global ones), the state of the batch loss
and of the epoch-end hook when they have one (their ``state_dict``/``load_state_dict``: the random
starts of adversarial training, carried perturbations, the best epoch of an overfitting guard), the
history so far and the time spent. The learning-rate schedule is a pure function of the step
count, so it is rebuilt by replaying the steps already taken. A resumed run therefore takes the
same steps with the same numbers as one that was never interrupted.

The state is one safetensors file (tensors) whose header holds the rest as JSON: nothing is ever
unpickled. It is keyed by the model cache's key, so it only ever resumes the same config on the
same data.
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from advlab.errors import AdvlabError
from advlab.runtime import atomic_write

STATE_KEY = "advlab_training_state"
STATE_VERSION = 1


def _pack(value, tensors: dict[str, torch.Tensor], prefix: str):
    """value as JSON, its tensors moved into `tensors` (dict keys keep their type: ints stay ints)."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(value, np.ndarray):
        return _pack(torch.from_numpy(value.astype(np.int64)), tensors, prefix)
    if isinstance(value, dict):
        return {"__dict__": [[k, _pack(v, tensors, f"{prefix}.{i}")] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, list | tuple):
        return [_pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a training state")


def _unpack(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict) and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict) and "__dict__" in value:
        return {k: _unpack(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    return value


def stateful_parts(**parts) -> dict:
    """The parts of a run that carry state of their own (a state_dict and load_state_dict)."""
    return {name: part for name, part in parts.items()
            if callable(getattr(part, "state_dict", None)) and callable(getattr(part, "load_state_dict", None))}


def global_rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
            "numpy": [numpy_state[0], numpy_state[1], *numpy_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class TrainingState:
    """The resumable state of one training run, at `path`, valid only for the run named by `key`."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self.resumed_from: int | None = None  # the epoch a run resumed after, set by the trainer
        self.seconds = 0.0  # training time of all the run's attempts, set by the trainer at the end

    def save(self, *, epoch: int, history: list[dict], stopped: bool, seconds: float, model: nn.Module,
             optimizer: torch.optim.Optimizer, generator: torch.Generator, parts: dict) -> None:
        tensors: dict[str, torch.Tensor] = {}
        payload = {
            "version": STATE_VERSION, "key": self.key, "epoch": epoch, "history": history, "stopped": stopped,
            "seconds": seconds,
            "model": _pack(model.state_dict(), tensors, "model"),
            "optimizer": _pack(optimizer.state_dict(), tensors, "optimizer"),
            "generator": _pack(generator.get_state(), tensors, "generator"),
            "rng": _pack(global_rng_state(), tensors, "rng"),
            "parts": _pack({name: part.state_dict() for name, part in parts.items()}, tensors, "parts"),
        }
        header = {STATE_KEY: json.dumps(payload)}
        atomic_write(self.path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    def load(self) -> dict | None:
        """The saved state (tensors in place), or None when there is none or it is not this run's.

        A state that cannot be read (a crash while the disk filled, a foreign file) is set aside with
        a warning and training starts over: it is advlab's own file and holds nothing else."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                payload = json.loads((f.metadata() or {})[STATE_KEY])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if payload.get("version") != STATE_VERSION:
                raise ValueError(f"state version {payload.get('version')}, expected {STATE_VERSION}")
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
            print(f"advlab: the resumable state {self.path} is unreadable ({exc}); starting this run over",
                  file=sys.stderr)
            self.clear()
            return None
        if payload.get("key") != self.key:
            return None
        return {k: (_unpack(v, tensors) if k in ("model", "optimizer", "generator", "rng", "parts") else v)
                for k, v in payload.items()}

    def restore(self, state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                parts: dict) -> None:
        """Put a loaded state back into the run's objects (the schedule is replayed by the caller)."""
        missing = set(parts) - set(state["parts"])
        if missing:
            raise AdvlabError(f"the resumable state {self.path} lacks the state of {', '.join(sorted(missing))}; "
                              f"delete it to start this run over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        set_global_rng_state(state["rng"])
        for name, part in parts.items():
            part.load_state_dict(state["parts"][name])

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def replay_schedule(schedule, steps: int) -> None:
    """Advance a learning-rate schedule by `steps` steps without training (it depends on the count only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
        for _ in range(steps):
            schedule.step()
