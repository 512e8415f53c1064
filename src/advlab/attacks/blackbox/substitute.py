"""Substitute training with Jacobian-based data augmentation (Papernot, McDaniel, Goodfellow, Jha,
Celik & Swami 2017, "Practical black-box attacks against machine learning", Algorithm 1).

1. A small seed set S_0 (held-out images) is labeled by the oracle.
2. For rho = 0..rounds: train the substitute F on S_rho with the oracle's labels; then (except after
   the last round) augment S_{rho+1} = S_rho u { clip(x + lambda * sign(J_F(x)[O(x)])) : x in S_rho }
   (their eq. 4) and label only the new points with the oracle. After `rounds` augmentations the
   oracle has answered |S_0| * 2^rounds queries.
3. Craft adversarial examples on F with a white-box attack (FGSM) and send them to the oracle: the
   transfer rate is the share the oracle misclassifies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.blackbox.oracle import Oracle
from advlab.errors import AdvlabError, check_images, check_range
from advlab.models import create_model


def jacobian_augmentation(substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float,
                          batch: int = 512) -> torch.Tensor:
    """x + lam * sign(d F_label(x) / dx) clipped to [0, 1], F the substitute's softmax (Papernot eq. 4)."""
    substitute.eval()
    out = []
    for lo in range(0, len(x), batch):
        xb = x[lo:lo + batch].detach().requires_grad_(True)
        probs = substitute(xb).softmax(1)
        chosen = probs.gather(1, labels[lo:lo + batch, None]).sum()
        (grad,) = torch.autograd.grad(chosen, xb)
        out.append((xb + lam * grad.sign()).clamp(0.0, 1.0).detach())
    return torch.cat(out)


def train_substitute(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                     generator: torch.Generator) -> nn.Module:
    """Adam on float images (the augmented points are not 8-bit, so the uint8 ImageDataset trainer
    does not fit them); Adam at 1e-3 as in the reference tutorial of the authors' group."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for lo in range(0, len(x), batch_size):
            batch = order[lo:lo + batch_size].to(x.device)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


class SubstituteTraining:
    """Papernot et al. 2017's procedure; their MNIST set-up is the default (150 seeds given by the
    caller, 6 rounds, lambda 0.1, a 200-200 MLP, FGSM eps 0.3)."""

    def __init__(self, architecture: str = "mlp", dataset: str = "mnist", rounds: int = 6, lam: float = 0.1,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 32, fgsm_eps: float = 0.3,
                 seed: int = 0) -> None:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise AdvlabError(f"rounds must be a non-negative integer, got {rounds!r}")
        self.architecture, self.dataset, self.rounds = architecture, dataset, rounds
        self.lam = check_range(lam, "lambda", 0.0, 1.0, lo_open=True)
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.fgsm_eps = check_range(fgsm_eps, "FGSM eps", 0.0, 1.0)
        self.seed = seed

    def train(self, oracle: Oracle, seeds: torch.Tensor, eval_x: torch.Tensor | None = None,
              eval_y: torch.Tensor | None = None, eval_oracle: Oracle | None = None,
              device: torch.device | str = "cpu", progress: bool = True) -> tuple[nn.Module, list[dict]]:
        """Train the substitute from oracle labels only; after each round, if eval data is given,
        record substitute accuracy (vs the true labels) and the FGSM transfer rate to eval_oracle."""
        check_images(seeds, "seed images")
        oracle.check_input(seeds, "seed images")
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        device = torch.device(device)
        c, h, w = seeds.shape[1:]
        used_before = oracle.used
        data_x = seeds.to(device)
        data_y = oracle.labels(data_x).to(device)
        history: list[dict] = []
        substitute = None
        for rho in tqdm(range(self.rounds + 1), desc="substitute rounds", disable=not progress, unit="round"):
            substitute = create_model(self.architecture, self.dataset, c, h, oracle.num_classes or 10).to(device)
            train_substitute(substitute, data_x, data_y, self.epochs, self.lr, self.batch_size, generator)
            for p in substitute.parameters():
                p.requires_grad_(False)
            record = {"round": rho, "oracle_queries": oracle.used - used_before, "training_set": len(data_x)}
            if eval_x is not None:
                record.update(self.evaluate(substitute, eval_x.to(device), eval_y.to(device), eval_oracle or oracle))
            history.append(record)
            if rho < self.rounds:
                new_x = jacobian_augmentation(substitute, data_x, data_y, self.lam)
                new_y = oracle.labels(new_x).to(device)
                data_x, data_y = torch.cat([data_x, new_x]), torch.cat([data_y, new_y])
        return substitute, history

    def evaluate(self, substitute: nn.Module, x: torch.Tensor, y: torch.Tensor, oracle: Oracle) -> dict:
        """Substitute accuracy, and the share of images the oracle gets right that FGSM on the
        substitute (labels: the substitute's own predictions) makes the oracle get wrong."""
        from advlab.attacks import FGSM

        with torch.no_grad():
            sub_pred = substitute(x).argmax(1)
        adv = FGSM(eps=self.fgsm_eps, norm="linf")(substitute, x, sub_pred).adv
        clean_pred = oracle.labels(x).to(y.device)
        adv_pred = oracle.labels(adv).to(y.device)
        ok = clean_pred == y
        return {"substitute_accuracy": float((sub_pred == y).float().mean()),
                "oracle_accuracy": float(ok.float().mean()),
                "transfer_rate": float(((adv_pred != y) & ok).sum() / max(int(ok.sum()), 1))}
