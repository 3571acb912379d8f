"""The path engine: forward and backward passes over points of the straight path, shared by every layer.

One call of :func:`evaluate` runs the model once on a batch of path rows and returns, for every site,
its values and ∂F/∂(values) from a single ``torch.autograd.grad`` call. :func:`integrate` streams the
nodes of a fixed rule through it in chunks and accumulates the integrals (``adaptive.py`` places nodes
where the per-interval completeness gap says they are needed).

Conductance on the layer's own path (Eq. 3 of Dhamdhere et al.) is estimated from consecutive nodes
``α_k < α_{k+1}`` as

* ``trapezoid`` (default): ``Σ_k ½(∂F/∂y(α_k) + ∂F/∂y(α_{k+1})) · (y(α_{k+1}) − y(α_k))`` — second order;
  its per-interval error, summed over a layer's units, is the interval's completeness gap
  ``ΔF_k − Σ_units ½(g_k + g_{k+1}) Δy_k``, which the adaptive rule drives down;
* ``left`` (Captum's ``LayerConductance``): ``Σ_k ∂F/∂y(α_k) · (y(α_{k+1}) − y(α_k))`` — first order.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn

from ..core.capture import Recorder
from ..core.errors import UnitscopeError
from ..core.inputs import Batch, Target, main_output
from ..core.progress import bar as progress_bar
from ..core.sites import Site
from ..core.state import autograd_on
from .estimates import ERROR_FACTOR, combine, combine_units, reduce_units, rounding
from .path_tangents import evaluate_without_joint_forward_mode, missing_forward_derivative
from .paths import derivative_matrix
from .tiles import joined, tiles

__all__ = [
    "Evaluation",
    "evaluate",
    "integrate",
    "PathSums",
    "autograd_on",
    "forward_mode_kernels",
    "work_dtype",
    "off_the_path",
    "outputs_at_x",
]


def off_the_path(layer: str) -> UnitscopeError:
    """The error for a layer the target does not depend on through autograd (no ∂F/∂y to be had)."""
    return UnitscopeError(
        f"the target does not depend on layer {layer!r} through autograd, so ∂F/∂y cannot be had",
        layer=layer,
        hint="the layer is off the path to the output, or the model (or the target "
        "callable) detaches it; pick a layer the output is computed from",
    )


@contextmanager
def forward_mode_kernels():
    """For the block, attention through the math kernel of ``scaled_dot_product_attention``: the fused CPU kernels
    (flash attention) have no forward-mode derivative, which dy/dα needs. The caller's choice of kernels is back on
    exit. (Without ``torch.nn.attention``, torch < 2.3, nothing changes.)"""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def work_dtype(t: torch.Tensor) -> torch.Tensor:
    """What path sums accumulate in: the tensor's own dtype, float32 for half precision."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


@dataclass
class Evaluation:
    F: torch.Tensor  # [R]
    values: dict[str, list[torch.Tensor]]  # site -> parts, each [R, *unit_shape]
    grads: dict[str, list[torch.Tensor]] | None  # same shapes, ∂F/∂values
    output: object = None
    is_tuple: dict[str, bool] = field(default_factory=dict)
    tangents: dict[str, list[torch.Tensor]] | None = None  # dy/dα, shaped like values


