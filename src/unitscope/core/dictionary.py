"""Dictionaries (sparse autoencoders, transcoders' encoders): their features are units of a layer, with an error node.

A :class:`Dictionary` attached at a layer (``dictionaries={"layer": d}`` in :func:`unitscope.conductance` and its
comparators) rewrites the layer's output ``y`` as ``y = decode(f) + ε`` with ``f = encode(y)`` and the **error
node** ``ε = y − decode(encode(y))``: both ``f`` (``[N, ..., F]``) and ``ε`` (shaped like ``y``) are recorded, and the
tensor handed on to the rest of the model is ``decode(f) + ε``, which is ``y`` to rounding — the forward pass does
not change, so completeness holds over the features plus the error node.

>>> import torch
>>> d = Dictionary.from_weights(torch.eye(3), None, 2 * torch.eye(3), None, activation="relu")
>>> y = torch.tensor([[1.0, -2.0, 3.0]])
>>> f, err = d.split(y)
>>> f.tolist(), err.tolist(), torch.equal(d.join(f, err), y)
([[1.0, 0.0, 3.0]], [[-1.0, -2.0, -3.0]], True)

Formats read without running any code: SAELens's folders (``cfg.json`` + ``sae_weights.safetensors``,
:meth:`Dictionary.from_saelens`), plain state dicts of ``W_enc [d_in, F]``, ``b_enc [F]``, ``W_dec [F, d_in]``,
``b_dec [d_in]`` (a dict, a ``.safetensors`` file, or a ``torch.save`` file read with ``weights_only=True``:
:meth:`Dictionary.from_state_dict`), or any module with ``encode``/``decode`` (``Dictionary(module)``).
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UnitscopeError
from .state import analysis_mode

__all__ = ["Dictionary", "LinearDictionary", "as_dictionary", "dictionaries_mode", "ACTIVATIONS"]

#: What ``Dictionary.from_weights(..., activation=...)`` takes (``"topk:K"``: the ``K`` largest pre-activations)
ACTIVATIONS = ("relu", "topk:K", "jumprelu", "tanh-relu", "identity")

_SAELENS_CFG, _SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"


def _parse_activation(activation, k=None) -> tuple[str, int | None]:
    if activation is None:
        return "identity", None
    if not isinstance(activation, str):
        raise UnitscopeError(
            "activation must be a name", got=type(activation).__name__, hint=f"use one of {', '.join(ACTIVATIONS)}"
        )
    name = activation.strip().lower()
    if name in ("linear", "none"):
        name = "identity"
    if name.startswith("topk"):
        rest = name[4:].lstrip(":=_")
        k = int(rest) if rest.isdigit() else k
        if k is None or int(k) < 1:
            raise UnitscopeError(
                f"activation {activation!r} needs the number of features kept",
                activation=activation,
                hint="write activation='topk:K', e.g. 'topk:32'",
            )
        return "topk", int(k)
    if name in ("relu", "jumprelu", "tanh-relu", "identity"):
        return name, None
    raise UnitscopeError(f"unknown dictionary activation {activation!r}", hint=f"use one of {', '.join(ACTIVATIONS)}")


class LinearDictionary(nn.Module):
    """``f = act((y − b_dec·[b_dec_pre]) @ W_enc + b_enc)``, ``decode(f) = f @ W_dec + b_dec`` on the last dim.

    ``W_enc [d_in, F]``, ``b_enc [F]``, ``W_dec [F, d_in]``, ``b_dec [d_in]`` (SAELens's names and shapes);
    ``activation``: ``relu``, ``topk`` (the ``k`` largest pre-activations, through a ReLU), ``jumprelu``
    (``pre · [pre > threshold]``), ``tanh-relu`` or ``identity``. The weights are cast to the input's dtype and device
    on use (the module itself is not moved)."""

    def __init__(
        self, W_enc, b_enc, W_dec, b_dec, *, activation="relu", k=None, threshold=None, b_dec_pre: bool = False
    ):
        super().__init__()
        W_enc, W_dec = torch.as_tensor(W_enc), torch.as_tensor(W_dec)
        if W_enc.dim() != 2 or W_dec.dim() != 2:
            raise UnitscopeError(
                "W_enc and W_dec must be matrices",
                W_enc=tuple(W_enc.shape),
                W_dec=tuple(W_dec.shape),
                hint="W_enc is [d_in, F], W_dec is [F, d_in]",
            )
        d_in, n = W_enc.shape
        if tuple(W_dec.shape) != (n, d_in):
            hint = (
                "W_dec looks transposed: pass W_dec.T"
                if tuple(W_dec.shape) == (d_in, n)
                else "W_enc is [d_in, F] and W_dec is [F, d_in] (SAELens's layout; nn.Linear's weights are "
                "transposed: W_enc = encoder.weight.T, W_dec = decoder.weight.T)"
            )
            raise UnitscopeError(
                "the decoder does not fit the encoder", W_enc=tuple(W_enc.shape), W_dec=tuple(W_dec.shape), hint=hint
            )
        if not W_enc.is_floating_point():
            W_enc, W_dec = W_enc.float(), W_dec.float()
        b_enc = torch.zeros(n, dtype=W_enc.dtype) if b_enc is None else torch.as_tensor(b_enc)
        b_dec = torch.zeros(d_in, dtype=W_dec.dtype) if b_dec is None else torch.as_tensor(b_dec)
        for name, b, want in (("b_enc", b_enc, n), ("b_dec", b_dec, d_in)):
            if tuple(b.shape) != (want,):
                got: dict[str, Any] = {name: tuple(b.shape)}
                raise UnitscopeError(
                    f"{name} does not fit the weights", **got, expected=(want,), W_enc=tuple(W_enc.shape)
                )
        act, k = _parse_activation(activation, k)
        if act == "topk" and k > n:
            raise UnitscopeError(f"top-k keeps {k} features but the dictionary has {n}", k=k, features=n)

        def own(t, dtype):
            return nn.Parameter(t.detach().to(dtype).clone(memory_format=torch.contiguous_format))

        self.W_enc, self.b_enc = own(W_enc, W_enc.dtype), own(b_enc, W_enc.dtype)
        self.W_dec, self.b_dec = own(W_dec, W_dec.dtype), own(b_dec, W_dec.dtype)
        if act == "jumprelu":
            if threshold is None:
                raise UnitscopeError(
                    "a JumpReLU dictionary needs its threshold", hint="pass threshold= (a number or a tensor [F])"
                )
            t = torch.as_tensor(threshold, dtype=W_enc.dtype)
            if t.dim() and tuple(t.shape) != (n,):
                raise UnitscopeError("threshold does not fit the dictionary", threshold=tuple(t.shape), expected=(n,))
            self.threshold: nn.Parameter | None = nn.Parameter(t.expand(n).detach().clone())
        else:
            self.threshold = None
        self.activation, self.k, self.b_dec_pre = act, k, bool(b_dec_pre)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def n_features(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        like: dict[str, Any] = dict(dtype=y.dtype, device=y.device)
        if self.b_dec_pre:
            y = y - self.b_dec.to(**like)
        pre = y @ self.W_enc.to(**like) + self.b_enc.to(**like)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "topk":
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if self.activation == "jumprelu":
            assert self.threshold is not None  # set for every JumpReLU dictionary
            return pre * (pre > self.threshold.to(**like)).to(pre.dtype)
        if self.activation == "tanh-relu":
            return torch.relu(torch.tanh(pre))
        return pre

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        like = dict(dtype=f.dtype, device=f.device)
        return f @ self.W_dec.to(**like) + self.b_dec.to(**like)

    def forward(self, y):
        return self.decode(self.encode(y))

    def extra_repr(self) -> str:
        act = f"topk:{self.k}" if self.activation == "topk" else self.activation
        return f"d_in={self.d_in}, features={self.n_features}, activation={act!r}, b_dec_pre={self.b_dec_pre}"


class Dictionary(nn.Module):
    """A dictionary at a layer: ``encode(y) -> f`` and ``decode(f) -> ŷ``, acting on dim ``dim`` of the layer's output
    (the last: a transformer's residual stream, an MLP's hidden layer; ``dim=1`` for a conv layer's channels).

    Constructors: ``Dictionary(module)`` for any module with ``encode`` and ``decode`` (a SAELens ``SAE`` object
    included); :meth:`from_weights`; :meth:`from_saelens` (a folder); :meth:`from_state_dict` (a dict or a file);
    :meth:`load` (either, by what the path holds); :meth:`identity`. No file is unpickled: weights are read by
    ``safetensors`` or by ``torch.load(weights_only=True)``.

    :meth:`split` gives ``(f, ε)`` with the error node ``ε = y − decode(encode(y))``, :meth:`join` gives back
    ``decode(f) + ε``. Inside unitscope's calls the dictionary is in eval mode with its parameters frozen, and it is
    handed back as it was (training flags, ``requires_grad``, ``.grad``).

    Pass it as ``dictionaries={layer: dictionary}`` to :func:`unitscope.conductance`, :func:`unitscope.attribute`,
    :func:`unitscope.neuron_conductance`, :func:`unitscope.ablate`, :func:`unitscope.ablation_scores`,
    :func:`unitscope.scan` or :func:`unitscope.atlas`: the layer is read as the dictionary's ``F`` features and its
    error node (unit ``F``).

    Parameters
    ----------
    module : nn.Module
        A module with ``encode(y) -> f`` and ``decode(f) -> ŷ`` (a ``Dictionary`` is unwrapped to its module).
    dim : int, default -1
        The dim of the layer's output the dictionary reads (``-1``: the last; ``1`` for a conv layer's channels).
    name : str or None, default None
        A label for the user's information (:meth:`from_saelens` sets the folder's name).

    Raises
    ------
    UnitscopeError
        A module without ``encode`` and ``decode``, or that is not an ``nn.Module``; from the constructors, weights
        that do not fit each other, an unknown activation, a folder or file that is not a dictionary (or not safe to
        read); in use, a layer whose output does not fit the dictionary (not floating point, another width at
        ``dim``), or an ``encode`` that returns something else than a tensor.

    Examples
    --------
    >>> import torch, torch.nn as nn, unitscope as us
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> sae = us.Dictionary.from_weights(torch.randn(4, 16), torch.zeros(16), torch.randn(16, 4) / 4, torch.zeros(4))
    >>> s = us.conductance(net, torch.randn(2, 3), ["1"], dictionaries={"1": sae}, target=0)
    >>> features, error = s["1"]                   # [N, F] and the error node [N, D]
    >>> features.shape, error.shape, s.per_unit("1").shape   # per unit: the F features, then the error node
    (torch.Size([2, 16]), torch.Size([2, 4]), torch.Size([2, 17]))
    >>> total = s.per_unit("1").sum(1)             # features + error node: the whole of F(x) − F(x')
    >>> bool(((total - s.output_diff).abs() <= 1e-3 * s.output_diff.abs()).all())
    True
    """

    module: nn.Module

    def __init__(self, module: nn.Module, *, dim: int = -1, name: str | None = None):
        super().__init__()
        if isinstance(module, Dictionary):
            module = module.module
        if not (callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None))):
            raise UnitscopeError(
                f"a {type(module).__name__} is no dictionary: it has no encode() and decode()",
                hint="wrap a module with encode(y) -> f and decode(f) -> ŷ, or build one with "
                "Dictionary.from_weights / from_saelens / from_state_dict",
            )
        if not isinstance(module, nn.Module):
            raise UnitscopeError("a dictionary must be a torch.nn.Module", got=type(module).__name__)
        self.module = module
        self.dim = int(dim)
        self.name = name
        self.hook_name = None  # where it was trained (SAELens's cfg.json), for the user's information

    # ---------------------------------------------------------------------------------------------------------
    @property
    def n_features(self) -> int | None:
        """``F``, where the module says it (weights, ``cfg.d_sae``); ``None`` otherwise."""
        return _size(self.module, ("n_features", "d_sae", "dict_size"), "W_enc", 1)

    @property
    def d_in(self) -> int | None:
        """The width of the layer dim it reads, where the module says it."""
        return _size(self.module, ("d_in", "activation_dim"), "W_enc", 0)

    def _param(self):
        for p in self.module.parameters():
            return p
        return None

    def _call(self, fn, t: torch.Tensor) -> torch.Tensor:
        """``fn`` on the last dim of ``t`` in the module's own dtype and device (if it has parameters: a
        :class:`LinearDictionary` casts its weights instead), the result in ``t``'s."""
        p = None if isinstance(self.module, LinearDictionary) else self._param()
        dim = self.dim if self.dim >= 0 else t.dim() + self.dim
        moved = dim != t.dim() - 1
        u = t.movedim(dim, -1) if moved else t
        if p is not None and (p.dtype != u.dtype or p.device != u.device) and u.is_floating_point():
            out = fn(u.to(dtype=p.dtype, device=p.device)).to(dtype=u.dtype, device=u.device)
        else:
            out = fn(u)
        if not torch.is_tensor(out):
            raise UnitscopeError(
                f"the dictionary's {getattr(fn, '__name__', 'encode')}() returned a {type(out).__name__}, not a tensor",
                hint="encode/decode must return tensors",
            )
        return out.movedim(-1, dim) if moved else out

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        return self._call(self.module.encode, y)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self._call(self.module.decode, f)

    def forward(self, y):
        return self.decode(self.encode(y))

    def check(self, y: torch.Tensor, *, layer: str = "") -> None:
        """A :class:`UnitscopeError` if ``y`` (a layer's output) is not what the dictionary reads."""
        if not torch.is_tensor(y) or not y.is_floating_point():
            raise UnitscopeError(
                f"layer {layer!r} does not output a floating-point tensor, which a dictionary needs",
                layer=layer,
                hint="attach the dictionary at a layer whose output is a tensor",
            )
        if y.dim() < 2 or not -y.dim() < self.dim < y.dim() or self.dim == 0 or self.dim == -y.dim():
            raise UnitscopeError(
                f"the dictionary reads dim {self.dim} of layer {layer!r}, whose output is {list(y.shape)}",
                layer=layer,
                shape=tuple(y.shape),
                hint="dims count the batch as dim 0; Dictionary(..., dim=1) for a conv layer's channels",
            )
        d = self.d_in
        if d is not None and y.shape[self.dim] != d:
            where = f" (trained on {self.hook_name!r})" if self.hook_name else ""
            raise UnitscopeError(
                f"the dictionary reads vectors of {d} dims{where}, but dim {self.dim} of layer "
                f"{layer!r} has {y.shape[self.dim]}",
                layer=layer,
                shape=tuple(y.shape),
                hint="attach it at the layer it was trained on, or give Dictionary(..., dim=) the "
                "dim of the layer's output that it reads",
            )

    def split(self, y: torch.Tensor, *, layer: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, ε)``: the features ``encode(y)`` and the error node ``y − decode(f)``. ``f`` is a fresh node of the
        autograd graph (a copy), so that ∂F/∂f does not also run through ``ε``'s dependence on ``f``: with
        :meth:`join` downstream, ∂F/∂f = (∂ decode/∂f)ᵀ ∂F/∂y and ∂F/∂ε = ∂F/∂y."""
        self.check(y, layer=layer)
        f0 = self.encode(y)
        err = y - self.decode(f0).to(y.dtype)
        return f0.clone(), err

    def join(self, f: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        """``decode(f) + ε``: the layer's output again (to rounding) when ``(f, ε)`` came from :meth:`split`."""
        return self.decode(f).to(err.dtype) + err

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + (f", trained on {self.hook_name!r}" if self.hook_name else "")

    # constructors ----------------------------------------------------------------------------------------------
    @classmethod
    def from_weights(
        cls,
        W_enc,
        b_enc=None,
        W_dec=None,
        b_dec=None,
        *,
        b_dec_pre: bool = False,
        activation: str | None = "relu",
        threshold=None,
        k: int | None = None,
        dim: int = -1,
    ) -> "Dictionary":
        """A sparse autoencoder from its weights (SAELens's layout): ``W_enc [d_in, F]``, ``b_enc [F]``,
        ``W_dec [F, d_in]``, ``b_dec [d_in]`` (``None``: zeros). ``b_dec_pre``: subtract ``b_dec`` before encoding
        (SAELens's ``apply_b_dec_to_input``). ``activation``: ``"relu"``, ``"topk:K"``, ``"jumprelu"`` (with
        ``threshold``, a number or ``[F]``), ``"tanh-relu"`` or ``"identity"``/``None``.

        >>> d = Dictionary.from_weights(torch.ones(2, 3), None, torch.ones(3, 2), None, activation="topk:1")
        >>> d.encode(torch.tensor([[1.0, 2.0]])).tolist(), d.n_features
        ([[3.0, 0.0, 0.0]], 3)
        """
        if W_dec is None:
            raise UnitscopeError("from_weights needs W_dec (the decoder, [F, d_in])")
        return cls(
            LinearDictionary(
                W_enc, b_enc, W_dec, b_dec, activation=activation, k=k, threshold=threshold, b_dec_pre=b_dec_pre
            ),
            dim=dim,
        )

    @classmethod
    def identity(cls, d: int, *, dim: int = -1, dtype: torch.dtype = torch.float32) -> "Dictionary":
        """``W_enc = W_dec = I``, zero biases, no activation: its features are the layer's own neurons and its error
        node is zero — the layer's neuron conductance, exactly.

        >>> Dictionary.identity(3).split(torch.tensor([[1.0, -2.0, 0.5]]))[1].tolist()
        [[0.0, 0.0, 0.0]]
        """
        eye = torch.eye(int(d), dtype=dtype)
        return cls.from_weights(eye, None, eye, None, activation="identity", dim=dim)

    @classmethod
    def from_state_dict(
        cls,
        state,
        *,
        activation: str | None = "relu",
        threshold=None,
        b_dec_pre: bool = False,
        k: int | None = None,
        dim: int = -1,
    ) -> "Dictionary":
        """A sparse autoencoder from a plain state dict ``{W_enc [d_in, F], b_enc [F], W_dec [F, d_in], b_dec
        [d_in]}`` (``nn.Linear`` names also: ``encoder.weight [F, d_in]``, ``encoder.bias``, ``decoder.weight
        [d_in, F]``, ``decoder.bias``; a ``threshold`` entry makes it a JumpReLU): a dict, or a file — ``.safetensors``,
        or a ``torch.save`` file read with ``torch.load(weights_only=True)`` (nothing is unpickled beyond tensors)."""
        where = None
        if isinstance(state, (str, os.PathLike)):
            where = Path(state)
            state = _read_tensors(where)
        if not isinstance(state, dict):
            raise UnitscopeError("a state dict must be a dict of tensors", got=type(state).__name__, file=where)
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        got = _weights_of(state, where)
        if "threshold" in got and threshold is None:
            threshold = got.pop("threshold")
            activation = "jumprelu" if activation in ("relu", None) else activation
        got.pop("threshold", None)
        return cls.from_weights(
            got["W_enc"],
            got.get("b_enc"),
            got["W_dec"],
            got.get("b_dec"),
            b_dec_pre=b_dec_pre,
            activation=activation,
            threshold=threshold,
            k=k,
            dim=dim,
        )

    @classmethod
    def from_saelens(cls, folder, *, dim: int = -1) -> "Dictionary":
        """A SAELens folder: ``cfg.json`` (``architecture``: ``standard``/``relu``, ``topk`` with ``k``, ``jumprelu``;
        ``apply_b_dec_to_input``; ``d_in``, ``d_sae``) and ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``,
        ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``, and ``threshold`` for JumpReLU). Read with ``json`` and
        ``safetensors``: no code in the folder runs. ``hook_name`` from the config is kept as ``.hook_name``."""
        folder = Path(folder)
        cfg_path, w_path = folder / _SAELENS_CFG, folder / _SAELENS_WEIGHTS
        if not folder.is_dir():
            raise UnitscopeError(
                f"{str(folder)!r} is not a folder",
                hint="a SAELens SAE is a folder with cfg.json and sae_weights.safetensors (SAE.save_model writes one)",
            )
        for p in (cfg_path, w_path):
            if not p.is_file():
                have = sorted(q.name for q in folder.iterdir())[:8]
                raise UnitscopeError(
                    f"the SAELens folder {str(folder)!r} has no {p.name}",
                    folder=str(folder),
                    has=have,
                    hint="SAELens writes cfg.json and sae_weights.safetensors; a plain "
                    "state dict file loads with Dictionary.from_state_dict",
                )
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise UnitscopeError(f"{str(cfg_path)!r} is not readable JSON", error=str(e).splitlines()[0]) from None
        if not isinstance(cfg, dict):
            raise UnitscopeError(f"{str(cfg_path)!r} does not hold a JSON object", got=type(cfg).__name__)
        weights = _read_tensors(w_path)
        arch = str(cfg.get("architecture", "standard")).lower()
        act_name = str(cfg.get("activation_fn_str", cfg.get("activation_fn", "relu")) or "relu").lower()
        kwargs = cfg.get("activation_fn_kwargs") or {}
        norm = cfg.get("normalize_activations")
        if norm not in (None, "none", False):
            raise UnitscopeError(
                f"the SAE of {str(folder)!r} normalizes its inputs ({norm!r}), which its folder does "
                "not hold the scale of",
                file=str(cfg_path),
                normalize_activations=norm,
                hint="fold the normalization into the weights, or wrap the SAELens SAE object: Dictionary(sae)",
            )
        if cfg.get("finetuning_scaling_factor"):
            raise UnitscopeError(
                "a SAE with a finetuning scaling factor is not supported from its folder",
                file=str(cfg_path),
                hint="wrap the SAELens SAE object: Dictionary(sae)",
            )
        k = cfg.get("k", kwargs.get("k"))
        threshold = None
        if arch in ("standard", "relu"):
            if act_name not in ("relu", "topk", "tanh-relu"):
                raise UnitscopeError(
                    f"unsupported activation {act_name!r} in {str(cfg_path)!r}",
                    hint="relu, topk and tanh-relu are read; wrap the SAE object: Dictionary(sae)",
                )
            activation = act_name
        elif arch in ("topk", "batchtopk"):
            activation = "topk"  # BatchTopK at inference: per-token top-k with the same k
        elif arch == "jumprelu":
            activation = "jumprelu"
            if "threshold" in weights:
                threshold = weights["threshold"]
            elif "log_threshold" in weights:
                threshold = weights["log_threshold"].exp()
            else:
                raise UnitscopeError(
                    f"the JumpReLU SAE in {str(w_path)!r} has no threshold",
                    has=sorted(weights),
                    hint="SAELens saves 'threshold' with the weights",
                )
        else:
            raise UnitscopeError(
                f"SAELens architecture {arch!r} is not read from a folder",
                file=str(cfg_path),
                hint="standard (relu), topk and jumprelu are; for others wrap the SAE object: Dictionary(sae)",
            )
        got = _weights_of(weights, w_path)
        d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
        shape = tuple(got["W_enc"].shape)
        if (d_in is not None and shape[0] != d_in) or (d_sae is not None and shape[1] != d_sae):
            raise UnitscopeError(
                f"W_enc in {str(w_path)!r} is {list(shape)}, but cfg.json says d_in={d_in}, d_sae={d_sae}",
                hint="W_enc is [d_in, d_sae] in SAELens's layout",
            )
        out = cls.from_weights(
            got["W_enc"],
            got.get("b_enc"),
            got["W_dec"],
            got.get("b_dec"),
            b_dec_pre=bool(cfg.get("apply_b_dec_to_input", True)),
            activation=activation,
            threshold=threshold,
            k=k,
            dim=dim,
        )
        out.hook_name = cfg.get("hook_name")
        out.name = folder.name
        return out

    @classmethod
    def load(cls, path, **kw) -> "Dictionary":
        """A SAELens folder (:meth:`from_saelens`) or a state-dict file (:meth:`from_state_dict`), by what ``path``
        is; ``kw`` go to that constructor."""
        p = Path(path)
        if p.is_dir():
            return cls.from_saelens(p, **kw)
        if p.is_file():
            return cls.from_state_dict(p, **kw)
        raise UnitscopeError(
            f"no dictionary at {str(p)!r}",
            hint="a SAELens folder (cfg.json + sae_weights.safetensors) or a state-dict file (.safetensors, .pt)",
        )


