"""Randomized smoothing: PREDICT and CERTIFY of Cohen, Rosenfeld and Kolter (ICML 2019).

The smoothed classifier is g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), with
sigma on the [0, 1] pixel scale (the base model normalizes its own input; noisy samples are not
clipped). Theorem 1 of the paper: if the top class has probability p_A >= p_A_lower > 1/2, g is
constant within the L2 ball of radius sigma * Phi^-1(p_A_lower). ``Smooth`` mirrors the paper's
pseudocode (PREDICT, CERTIFY): counts of the base model's argmax over batches of noisy copies, a
one-sided Clopper-Pearson lower bound for CERTIFY, a two-sided binomial test for PREDICT.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from advlab.errors import AdvlabError, check_images, check_range
from advlab.runtime import BatchSize, as_batch_size, eval_mode, full_precision, largest_batch

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion:
    Beta^-1(alpha; k, n - k + 1), and 0 when k = 0 (Cohen et al. 2019, LOWERCONFBOUND)."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """The L2 radius of Theorem 1 with p_B = 1 - p_A: sigma * Phi^-1(p_A_lower)."""
    return float(sigma * norm.ppf(p_lower))


def radius_ceiling(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: all n agree, so p_lower = alpha^(1/n)."""
    return certified_radius(alpha ** (1.0 / n), sigma)


class Smooth:
    """The smoothed version g of a base classifier f (Cohen et al. 2019).

    ``base_classifier`` maps images in [0, 1] (N, C, H, W) to logits; it is used in eval mode.
    ``predict`` and ``certify`` take one image (C, H, W) and an optional ``torch.Generator`` (on
    the model's device) that makes the noise, hence the answer, reproducible.
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float) -> None:
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.sigma = check_range(sigma, "sigma", 0.0, 10.0, lo_open=True)
        if self.num_classes < 2:
            raise AdvlabError(f"num_classes must be at least 2, got {num_classes}")

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | BatchSize,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY: guess the top class from n0 samples, bound its probability from n fresh ones.

        Returns (class, radius), or (ABSTAIN, 0.0) when the lower bound is below 1/2. The n0
        selection samples are never reused for estimation (that would bias the bound).
        """
        self._check_budget(n0, "n0")
        self._check_budget(n, "n")
        alpha = check_range(alpha, "alpha", 0.0, 0.5, lo_open=True)
        counts0 = self.sample_counts(x, n0, batch_size, generator)
        c_a = int(counts0.argmax())
        counts = self.sample_counts(x, n, batch_size, generator)
        p_lower = clopper_pearson_lower(int(counts[c_a]), n, alpha)
        if p_lower < 0.5:
            return ABSTAIN, 0.0
        return c_a, certified_radius(p_lower, self.sigma)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | BatchSize,
                generator: torch.Generator | None = None) -> int:
        """PREDICT: the top class if a two-sided binomial test of n_A against n_B at p = 1/2 rejects
        at level alpha, else ABSTAIN (wrong with probability at most alpha, Proposition 1)."""
        self._check_budget(n, "n")
        alpha = check_range(alpha, "alpha", 0.0, 1.0, lo_open=True)
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = np.argsort(counts)[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int | BatchSize,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """How often f(x + delta) picks each class over num noise draws (SAMPLEUNDERNOISE). A batch of
        noisy copies that runs out of memory is drawn again at half the size (advlab.runtime.BatchSize)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AdvlabError(f"Smooth takes one image shaped (C, H, W), got {shape}; "
                              "use certify_dataset for a data set")
        check_images(x.unsqueeze(0), "image")
        if int(batch_size) < 1:
            raise AdvlabError(f"batch_size must be positive, got {int(batch_size)}")
        batch = as_batch_size(batch_size)
        model = self.base_classifier
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        # channels-last batches run convolutions faster on CPUs (same numbers)
        noise = torch.empty((min(batch.size, num), *x.shape), device=x.device, dtype=x.dtype,
                            memory_format=torch.channels_last)

        def one(rows: slice) -> None:
            size = rows.stop - rows.start
            # a batch that runs out of memory gives its draws back: the retry starts where it started
            before = generator.get_state() if generator is not None else None
            noisy = noise[:size].normal_(0.0, self.sigma, generator=generator).add_(x)
            try:
                logits = model(noisy)
            except BaseException:
                if before is not None:
                    generator.set_state(before)
                raise
            # the decision in float32 (bf16 logits would tie more often); counts in int64
            counts.add_(torch.bincount(logits.float().argmax(1), minlength=self.num_classes)[: self.num_classes])

        with eval_mode(model), torch.inference_mode():
            batch.map(one, num)
        return counts.cpu().numpy()

    def noise_probabilities(self, x: torch.Tensor, num: int, generator: torch.Generator | None = None,
                            ) -> torch.Tensor:
        """Differentiable Monte-Carlo estimate of E_delta[softmax f(x + delta)] for a batch x (N, C, H, W):
        the soft smoothed classifier that SmoothAdv (Salman et al. 2019) attacks."""
        n = x.shape[0]
        delta = torch.randn((num, *x.shape), device=x.device, dtype=x.dtype, generator=generator) * self.sigma
        logits = self.base_classifier((x.unsqueeze(0) + delta).reshape(num * n, *x.shape[1:]))
        return logits.softmax(1).reshape(num, n, -1).mean(0)

    @staticmethod
    def _check_budget(value: int, name: str) -> None:
        if int(value) != value or value < 1:
            raise AdvlabError(f"{name} (number of noise samples) must be a positive integer, got {value}")


CPU_BATCH = 1000  # noisy copies per pass on a CPU: larger batches gain nothing there


def noise_batch_size(model: nn.Module, image_shape: tuple[int, ...], device: torch.device, ceiling: int = 100_000,
                     share: float = 0.5) -> int:
    """Noisy copies per forward pass that fill the device: on a GPU, the largest power-of-two batch
    (at most ceiling) whose forward pass fits in `share` of the free memory, found by trying it (halving
    on out-of-memory); on a CPU, 1000. Certification's cost is its forward passes, and a GPU runs a
    small model at full speed only on batches of thousands of images."""
    if device.type != "cuda":
        return min(CPU_BATCH, ceiling)
    free, _ = torch.cuda.mem_get_info(device)
    per_image = 4 * int(np.prod(image_shape))
    start = 1 << max(int(min(ceiling, share * free / (per_image * 8))).bit_length() - 1, 0)

    def trial(size: int) -> None:
        with torch.inference_mode(), full_precision(device):
            model(torch.zeros((size, *image_shape), device=device).contiguous(memory_format=torch.channels_last))
        torch.cuda.synchronize(device)

    try:
        with eval_mode(model):
            size, _ = largest_batch(trial, start)
    finally:
        torch.cuda.empty_cache()
    return size