def evaluate(
    model: nn.Module,
    batch: Batch,
    target: Target,
    sites: list[Site],
    example: torch.Tensor,
    alpha: torch.Tensor,
    *,
    need_grad: bool,
    keep_output: bool = False,
    tangents: bool = False,
) -> Evaluation:
    """One forward (and, with ``need_grad``, one backward) over the rows ``(example[r], alpha[r])``.

    With ``tangents`` the forward pass also carries dy/dα (forward-mode autodiff along ``x − x'``) up to the
    deepest site: ``Evaluation.tangents`` is shaped like ``values``."""
    rows = batch.path_rows(example, alpha)
    recorder = Recorder(sites, need_grad=need_grad, tangents=tangents)
    with torch.inference_mode(False), torch.set_grad_enabled(need_grad), ExitStack() as stack:
        if tangents:
            stack.enter_context(forward_mode_kernels())
            stack.enter_context(fwAD.dual_level())
            rows = tuple(
                fwAD.make_dual(r, (x[example.to(x.device)] - b[example.to(x.device)]).to(r.dtype))
                for r, x, b in zip(rows, batch.inputs, batch.baselines)
            )
        try:
            with recorder.active():
                output = batch.call(model, rows, example)
        except (NotImplementedError, RuntimeError) as e:
            op = missing_forward_derivative(e) if tangents else None
            if op is not None:  # an op without a forward derivative: the same dy/dα another way, exactly
                stack.close()  # leaves the dual level
                return evaluate_without_joint_forward_mode(
                    evaluate,
                    model,
                    batch,
                    target,
                    sites,
                    example,
                    alpha,
                    need_grad=need_grad,
                    keep_output=keep_output,
                    op=op,
                )
            if not tangents or "forward AD" not in str(e):
                raise
            raise UnitscopeError(
                "an operation of the model has no forward-mode derivative, which the "
                "Gauss–Legendre and Riemann rules need for dy/dα",
                error=str(e).splitlines()[0],
                hint="use method='adaptive' (values only)",
            ) from None
        _check_rows(recorder, sites, rows[0].shape[0])
        if tangents:
            output = _primal(output)
            stack.close()  # dy/dα is recorded: the target and the backward run outside the dual level, so no
            #                backward op needs a forward derivative (aten::silu_backward has none)
        F = target(output, example)
        grads = None
        if need_grad:
            flat = [p for s in sites for p in recorder.parts[s.name]]
            if not F.requires_grad and len(sites) == 1:
                raise off_the_path(sites[0].name)
            if not F.requires_grad:
                raise UnitscopeError(
                    "the target does not depend on the scored layers through autograd, so ∂F/∂y cannot be had",
                    layers=[s.name for s in sites],
                    hint="the model (or the target callable) detaches its output or computes "
                    "it without gradients; score layers the output is differentiable in",
                )
            got = torch.autograd.grad(F.sum(), flat, allow_unused=True)
            grads, i = {}, 0
            for s in sites:
                k = len(recorder.parts[s.name])
                part = got[i : i + k]
                if all(g is None for g in part):
                    raise off_the_path(s.name)
                # one unused part of a tuple output (e.g. attention weights nobody reads) truly has ∂F/∂y = 0
                grads[s.name] = [
                    work_dtype(torch.zeros_like(p) if g is None else g.detach())
                    for p, g in zip(recorder.parts[s.name], part)
                ]
                i += k
    values = {s.name: [work_dtype(p.detach()) for p in recorder.parts[s.name]] for s in sites}
    out = None
    if keep_output and torch.is_tensor(output):
        out = output.detach()
    tans = None
    if recorder.tangents is not None:  # the recorder carries them exactly when asked (tangents=True)
        tans = {s.name: [work_dtype(t) for t in recorder.tangents[s.name]] for s in sites}
    return Evaluation(work_dtype(F.detach()), values, grads, out, dict(recorder.is_tuple), tans)


def _check_rows(recorder, sites, rows: int) -> None:
    """Every recorded part is examples-first: one row per path row. A layer that folds something else into its
    first dim (window attention over ``[N·windows, tokens, C]``, an RNN's ``h_n [layers, N, H]``) is an error that
    names it, not a shape mismatch deep in the integration."""
    for s in sites:
        for k, p in enumerate(recorder.parts.get(s.name, ())):
            if p.dim() == 0 or p.shape[0] != rows:
                part = f" (part {k} of its tuple output)" if recorder.is_tuple.get(s.name) else ""
                raise UnitscopeError(
                    f"layer {s.name!r} gives an output{part} of shape {list(p.shape)} for {rows} rows (examples × "
                    "path points): its first dim is not the examples",
                    layer=s.name,
                    shape=list(p.shape),
                    rows=rows,
                    hint="window attention folds its windows into the batch and an RNN's h_n is [layers, N, H]; "
                    "pick a layer whose output is [N, ...] (the block or stage around it), or, for a tuple "
                    "output, spec=UnitSpec(part=0) in neuron_conductance / the layer's first part",
                )


