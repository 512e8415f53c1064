"""Substitute training with Jacobian-based data augmentation (Papernot, McDaniel, Goodfellow, Jha,
Celik & Swami 2017, "Practical black-box attacks against machine learning", Algorithm 1), with the
periodic step size of their Sec. 6.2 and the reservoir sampling of Papernot, McDaniel & Goodfellow
2016 ("Transferability in machine learning", Sec. 4.1).

1. A small seed set S_0 (held-out images) is labeled by the oracle O.
2. For rho = 0..rounds: train the substitute F on S_rho with the oracle's labels only (from scratch);
   then, except after the last round, S_{rho+1} = S_rho u {clip(x + lambda_rho * sign(J_F(x)[O(x)]))}
   (their eq. 4, J_F(x)[O(x)] the row of F's Jacobian for the label the oracle gave x), and label
   only the new points with the oracle.
   - periodic step size (tau): lambda_rho = lambda * (-1)^floor(rho / tau), so the points step
     away from and back toward the decision boundary instead of drifting out of the data range;
   - reservoir sampling (sigma, kappa): from round sigma on, only kappa points drawn uniformly from
     S_rho are augmented, so the oracle answers kappa labels per round instead of |S_rho|.
   Without a reservoir, `rounds` augmentations cost |S_0| * 2^rounds labels.
3. Craft adversarial examples on F with a white-box attack (FGSM in the paper; any advlab attack
   here, e.g. MI-FGSM with input diversity on an ensemble of substitutes) and send them to the
   oracle: the transfer rate is the share of the images the oracle classified correctly that it
   misclassifies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.blackbox.oracle import BudgetExhausted, Oracle
from advlab.errors import AdvlabError, check_images, check_range
from advlab.models import create_model
from advlab.runtime import eval_mode

JACOBIAN_OUTPUTS = ("probs", "logits")
OPTIMIZERS = ("adam", "sgd")


def periodic_step(lam: float, rho: int, tau: int | None) -> float:
    """lambda_rho = lambda * (-1)^floor(rho / tau) (Papernot et al. 2017, Sec. 6.2); constant without tau."""
    if tau is None:
        return lam
    return lam * (-1) ** (rho // tau)


def jacobian_augmentation(substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float,
                          batch: int = 512, output: str = "probs") -> torch.Tensor:
    """clip(x + lam * sign(J_F(x)[label])) to [0, 1] (Papernot et al. 2017, eq. 4).

    output "probs": F is the substitute's softmax, as in the paper; "logits": the pre-softmax row
    (its sign stays defined where a saturated softmax has a gradient that rounds to zero). lam may
    be negative (the periodic step size)."""
    if output not in JACOBIAN_OUTPUTS:
        raise AdvlabError(f"jacobian output must be one of {', '.join(JACOBIAN_OUTPUTS)}, got {output!r}")
    out = []
    with eval_mode(substitute):
        for lo in range(0, len(x), batch):
            xb = x[lo:lo + batch].detach().requires_grad_(True)
            with torch.enable_grad():
                scores = substitute(xb)
                if output == "probs":
                    scores = scores.softmax(1)
                chosen = scores.gather(1, labels[lo:lo + batch, None].to(scores.device)).sum()
                (grad,) = torch.autograd.grad(chosen, xb)
            out.append((xb + lam * grad.sign()).clamp(0.0, 1.0).detach())
    return torch.cat(out)


def reservoir_sample(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k indices drawn uniformly without replacement from range(n) by reservoir sampling (Vitter's
    Algorithm R, the procedure Papernot et al. 2016 name): one pass, each item kept with
    probability k / n."""
    if k >= n:
        return torch.arange(n)
    reservoir = list(range(k))
    for i in range(k, n):
        j = int(torch.randint(0, i + 1, (1,), generator=generator))
        if j < k:
            reservoir[j] = i
    return torch.tensor(sorted(reservoir), dtype=torch.long)


def train_substitute(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                     generator: torch.Generator, optimizer: str = "adam", momentum: float = 0.9) -> nn.Module:
    """Train on float images (the augmented points are not 8-bit, so the uint8 ImageDataset trainer
    does not fit them). "sgd": the paper's SGD with momentum; "adam": Adam."""
    if optimizer not in OPTIMIZERS:
        raise AdvlabError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=momentum))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for lo in range(0, len(x), batch_size):
            batch = order[lo:lo + batch_size].to(x.device)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


