"""The per-unit work of the atlas, a chunk of units at a time: exemplars with their per-input conductance,
IAM + RS, inverse-set samples in activation bands, faithfulness; then the cards of ``atlas.json``.

>>> v = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
>>> [round(c, 3) for c in _loo_cosines(v).tolist()]   # each row against the mean of the others
[0.555, 0.316, 0.0]
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from .source import model_args, n_rows, pad_rows, take
from ..core.capture import Recorder
from ..core.inputs import in_model_dtype, model_device
from ..core.sites import resolve
from ..core.state import analysis_mode

__all__ = ["work_chunk", "layer_cards"]


BLOCK = 32
"""Rows per model call in the per-unit work. Every call has exactly this many rows (the last block padded with
copies of its last row), because CPU kernels round differently (in the last bit) for different batch sizes: so a
unit's numbers do not depend on the chunk it is in, nor on the number of processes."""

SYNTH_BLOCK = 64
"""Rows per model call of the synthetic inputs (IAM images, inverse-set codes), fixed for the same reason: a layer's
IAM images in one call where it has at most this many live units (fewer, larger calls: the per-call work of the
optimizers, parameterizations and hooks is paid less often)."""

PAIRS_PER_FORWARD = 16
"""Exemplar conductance: the (unit, input) pairs that share one forward pass of their input at most (its backward
passes from the layer are one per pair; an input with more pairs is forwarded once per group of this many). A
backward from the layer costs a fraction of a forward + backward to it, so groups are large: fewer forward passes
for the many units that share their exemplars (``bench/atlas.py`` measures the per-unit work)."""

EXEMPLAR_ROWS = 96
"""Exemplar conductance: path rows (inputs × path points) per model call, at most (at least one input). Small, so
that a call's activations stay in the CPU's cache (``bench/atlas.py`` measures the per-unit work). A pair's numbers
do not depend on it (``tests/test_atlas_blocks.py``: bit for bit), and the inputs per call are fixed by the settings,
never by the chunk."""


def layer_vectors(model: nn.Module, layer: str, x, batch: int = BLOCK, dictionary=None) -> torch.Tensor:
    """``[N, U]``: every unit of ``layer`` on ``x`` (a tensor or a tokenizer's dict; one forward pass per ``batch``
    rows, the last one padded, stopped at the layer), reduced as the scan reduces activations (tokens: the mean
    over those the attention mask keeps); with ``dictionary``, its features and error node (``U = F + 1``)."""
    (site,) = resolve(model, [layer])
    if dictionary is not None:
        from dataclasses import replace

        site = replace(site, dictionary=dictionary)
    out = []
    with analysis_mode(model), torch.no_grad():
        for i in range(0, n_rows(x), batch):
            rec = Recorder([site], stop_when_done=True)
            part = take(x, slice(i, i + batch))
            inputs, kw = model_args(pad_rows(part, batch))
            dev = model_device(model, torch.device("cpu"))
            kw = {k: v.to(dev) for k, v in (kw or {}).items()}
            with rec.active():
                model(in_model_dtype(model, inputs.to(dev)), **kw)
            t: torch.Tensor | tuple[torch.Tensor, ...] = rec.parts[site.name][0]
            sp = layer_spec(model, site, t)
            if dictionary is not None:  # features, then the error node
                from dataclasses import replace

                sp, t = replace(sp, error_node=True), tuple(rec.parts[site.name])
            v = sp.per_unit(t, "mean", mask=kw.get("attention_mask"))
            out.append(v.float().cpu()[: n_rows(part)])
    return torch.cat(out) if out else torch.empty(0, 0)


def layer_spec(model, site, t):
    """The layer's default unit specification (:mod:`unitscope.core.units`), as the scan uses it."""
    from ..core.units import default_spec

    return default_spec(model, site.name, site.module, tuple(t.shape))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b.expand_as(a), dim=-1, eps=1e-12)