def _primal(output):
    if torch.is_tensor(output):
        return fwAD.unpack_dual(output).primal
    if isinstance(output, tuple) and not hasattr(output, "_fields"):
        return tuple(_primal(o) for o in output)
    return output


@dataclass
class PathSums:
    """What a pass over the path accumulates, per site and part, on the model's device.

    ``conductance_error`` / ``influence_error``: per-unit error estimates shaped like the sums (magnitudes).
    """

    conductance: dict[str, list[torch.Tensor]] | None = None
    influence: dict[str, list[torch.Tensor]] | None = None
    value_at_x: dict[str, list[torch.Tensor]] | None = None
    grad_at_x: dict[str, list[torch.Tensor]] | None = None
    F_x: torch.Tensor | None = None
    F_baseline: torch.Tensor | None = None
    n_evals: torch.Tensor | None = None
    is_tuple: dict[str, bool] = field(default_factory=dict)
    interval_gaps: list | None = None
    conductance_error: dict[str, list[torch.Tensor]] | None = None
    influence_error: dict[str, list[torch.Tensor]] | None = None
    conductance_unit_error: dict[str, list[torch.Tensor]] | None = None  # [n, units] (estimates.reduce_units)
    influence_unit_error: dict[str, list[torch.Tensor]] | None = None
    diagnosis: dict | None = None  # filled by adaptive.py: per example and layer, where it did not converge
    grad_profile: dict | None = None  # site -> ([n, M] alphas, [n, M] |∂F/∂y| norms) for hard-path checks


def _plan(n: int, m: int, internal_batch_size: int | None) -> tuple[int, int]:
    """Examples per block and nodes per chunk so that one chunk holds at most ``internal_batch_size`` rows."""
    if internal_batch_size is None or internal_batch_size >= n * m:
        return n, m
    if internal_batch_size < 1:
        raise UnitscopeError("internal_batch_size must be a positive integer", internal_batch_size=internal_batch_size)
    if internal_batch_size >= m:
        return internal_batch_size // m, m
    return 1, internal_batch_size


