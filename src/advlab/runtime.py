"""Devices, seeds and atomic file writes: the small services every layer uses."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from advlab.errors import AdvlabError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda' without a GPU is a user error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdvlabError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise AdvlabError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class DeviceGenerator:
    """A torch.Generator seeded once and created lazily on the device of the tensors it serves.

    Training losses that draw noise (random starts, Gaussian augmentation) use one, so a run is
    reproducible while every batch still gets fresh draws.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending: tuple[torch.Tensor, str] | None = None  # a restored state, applied at the next on()

    def on(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending is not None and self._pending[1] == str(self._generator.device):
                self._generator.set_state(self._pending[0])
            self._pending = None
        return self._generator

    def state_dict(self) -> dict:
        """Seed and current state (for resumable training); load_state_dict continues the same stream."""
        if self._generator is None:
            state, device = (self._pending if self._pending is not None else (None, ""))
        else:
            state, device = self._generator.get_state(), str(self._generator.device)
        return {"seed": self.seed, "state": state, "device": device}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self._generator = None
        self._pending = None if state.get("state") is None else (state["state"], state["device"])


def cache_dir() -> Path:
    """Per-user cache folder (ADVLAB_CACHE, else XDG_CACHE_HOME/advlab, else ~/.cache/advlab)."""
    if os.environ.get("ADVLAB_CACHE"):
        return Path(os.environ["ADVLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "advlab"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary sibling of path, then rename it into place.

    A crash or an error inside write never leaves a half-written file at path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy_message: str) -> Iterator[None]:
    """Hold an exclusive lock on the file at path (created if needed) while the block runs.

    The operating system drops the lock when its process dies, even by SIGKILL, so a lock that can
    be taken means its previous holder is gone. A lock held by a live process raises AdvlabError
    with busy_message. Where file locks are unavailable (not POSIX) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AdvlabError(busy_message) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_is_held(path: str | Path) -> bool:
    """Whether a live process holds exclusive_lock(path) now. Where locks are unavailable (not POSIX)
    nobody can tell, so the answer is True: nothing is ever removed on a guess."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return True  # cannot tell: treat as held, so nothing is removed


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_writable_folder(folder: str | Path, what: str) -> None:
    """Refuse (before any work) a place advlab cannot create or write in: a path that runs through a
    file, a read-only place, /proc. `what` names it for the message (e.g. "--out runs/x"). Probes by
    creating and removing a folder of its own in the nearest folder that exists."""
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise AdvlabError(f"{what} cannot be created: {base} is a file, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".advlab-probe-", dir=base)
        os.rmdir(probe)
    except OSError as exc:
        raise AdvlabError(f"{what} cannot be written ({exc.strerror or exc} in {base}); "
                          "choose a folder you can write to") from None


def check_writable_file(path: str | Path, what: str, overwrite: bool = False, suffix: str | None = None) -> Path:
    """Refuse (before any work) an output file advlab could not write, or one that exists (advlab
    never replaces a file it did not write in this run, unless overwrite)."""
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise AdvlabError(f"{what} must end in {suffix}, got {path}")
    if path.is_dir():
        example = path / ("out" + (suffix or ".json"))
        raise AdvlabError(f"{what} {path} is a folder; give a file name inside it, e.g. {example}")
    if os.path.lexists(path) and not overwrite:
        raise AdvlabError(f"{what} {path} already exists; choose another name, or pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        base = _nearest_existing(parent)
        reason = f"{base} is a file" if not base.is_dir() else "that folder does not exist"
        raise AdvlabError(f"{what} {path} cannot be written: {reason}; create the folder first or choose another path")
    check_writable_folder(parent, f"{what} {path}")
    return path
