"""Certify a data set with randomized smoothing: per-image radius, certified accuracy vs radius.

Each image i gets its own noise generator seeded from (seed, i), so the answer for an image does
not depend on which process certified it or in what order: under ``torchrun`` rank r certifies the
images with i % world_size == r and the ranks' records are gathered (gloo) into the very records
one process would have produced. Certified accuracy at radius r is the share of images that are
classified correctly with a certified radius of at least r (an abstention counts as wrong), the
curve Cohen et al. 2019 report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from advlab.data import ImageDataset
from advlab.defenses.smoothing import ABSTAIN, Smooth, radius_ceiling
from advlab.errors import AdvlabError
from advlab.runtime import BatchSize, as_batch_size, exclusive_lock

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class CertifiedImage:
    """One image's CERTIFY outcome; radius 0 and prediction -1 mean abstention."""

    index: int
    label: int
    prediction: int
    radius: float
    correct: bool
    seconds: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass
class CertificationResult:
    records: list[CertifiedImage]
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    seconds: float  # wall time of the slowest process
    world_size: int = 1
    extra: dict = field(default_factory=dict)

    def certified_accuracy(self, radius: float) -> float:
        if not self.records:
            return 0.0
        return sum(r.correct and r.radius >= radius for r in self.records) / len(self.records)

    def curve(self, radii: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(radii, certified accuracy) on a grid a little past the ceiling (default 200 points)."""
        if radii is None:
            top = max(self.ceiling, max((r.radius for r in self.records), default=0.0))
            radii = np.linspace(0.0, 1.05 * top, 200)
        radii = np.asarray(radii, dtype=float)
        return radii, np.array([self.certified_accuracy(r) for r in radii])

    @property
    def ceiling(self) -> float:
        """No radius above this can be certified with n samples at level alpha."""
        return radius_ceiling(self.sigma, self.n, self.alpha)

    @property
    def images_per_second(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else float("inf")

    def summary(self, radii: Sequence[float] = DEFAULT_RADII) -> dict:
        records = self.records
        return {
            "images": len(records), "sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha,
            "seed": self.seed, "world_size": self.world_size, "seconds": self.seconds,
            "images_per_second": self.images_per_second, "radius_ceiling": self.ceiling,
            "clean_accuracy_of_g": sum(r.correct for r in records) / max(len(records), 1),
            "abstain_rate": sum(r.abstained for r in records) / max(len(records), 1),
            "mean_radius_correct": float(np.mean([r.radius for r in records if r.correct] or [0.0])),
            "certified_accuracy": {f"{r:g}": self.certified_accuracy(r) for r in radii},
            **self.extra,
        }

    def to_dict(self, radii: Sequence[float] = DEFAULT_RADII) -> dict:
        return {**self.summary(radii), "records": [asdict(r) for r in self.records]}


def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The noise generator of image `index`: independent streams per (seed, index)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def distributed_rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's weights and buffers (names, shapes, values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def certification_key(smooth: Smooth, data: ImageDataset, n0: int, n: int, alpha: float, batch_size: int, seed: int,
                      ids: Sequence[int], rank: int = 0, world_size: int = 1) -> str:
    """Everything that decides a certification's records: the model, the noise level, the budgets, the
    seed, the images and this process's shard."""
    blob = json.dumps({"model": model_fingerprint(smooth.base_classifier), "sigma": smooth.sigma, "n0": n0, "n": n,
                       "alpha": alpha, "batch_size": batch_size, "seed": seed, "data": data.fingerprint,
                       "ids": list(ids), "rank": rank, "world_size": world_size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CertificationState:
    """Certified images so far, one JSON line each after a header naming the run (its key): a killed
    certification resumes from the images already done. Appends are flushed and synced per image; a
    line torn by the kill is ignored. One process at a time uses a state (a lock beside it)."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.path = Path(folder) / f"certify-{key}.jsonl"
        self.key = key
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> CertificationState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(exclusive_lock(
            self.path.with_suffix(".lock"),
            f"another advlab process is running this same certification now (lock {self.path.with_suffix('.lock')}); "
            "wait for it to finish"))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def load(self) -> dict[int, CertifiedImage]:
        """The images done so far by index (empty when there is no state, or it is another run's)."""
        if not self.path.is_file():
            return {}
        done: dict[int, CertifiedImage] = {}
        with open(self.path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("key") != self.key:
            return {}
        for line in lines[1:]:
            try:
                record = CertifiedImage(**json.loads(line))
            except (ValueError, TypeError):
                continue  # the line a kill tore, or an empty last line
            done[record.index] = record
        return done

    def start(self, done: dict[int, CertifiedImage]) -> None:
        """Rewrite the file as the header and the records kept (drops torn lines), then append from there."""
        lines = [json.dumps({"key": self.key, "version": 1})] + [json.dumps(asdict(r)) for r in done.values()]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def append(self, record: CertifiedImage) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def certify_dataset(smooth: Smooth, data: ImageDataset, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                    batch_size: int | BatchSize = 1000, seed: int = 0, ids: Sequence[int] | None = None,
                    device: torch.device | str = "cpu", progress: bool = True,
                    rank: int | None = None, world_size: int | None = None,
                    state_dir: str | Path | None = None) -> CertificationResult:
    """CERTIFY every image of data (the experimental protocol of Cohen et al. 2019).

    ``ids`` name the images (default 0..len-1; e.g. their index in the full test set) and seed
    their noise. With torch.distributed initialized (or rank/world_size given) this process
    certifies its shard (id position % world_size == rank); under torch.distributed the records
    of all ranks are gathered, so every rank returns the full, ordered result.

    With state_dir, every certified image is recorded there as it is done (CertificationState), and
    a run that was killed resumes with the images not done yet; each image's noise depends only on
    (seed, id), so the result is the one an uninterrupted run gives. The state is removed once the
    result is complete.
    """
    batch = as_batch_size(batch_size)  # one size for every image: halved once, it stays halved
    batch_size = batch.start  # the records' key: the size asked for
    ids = list(range(len(data))) if ids is None else [int(i) for i in ids]
    if len(ids) != len(data):
        raise AdvlabError(f"got {len(ids)} image ids for {len(data)} images")
    dist_rank, dist_size = distributed_rank_and_size()
    rank = dist_rank if rank is None else rank
    world_size = dist_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise AdvlabError(f"rank {rank} is outside 0..{world_size - 1}")
    mine = [pos for pos in range(len(data)) if pos % world_size == rank]
    records: list[CertifiedImage] = []
    state = None
    with contextlib.ExitStack() as stack:
        if state_dir is not None:
            key = certification_key(smooth, data, n0, n, alpha, batch_size, seed, ids, rank, world_size)
            state = stack.enter_context(CertificationState(state_dir, key))
            done = {i: r for i, r in state.load().items() if i in {ids[pos] for pos in mine}}
            state.start(done)
            if done:
                records = [done[ids[pos]] for pos in mine if ids[pos] in done]
                print(f"resuming certification: {len(records)} of {len(mine)} images already done "
                      f"(state in {state.path})", file=sys.stderr)
                mine = [pos for pos in mine if ids[pos] not in done]
        seconds_before = sum(r.seconds for r in records)
        start = time.perf_counter()
        bar = tqdm(mine, desc=f"certify (rank {rank})" if world_size > 1 else "certify", unit="img",
                   disable=not progress, leave=False)
        model = smooth.base_classifier
        # channels-last weights run small convolutions faster on CPUs; restored afterwards
        model.to(memory_format=torch.channels_last)
        try:
            for pos in bar:
                x, y = data[pos]
                began = time.perf_counter()
                prediction, radius = smooth.certify(x.to(device), n0, n, alpha, batch,
                                                    image_generator(seed, ids[pos], device))
                records.append(CertifiedImage(ids[pos], int(y), prediction, radius, prediction == int(y),
                                              time.perf_counter() - began))
                if state is not None:
                    state.append(records[-1])
                bar.set_postfix(correct=f"{sum(r.correct for r in records) / len(records):.3f}")
        finally:
            model.to(memory_format=torch.contiguous_format)
        seconds = seconds_before + time.perf_counter() - start
        if state is not None:
            state.clear()
    if dist_size > 1 and world_size == dist_size:
        records, seconds = gather_records(records, seconds)
    records.sort(key=lambda r: r.index)
    return CertificationResult(records, smooth.sigma, n0, n, alpha, seed, seconds, world_size)


def gather_records(records: list[CertifiedImage], seconds: float) -> tuple[list[CertifiedImage], float]:
    """All ranks' records (every rank gets them all) and the slowest rank's wall time."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, ([asdict(r) for r in records], seconds))
    merged = [CertifiedImage(**r) for part, _ in gathered for r in part]
    return merged, max(s for _, s in gathered)