def _size(module, attrs, weight, axis):
    for a in attrs:
        for obj in (module, getattr(module, "cfg", None)):
            v = getattr(obj, a, None)
            if isinstance(v, int):
                return v
    w = getattr(module, weight, None)
    if torch.is_tensor(w) and w.dim() == 2:
        return int(w.shape[axis])
    return None


def _read_tensors(path: Path) -> dict:
    """The tensors of a ``.safetensors`` file, or of a ``torch.save`` file read with ``weights_only=True``."""
    if not path.is_file():
        raise UnitscopeError(f"no file {str(path)!r}", hint="give the path of a .safetensors or .pt state dict")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UnitscopeError(
                "reading .safetensors needs the safetensors package", file=str(path), hint="pip install safetensors"
            ) from None
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:  # noqa: BLE001 — any decoding failure is the file's
            raise UnitscopeError(
                f"{str(path)!r} is not a readable safetensors file",
                error=str(e).splitlines()[0] if str(e) else type(e).__name__,
            ) from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UnitscopeError(
            f"{str(path)!r} is not a state dict of tensors (read with torch.load(weights_only=True), "
            "which runs no code)",
            error=(str(e).splitlines() or [type(e).__name__])[0][:200],
            hint="save the weights as a dict of tensors (torch.save(sae.state_dict(), path)) or as .safetensors",
        ) from None


