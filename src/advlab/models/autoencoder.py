"""Autoencoders: images in [0, 1] to reconstructions in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models.layers import Normalize


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder trained with squared reconstruction loss.

    encode(x) gives the latent code (the target of latent-space attacks, Tabacof et al. 2016);
    forward(x) = decode(encode(x)) gives the reconstruction.
    """

    def __init__(self, channels: int, size: int, num_classes: int, mean, std, latent: int = 32) -> None:
        super().__init__()
        if size % 4:
            raise ValueError("ConvAutoencoder needs an image side divisible by 4")
        self.side = size // 4
        self.encoder = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(channels, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * self.side * self.side, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 64 * self.side * self.side), nn.ReLU(),
            nn.Unflatten(1, (64, self.side, self.side)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VariationalAutoencoder(nn.Module):
    """A convolutional variational autoencoder (Kingma & Welling 2014), the target of Kos et al. 2017.

    encode(x) gives the posterior mean mu(x), the code latent-space attacks match; encode_stats(x)
    gives (mu, log sigma^2). forward(x) decodes a sample z = mu + sigma * noise in training mode and
    mu itself in eval mode, so an attacked model is deterministic.
    """

    def __init__(self, channels: int, size: int, num_classes: int, mean, std, latent: int = 16) -> None:
        super().__init__()
        if size % 4:
            raise ValueError("VariationalAutoencoder needs an image side divisible by 4")
        self.side = size // 4
        self.body = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(channels, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(64 * self.side * self.side, latent)
        self.log_var = nn.Linear(64 * self.side * self.side, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, 64 * self.side * self.side), nn.ReLU(),
            nn.Unflatten(1, (64, self.side, self.side)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1), nn.Sigmoid(),
        )

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.log_var(h).clamp(-10.0, 10.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.encode_stats(x)
        if not self.training:
            return self.decode(mu)
        return self.decode(mu + torch.randn_like(mu) * (0.5 * log_var).exp())