def _loo_cosines(v: torch.Tensor) -> torch.Tensor:
    """``[k]``: each row's cosine to the mean of the other rows."""
    k = v.shape[0]
    if k < 2:
        return torch.ones(k)
    others = (v.sum(0, keepdim=True) - v) / (k - 1)
    return _cos(v, others)


def _typical_limit(vec_u, inv_row, ex_row, k_a: int, reference, cosine_min: float) -> float:
    """How far (``1 − cos`` of the layer vector) from the activation exemplars' mean a natural input that drives the
    unit may be: the farthest of its held-out exemplars — those chosen by conductance that are not among the
    activation exemplars the mean is made of. Without any, twice the farthest activation exemplar (leave-one-out)."""
    own = set(ex_row[:k_a].tolist())
    held = [j for j in range(k_a, len(ex_row)) if int(ex_row[j]) not in own]
    if not held:
        return 2 * (1 - cosine_min)
    d = 1 - _cos(vec_u[inv_row[held]], reference.unsqueeze(0))
    return float(d.max())


def _faith(vectors: torch.Tensor, unit: int, reference: torch.Tensor, limit: float) -> dict:
    """Activation, rank in the layer (1 = highest) and cosine to the exemplars' mean vector, per input; atypical:
    farther from that vector (``1 − cos``) than ``limit`` (:func:`_typical_limit`: the farthest held-out natural
    exemplar of the unit)."""
    own = vectors[:, unit]
    rank = 1 + (vectors > own.unsqueeze(1)).sum(1)
    cos = _cos(vectors, reference.unsqueeze(0))
    return {
        "activation": own.tolist(),
        "rank": rank.tolist(),
        "cosine": cos.tolist(),
        "atypical": ((1 - cos) > limit + 1e-6).tolist(),
    }


def layer_bands(hist, bands) -> list[list[tuple[str, float, float, bool]]]:
    """Per unit, ``(name, a, b, non-empty)`` for every band (percentiles of the unit's histogram; 100 = its max)."""

    def q(p):
        return hist.max if p >= 100 else hist.quantile(p / 100)

    cols = [(name, q(lo), torch.full_like(hist.max, math.inf) if hi is None else q(hi)) for name, lo, hi in bands]
    span = (hist.max - hist.min).clamp(min=1e-12)
    return [
        [(name, float(a[u]), float(b[u]), bool(b[u] - a[u] > 1e-6 * span[u])) for name, a, b in cols]
        for u in range(len(hist.max))
    ]


def _bands(hist, unit: int, bands) -> list[tuple[str, float, float, bool]]:
    return layer_bands(hist, bands)[unit]