def _weights_of(state: dict, where=None) -> dict:
    """``{W_enc, b_enc, W_dec, b_dec[, threshold]}`` in SAELens's layout from SAELens or ``nn.Linear`` names."""
    out = {}
    names = {
        "W_enc": ("W_enc", "encoder.weight"),
        "b_enc": ("b_enc", "encoder.bias"),
        "W_dec": ("W_dec", "decoder.weight"),
        "b_dec": ("b_dec", "decoder.bias"),
        "threshold": ("threshold",),
    }
    for key, options in names.items():
        for o in options:
            if o in state:
                t = state[o]
                if not torch.is_tensor(t):
                    raise UnitscopeError(
                        f"{o!r} is not a tensor", file=None if where is None else str(where), got=type(t).__name__
                    )
                out[key] = t.T if o in ("encoder.weight", "decoder.weight") else t
                break
    missing = [k for k in ("W_enc", "W_dec") if k not in out]
    if missing:
        raise UnitscopeError(
            f"the state dict has no {' and no '.join(missing)}",
            file=None if where is None else str(where),
            keys=sorted(state)[:10],
            hint="a dictionary's state dict holds W_enc [d_in, F], b_enc [F], W_dec [F, d_in], b_dec "
            "[d_in] (or nn.Linear's encoder.weight/bias, decoder.weight/bias)",
        )
    return out


