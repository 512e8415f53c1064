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
