"""Oracles: the only view a black-box attack has of a classifier.

``oracle.query(x)`` takes a float NCHW batch in [0, 1] and returns class probabilities (N, K) in
float64, or only the top labels (N,) for a labels-only oracle. Every image sent counts as one query
against the oracle's budget; a batch that would pass the budget is refused as a whole (nothing is
sent) with :class:`BudgetExhausted`, which the attacks catch to return their best result so far.

:class:`LocalOracle` wraps a model in this process; :class:`HttpOracle` talks to ``advlab serve``.
Both answer the same batch with the same numbers: the server runs :func:`model_answers` too, the
images travel as raw float32 bytes, and probabilities come back as JSON doubles (exact round trip).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import torch
from torch import nn

from advlab.errors import AdvlabError, check_images

DEFAULT_BATCH = 256


class BudgetExhausted(AdvlabError):  # noqa: N818 (the name says what happened; it is not a bug)
    """The oracle's query budget would be exceeded; nothing of the refused batch was answered."""


@torch.no_grad()
def model_answers(model: nn.Module, x: torch.Tensor, labels_only: bool = False,
                  batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """What an oracle built on model answers for x: float64 softmax probabilities, or top labels.

    The softmax is taken in float64 so that very confident answers keep their small probabilities
    (log p_y - log p_j then equals the logit margin, which score-based attacks need).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size].to(device)).double()
        outs.append(logits.argmax(1).cpu() if labels_only else logits.softmax(1).cpu())
    return torch.cat(outs)


class Oracle:
    """Black-box access to a classifier, counted in images queried against an optional budget.

    Subclasses set ``labels_only``, ``num_classes``, ``input_shape`` (C, H, W) and implement
    ``_answer(x)`` for a CPU float32 batch that has passed the checks.
    """

    labels_only: bool = False
    num_classes: int = 0
    input_shape: tuple[int, int, int] | None = None

    def __init__(self, budget: int | None = None) -> None:
        if budget is not None and (isinstance(budget, bool) or int(budget) != budget or budget < 1):
            raise AdvlabError(f"query budget must be a positive integer, got {budget!r}")
        self.budget = None if budget is None else int(budget)
        self.used = 0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.used

    def check_input(self, x: torch.Tensor, name: str = "queried images") -> None:
        check_images(x, name)
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise AdvlabError(f"{name} have shape {tuple(x.shape[1:])} per image but the oracle takes "
                              f"{tuple(self.input_shape)}")

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, K) float64 or labels (N,) int64 for the batch x, on x's device."""
        self.check_input(x)
        n = x.shape[0]
        if self.budget is not None and self.used + n > self.budget:
            raise BudgetExhausted(f"query budget of {self.budget} images exhausted ({self.used} used, "
                                  f"{n} more asked)")
        out = self._answer(x.detach().to("cpu", torch.float32))
        self.used += n
        return out.to(x.device)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top labels whatever the oracle returns (one query per image)."""
        out = self.query(x)
        return out if self.labels_only else out.argmax(1)

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LocalOracle(Oracle):
    """A model in this process behind probabilities (or labels only)."""

    def __init__(self, model: nn.Module, labels_only: bool = False, budget: int | None = None,
                 input_shape: tuple[int, int, int] | None = None, batch_size: int = DEFAULT_BATCH) -> None:
        super().__init__(budget)
        self.model = model.eval()
        self.labels_only = bool(labels_only)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.batch_size = batch_size
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.num_classes = last[-1].out_features if last else 0

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 0:  # no final Linear layer: learn the class count from one answer
            out = model_answers(self.model, x[:1], False, self.batch_size)
            self.num_classes = out.shape[1]
        return model_answers(self.model, x, self.labels_only, self.batch_size)


def encode_array(x: torch.Tensor) -> dict:
    """A float batch as the server's compact exact format: raw little-endian float32, base64."""
    array = np.ascontiguousarray(x.detach().cpu().numpy().astype("<f4"))
    return {"shape": list(array.shape), "dtype": "float32", "data": base64.b64encode(array.tobytes()).decode()}


class HttpOracle(Oracle):
    """The prediction API of ``advlab serve`` (POST /predict), queried in chunks of its max batch.

    Construction reads GET /health for the input shape, classes, mode and batch limit. A 429 from
    the server (its per-client budget) raises BudgetExhausted like the local budget does.
    """

    def __init__(self, url: str, token: str | None = None, budget: int | None = None, timeout: float = 60.0) -> None:
        import httpx

        super().__init__(budget)
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        info = self._request("GET", "/health")
        self.labels_only = bool(info["labels_only"])
        self.num_classes = int(info["num_classes"])
        self.classes = list(info.get("classes") or [])
        self.input_shape = tuple(info["input_shape"]) if info.get("input_shape") else None
        self.max_batch = int(info.get("max_batch") or DEFAULT_BATCH)

    def _request(self, method: str, path: str, **kwargs) -> dict:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdvlabError(f"cannot reach the oracle at {self.url} ({type(exc).__name__}: {exc}); "
                              "is `advlab serve` running there?") from None
        try:
            body = response.json()
        except (json.JSONDecodeError, ValueError):
            body = {"detail": response.text[:200]}
        if response.status_code == 429:
            raise BudgetExhausted(f"the server refused further queries: {body.get('detail')}")
        if response.status_code in (401, 403):
            raise AdvlabError(f"the oracle at {self.url} refused the token ({response.status_code}): "
                              f"{body.get('detail')}; pass the server's --token")
        if response.status_code >= 400:
            raise AdvlabError(f"the oracle at {self.url} answered {response.status_code}: {body.get('detail')}")
        return body

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.max_batch):
            chunk = x[start:start + self.max_batch]
            body = self._request("POST", "/predict", json={"array": encode_array(chunk)})
            if self.labels_only:
                outs.append(torch.tensor(body["labels"], dtype=torch.long))
            else:
                outs.append(torch.tensor(body["probabilities"], dtype=torch.float64))
        return torch.cat(outs)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpOracle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
