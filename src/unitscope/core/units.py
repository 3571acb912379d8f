"""The unit specification: which dims of a layer output index units, and how the other dims reduce.

>>> import torch
>>> t = torch.arange(24.0).view(1, 2, 3, 4)              # conv [N, C, H, W]: units are the channels
>>> UnitSpec.channels().per_unit(t, "sum").tolist()
[[66.0, 210.0]]
>>> x = torch.ones(2, 3, 4)                               # token-major [N, T, D]: the D neurons, over tokens
>>> mask = torch.tensor([[1, 1, 0], [1, 0, 0]])          # padding tokens are left out
>>> UnitSpec.tokens().per_unit(x, "sum", mask=mask).tolist()
[[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
>>> UnitSpec.heads(2).per_unit(x, "mean").shape             # attention heads: D = 2 heads × 2
torch.Size([2, 2])

One specification serves every entry point (``Scores.per_unit``/``top``/``to_frame``, ``scan``, ``ablate``,
``ablation_scores``, ``neuron_conductance``, the objectives of AM/IAM/RS and the inverse sets). Defaults by layout,
chosen by :func:`default_spec` from the module that produced the output:

* conv ``[N, C, H, W]`` (and ``[N, C, L]`` after a ``Conv1d``) → the ``C`` channels;
* token-major ``[N, T, D]`` (every layer of a transformer, ``Linear``/``LayerNorm``/``Embedding``/RNN outputs)
  → the ``D`` neurons over the tokens that the attention mask keeps;
* ``[N, D]`` → the ``D`` features.

The user can always say it: ``units="channels"``, ``"tokens"`` (the last dim, over tokens), ``"positions"`` (dim 1,
e.g. token positions), ``"heads"`` (the last dim split into attention heads; the count is read from the model),
``"elements"`` (every element), or a :class:`UnitSpec`. The reduction is a sum for attributions and a mean for
activations unless ``reduce`` says otherwise (``"sum"``, ``"mean"`` or ``"max"``).
An ``int`` unit is one unit of the specification (a channel, a neuron at every token, a head); a tuple is one
element of the per-example output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .errors import UnitscopeError

__all__ = ["UnitSpec", "resolve_units", "default_spec", "layout_of", "find_mask", "REDUCTIONS", "LAYOUTS"]

REDUCTIONS = ("sum", "mean", "max")
LAYOUTS = ("channels", "tokens", "positions", "heads", "elements")


@dataclass(frozen=True)
class UnitSpec:
    """``dims``: the dims of the full output ``[N, ...]`` that index units (negative counts from the end);
    ``reduce``: ``"sum"``, ``"mean"``, ``"max"`` or ``None`` (sum for attributions, mean for activations);
    ``token_dim``: the dim an attention mask ``[N, T]`` applies to; ``n_heads``: split the last dim into
    ``n_heads × d_head`` (units are heads); ``part``: which tensor of a tuple output; ``error_node``: the output is a
    dictionary's ``(features, error)`` pair (:mod:`unitscope.core.dictionary`) — the units are the features (by the
    rest of the spec) and, last, the error node (see :meth:`per_unit`)."""

    dims: tuple[int, ...] = (1,)
    reduce: str | None = None
    token_dim: int | None = None
    n_heads: int | None = None
    part: int | None = None
    layout: str = "custom"
    error_node: bool = False

    # named layouts ---------------------------------------------------------------------------------
    @classmethod
    def channels(cls, **kw) -> "UnitSpec":
        return cls(dims=(1,), layout="channels", **kw)

    @classmethod
    def tokens(cls, **kw) -> "UnitSpec":
        return cls(dims=(-1,), token_dim=1, layout="tokens", **kw)

    @classmethod
    def positions(cls, **kw) -> "UnitSpec":
        return cls(dims=(1,), layout="positions", **kw)

    @classmethod
    def heads(cls, n: int, **kw) -> "UnitSpec":
        return cls(dims=(-2,), token_dim=1, n_heads=int(n), layout="heads", **kw)

    @classmethod
    def elements(cls, **kw) -> "UnitSpec":
        return cls(dims=(), layout="elements", **kw)

    def __post_init__(self):
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise UnitscopeError(f"unknown reduction {self.reduce!r}", hint=f"use one of {', '.join(REDUCTIONS)}")
        if self.n_heads is not None and (not isinstance(self.n_heads, int) or self.n_heads < 1):
            raise UnitscopeError("heads must be a positive integer", heads=self.n_heads)

    # shapes ----------------------------------------------------------------------------------------
    def _view(self, t: torch.Tensor, layer: str = "") -> torch.Tensor:
        if self.n_heads is None:
            return t
        d = t.shape[-1]
        if t.dim() < 2 or d % self.n_heads:
            raise UnitscopeError(
                f"the last dim ({d}) of layer {layer!r} does not split into {self.n_heads} heads",
                layer=layer,
                shape=tuple(t.shape),
                hint="give the number of heads that the model uses, or units='tokens'",
            )
        return t.reshape(*t.shape[:-1], self.n_heads, d // self.n_heads)

    def _unit_dims(self, ndim: int, layer: str = "") -> tuple[int, ...]:
        if self.layout == "elements":
            return tuple(range(1, ndim))
        dims = []
        for d in self.dims:
            p = d + ndim if d < 0 else d
            if not 1 <= p < ndim:
                raise UnitscopeError(
                    f"unit dim {d} does not exist in an output with {ndim} dims (batch first)",
                    layer=layer,
                    dims=self.dims,
                    hint="dims count the batch as dim 0",
                )
            dims.append(p)
        return tuple(dims)

    def unit_shape(self, shape: tuple, layer: str = "") -> tuple[int, ...]:
        """The unit grid for a full output shape ``[N, ...]`` (heads split)."""
        shape = tuple(shape)
        if self.n_heads is not None:
            self._view(torch.empty((1,) + shape[1:], device="meta"), layer)
            shape = shape[:-1] + (self.n_heads, shape[-1] // self.n_heads)
        return tuple(shape[d] for d in self._unit_dims(len(shape), layer))

    def n_units(self, shape: tuple, layer: str = "") -> int:
        return math.prod(self.unit_shape(shape, layer)) if len(shape) > 1 else 1

    def how(self, method: str | None) -> str:
        """The reduction for a score: the spec's, else a mean for activations and a sum for attributions."""
        if self.reduce is not None:
            return self.reduce
        return "mean" if method == "activation" else "sum"

    # reduce ----------------------------------------------------------------------------------------
    def per_unit(
        self,
        t: torch.Tensor | tuple[torch.Tensor, ...],
        how: str = "sum",
        *,
        mask: torch.Tensor | None = None,
        layer: str = "",
    ) -> torch.Tensor:
        """``[N, U]``: the units of ``t`` (``[N, ...]``), the other dims reduced by ``how``; positions where
        ``mask`` (``[N, T]`` on ``token_dim``) is 0 are left out."""
        if how not in REDUCTIONS:
            raise UnitscopeError(f"unknown reduction {how!r}", hint=f"use one of {', '.join(REDUCTIONS)}")
        if self.error_node and isinstance(t, tuple) and self.part is None:
            return self._with_error_node(t, how, mask, layer)
        if isinstance(t, tuple):
            t = pick_part(t, self.part, layer)
        if t.dim() == 1:
            return t.unsqueeze(1)
        t = self._view(t, layer)
        n = t.shape[0]
        dims = self._unit_dims(t.dim(), layer)
        rest = [d for d in range(1, t.dim()) if d not in dims]
        keep = self._keep(t, rest, mask)
        perm = [0, *dims, *rest]
        u = math.prod(t.shape[d] for d in dims)
        flat = t.permute(perm).reshape(n, u, -1)
        if keep is None:
            if how == "sum":
                return flat.sum(2)
            return flat.mean(2) if how == "mean" else flat.amax(2)
        k = keep.expand(t.shape).permute(perm).reshape(n, u, -1)
        if how == "max":
            return flat.masked_fill(~k, -torch.inf).amax(2)
        s = (flat * k).sum(2)
        return s if how == "sum" else s / k.sum(2).clamp_min(1)

    def features(self) -> "UnitSpec":
        """The spec of a dictionary's features alone (part 0), without the error node."""
        return replace(self, error_node=False, part=0 if self.error_node else self.part)

    def _with_error_node(self, t: tuple, how: str, mask, layer: str) -> torch.Tensor:
        """``[N, F + 1]``: a dictionary's features ``t[0]`` by this spec, then its error node ``t[1]`` — per
        position the sum over the dims the dictionary reads (for attributions, ``how="sum"``: the node's total) or
        their norm ``‖ε‖`` (for activations: ``"mean"``, ``"max"``), reduced over positions like the features (the
        padding of ``mask`` left out)."""
        if len(t) != 2:
            raise UnitscopeError(
                f"layer {layer!r} is no dictionary's (features, error) pair", layer=layer, parts=len(t)
            )
        inner = replace(self, error_node=False, part=None)
        feats = inner.per_unit(t[0], how, mask=mask, layer=layer)
        err = t[1]
        if err.dim() == 1:
            return torch.cat([feats, err.unsqueeze(1).to(feats.dtype)], 1)
        v = inner._view(err, layer)
        dims = inner._unit_dims(v.dim(), layer)
        node = v.sum(dims, keepdim=True) if how == "sum" else v.pow(2).sum(dims, keepdim=True).sqrt()
        rest = [d for d in range(1, v.dim()) if d not in dims]
        keep = inner._keep(v, rest, mask)
        flat = node.reshape(node.shape[0], -1)
        if keep is None:
            red = flat.sum(1) if how == "sum" else flat.mean(1) if how == "mean" else flat.amax(1)
        else:
            k = keep.expand(node.shape).reshape(node.shape[0], -1)
            if how == "max":
                red = flat.masked_fill(~k, -torch.inf).amax(1)
            else:
                red = (flat * k).sum(1)
                red = red if how == "sum" else red / k.sum(1).clamp_min(1)
        return torch.cat([feats, red.unsqueeze(1).to(feats.dtype)], 1)

    def token_keep(self, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Booleans broadcastable to ``t`` (``[N, ...]``, heads not split): ``False`` at the padding tokens of
        ``mask`` (``[N, T]``, on ``token_dim``); ``None`` where the mask does not apply (no token dim, or a layer
        whose token count differs from the mask's)."""
        if mask is None or self.token_dim is None or t.dim() < 2:
            return None
        v = self._view(t)
        dims = self._unit_dims(v.dim())
        keep = self._keep(v, [d for d in range(1, v.dim()) if d not in dims], mask)
        if keep is None:
            return None
        td = self.token_dim + v.dim() if self.token_dim < 0 else self.token_dim
        return keep.reshape([t.shape[0]] + [t.shape[d] if d == td else 1 for d in range(1, t.dim())])

    def _keep(self, t, rest, mask):
        if mask is None or self.token_dim is None:
            return None
        td = self.token_dim + t.dim() if self.token_dim < 0 else self.token_dim
        if td not in rest or mask.dim() != 2 or mask.shape[0] != t.shape[0] or mask.shape[1] != t.shape[td]:
            return None  # the mask does not describe this layer's tokens (e.g. an extra [CLS] position)
        shape = [t.shape[0]] + [t.shape[d] if d == td else 1 for d in range(1, t.dim())]
        return mask.to(device=t.device).bool().view(shape)

    # masks over one example's output ----------------------------------------------------------------
    def unit_masks(self, units, shape: tuple, layer: str = "") -> torch.Tensor:
        """``[U, *shape]`` booleans over one example's output (``shape`` without the batch): one mask per unit.
        An ``int`` is a unit of the spec (all its positions); a tuple is one element."""
        if isinstance(units, (int, tuple)) or torch.is_tensor(units) and units.dim() == 0:
            units = [units]
        shape = tuple(shape)
        full = (1,) + shape
        grid = self.unit_shape(full, layer) if shape else ()
        view_shape = shape if self.n_heads is None else shape[:-1] + (self.n_heads, shape[-1] // self.n_heads)
        dims = self._unit_dims(len(view_shape) + 1, layer)
        masks = torch.zeros((len(units), *view_shape), dtype=torch.bool)
        n_units = math.prod(grid) if grid else 1
        for k, u in enumerate(units):
            if torch.is_tensor(u):
                u = int(u)
            if isinstance(u, bool) or not isinstance(u, (int, tuple)):
                raise UnitscopeError(
                    "a unit is an int (a unit of the layer's layout) or a tuple (one element)", layer=layer, unit=u
                )
            if isinstance(u, int):
                if not shape or not 0 <= u < n_units:
                    word = {"channels": "channel", "tokens": "neuron", "heads": "head"}.get(self.layout, "unit")
                    raise UnitscopeError(
                        f"{word} {u} is out of range for layer {layer!r}",
                        layer=layer,
                        unit_shape=shape,
                        units=self.layout,
                        hint=f"its {self.layout} are 0 … {max(n_units - 1, 0)}",
                    )
                index: list[int | slice] = [slice(None)] * len(view_shape)
                for d, i in zip(dims, _unravel(u, grid)):
                    index[d - 1] = i
                where = (k, *index)
                masks[where] = True
            else:
                if len(u) != len(shape) or any(not 0 <= i < s for i, s in zip(u, shape)):
                    raise UnitscopeError(f"unit {u} is outside layer {layer!r}", layer=layer, unit_shape=shape)
                m = masks[k].view(shape)
                m[u] = True
        return masks.reshape(len(units), *shape)


def _unravel(i: int, grid: tuple) -> list[int]:
    out = []
    for s in reversed(grid):
        out.append(i % s)
        i //= s
    return out[::-1]


def pick_part(value: torch.Tensor | tuple[torch.Tensor, ...], part: int | None, layer: str = "") -> torch.Tensor:
    """One tensor of a tuple output (``part``; default the first)."""
    if not isinstance(value, tuple):
        return value
    i = 0 if part is None else part
    if not -len(value) <= i < len(value):
        raise UnitscopeError(
            f"layer {layer!r} has {len(value)} output parts; part {part} does not exist",
            layer=layer,
            hint=f"parts are 0 … {len(value) - 1}",
        )
    return value[i]


# ----------------------------------------------------------------------------------------------------
# layouts of modules


def _types(*names):
    out = []
    for n in names:
        obj = nn
        for a in n.split("."):
            obj = getattr(obj, a, None)
            if obj is None:
                break
        if obj is not None:
            out.append(obj)
    return tuple(out)


_CHANNEL_TYPES = _types(
    "modules.conv._ConvNd",
    "modules.batchnorm._BatchNorm",
    "modules.instancenorm._InstanceNorm",
    "GroupNorm",
    "modules.pooling._MaxPoolNd",
    "modules.pooling._AvgPoolNd",
    "modules.pooling._AdaptiveAvgPoolNd",
    "modules.pooling._AdaptiveMaxPoolNd",
    "LocalResponseNorm",
    "Dropout2d",
    "Dropout3d",
)
_TOKEN_TYPES = _types(
    "Linear",
    "Bilinear",
    "Embedding",
    "LayerNorm",
    "RMSNorm",
    "modules.rnn.RNNBase",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
)
_TOKEN_NAMES = (
    "Conv1D",
    "RMSNorm",
    "LayerNorm",
    "Attention",
    "Embedding",
    "Embeddings",
    "PatchEmbed",
    "Block",
    "DecoderLayer",
    "EncoderLayer",
    "MLP",
    "Mlp",
)


def _own_layout(m: nn.Module) -> str | None:
    if isinstance(m, _CHANNEL_TYPES):
        return "channels"
    if isinstance(m, _TOKEN_TYPES):
        return "tokens"
    name = type(m).__name__
    if any(name.endswith(s) for s in _TOKEN_NAMES):
        return "tokens"
    return None


def _is_transformer(model: nn.Module) -> bool:
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, _types("MultiheadAttention")) or "Attention" in name or "SelfAttn" in name:
            return True
    return False


def layout_of(model: nn.Module | None, name: str, module: nn.Module) -> str:
    """``"channels"`` or ``"tokens"`` for a layer whose per-example output has two dims (``[C, L]`` or ``[T, D]``):
    the module's own type, else the model's kind (a transformer is token-major throughout), else the nearest
    module before it that has a layout, else its last sub-module that has one; channels when nothing says."""
    own = _own_layout(module)
    if own is not None:
        return own
    if model is None:
        return "channels"
    if _is_transformer(model):
        return "tokens"
    modules = dict(model.named_modules())
    path = name.split("@")[0].split(".") if name else []
    for depth in range(len(path), 0, -1):
        parent = modules.get(".".join(path[: depth - 1]), None) if depth > 1 else model
        if parent is None:
            continue
        children = [n for n, _ in parent.named_children()]
        if path[depth - 1] not in children:
            continue
        before = children[: children.index(path[depth - 1])]
        for child in reversed(before):
            for m in reversed(list(getattr(parent, child).modules())):
                got = _own_layout(m)
                if got is not None:
                    return got
    for m in reversed(list(module.modules())[1:]):
        got = _own_layout(m)
        if got is not None:
            return got
    return "channels"


def _find_heads(model: nn.Module | None, name: str, module: nn.Module) -> int | None:
    keys = ("num_heads", "n_head", "num_attention_heads", "n_heads", "heads")
    chain = [module]
    if model is not None:
        modules = dict(model.named_modules())
        path = name.split("@")[0].split(".")
        chain += [modules[".".join(path[:d])] for d in range(len(path) - 1, 0, -1) if ".".join(path[:d]) in modules]
        chain.append(model)
    for m in chain:
        for obj in (m, getattr(m, "config", None)):
            for k in keys:
                v = getattr(obj, k, None)
                if isinstance(v, int) and v > 0:
                    return v
    return None


def _feature_size(m: nn.Module) -> int | None:
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.LayerNorm) and m.normalized_shape:
        return m.normalized_shape[-1]
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    return None


def _channels_last(module: nn.Module, shape: tuple) -> bool:
    """A 4-D output ``[N, H, W, C]``: the module's last layer with a feature size (a ``Linear``, ``LayerNorm`` or
    convolution) has the output's last dim as its size, not its dim 1 (or is a LayerNorm of that size) — a Swin stage
    or patch embedding, which permute to channels-last; a ConvNeXt block, which permutes back to ``[N, C, H, W]``, or
    any CNN, is not."""
    for m in reversed(list(module.modules())):
        size = _feature_size(m)
        if size is not None:  # a LayerNorm that ends the module normalized the output's last dim: its features
            return size == shape[-1] and (size != shape[1] or isinstance(m, nn.LayerNorm))
    return False


def default_spec(model: nn.Module | None, name: str, module: nn.Module | None, shape: tuple) -> UnitSpec:
    """The spec a layer gets when the user names none (see the module docstring)."""
    nd = len(shape)
    if nd == 3 and module is not None and layout_of(model, name, module) == "tokens":
        return UnitSpec.tokens()
    if nd == 4 and module is not None and _channels_last(module, shape):
        return UnitSpec(dims=(-1,), layout="channels_last")  # [N, H, W, C]: the C channels, over positions
    return UnitSpec.channels()


def resolve_units(
    units, *, model: nn.Module | None = None, name: str = "", module: nn.Module | None = None, shape: tuple = ()
) -> UnitSpec:
    """A :class:`UnitSpec` from what a user wrote: ``None``/``"auto"``, a layout name, a spec, or a
    ``{layer: ...}`` dict (looked up by ``name``)."""
    if isinstance(units, dict):
        units = units.get(name, units.get(name.split("@")[0]))
    if units is None or units == "auto":
        return default_spec(model, name, module, shape)
    if isinstance(units, UnitSpec):
        return units
    if isinstance(units, str):
        if units == "channels":
            return UnitSpec.channels()
        if units in ("tokens", "neurons"):
            return UnitSpec.tokens()
        if units == "positions":
            return UnitSpec.positions()
        if units == "elements":
            return UnitSpec.elements()
        if units == "heads":
            h = _find_heads(model, name, module) if module is not None else None
            if h is None:
                raise UnitscopeError(
                    f"cannot tell how many attention heads layer {name!r} has",
                    layer=name,
                    hint="pass units=UnitSpec.heads(N)",
                )
            return UnitSpec.heads(h)
    raise UnitscopeError(
        f"unknown units {units!r}", layer=name, hint=f"use one of {', '.join(LAYOUTS)}, 'auto', or a unitscope UnitSpec"
    )


def find_mask(mask, additional_forward_args, inputs=None) -> torch.Tensor | None:
    """The attention mask ``[N, T]``: ``mask`` if given, else ``attention_mask`` of a dict of forward arguments,
    else the first integer/boolean ``[N, T]`` tensor among the additional forward arguments when the inputs
    are token ids of that shape."""
    if mask is not None:
        m = torch.as_tensor(mask)
        if m.dim() != 2:
            raise UnitscopeError("mask must be [N, T] (1 = a real token, 0 = padding)", shape=tuple(m.shape))
        return m.detach().cpu()
    extra = additional_forward_args
    if isinstance(extra, dict):
        given = extra.get("attention_mask")
        return None if given is None else given.detach().cpu()
    if extra is None:
        return None
    extra = extra if isinstance(extra, (tuple, list)) else (extra,)
    x = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    for a in extra:
        if (
            torch.is_tensor(a)
            and a.dim() == 2
            and not a.is_floating_point()
            and torch.is_tensor(x)
            and not x.is_floating_point()
            and tuple(a.shape) == tuple(x.shape[:2])
        ):
            return a.detach().cpu()
    return None


def with_part(spec: UnitSpec, part) -> UnitSpec:
    return spec if part is None else replace(spec, part=part)


def layer_specs(model: nn.Module | None, sites, values: dict, units=None) -> dict:
    """``{site name: UnitSpec}`` for the recorded ``values`` (``{name: tensor or tuple}``) of ``sites``."""
    out = {}
    for s in sites:
        v = values.get(s.name)
        if v is None:
            continue
        spec_units = units.get(s.name, units.get(s.name.split("@")[0])) if isinstance(units, dict) else units
        part = spec_units.part if isinstance(spec_units, UnitSpec) else None
        t = pick_part(v, part, s.name) if isinstance(v, tuple) else v
        sp = resolve_units(spec_units, model=model, name=s.name, module=s.module, shape=tuple(t.shape))
        if getattr(s, "dictionary", None) is not None and isinstance(v, tuple) and part is None:
            sp = replace(sp, error_node=True)  # a dictionary's features, then its error node
        out[s.name] = sp
    return out
