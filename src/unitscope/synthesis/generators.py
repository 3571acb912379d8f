"""Generators ``G: z → x`` and encoders ``E: x → h`` for the inverse-set sampler.

>>> import torch, torch.nn as nn
>>> g = DecoderGenerator(nn.Sequential(nn.Linear(3, 16), nn.Sigmoid()), latent_dim=3, code_bound=3.0)
>>> z = g.sample_codes(4, generator=torch.Generator().manual_seed(0))
>>> z.shape, g(z).shape, float(g.project(10 * z).abs().max()) <= 3.0
(torch.Size([4, 3]), torch.Size([4, 16]), True)
>>> fft = FFTImageGenerator((1, 8, 8))              # for image models without a generator
>>> fft.latent_dim, fft(fft.sample_codes(2)).shape
(80, torch.Size([2, 1, 8, 8]))

Any object with a ``latent_dim``, ``__call__(z) -> x`` (differentiable in ``z``) and
``sample_codes(n, generator=None) -> [n, latent_dim]`` is a :class:`Generator` — a GAN decoder, a VAE decoder,
an image parameterization. Optional extras the sampler uses when present: ``project(z)`` (keep codes in their
valid region, e.g. a box around the prior) and ``modules()`` (``nn.Module``\\s to freeze during sampling).

Encoders map inputs to features in which distances are measured: :class:`LayerEncoder` reads one layer of a
model (e.g. "the classifier's early block"), :func:`early_block` picks that layer for you, and
:class:`PixelEncoder` flattens the input.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..core.capture import Recorder
from ..core.errors import UnitscopeError
from ..core.inputs import in_model_dtype, model_device
from .params import FFT
from ..core.sites import resolve
from ..core.state import analysis_mode

__all__ = ["Generator", "DecoderGenerator", "FFTImageGenerator", "LayerEncoder", "PixelEncoder", "early_block"]


@runtime_checkable
class Generator(Protocol):
    """What the sampler needs from a generator: a code size, a differentiable map, a way to draw codes."""

    latent_dim: int

    def __call__(self, z: torch.Tensor) -> torch.Tensor: ...

    def sample_codes(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor: ...


class DecoderGenerator:
    """Wrap any decoder module (a GAN generator, a VAE decoder) as ``G``; codes from ``N(0, code_std² I)``.

    ``code_bound`` keeps codes in the box ``[-code_bound, code_bound]`` (``None``: unbounded), so samples stay
    where the decoder was trained. ``output_shape`` reshapes the decoder's flat output per example.
    """

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        *,
        code_std: float = 1.0,
        code_bound: float | None = 3.0,
        output_shape: tuple | None = None,
    ):
        self.decoder, self.latent_dim = decoder, int(latent_dim)
        self.code_std, self.code_bound = float(code_std), code_bound
        self.output_shape = tuple(output_shape) if output_shape is not None else None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder(z)
        return x.view(len(z), *self.output_shape) if self.output_shape else x

    def sample_codes(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator) * self.code_std
        return self.project(z)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.code_bound is None else z.clamp(-self.code_bound, self.code_bound)

    def modules(self) -> list[nn.Module]:
        return [self.decoder]


class FFTImageGenerator:
    """``params.FFT``'s parameterization as a generator: the code is a flattened Fourier spectrum (scaled by
    1/frequency, colour-decorrelated for RGB, squashed into ``value_range`` by a sigmoid), for image models that
    come without a generator. Codes are drawn from ``N(0, code_std²)`` and kept in ``[-code_bound, code_bound]``."""

    def __init__(
        self,
        shape: tuple,
        *,
        value_range=(0.0, 1.0),
        decay: float = 1.0,
        code_std: float = 0.5,
        code_bound: float | None = 3.0,
    ):
        c, h, w = shape
        self.shape, self.spectrum_shape = (c, h, w), (c, h, w // 2 + 1, 2)
        self.latent_dim = c * h * (w // 2 + 1) * 2
        self.code_std, self.code_bound = float(code_std), code_bound
        self._fft = FFT(1, self.shape, value_range=value_range, decay=decay)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self._fft.raw = z.reshape(len(z), *self.spectrum_shape)  # the FFT parameterization, fed our codes
        return self._fft()

    def sample_codes(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.project(torch.randn(n, self.latent_dim, generator=generator) * self.code_std)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.code_bound is None else z.clamp(-self.code_bound, self.code_bound)


class PixelEncoder:
    """``E(x)`` = the flattened input: distances in pixel space."""

    model = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class LayerEncoder:
    """``E(x)`` = one layer's output of ``model``, flattened per example (the forward pass stops there).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    >>> LayerEncoder(net, "1")(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 72])
    """

    def __init__(self, model: nn.Module, layer):
        self.model = model
        (self.site,) = resolve(model, [layer])
        self.layer = self.site.name

    def features(self, acts: dict) -> torch.Tensor:
        """The encoding, from a dict of recorded activations that holds this layer."""
        return acts[self.layer].flatten(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rec = Recorder([self.site], stop_when_done=True)
        with analysis_mode(self.model, freeze=False), rec.active():
            self.model(in_model_dtype(self.model, x.to(model_device(self.model, x.device))))
        return rec.parts[self.layer][0].flatten(1)


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)


def early_block(model: nn.Module, *, layer=None) -> LayerEncoder:
    """ "The model's early block" as ``E``: ``layer`` if given, else the first activation module (ReLU, SiLU, …)
    in ``named_modules()`` order, else the first leaf module.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU())
    >>> early_block(net).layer
    '1'
    """
    if layer is not None:
        return LayerEncoder(model, layer)
    named = [(n, m) for n, m in model.named_modules() if n]
    for name, m in named:
        if isinstance(m, _ACTIVATIONS):
            return LayerEncoder(model, name)
    leaves = [n for n, m in named if not list(m.children())]
    if not leaves:
        raise UnitscopeError("the model has no sub-modules to encode with", hint="pass layer=... or an encoder")
    return LayerEncoder(model, leaves[0])
