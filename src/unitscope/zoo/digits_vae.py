"""A variational autoencoder trained on the real digits: its decoder is the generator ``G: z → x`` for the
inverse-set sampler on the digits models (and the digits CNN's early layers are the encoder ``E``).

>>> vae = DigitsVAE(latent_dim=4)
>>> vae.decode(torch.zeros(3, 4)).shape
torch.Size([3, 1, 8, 8])

``digits_vae()`` trains it once (about 20 s on 2 CPU cores), caches the weights with ``zoo.cache.cached_state``
and returns a ``Trained`` whose ``info`` holds the held-out reconstruction error and ELBO.
``digits_generator()`` wraps the decoder as a :class:`~unitscope.synthesis.generators.DecoderGenerator` with codes
kept in a box of ±3 prior standard deviations.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..synthesis.generators import DecoderGenerator, LayerEncoder
from .cache import cached_state
from .digits import Trained, digits_cnn, digits_data

__all__ = ["DigitsVAE", "digits_vae", "digits_generator", "digits_encoder"]


class DigitsVAE(nn.Module):
    """MLP VAE on 8×8 digits in [0, 1]: 64 → hidden → hidden → (μ, log σ²) of ``latent_dim``; the decoder
    mirrors it and ends in a sigmoid (Bernoulli likelihood)."""

    def __init__(self, latent_dim: int = 8, hidden: int = 256):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 64),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, 8, 8)),
        )

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar


def _loss(model, x, beta: float = 1.0):
    recon, mu, logvar = model(x)
    rec = F.binary_cross_entropy(recon, x, reduction="sum") / len(x)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum() / len(x)
    return rec + beta * kl, rec, kl


def digits_vae(
    *, latent_dim: int = 8, epochs: int = 300, seed: int = 0, threads: int | None = 1, progress: bool | None = None
) -> Trained:
    """The digits VAE, trained on the training split of ``digits_data()`` (cached after the first call) on
    ``threads`` threads with deterministic kernels (the count is part of the cache key)."""
    recipe = dict(
        model="digits-vae",
        latent_dim=latent_dim,
        hidden=256,
        epochs=epochs,
        lr=1e-3,
        batch_size=64,
        seed=seed,
        split="stratified-0.2-seed0",
        version=1,
    )

    def train():
        from ..core.progress import bar, note
        from .cache import cache_dir

        if progress is not False:
            note(f"training the digits VAE once ({epochs} epochs), then cached in {cache_dir()}")
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = DigitsVAE(latent_dim, recipe["hidden"])
        tr, te = digits_data()
        opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
        model.train()
        for _ in bar(range(epochs), desc="training the digits VAE", unit="epoch", progress=progress):
            order = torch.randperm(len(tr), generator=g)
            for i in range(0, len(tr), recipe["batch_size"]):
                loss, _, _ = _loss(model, tr.x[order[i : i + recipe["batch_size"]]])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            mu, _ = model.encode(te.x)
            mse = float(((model.decode(mu) - te.x) ** 2).mean())
            elbo = -float(_loss(model, te.x)[0])
        return model.state_dict(), {"test_reconstruction_mse": mse, "test_elbo": elbo}

    state, info, cached = cached_state("digits-vae", recipe, train, threads=threads)
    with torch.random.fork_rng(devices=[]):  # the initial weights (replaced below) must not draw on the global RNG
        model = DigitsVAE(latent_dim, recipe["hidden"])
    model.load_state_dict(state)
    return Trained(model.eval(), info, cached)


def digits_generator(*, code_bound: float = 3.0, **kw) -> DecoderGenerator:
    """The digits VAE's decoder as ``G``: codes ``z ~ N(0, I)`` of ``latent_dim``, kept in ``[-3, 3]``."""
    vae = digits_vae(**kw).model
    return DecoderGenerator(vae.decoder, vae.latent_dim, code_bound=code_bound)


def digits_encoder(model: nn.Module | None = None, layer: str = "features.pool1") -> LayerEncoder:
    """``E`` for digits: the digits CNN's early layers (conv1, conv2, first max-pool: 64 × 4 × 4 features)."""
    return LayerEncoder(model if model is not None else digits_cnn().model, layer)