def integrate(
    model,
    batch: Batch,
    target: Target,
    sites: list[Site],
    alphas: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    conductance: str | None = "jvp",
    need_grad: bool = True,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
    estimate: bool = True,
    influence: bool = True,
) -> PathSums:
    """Stream the nodes ``alphas`` (sorted, [M]) for every example through the model.

    Accumulates the layer-path conductance and the quadrature ``Σ_k w_k ∂F/∂y(α_k)`` (internal influence) when
    ``weights`` is given and ``influence`` asks for it, values and gradients at α = 1 and F at both ends. Conductance:

    * ``"jvp"``: the rule itself, ``Σ_k w_k ∂F/∂y(α_k) · dy/dα(α_k)`` with dy/dα by forward-mode autodiff;
    * ``"spectral"``: the same with dy/dα the derivative of the polynomial through the values at all ``M`` nodes
      (``paths.derivative_matrix``; no forward mode). The values and gradients of an example block's nodes are
      held until its last chunk, ``M × units`` per example and site (as the adaptive rule holds its nodes);
    * ``"trapezoid"``: ``Σ_k ½(∂F/∂y_k + ∂F/∂y_{k+1}) · (y_{k+1} − y_k)`` on consecutive nodes (values only);
    * ``"left"`` (Captum's ``LayerConductance``): ``Σ_k ∂F/∂y_k · (y_{k+1} − y_k)``; ``None``: no conductance.

    With ``estimate`` (and gradients) the per-unit error estimates (``PathSums.*_error``) and the |∂F/∂y| profile
    along the path (for the hard-path diagnosis) are accumulated too: with ``"jvp"``/``"spectral"`` the
    second-order sum on the same nodes as well, their difference bounding the rule's error from below. Without
    ``estimate`` only the sums themselves are computed (Captum-compatible runs, which report no error).
    Otherwise only two nodes of layer values per site are carried between chunks, so memory does not grow with M.
    """
    n, m = batch.n, alphas.numel()
    E, P = _plan(n, m, internal_batch_size)
    jvp = conductance in ("jvp", "spectral")
    spectral = conductance == "spectral"  # dy/dα from the values at all nodes of an example (held until the last)
    D = derivative_matrix(alphas) if spectral else None
    held: dict[str, tuple[list, list]] = {}  # site -> (values, gradients) of the block's chunks so far
    if jvp and weights is None:
        raise UnitscopeError("conductance by the rule needs its weights")
    influence = influence and weights is not None
    estimate = estimate and need_grad
    sums = PathSums()
    F_x = torch.full((n,), float("nan"), dtype=torch.float64)
    F_b = torch.full((n,), float("nan"), dtype=torch.float64)
    value_x: dict[str, list] = {}  # site -> per part [n, ...] (None until the chunk with α = 1)
    grad_x: dict[str, list] = {}
    cond: dict[str, list[torch.Tensor]] = {}
    infl: dict[str, list[torch.Tensor]] = {}
    cond_alt: dict[str, list[torch.Tensor]] = {}
    cerr: dict[tuple[str, str], list[torch.Tensor]] = {}  # (site, kind) -> per part (Σ e_p, Σ e_p², …)
    ierr: dict[tuple[str, str], list[torch.Tensor]] = {}
    cabs: dict[str, list[torch.Tensor]] = {}  # site -> per part Σ|terms| of the sums (their rounding error)
    iabs: dict[str, list[torch.Tensor]] = {}  # (estimates.rounding)
    profile: dict[str, torch.Tensor] = {}  # site -> [n, m] |∂F/∂y| norms, on the model's device
    # the consecutive-node sums: the trapezoid/left conductance itself, or (jvp) the ingredients of its error
    stieltjes = conductance in ("trapezoid", "left") or (estimate and (jvp or influence))
    chunks = [(e0, p0) for e0 in range(0, n, E) for p0 in range(0, m, P)]
    bar = progress_bar(
        chunks, desc="path", unit="chunk", progress=False if progress is False or len(chunks) <= 4 else None
    )
    at0_all = torch.isclose(alphas, torch.zeros((), dtype=alphas.dtype))
    at1_all = torch.isclose(alphas, torch.ones((), dtype=alphas.dtype))
    carry = None
    for e0, p0 in bar:
        ex = torch.arange(e0, min(n, e0 + E))
        al = alphas[p0 : p0 + P]
        ne, na = ex.numel(), al.numel()
        example = ex.repeat_interleave(na)
        alpha = al.repeat(ne)
        ev = evaluate(model, batch, target, sites, example, alpha, need_grad=need_grad, tangents=jvp and not spectral)
        sums.is_tuple = ev.is_tuple
        at0, at1 = at0_all[p0 : p0 + P], at1_all[p0 : p0 + P]
        k0 = int(at0.nonzero()[0]) if at0.any() else None
        k1 = int(at1.nonzero()[0]) if at1.any() else None
        if k0 is not None or k1 is not None:
            Fv = ev.F.view(ne, na).to(torch.float64).cpu()
            if k0 is not None:
                F_b[ex] = Fv[:, k0]
            if k1 is not None:
                F_x[ex] = Fv[:, k1]
        if p0 == 0:
            carry = None
        new_carry = {}
        for s in sites:
            ys = [v.view(ne, na, *v.shape[1:]) for v in ev.values[s.name]]
            # ev.grads is there exactly when need_grad
            gs = [g.view(ne, na, *g.shape[1:]) for g in ev.grads[s.name]] if ev.grads is not None else []
            if estimate:
                # ‖∂F/∂y‖ per row, in one pass over each part (a norm over the last dim makes no temporary)
                norm = _norm2([torch.linalg.vector_norm(g.flatten(2), dim=2) for g in gs])
                buf = profile.get(s.name)
                if buf is None:
                    buf = profile[s.name] = norm.new_zeros((n, m))
                buf[e0 : e0 + ne, p0 : p0 + na] = norm
            if k1 is not None:
                value_x.setdefault(s.name, [None] * len(ys))
                for i, y in enumerate(ys):
                    value_x[s.name][i] = _store(value_x[s.name][i], ex, y[:, k1], n)
                if need_grad:
                    grad_x.setdefault(s.name, [None] * len(gs))
                    for i, g in enumerate(gs):
                        grad_x[s.name][i] = _store(grad_x[s.name][i], ex, g[:, k1], n)
            if influence or jvp:  # the sums that take the rule's weights
                assert weights is not None  # both need them (checked above)
                w = weights[p0 : p0 + P].to(device=gs[0].device, dtype=gs[0].dtype)
                wv = lambda g, w=w: w.view(1, -1, *([1] * (g.dim() - 2)))  # noqa: E731
                if influence:
                    _accumulate(infl, s.name, ex, [(g * wv(g)).sum(1) for g in gs], n)
                    if estimate:
                        _accumulate(iabs, s.name, ex, [(g * wv(g)).abs_().sum(1) for g in gs], n)
                terms = None
                if D is not None:
                    vals, grads = held.setdefault(s.name, ([], []))
                    vals.append(ys)
                    grads.append(gs)
                    if p0 + na == m:  # the block's last chunk: every node is here
                        del held[s.name]
                        w_all = weights.to(device=gs[0].device, dtype=gs[0].dtype)
                        w_all = w_all.view(1, -1, *([1] * (gs[0].dim() - 2)))
                        Y = [joined(list(parts), 1) for parts in zip(*vals)]
                        terms = [
                            joined(list(parts), 1) * _spectral_tangent(D, y) * w_all for parts, y in zip(zip(*grads), Y)
                        ]
                elif jvp:
                    assert ev.tangents is not None  # the pass carried them
                    ts = [t.view(ne, na, *t.shape[1:]) for t in ev.tangents[s.name]]
                    terms = [g * t * wv(g) for g, t in zip(gs, ts)]
                if terms is not None:
                    _accumulate(cond, s.name, ex, [c.sum(1) for c in terms], n)
                    if estimate:
                        _accumulate(cabs, s.name, ex, [c.abs().sum(1) for c in terms], n)
            if not stieltjes:
                continue
            # consecutive nodes, with up to two carried from the previous chunk (global node index ``gi``)
            carried = carry[s.name] if carry is not None else None
            al_c, gi = al, torch.arange(p0, p0 + na)
            if carried is not None:
                al_c = torch.cat([carried[2], al])
                gi = torch.cat([carried[3], gi])
            L = al_c.numel()
            if L > 1:
                k0c = L - na  # carried nodes come first
                a0 = max(k0c - 1, 0)  # intervals (k, k+1) ending in this chunk: k = a0 … L−2
                # embedded coarse rule on nodes (j−2, j) against the fine one on (j−2, j−1, j), j even
                j = max(k0c, 2)
                j += int(gi[j]) % 2 if j < L else 0
                panels = estimate and j < L
                base = min(a0, j - 2) if panels else a0  # the first interval any sum below reads
                da = None
                if panels and influence:
                    da = (al_c[base + 1 : L] - al_c[base : L - 1]).to(device=gs[0].device, dtype=gs[0].dtype)
                    da = da.view(1, -1, *([1] * (gs[0].dim() - 2)))
                got = [
                    _stieltjes_part(
                        y,
                        g,
                        None if carried is None else carried[0][i],
                        None if carried is None else carried[1][i],
                        conductance=conductance,
                        mags=estimate and not jvp,
                        a0=a0,
                        base=base,
                        first=j - 2 - base if panels else None,
                        da=da,
                    )
                    for i, (y, g) in enumerate(zip(ys, gs))
                ]
                if conductance:
                    _accumulate(cond_alt if jvp else cond, s.name, ex, [r["cond"] for r in got], n)
                    if estimate and not jvp:
                        _accumulate(cabs, s.name, ex, [r["mags"] for r in got], n)
                    if panels:
                        _accumulate_error_sums(cerr, s.name, ex, [r["cerr"] for r in got], n)
                if panels and influence:
                    _accumulate_error_sums(ierr, s.name, ex, [r["ierr"] for r in got], n)
            new_carry[s.name] = (
                [_last_two(None if carried is None else carried[0][i], y) for i, y in enumerate(ys)],
                [_last_two(None if carried is None else carried[1][i], g) for i, g in enumerate(gs)],
                al_c[max(0, L - 2) :],
                gi[max(0, L - 2) :],
            )
        carry = new_carry
    sums.conductance = cond if conductance else None
    sums.influence = infl if influence else None
    # error estimates: the second-order rule on these nodes against its embedded coarse rule (every other
    # node) — for the rule applied to ∂F/∂y·dy/dα, at least its difference with that second-order rule
    cpairs, ipairs = _pairs(cerr), _pairs(ierr)
    if conductance and cpairs:
        c_err = {k: [combine(a, b) for a, b, _ in v] for k, v in cpairs.items()}
        c_unit_err = {
            k: [combine_units(reduce_units(a), u, reduce_units(b)) for a, b, u in v] for k, v in cpairs.items()
        }
        if jvp:
            for k in cpairs:
                diff = [c - a for c, a in zip(cond[k], cond_alt[k])]
                c_err[k] = [torch.maximum(e, d.abs()) for e, d in zip(c_err[k], diff)]
                c_unit_err[k] = [torch.maximum(e, reduce_units(d).abs()) for e, d in zip(c_unit_err[k], diff)]
        sums.conductance_error, sums.conductance_unit_error = c_err, c_unit_err
    if weights is not None and ipairs:
        sums.influence_error = {k: [combine(a, b) for a, b, _ in v] for k, v in ipairs.items()}
        sums.influence_unit_error = {
            k: [combine_units(reduce_units(a), u, reduce_units(b)) for a, b, u in v] for k, v in ipairs.items()
        }
    # below the rounding error of the sums an estimate says nothing (two rules agreeing to the last bit still differ
    # from the exact integral by it): the floor, as in adaptive.py
    for errs, unit_errs, abs_sums in (
        (sums.conductance_error, sums.conductance_unit_error, cabs),
        (sums.influence_error, sums.influence_unit_error, iabs),
    ):
        if not errs or unit_errs is None:  # set together
            continue
        for k, mag in abs_sums.items():
            floor = [rounding(m, m.dtype) for m in mag]
            errs[k] = [e + f for e, f in zip(errs[k], floor)]
            unit_errs[k] = [e + reduce_units(f) for e, f in zip(unit_errs[k], floor)]
    sums.value_at_x = value_x or None
    sums.grad_at_x = grad_x or None
    sums.F_x, sums.F_baseline = F_x, F_b
    sums.n_evals = torch.full((n,), m, dtype=torch.long)
    sums.grad_profile = {k: (alphas.view(1, -1).expand(n, -1), v.double().cpu()) for k, v in profile.items()} or None
    return sums