def as_dictionary(value, layer: str = "") -> Dictionary:
    """A :class:`Dictionary` from what a user passed for a layer: a Dictionary, a module with ``encode``/``decode``,
    or a path (a SAELens folder or a state-dict file)."""
    if isinstance(value, Dictionary):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Dictionary.load(value)
    if isinstance(value, nn.Module):
        return Dictionary(value)
    raise UnitscopeError(
        f"the dictionary for layer {layer!r} is a {type(value).__name__}",
        layer=layer,
        hint="pass a unitscope.Dictionary, a module with encode()/decode(), or the path of a SAELens "
        "folder or state-dict file",
    )


@contextmanager
def dictionaries_mode(dictionaries):
    """:func:`unitscope.core.state.analysis_mode` for each dictionary: eval mode, frozen parameters, all put back."""
    with ExitStack() as stack:
        seen = set()
        for d in dictionaries:
            if d is not None and id(d) not in seen:
                seen.add(id(d))
                stack.enter_context(analysis_mode(d))
        yield


def attach(model: nn.Module, sites: list, dictionaries, *, use_input: bool = False) -> list:
    """``sites`` with each dictionary of ``dictionaries`` (``{layer: dictionary}``: names, ``NAME@K`` or module objects
    as keys; values as :func:`as_dictionary` takes them) set on its site (``Site.dictionary``). A layer with a
    dictionary that is not among ``sites`` is an error that names the scored layers."""
    if not dictionaries:
        return list(sites)
    if not isinstance(dictionaries, dict):
        raise UnitscopeError(
            "dictionaries must be a dict {layer: dictionary}",
            got=type(dictionaries).__name__,
            hint='e.g. dictionaries={"encoder.layer.3": us.Dictionary.from_saelens(folder)}',
        )
    from dataclasses import replace

    from .sites import resolve

    by_name = {}
    for key, value in dictionaries.items():
        (site,) = resolve(model, [key], use_input=use_input)
        by_name[site.name] = as_dictionary(value, site.name)
    names = [s.name for s in sites]
    extra = [n for n in by_name if n not in names]
    if extra:
        raise UnitscopeError(
            f"a dictionary is given for layer {extra[0]!r}, which is not among the layers scored",
            layer=extra[0],
            layers=names,
            hint=f"add {extra[0]!r} to layers=",
        )
    return [replace(s, dictionary=by_name[s.name]) if s.name in by_name else s for s in sites]