def work_chunk(
    model,
    src,
    result,
    extra,
    layer,
    units,
    *,
    target,
    n_steps,
    method,
    baselines,
    synthesize,
    generator,
    value_range,
    param,
    iam_steps,
    inverse_samples,
    inverse_steps,
    bands,
    unit_seed,
    embedding=None,
    internal_batch_size: int | None = None,
    dictionary=None,
) -> dict:
    """Everything about ``units`` (a list) of ``layer`` that needs the model again.

    Every generated input is seeded by its unit (``unit_seed(layer, unit, kind)``): the IAM image's start and its
    random transforms, each band's inverse-set codes — so a unit's card is the same whatever chunk it is in.
    """
    units = [int(u) for u in units]
    t0 = time.perf_counter()
    hist = extra.hist[layer]
    dead = ((hist.min == 0) & (hist.max == 0)).tolist()
    ta, tc = result.top(layer, score="activation"), result.top(layer, score="conductance")
    k_a = ta.indices.shape[1]
    ex = torch.cat([ta.indices[units], tc.indices[units]], 1)  # [n, k_a + k_c]
    uniq, inv = torch.unique(ex, return_inverse=True)
    x_u, y_u = src.get(uniq.tolist())
    vec_u = layer_vectors(model, layer, x_u, dictionary=dictionary)  # [n_uniq, U]
    # one row per distinct (unit, example) pair: the two exemplar lists of a unit often share examples
    pair = torch.tensor(units).repeat_interleave(ex.shape[1]) * len(uniq) + inv.flatten()
    pairs, back = torch.unique(pair, return_inverse=True)
    rows, unit_rows = pairs % len(uniq), (pairs // len(uniq)).tolist()
    if internal_batch_size is None:  # path rows per backward: about 8M input numbers (32 MB) at a time
        internal_batch_size = max(8, min(4096, 8_000_000 // max(1, model_args(take(x_u, [0]))[0].numel())))
    attr = exemplar_conductance(
        model,
        x_u,
        layer,
        rows,
        unit_rows,
        y_u,
        target=target,
        n_steps=n_steps,
        method=method,
        baselines=baselines,
        rows=internal_batch_size,
        embedding=embedding,
        dictionary=dictionary,
    )
    attr = attr[back].view(len(units), ex.shape[1], *attr.shape[1:])
    out = {
        "units": units,
        "exemplars": ex,
        "inputs": None if isinstance(x_u, dict) else x_u[inv],
        "labels": None if y_u is None else y_u[inv],
        "attr": attr,
        "vectors": vec_u[inv],
        "dead": [dead[u] for u in units],
    }
    live = [u for u in units if not dead[u]]
    out["synthetic"] = {}
    out["seconds"] = {"exemplars": time.perf_counter() - t0}
    if not synthesize or not live:
        return out
    t0 = time.perf_counter()
    shape = src.example_shape
    ref, typical, limit = {}, {}, {}
    for i, u in enumerate(units):
        v = vec_u[inv[i, :k_a]]
        ref[u], typical[u] = v.mean(0), float(_loo_cosines(v).min())
        limit[u] = _typical_limit(vec_u, inv[i], ex[i], k_a, ref[u], typical[u])
    from ..synthesis.maximize import representative_substitution

    r = blocked_iam(
        model,
        layer,
        live,
        shape=shape,
        param=param if len(shape) == 3 else "pixel",
        value_range=value_range,
        steps=iam_steps,
        seeds=[unit_seed(layer, u, "iam") for u in live],
    )
    rs = representative_substitution(r)
    iam_vec = layer_vectors(model, layer, r.images)
    out["seconds"]["iam"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = generator
    if gen is None:
        from ..synthesis.generators import DecoderGenerator, FFTImageGenerator

        gen = (
            FFTImageGenerator(shape, value_range=value_range)
            if len(shape) == 3
            else DecoderGenerator(nn.Identity(), latent_dim=int(shape[0]), code_bound=3.0)
        )
    problems, keys = [], []
    by_unit = layer_bands(hist, bands)
    for u in live:
        for name, a, b, ok in by_unit[u]:
            if ok:
                problems.append((u, a, b))
                keys.append((u, name))
    where = {k: i for i, k in enumerate(keys)}
    from ..synthesis.inverse_many import sample_inverse_sets

    sets = sample_inverse_sets(
        model,
        layer,
        problems,
        gen,
        n_samples=inverse_samples,
        max_steps=inverse_steps,
        seeds=[unit_seed(layer, u, name) for u, name in keys],
        block=SYNTH_BLOCK,
        progress=False,
    )
    inv_vec = layer_vectors(model, layer, torch.cat([s.samples for s in sets])) if sets else None
    out["seconds"]["inverse"] = time.perf_counter() - t0
    at = 0
    for j, u in enumerate(live):
        band_out = []
        for name, a, b, ok in by_unit[u]:
            entry = {"band": name, "a": a, "b": b if math.isfinite(b) else None, "n": 0, "ok": False}
            if ok:
                s = sets[where[(u, name)]]
                assert inv_vec is not None  # the samples of every set
                entry.update(
                    n=len(s),
                    ok=s.ok,
                    steps=s.steps,
                    samples=s.samples,
                    faithfulness=_faith(inv_vec[at : at + len(s)], u, ref[u], limit[u]) if len(s) else None,
                )
                at += len(s)
            else:
                entry["skipped"] = "the band is empty (the percentiles coincide)"
            band_out.append(entry)
        out["synthetic"][u] = {
            "iam": r.images[j],
            "rs": float(rs[j]),
            "objective": float(r.objective[j]),
            "iam_faithfulness": _faith(iam_vec[j : j + 1], u, ref[u], limit[u]),
            "inverse": band_out,
            "exemplar_reference": {"cosine_min": typical[u], "distance_limit": limit[u]},
        }
    return out


def exemplar_conductance(
    model,
    x,
    layer,
    examples,
    units,
    labels,
    *,
    target,
    n_steps,
    method,
    baselines,
    rows,
    embedding=None,
    dictionary=None,
):
    """``[P, *x]``: pair ``p``'s per-input conductance through unit ``units[p]`` on input ``x[examples[p]]``
    (``neuron_conductance(paired=True, examples=)``; token ids: over the ``embedding`` output, ``[P, T, D]``).

    The pairs of one input share its forward pass and ∂F/∂y (only the backward from the layer is per pair). Inputs
    go in blocks of a fixed number (the last padded), those with the most pairs first (so that a block's backward
    passes — one per pair slot — find pairs on most of its rows); a pair's numbers depend on its input and unit
    only, not on the other inputs or pairs."""
    from ..attribution.neuron import neuron_conductance

    per = max(1, min(BLOCK, EXEMPLAR_ROWS // max(1, n_steps), rows // max(1, n_steps)))
    examples, units = torch.as_tensor(examples).long(), torch.as_tensor(units).long()
    # groups: at most PAIRS_PER_FORWARD pairs of one input each (an input with more pairs is forwarded again),
    # the largest groups first, so that the backward passes of a block (one per pair slot) have pairs on most rows
    order = torch.argsort(examples, stable=True)
    slot = torch.arange(len(order)) - torch.searchsorted(examples[order], examples[order])
    group_of = torch.empty_like(examples)
    group_of[order] = examples[order] * (len(examples) + 1) + slot // PAIRS_PER_FORWARD
    groups, pair_group, sizes = torch.unique(group_of, return_inverse=True, return_counts=True)
    by_size = torch.argsort(-sizes, stable=True)
    out = None
    for i in range(0, len(groups), per):
        block = by_size[i : i + per]  # groups of this call
        local = torch.full((len(groups),), -1, dtype=torch.long)
        local[block] = torch.arange(len(block))
        mine = (local[pair_group] >= 0).nonzero().flatten()
        inputs_of = groups[block] // (len(examples) + 1)
        tgt = pad_rows(labels[inputs_of], per).tolist() if target == "label" else target
        inputs, kw = model_args(pad_rows(take(x, inputs_of), per))
        a = neuron_conductance(
            model,
            inputs,
            layer=layer,
            units=units[mine].tolist(),
            examples=local[pair_group[mine]],
            target=tgt,
            n_steps=n_steps,
            method=method,
            baselines=baselines,
            additional_forward_args=kw,
            internal_batch_size=per * n_steps,
            paired=True,
            embedding=embedding,
            dictionaries=None if dictionary is None else {layer: dictionary},
        )
        if out is None:
            out = a.new_zeros((len(examples), *a.shape[1:]))
        out[mine] = a
    return out if out is not None else torch.empty(0)


def blocked_iam(model, layer, units, *, shape, seeds, **kw):
    """``independent_am`` of ``units`` in calls of exactly ``SYNTH_BLOCK`` rows (the last padded with copies of its
    last unit), each row seeded by its own seed: a unit's image does not depend on the units beside it."""
    from ..synthesis.maximize import Maximized, independent_am

    parts = []
    for i in range(0, len(units), SYNTH_BLOCK):
        us_, ss = units[i : i + SYNTH_BLOCK], seeds[i : i + SYNTH_BLOCK]
        pad = SYNTH_BLOCK - len(us_)
        r = independent_am(
            model, layer, list(us_) + [us_[-1]] * pad, shape=shape, seed=list(ss) + [ss[-1]] * pad, progress=False, **kw
        )
        parts.append((r, len(us_)))
    cat = lambda name: torch.cat([getattr(r, name)[:n] for r, n in parts])  # noqa: E731
    return Maximized(
        images=cat("images"),
        trace=torch.cat([r.trace[:, :n] for r, n in parts], 1),
        objective=cat("objective"),
        layer=parts[0][0].layer,
        units=cat("units"),
        activations=cat("activations"),
    )


NO_TEXT_SYNTHESIS = (
    "text has no AM/IAM image or inverse-set samples here: an input optimized in embedding space is "
    "no sentence (its vectors match no token), so it would show nothing a reader can check against "
    "the exemplars — the sentences above, with each token shaded by its conductance through the "
    "unit, are the evidence"
)


def _r(v, digits: int = 6):
    v = float(v)
    return float(f"{v:.{digits}g}") if math.isfinite(v) else None


def _nan_like(shape):
    return torch.full(shape, float("nan"))


def layer_cards(result, extra, layer, chunks, *, tokens=None, src=None) -> tuple[list[dict], dict]:
    """The JSON cards of one layer's units and the layer's tensors (one row per card: ``card["row"]``)."""
    hist = extra.hist[layer]
    mean_c, std_c = result.mean(layer, score="conductance"), result.std(layer, score="conductance")
    mean_a = result.mean(layer, score="activation")
    share = extra.shares[layer] / max(result.count, 1)
    by_class = result.class_counts is not None
    classes = result.classes.tolist() if by_class else []
    cm_a = result.class_means(layer, score="activation") if by_class else None
    cm_c = result.class_means(layer, score="conductance") if by_class else None
    sel = result.selectivity(layer, score="activation", warn=False) if by_class else None  # None where < 0
    ta, tc = result.top(layer, score="activation"), result.top(layer, score="conductance")
    k_a = ta.indices.shape[1]
    p50, p90, p99 = hist.quantile(0.5), hist.quantile(0.9), hist.quantile(0.99)
    text = src is not None and (src.tokens or len(src.example_shape) == 2)
    cards: list[dict] = []
    ex_in, ex_attr, iam, inverse = [], [], [], []
    shape = src.example_shape if src is not None else ()
    n_bands = max((len(s["inverse"]) for c in chunks for s in c["synthetic"].values()), default=0)
    k_inv = max((e.get("n", 0) for c in chunks for s in c["synthetic"].values() for e in s["inverse"]), default=0)
    for c in chunks:
        for i, u in enumerate(c["units"]):
            exemplars = []
            for j, idx in enumerate(c["exemplars"][i].tolist()):
                by_act = j < k_a
                act = float(ta.values[u, j]) if by_act else float(c["vectors"][i, j, u])
                cond = float(c["attr"][i, j].sum()) if by_act else float(tc.values[u, j - k_a])
                e = {
                    "index": int(idx),
                    "by": "activation" if by_act else "conductance",
                    "activation": _r(act),
                    "conductance": _r(cond),
                }
                if c["labels"] is not None:
                    e["label"] = int(c["labels"][i, j])
                if text:
                    per_token = c["attr"][i, j].sum(-1)
                    e["token_conductance"] = [_r(t, 4) for t in per_token.tolist()]
                    if tokens is not None:
                        e["tokens"] = list(tokens[int(idx)])
                exemplars.append(e)
            imp = {"conductance": _r(mean_c[u]), "conductance_std": _r(std_c[u]), "top_k_share": _r(share[u])}
            if cm_c is not None:  # by class
                order = torch.argsort(cm_c[:, u], descending=True).tolist()
                imp["supports"] = [
                    {"class": classes[k], "conductance": _r(cm_c[k, u])} for k in order[:3] if cm_c[k, u] > 0
                ]
                imp["opposes"] = [
                    {"class": classes[k], "conductance": _r(cm_c[k, u])} for k in order[::-1][:3] if cm_c[k, u] < 0
                ]
            selectivity = None
            if sel is not None and float(hist.min[u]) >= 0 and len(classes) > 1 and not c["dead"][i]:
                selectivity = {"index": _r(sel.index[u]), "preferred": int(sel.preferred[u])}
            s = c["synthetic"].get(u)
            synthetic: dict = {}
            faith: dict = {}
            if s is None:
                synthetic["skipped"] = (
                    "dead: its activation is 0 on every example"
                    if c["dead"][i]
                    else NO_TEXT_SYNTHESIS
                    if text
                    else "synthetic inputs were not asked for"
                )
            else:
                synthetic = {
                    "iam": {"activation": _r(s["iam_faithfulness"]["activation"][0]), "objective": _r(s["objective"])},
                    "inverse": [
                        {
                            k: (_r(v) if isinstance(v, float) else v)
                            for k, v in e.items()
                            if k not in ("samples", "faithfulness")
                        }
                        for e in s["inverse"]
                    ],
                }
                fi = s["iam_faithfulness"]
                ex_acts = [x["activation"] for x in exemplars[:k_a]]
                ref_act = sum(ex_acts) / max(len(ex_acts), 1)
                faith = {
                    "exemplars": {
                        "activation_mean": _r(ref_act),
                        "cosine_min": _r(s["exemplar_reference"]["cosine_min"]),
                    },
                    "iam": {
                        "activation": _r(fi["activation"][0]),
                        "rank": int(fi["rank"][0]),
                        "cosine": _r(fi["cosine"][0]),
                        "atypical": bool(fi["atypical"][0]),
                        "activation_vs_exemplars": _r(fi["activation"][0] / ref_act) if ref_act else None,
                    },
                    "inverse": [],
                }
                for e in s["inverse"]:
                    f = e.get("faithfulness")
                    if f:
                        n = len(f["rank"])
                        faith["inverse"].append(
                            {
                                "band": e["band"],
                                "n": n,
                                "activation_mean": _r(sum(f["activation"]) / n),
                                "rank_mean": _r(sum(f["rank"]) / n),
                                "cosine_mean": _r(sum(f["cosine"]) / n),
                                "atypical": int(sum(f["atypical"])),
                            }
                        )
                faith["atypical"] = faith["iam"]["atypical"]
            cards.append(
                {
                    "layer": layer,
                    "unit": u,
                    "row": len(cards),
                    "dead": bool(c["dead"][i]),
                    "importance": imp,
                    "selectivity": selectivity,
                    "rs": _r(s["rs"]) if s is not None else None,
                    "class_means": [_r(v) for v in cm_a[:, u].tolist()] if cm_a is not None else [],
                    "histogram": {
                        "min": _r(hist.min[u]),
                        "max": _r(hist.max[u]),
                        "mean": _r(mean_a[u]),
                        "p50": _r(p50[u]),
                        "p90": _r(p90[u]),
                        "p99": _r(p99[u]),
                    },
                    "exemplars": exemplars,
                    "synthetic": synthetic,
                    "faithfulness": faith,
                }
            )
            if not text:
                ex_in.append(c["inputs"][i])
            ex_attr.append(c["attr"][i].sum(-1) if text else c["attr"][i])
            iam.append(s["iam"] if s is not None else _nan_like(shape))
            band_t = _nan_like((n_bands, k_inv, *shape))
            for b, e in enumerate(s["inverse"] if s is not None else []):
                if e.get("n"):
                    band_t[b, : e["n"]] = e["samples"]
            inverse.append(band_t)
    rows = torch.tensor([card["unit"] for card in cards], dtype=torch.long)
    tensors = {
        "units": rows,
        "hist_counts": hist.counts.float()[rows],
        "hist_edges": hist.edges().float()[rows],
        "exemplar_index": torch.cat([ta.indices, tc.indices], 1)[rows],
        "exemplar_attr": torch.stack(ex_attr),
    }
    if ex_in:
        tensors["exemplar_inputs"] = torch.stack(ex_in)
    if any(c["synthetic"] for c in chunks):
        tensors["iam"] = torch.stack(iam)
        tensors["inverse"] = torch.stack(inverse)
    if cm_a is not None and cm_c is not None:  # by class
        tensors["class_means_activation"] = cm_a.float()[:, rows]
        tensors["class_means_conductance"] = cm_c.float()[:, rows]
    return cards, tensors