def _spectral_tangent(D: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dy/dα at every node of ``y`` ``[E, M, ...]`` (all ``M`` nodes of the path) by differentiating the polynomial
    through them (``paths.derivative_matrix``), in float64, from the values' change along the path."""
    flat = (y - y[:, :1]).double().flatten(2)
    return torch.matmul(D.to(flat.device), flat).to(y.dtype).view(y.shape)


def _norm2(norms: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm over several parts from each part's 2-norm."""
    return norms[0] if len(norms) == 1 else cast(torch.Tensor, sum(v.square() for v in norms)).sqrt()


def _last_two(carried: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """The last two nodes of the carried nodes followed by the chunk's ``t`` ``[E, na, ...]`` (for the next chunk)."""
    if carried is None or t.shape[1] >= 2:
        return t[:, max(0, t.shape[1] - 2) :]
    return torch.cat([carried, t], 1)[:, -2:]


def _stieltjes_part(y, g, cy, cg, *, conductance, mags, a0, base, first, da) -> dict:
    """One part's consecutive-node sums over a chunk, in tiles of whole units (:mod:`.tiles`): with ``cy``/``cg`` the
    nodes carried from the previous chunk in front, ``y``/``g`` ``[E, na, ...]``. ``"cond"`` (the Stieltjes sum of the
    intervals ``a0 …``: trapezoid or ``"left"``) with ``"mags"`` (Σ|terms|, for the rounding floor), and, where
    ``first`` is given, the panel errors' sums (:func:`_error_sums`) from the panels starting at interval
    ``base + first``: ``"cerr"`` on y, ``"ierr"`` on α (``da``, internal influence). Intervals are indexed from
    ``base``."""
    count = y.shape[1] + (0 if cy is None else cy.shape[1])
    dim, spans = tiles(y, count)
    out: dict[str, list] = {"cond": [], "mags": [], "cerr": [], "ierr": []}
    for start, size in spans:
        yt, gt = y.narrow(dim, start, size), g.narrow(dim, start, size)
        if cy is not None:
            yt = torch.cat([cy.narrow(dim, start, size), yt], 1)
            gt = torch.cat([cg.narrow(dim, start, size), gt], 1)
        L = yt.shape[1]
        dy = None
        if conductance:
            dy = _steps(yt, base, L)  # Δy_k at index k − base
            if conductance == "left":
                term = gt[:, a0 : L - 1] * dy[:, a0 - base :]
            else:  # ½(g_k + g_{k+1}) · Δy_k, the ½ applied to the sums (exact: a power of two)
                term = gt[:, a0 + 1 : L] + gt[:, a0 : L - 1]
                term.mul_(dy[:, a0 - base :])
            out["cond"].append(term.sum(1))
            if mags:
                out["mags"].append(term.abs_().sum(1))
            del term
        if first is not None:
            dg = _steps(gt, base, L)  # g_{k+1} − g_k, read by both error estimates
            if dy is not None:  # conductance
                out["cerr"].append(_error_sums(_panel_error(dy, dg, first)))
            if da is not None:
                out["ierr"].append(_error_sums(_panel_error(da, dg, first)))
    half = 0.5 if conductance and conductance != "left" else 1.0
    d = dim - 1  # of the summed [E, *unit_shape]
    res: dict = {k: half * joined(out[k], d) for k in ("cond", "mags") if out[k]}
    for k in ("cerr", "ierr"):
        if out[k]:
            res[k] = tuple(joined([t[i] for t in out[k]], d if i < 2 else 1) for i in range(3))
    return res


def _steps(t: torch.Tensor, base: int, L: int) -> torch.Tensor:
    """``t[:, k+1] − t[:, k]`` for the intervals ``k = base … L−2`` of ``t`` ``[E, L, ...]``."""
    return t[:, base + 1 : L] - t[:, base : L - 1]


def _panel_error(dy, dg, first):
    """Panel errors ``T₂ − T₁`` of the panels ``(a, m, b) = (k, k+1, k+2)`` for the intervals ``k = first,
    first + 2, …`` of ``dy`` (the steps of ``y`` between consecutive nodes, or of α itself for internal influence)
    and ``dg`` (the steps of ∂F/∂y), ``[E, panels, ...]``; :func:`_error_sums` scales them to the signed
    estimate ``ERROR_FACTOR · (T₂ − T₁)``.

    ``T₂ − T₁ = ½(g_a+g_m)Δy_a + ½(g_m+g_b)Δy_m − ½(g_a+g_b)(Δy_a+Δy_m) = ½(Δg_a Δy_m − Δg_m Δy_a)``: the ½ is
    applied with the factor, to the sums."""
    stop = dg.shape[1] - 1  # a panel needs both of its intervals
    a, m = slice(first, stop, 2), slice(first + 1, stop + 1, 2)
    e = dg[:, a] * dy[:, m]
    return e.sub_(dg[:, m] * dy[:, a])


def _error_sums(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ_p e_p, Σ_p e_p², Σ_p (unit's e_p)²)`` over the panels ``[E, panels, ...]`` of :func:`_panel_error`
    (elementwise, elementwise, per unit: ``reduce_units`` of each panel's errors before squaring), with
    ``e_p = ERROR_FACTOR · ½ · panels`` (the factor applied to the sums, exact when it is a power of two)."""
    c = 0.5 * ERROR_FACTOR
    units = reduce_units(p.flatten(0, 1)).view(p.shape[0], p.shape[1], -1)
    return c * p.sum(1), (c * c) * p.pow(2).sum(1), (c * c) * units.pow(2).sum(1)


def _accumulate_error_sums(acc: dict, name: str, ex: torch.Tensor, sums: list[tuple], n: int) -> None:
    """Per part the :func:`_error_sums` of a chunk, accumulated under ``(name, kind)``."""
    for k, kind in enumerate(("signed", "squares", "unit_squares")):
        _accumulate(acc, (name, kind), ex, [t[k] for t in sums], n)


def _pairs(acc: dict) -> dict:
    """``{(site, kind): parts}`` → ``{site: [(signed, squares, unit_squares) per part]}``."""
    return {
        k: list(zip(v, acc[(k, "squares")], acc[(k, "unit_squares")]))
        for (k, kind), v in acc.items()
        if kind == "signed"
    }


def _rows(ex: torch.Tensor) -> slice:
    """The examples of a chunk are consecutive (``arange(e0, e1)``): a slice, so updates are views, not copies."""
    return slice(int(ex[0]), int(ex[-1]) + 1)


def _store(buf, ex, value, n):
    if buf is None:
        buf = value.new_empty((n, *value.shape[1:])) if ex.numel() == n else value.new_zeros((n, *value.shape[1:]))
    buf[_rows(ex)] = value
    return buf


def _accumulate(acc: dict, name, ex: torch.Tensor, parts: list[torch.Tensor], n: int) -> None:
    if name not in acc:
        if ex.numel() == n:  # the first chunk holds every example: its sums start the accumulator
            acc[name] = list(parts)
            return
        acc[name] = [p.new_zeros((n, *p.shape[1:])) for p in parts]
    rows = _rows(ex)
    for a, p in zip(acc[name], parts):
        a[rows] += p


def outputs_at_x(model, batch: Batch, internal_batch_size: int | None = None):
    """The model's main output at the inputs (``α = 1``), without a graph, in chunks of ``internal_batch_size``
    examples; ``None`` if the model's output has no main tensor."""
    step = batch.n if internal_batch_size is None else max(1, internal_batch_size)
    outs = []
    with torch.no_grad():
        for e0 in range(0, batch.n, step):
            ex = torch.arange(e0, min(batch.n, e0 + step))
            out = main_output(batch.call(model, batch.path_rows(ex, torch.ones(ex.numel(), dtype=torch.float64)), ex))
            if out is None:
                return None
            outs.append(out)
    return torch.cat(outs)