class SubstituteEnsemble(nn.Module):
    """Mean of the members' logits: one model to attack when crafting on several substitutes (Liu et
    al. 2017, "Delving into transferable adversarial examples", ensemble in logit space)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise AdvlabError("an ensemble needs at least one substitute")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


class SubstituteTraining:
    """Papernot et al. 2017's procedure. Defaults: their MNIST set-up (seeds given by the caller, 6
    rounds, lambda 0.1, a 200-200 MLP, FGSM eps 0.3, 10 epochs per round). Their training is SGD with
    learning rate 1e-2 and momentum 0.9 (`optimizer="sgd", lr=1e-2`); the default here is Adam at 1e-3
    with batch 32, which fits 150 seeds much better at round 0 (see docs/blackbox.md)."""

    def __init__(self, architecture: str = "mlp", dataset: str = "mnist", rounds: int = 6, lam: float = 0.1,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 32, fgsm_eps: float = 0.3,
                 seed: int = 0, tau: int | None = None, reservoir_from: int | None = None,
                 reservoir_size: int = 400, optimizer: str = "adam", jacobian: str = "probs") -> None:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise AdvlabError(f"rounds must be a non-negative integer, got {rounds!r}")
        for name, value in (("tau", tau), ("reservoir_from", reservoir_from)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise AdvlabError(f"{name} must be a positive integer or None, got {value!r}")
        if isinstance(reservoir_size, bool) or not isinstance(reservoir_size, int) or reservoir_size < 1:
            raise AdvlabError(f"reservoir_size must be a positive integer, got {reservoir_size!r}")
        if optimizer not in OPTIMIZERS:
            raise AdvlabError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if jacobian not in JACOBIAN_OUTPUTS:
            raise AdvlabError(f"jacobian must be one of {', '.join(JACOBIAN_OUTPUTS)}, got {jacobian!r}")
        self.architecture, self.dataset, self.rounds = architecture, dataset, rounds
        self.lam = check_range(lam, "lambda", 0.0, 1.0, lo_open=True)
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.fgsm_eps = check_range(fgsm_eps, "FGSM eps", 0.0, 1.0)
        self.seed = seed
        self.tau, self.reservoir_from, self.reservoir_size = tau, reservoir_from, reservoir_size
        self.optimizer, self.jacobian = optimizer, jacobian

    def step_size(self, rho: int) -> float:
        return periodic_step(self.lam, rho, self.tau)

    def augment(self, substitute: nn.Module, data_x: torch.Tensor, data_y: torch.Tensor, rho: int,
                generator: torch.Generator) -> torch.Tensor:
        """The new points of round rho (to be labeled by the oracle): all of S_rho, or a reservoir."""
        if self.reservoir_from is not None and rho >= self.reservoir_from:
            keep = reservoir_sample(len(data_x), self.reservoir_size, generator).to(data_x.device)
            data_x, data_y = data_x[keep], data_y[keep]
        return jacobian_augmentation(substitute, data_x, data_y, self.step_size(rho), output=self.jacobian)

    def fit(self, architecture: str, data_x: torch.Tensor, data_y: torch.Tensor, num_classes: int,
            generator: torch.Generator) -> nn.Module:
        """A fresh substitute of `architecture` trained on (data_x, oracle labels data_y); no queries."""
        c, h, w = data_x.shape[1:]
        model = create_model(architecture, self.dataset, c, h, num_classes).to(data_x.device)
        train_substitute(model, data_x, data_y, self.epochs, self.lr, self.batch_size, generator, self.optimizer)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def train(self, oracle: Oracle, seeds: torch.Tensor, eval_x: torch.Tensor | None = None,
              eval_y: torch.Tensor | None = None, eval_oracle: Oracle | None = None,
              device: torch.device | str = "cpu", progress: bool = True) -> tuple[nn.Module, list[dict]]:
        """Train the substitute from oracle labels only; after each round, if eval data is given,
        record substitute accuracy (vs the true labels) and the FGSM transfer rate to eval_oracle.

        `oracle_queries` in the history counts only the labels the attacker asked for (evaluation
        queries are not the attacker's, even when eval_oracle is the same oracle). The labeled
        training set is kept in `self.training_set` (x, y) for further substitutes (no new queries).
        When the oracle's budget cannot label a whole round, only the first points that fit are
        labeled and the rounds stop there (`self.budget_exhausted`); the budget is never passed."""
        check_images(seeds, "seed images")
        oracle.check_input(seeds, "seed images")
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        device = torch.device(device)
        num_classes = oracle.num_classes or 10
        data_x = seeds.to(device)
        data_y = oracle.labels(data_x).to(device)
        labels_asked = len(data_x)
        self.budget_exhausted = False
        history: list[dict] = []
        substitute = None
        for rho in tqdm(range(self.rounds + 1), desc="substitute rounds", disable=not progress, unit="round"):
            substitute = self.fit(self.architecture, data_x, data_y, num_classes, generator)
            record = {"round": rho, "oracle_queries": labels_asked, "training_set": len(data_x),
                      "step": self.step_size(rho)}
            if eval_x is not None:
                record.update(self.evaluate(substitute, eval_x.to(device), eval_y.to(device), eval_oracle or oracle))
            history.append(record)
            if rho == self.rounds or self.budget_exhausted:
                break
            new_x = self.augment(substitute, data_x, data_y, rho, generator)
            if oracle.remaining is not None and oracle.remaining < len(new_x):
                new_x = new_x[:oracle.remaining]  # the budget labels only the first points
                self.budget_exhausted = True
            if len(new_x) == 0:
                break
            try:
                new_y = oracle.labels(new_x).to(device)
            except BudgetExhausted:  # a server's own budget (HTTP 429): keep what is labeled
                self.budget_exhausted = True
                break
            labels_asked += len(new_x)
            data_x, data_y = torch.cat([data_x, new_x]), torch.cat([data_y, new_y])
        self.training_set = (data_x, data_y)
        return substitute, history

    def evaluate(self, substitute: nn.Module, x: torch.Tensor, y: torch.Tensor, oracle: Oracle,
                 attack=None) -> dict:
        """Substitute accuracy, and the share of images the oracle gets right that the attack on the
        substitute (default: the paper's FGSM at fgsm_eps; labels: the substitute's own predictions,
        so no oracle query is spent on them) makes the oracle get wrong."""
        from advlab.attacks import FGSM

        attack = attack or FGSM(eps=self.fgsm_eps, norm="linf")
        with torch.no_grad():
            sub_pred = substitute(x).argmax(1)
        adv = attack(substitute, x, sub_pred).adv
        clean_pred = oracle.labels(x).to(y.device)
        adv_pred = oracle.labels(adv).to(y.device)
        ok = clean_pred == y
        return {"substitute_accuracy": float((sub_pred == y).float().mean()),
                "oracle_accuracy": float(ok.float().mean()),
                "transfer_rate": float(((adv_pred != y) & ok).sum() / max(int(ok.sum()), 1))}
