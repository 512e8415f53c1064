"""Devices, seeds and atomic file writes: the small services every layer uses."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

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


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode for the duration of the block, its own mode (train or eval) restored
    after, also when the block raises (dropout and batch-norm statistics must not stay switched)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Parameter gradients off for the duration of the block (input gradients only: weight gradients
    would be wasted work), each parameter's flag restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


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
# ---- speed on accelerators: precision, compilation, batch sizes, where the data lives ----

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise AdvlabError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "fp32"):
    """The forward passes' arithmetic: fp32 as written, or bf16 autocast (matrix products and
    convolutions in bfloat16, reductions and losses in float32; gradients come back in the inputs'
    float32). bf16 keeps float32's exponent range, so unlike fp16 it needs no loss scaling and tiny
    gradients do not underflow; it halves the memory traffic of the passes on GPUs with bf16 units."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def full_precision(device: torch.device):
    """Switch an enclosing autocast off: decisions that are reported (an attack's success, a smoothed
    classifier's counts) are taken in the model's own float32 arithmetic."""
    return torch.autocast(device_type=device.type, enabled=False)


def compile_model(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """torch.compile the model (its parameters stay shared with the original module). The first passes
    pay for compilation; long runs (training, certification, large evaluations) gain from fused kernels."""
    try:
        return torch.compile(model, backend=backend)
    except Exception as exc:  # no compiler toolchain, unsupported platform
        raise AdvlabError(f"--compile failed ({type(exc).__name__}: {exc}); run without --compile") from None


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the CPU allocator's failure ("can't allocate memory")."""
    text = str(exc).lower()
    return (isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
            or isinstance(exc, MemoryError))


def largest_batch(work: Callable[[int], object], start: int, smallest: int = 1) -> tuple[int, object]:
    """Run work(batch_size) with start, halving the batch size on out-of-memory errors until it fits;
    return (the size that ran, its result). Other errors propagate."""
    size = max(int(start), smallest)
    while True:
        try:
            return size, work(size)
        except (RuntimeError, torch.OutOfMemoryError, MemoryError) as exc:
            if not is_out_of_memory(exc) or size <= smallest:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(size // 2, smallest)


def run_in_batches(work: Callable[[slice], object], n: int, batch_size: int,
                   on_shrink: Callable[[int, int], None] | None = None) -> tuple[list, int]:
    """work(rows) over rows 0..n in batches of batch_size; a batch that runs out of memory is retried
    at half the size (and the rest of the run keeps the smaller size), down to 1. Returns (the
    results in order, the batch size the run ended with); on_shrink(old, new) is told each halving."""
    results, start, size = [], 0, max(1, int(batch_size))
    while start < n:
        try:
            results.append(work(slice(start, min(start + size, n))))
        except (RuntimeError, torch.OutOfMemoryError, MemoryError) as exc:
            if not is_out_of_memory(exc) or size <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_shrink is not None:
                on_shrink(size, size // 2)
            size //= 2
            continue
        start += size
    return results, size


class BatchSize:
    """The batch size of one run's model passes, shared by every batched loop of the run: it starts at
    `start` (the user's --batch-size, or a default that fits the device), halves when a batch runs out
    of memory (only that batch is retried, advlab.runtime.run_in_batches) and stays halved for the rest
    of the run. `size` is the size in use; `summary()` is what the run records. given: whether the user
    chose `start` (halving still happens, and the message says the given size did not fit)."""

    def __init__(self, start: int, given: bool = False, origin: str | None = None) -> None:
        if int(start) < 1:
            raise AdvlabError(f"batch size must be positive, got {start}")
        self.start = self.size = int(start)
        self.given = bool(given)
        self.origin = origin  # where start came from, for line() (default: the flag or the device's memory)
        self.halvings = 0

    def __int__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"BatchSize({self.size}, start={self.start}, given={self.given})"

    def _shrink(self, old: int, new: int) -> None:
        self.halvings += 1
        what = "the given --batch-size" if self.given and old == self.start else "batch size"
        tqdm.write(f"advlab: out of memory at {what} {old}; retrying that batch and continuing at {new}",
                   file=sys.stderr)

    def map(self, work: Callable[[slice], object], n: int) -> list:
        """work(rows) for consecutive slices covering 0..n, in order, halving on out-of-memory. work must
        leave no trace before its out-of-memory-prone part (it may be called again on fewer rows)."""
        results, self.size = run_in_batches(work, n, self.size, self._shrink)
        return results

    def cat(self, work: Callable[[slice], torch.Tensor], n: int) -> torch.Tensor:
        """torch.cat of map(work, n) (an empty n gives work on no rows)."""
        return torch.cat(self.map(work, n)) if n else work(slice(0, 0))

    def summary(self) -> dict:
        return {"batch_size": self.size, "batch_size_start": self.start, "batch_size_given": self.given,
                "out_of_memory_halvings": self.halvings}

    def line(self) -> str:
        """The run's closing line on stderr."""
        how = self.origin or ("given by --batch-size" if self.given
                              else "chosen to fit the device's memory; --batch-size sets it")
        shrunk = f", halved {self.halvings}x from {self.start} on out-of-memory" if self.halvings else ""
        return f"batch size used: {self.size} ({how}{shrunk})"


def as_batch_size(batch_size: int | BatchSize) -> BatchSize:
    """A library call's batch size: a BatchSize shared with the caller, or a fresh one from an int."""
    return batch_size if isinstance(batch_size, BatchSize) else BatchSize(int(batch_size))


def available_memory(device: torch.device) -> int:
    """Bytes the device can still give: free GPU memory, or the host's MemAvailable (Linux; else the
    free physical pages)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 4 << 30


@torch.no_grad()
def activation_bytes(model: torch.nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """Bytes of every leaf module's output for one image: what a backward pass keeps alive, measured
    with forward hooks on a batch of two."""
    total = [0]

    def hook(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((2, *image_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return max(total[0] // 2, 4 * int(np.prod(image_shape)))


def place_images(images: torch.Tensor, device: torch.device, budget: float = 0.25) -> torch.Tensor:
    """Where a training set's uint8 images live during training. On a GPU: on the device itself when
    they take at most `budget` of its free memory (no host-device copies at all), else in pinned host
    memory, so that each batch's copy runs asynchronously. On the CPU: unchanged."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= budget * free:
        return images.to(device)
    return images.pin_memory()


def gradient_batch_size(model: torch.nn.Module, image_shape: tuple[int, ...], device: torch.device,
                        cpu_default: int, ceiling: int = 8192, share: float = 0.5) -> int:
    """Images per attack batch: on a GPU, the largest power of two (at most ceiling) whose forward and
    input-gradient backward pass fits in `share` of the free memory, found by trying it and halving on
    out-of-memory; on a CPU, cpu_default (large batches gain nothing there) unless the activations of
    a forward and backward pass (3x a forward's outputs) would not fit in `share` of the available
    memory: then the largest power of two that does (a 224-pixel ViT on a laptop)."""
    if device.type != "cuda":
        per_image = 3 * activation_bytes(model, image_shape, device)
        fits = int(share * available_memory(device) // per_image)
        return max(1, min(cpu_default, 1 << max(fits.bit_length() - 1, 0)))
    free, _ = torch.cuda.mem_get_info(device)
    per_image = 4 * int(np.prod(image_shape))
    start = 1 << max(int(min(ceiling, share * free / (per_image * 64))).bit_length() - 1, 0)

    def trial(size: int) -> None:
        x = torch.zeros((size, *image_shape), device=device, requires_grad=True)
        model(x.contiguous(memory_format=torch.channels_last)).sum().backward()
        torch.cuda.synchronize(device)

    try:
        with frozen_parameters(model), eval_mode(model):
            size, _ = largest_batch(trial, start)
    finally:
        torch.cuda.empty_cache()
    return size
