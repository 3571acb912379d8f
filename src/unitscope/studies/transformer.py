"""``python -m unitscope.studies.transformer [--quick] [--out DIR]``: which neurons of a real pretrained transformer
matter — the conductance study on ``all-MiniLM-L6-v2`` with a linear sentiment head trained on the movie-review
sentences (same split as the sentiment CNN; MiniLM frozen).

Attributions start at the word-embedding output (baseline: the [PAD] embedding at every non-special token), the
attention mask goes through ``additional_forward_args``. Units: the MLP neurons of all six layers (the output of
each layer's intermediate activation, ``[tokens × 1536]``; a neuron's score is summed over the tokens) and, as a
second granularity, the attention heads (the 12 per-head slices of each self-attention output, summed over tokens
and the head's 32 dims). All six MLP layers, six attention layers and the residual stream after each layer are
scored in ONE call per batch of sentences.

1. **Completeness.** MiniLM is a residual network: the MLP neurons of a layer are *not* a cut (the residual
   bypasses them), so their conductance sums to the part of ``F(x) − F(x')`` that flows through that MLP — the
   *MLP share* — not to all of it. The completeness gap is measured where it must vanish: on the residual stream
   after each layer (``bert.encoder.layer.i``), per layer; with the adaptive rule beside the fixed one.
2. **Agreement with ablation** (per layer, test sentences): per sentence and method, the top-``k`` neurons by the
   method, their ablation scores (``F(x) − F(x with the neuron set to 0 at every token)``, F = the predicted
   class's logit) and the Pearson correlation; the same for the 12 heads of each layer (all 12 ranked).
   **Flips**: how many of the top neurons (by a method), ablated together, change the prediction.
   **Both-sign share**: the share of neurons whose conductance for ``logit(pos) − logit(neg)`` is > 0.01 on ≥ 10 %
   of the sentences and < −0.01 on ≥ 10 % (the sentiment CNN study's "division of labour" statistic).
3. **Negation neurons.** Per-token conductance (the layer's own ``[tokens × 1536]`` conductance, for the
   log-odds) on test sentences with a negation; neurons ranked by the share of their attribution mass on
   negation tokens; their values on "not good" / "not bad" probes and highlighted corpus sentences — side by side
   with the sentiment CNN's negation filters (``studies.sentiment.negation_filters`` on the same sentences).

Writes CSV, Markdown and PNG to ``--out``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch

from ..core.capture import hooked
from ..attribution.scores import METHODS, attribute
from ..core.state import analysis_mode, restores_process_state
from .tables import write_table

__all__ = ["main", "score_sentences", "ablate_rows", "agreement_and_flips", "both_sign_share", "negation_neurons",
           "probe_neurons", "CUTS"]

CUTS = [f"bert.encoder.layer.{i}" for i in range(6)]


def _layers():
    from ..zoo.minilm import attention_layers, mlp_layers

    return mlp_layers(), attention_layers()


def _by_length(lengths, size: int):
    order = sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _write(df: pd.DataFrame, out: str, name: str, *, index: bool = True) -> None:
    write_table(df, out, name, index=index)


# ------------------------------------------------------------------------------------------------ scores --
def score_sentences(lm, sentences, *, methods=METHODS, target=None, n_steps: int = 16, method: str = "adaptive",
                    batch: int = 8, per_token: bool = False, internal_batch_size: int = 96) -> dict:
    """All four methods for the 6 MLP layers, 6 attention layers and 6 residual-stream cuts, one ``attribute``
    call per batch of sentences of similar length.

    Returns ``neurons[method][layer]`` ``[N, 1536]`` and ``heads[method][layer]`` ``[N, 12]`` (summed over tokens),
    ``cut_gap`` / ``mlp_share`` / ``attention_share`` ``[N, 6]`` (relative to ``F(x) − F(x')``), ``label`` and
    ``sign`` (+1 if the predicted class is positive) ``[N]``, and with ``per_token`` the conductance per token
    ``tokens[i]`` ``[6, T_i, 1536]`` (real tokens only, [CLS]/[SEP] dropped) and the tokens.
    """
    from ..zoo.minilm import head_scores

    mlp, att = _layers()
    enc_all = lm.encode(sentences)
    n = len(sentences)
    neurons = {m: {l: torch.zeros(n, 1536) for l in mlp} for m in methods}
    heads = {m: {l: torch.zeros(n, 12) for l in att} for m in methods}
    cut_gap, mlp_share, att_share = torch.zeros(n, 6), torch.zeros(n, 6), torch.zeros(n, 6)
    label, evals = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    tok_values = [None] * n
    for idx in _by_length(enc_all.lengths.tolist(), batch):
        t = int(enc_all.lengths[idx].max())
        x, b = enc_all.embeddings[idx, :t], enc_all.baselines[idx, :t]
        mask = enc_all.attention_mask[idx, :t]
        with torch.no_grad():
            label[idx] = lm.model(x, mask).argmax(1)
        res = attribute(lm.model, x, mlp + att + CUTS, scores=methods, baselines=b, target=target if target is not None
                        else label[idx].tolist(), additional_forward_args=(mask,), n_steps=n_steps, method=method,
                        internal_batch_size=internal_batch_size, gap_warning=None, progress=False)
        for m, s in res.items():
            for l in mlp:
                neurons[m][l][idx] = s[l].sum(1)
            for l in att:
                heads[m][l][idx] = head_scores(s[l])
        if "conductance" in res:
            s = res["conductance"]
            diff = s.output_diff
            evals[idx] = s.n_evals
            for i, (l, a, c) in enumerate(zip(mlp, att, CUTS)):
                cut_gap[idx, i] = s.delta[c].abs() / diff.abs().clamp_min(1e-12)
                mlp_share[idx, i] = s[l].flatten(1).sum(1) / diff
                att_share[idx, i] = s[a][0].flatten(1).sum(1) / diff
            if per_token:
                for j, i in enumerate(idx):
                    L = int(enc_all.lengths[i])
                    tok_values[i] = torch.stack([s[l][j, 1:L - 1] for l in mlp])
    sign = (label * 2 - 1).float()
    return {"neurons": neurons, "heads": heads, "cut_gap": cut_gap, "mlp_share": mlp_share,
            "attention_share": att_share, "label": label, "sign": sign, "n_evals": evals,
            "per_token": tok_values if per_token else None, "tokens": enc_all.tokens, "encoded": enc_all}


# ---------------------------------------------------------------------------------------------- ablation --
def ablate_rows(model, emb, mask, layer: str, row_masks: torch.Tensor, *, fill=None, chunk: int = 64) -> torch.Tensor:
    """The model's output ``[R, classes]`` for one sentence with ``layer``'s output set to ``fill`` (default 0; a
    ``[T, D]`` tensor: e.g. the layer's output at the baseline) where ``row_masks`` ``[R, T, D]`` is True, one row
    per mask. The part below the layer runs once per chunk (its output is expanded
    to the rows); a tuple output has its first tensor ablated.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.net = net
    ...     def forward(self, x, m):
    ...         return self.net(x).sum(1)
    >>> masks = torch.zeros(2, 4, 3, dtype=torch.bool); masks[1] = True
    >>> out = ablate_rows(M(), torch.ones(1, 4, 2), torch.ones(1, 4), "net.1", masks)
    >>> bool(torch.allclose(out[1].float(), 4 * net[2].bias))   # every unit zeroed: only the bias is left
    True
    """
    module = model.get_submodule(layer)
    outs = []
    for r0 in range(0, row_masks.shape[0], chunk):
        rm = row_masks[r0:r0 + chunk]

        def hook(mod, args, out, rm=rm):
            part = out[0] if isinstance(out, tuple) else out
            rows = part.expand(rm.shape[0], *part.shape[1:])
            new = rows.masked_fill(rm.to(part.device), 0.0) if fill is None else \
                torch.where(rm.to(part.device), fill.to(part.device, part.dtype), rows)
            return (new, *out[1:]) if isinstance(out, tuple) else new

        with hooked(forward={module: hook}), torch.no_grad():
            outs.append(model(emb, mask).double().cpu())
    return torch.cat(outs)


def _layer_outputs(model, emb, mask, layers) -> dict:
    """The first tensor of each layer's output for one input (no gradients)."""
    got = {}

    def grab(name):
        return lambda mod, args, out: got.__setitem__(name, (out[0] if isinstance(out, tuple) else out)[0].detach())

    with hooked(forward={model.get_submodule(l): grab(l) for l in layers}), torch.no_grad():
        model(emb, mask)
    return got


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    return float(stats.pearsonr(a, b)[0]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


def agreement_and_flips(lm, scores: dict, *, k: int = 10, max_flip: int = 20,
                        flip_methods=("conductance", "internal_influence"), progress: bool | None = None):
    """Per sentence × layer × method: the Pearson correlation between the method's scores of its top-``k`` MLP
    neurons and their ablation scores, and over all 12 heads of the layer; flip counts for ``flip_methods``
    (the top 1 … ``max_flip`` neurons by the method ablated together; NaN if none flips the prediction).
    Ablation sets a unit to 0 (the paper's choice; ``pearson``) and, as a second column, to its value at the
    baseline input (``pearson_to_baseline`` — what conductance, a path integral from the baseline, measures).
    Returns ``(neuron rows, head rows, flip rows, ablation scores {(i, layer): {neuron: score}})``."""
    from tqdm.auto import tqdm

    mlp, att = _layers()
    enc = scores["encoded"]
    methods = list(scores["neurons"])
    flip_methods = [m for m in flip_methods if m in methods]
    rows, hrows, frows, ablations = [], [], [], {}
    model = lm.model
    head_masks = {}
    with analysis_mode(model):
        for i in tqdm(range(enc.ids.shape[0]), desc="ablation", unit="sentence", leave=False,
                      disable=True if progress is False else None):
            L = int(enc.lengths[i])
            emb, mask = enc.embeddings[i:i + 1, :L], enc.attention_mask[i:i + 1, :L]
            c = int(scores["label"][i])
            with torch.no_grad():
                base = float(model(emb, mask)[0, c])
            at_base = _layer_outputs(model, enc.baselines[i:i + 1, :L], mask, mlp + att)
            if L not in head_masks:
                hm = torch.zeros(12, L, 384, dtype=torch.bool)
                for h in range(12):
                    hm[h, :, 32 * h:32 * (h + 1)] = True
                head_masks[L] = hm
            for li, (mlp_name, att_name) in enumerate(zip(mlp, att)):
                values = {m: scores["neurons"][m][mlp_name][i] for m in methods}
                top = {m: v.topk(k).indices for m, v in values.items()}
                units = sorted(set(torch.cat(list(top.values())).tolist()))
                order = {m: values[m].topk(max_flip).indices for m in flip_methods}
                masks = torch.zeros(len(units) + len(order) * max_flip, L, 1536, dtype=torch.bool)
                for r, u in enumerate(units):
                    masks[r, :, u] = True
                r = len(units)
                for m in order:
                    for j in range(max_flip):
                        masks[r + j, :, order[m][:j + 1]] = True
                    r += max_flip
                out = ablate_rows(model, emb, mask, mlp_name, masks)
                abl = dict(zip(units, (base - out[:len(units), c]).tolist()))
                out_b = ablate_rows(model, emb, mask, mlp_name, masks[:len(units)], fill=at_base[mlp_name])
                abl_b = dict(zip(units, (base - out_b[:, c]).tolist()))
                ablations[(i, li)] = abl
                for m in methods:
                    a = values[m][top[m]].numpy()
                    b = np.array([abl[u] for u in top[m].tolist()])
                    bb = np.array([abl_b[u] for u in top[m].tolist()])
                    rows.append({"example": i, "layer": li, "method": m, "pearson": _pearson(a, b),
                                 "pearson_to_baseline": _pearson(a, bb)})
                r = len(units)
                for m in order:
                    changed = (out[r:r + max_flip].argmax(1) != c).nonzero()
                    frows.append({"example": i, "layer": li, "method": m,
                                  "flips_at": int(changed[0]) + 1 if changed.numel() else float("nan")})
                    r += max_flip
                habl = (base - ablate_rows(model, emb, mask, att_name, head_masks[L])[:, c]).numpy()
                habl_b = (base - ablate_rows(model, emb, mask, att_name, head_masks[L],
                                             fill=at_base[att_name])[:, c]).numpy()
                for m in methods:
                    h = scores["heads"][m][att_name][i].numpy()
                    hrows.append({"example": i, "layer": li, "method": m, "pearson": _pearson(h, habl),
                                  "pearson_to_baseline": _pearson(h, habl_b)})
    return pd.DataFrame(rows), pd.DataFrame(hrows), pd.DataFrame(frows), ablations


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and median Pearson per layer × method."""
    g = df.groupby(["layer", "method"], sort=False)
    return pd.DataFrame({"mean": g["pearson"].mean(), "median": g["pearson"].median(), "n": g["pearson"].count(),
                         "mean_to_baseline": g["pearson_to_baseline"].mean(),
                         "median_to_baseline": g["pearson_to_baseline"].median()}).reset_index()


def _flip_summary(df: pd.DataFrame, max_flip: int) -> pd.DataFrame:
    out = []
    for (layer, m), g in df.groupby(["layer", "method"], sort=False):
        f = g["flips_at"].dropna()
        out.append({"layer": layer, "method": m, "flipped": float(g["flips_at"].notna().mean()),
                    "mean_flips_at": float(f.mean()) if len(f) else float("nan"),
                    "median_flips_at": float(f.median()) if len(f) else float("nan"),
                    "flip_top10": float((g["flips_at"] <= 10).mean()),
                    f"never_within_{max_flip}": int(g["flips_at"].isna().sum()), "n": len(g)})
    return pd.DataFrame(out)


def both_sign_share(cond_logodds: torch.Tensor, *, threshold: float = 0.01, min_share: float = 0.10) -> float:
    """The share of units (columns) whose conductance is > ``threshold`` on ≥ ``min_share`` of the sentences and
    < −``threshold`` on ≥ ``min_share`` of them.

    >>> both_sign_share(torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]]))
    0.5
    """
    pos = (cond_logodds > threshold).float().mean(0)
    neg = (cond_logodds < -threshold).float().mean(0)
    return float(((pos >= min_share) & (neg >= min_share)).float().mean())


# ---------------------------------------------------------------------------------------------- negation --
def negation_neurons(per_token, tokens, cond_total: dict, *, candidates: int = 64, top: int = 5) -> pd.DataFrame:
    """Neurons ranked by the share of their per-token |conductance| (log-odds) that lands on negation tokens.

    ``per_token``: per sentence ``[6, T_i, 1536]``; ``cond_total``: ``{layer index: [N, 1536]}`` total conductance
    (candidates: the ``candidates`` neurons of each layer with the largest mean |conductance|). One row per
    candidate, sorted by ``negation_share``; ``attrs["token_share"]`` is the share of tokens that are negations
    (what a neuron with no preference would get).
    """
    from ..zoo.minilm import negation_mask

    neg = [negation_mask(t) for t in tokens]
    rows = []
    for li, total in cond_total.items():
        cand = total.abs().mean(0).topk(candidates).indices
        mass = torch.zeros(len(cand))
        neg_mass = torch.zeros(len(cand))
        dominated = torch.zeros(len(cand))
        signed = torch.zeros(len(cand))
        for v, m in zip(per_token, neg):
            a = v[li][:, cand]                       # [T, C]
            mass += a.abs().sum(0)
            on = a[m].abs().sum(0)
            neg_mass += on
            dominated += (on > 0.5 * a.abs().sum(0)).float()
            signed += a[m].sum(0)
        n_neg = int(sum(int(m.sum()) for m in neg))
        for j, u in enumerate(cand.tolist()):
            rows.append({"layer": li, "neuron": u, "negation_share": float(neg_mass[j] / mass[j].clamp_min(1e-12)),
                         "sentences_dominated": float(dominated[j] / len(per_token)),
                         "mean_attr_on_negation": float(signed[j] / max(1, n_neg)),
                         "mean_abs_conductance": float(total[:, u].abs().mean())})
    df = pd.DataFrame(rows).sort_values("negation_share", ascending=False).reset_index(drop=True)
    df.attrs["token_share"] = sum(int(m.sum()) for m in neg) / max(1, sum(len(t) for t in tokens))
    return df


def probe_neurons(lm, probe: str, *, candidates: int = 60, top: int = 3, min_phrase_share: float = 0.5,
                  min_negation_share: float = 0.2, n_steps: int = 32) -> dict:
    """The MiniLM analogue of ``studies.sentiment.negation_filters``: among the ``candidates`` MLP neurons (all six
    layers pooled) with the highest conductance on ``probe`` (``F`` = the log-odds signed towards the predicted
    class), the ``top`` ones whose per-token conductance (the neuron's conductance at each token position) falls on
    the negated phrase — at least ``min_phrase_share`` of its absolute per-token conductance on the negation and
    the word after it, and at least ``min_negation_share`` of it, positive, on the negation itself."""
    from ..core.errors import UnitscopeError
    from ..zoo.minilm import log_odds, negation_mask

    enc = lm.encode([probe])
    tokens = enc.tokens[0]
    neg = negation_mask(tokens).nonzero().flatten().tolist()
    if not neg or neg[-1] + 1 >= len(tokens):
        raise UnitscopeError("a negation probe needs a negation followed by a word", probe=probe, tokens=tokens)
    phrase = neg + [neg[-1] + 1]
    with torch.no_grad():
        lo = float(log_odds(lm.model(enc.embeddings, enc.attention_mask))[0])
    sign = 1 if lo >= 0 else -1
    sc = score_sentences(lm, [probe], methods=["conductance"], target=lambda out: sign * log_odds(out),
                         n_steps=n_steps, per_token=True)
    a = sc["per_token"][0]                                   # [6, T, 1536]
    total = a.sum(1).flatten()                               # [6 · 1536]
    cand = [int(u) for u in total.topk(candidates).indices if total[u] > 0]
    rows = []
    for u in cand:
        li, j = divmod(u, 1536)
        v = a[li, :, j]
        mass = float(v.abs().sum()) or 1e-12
        rows.append({"layer": li, "neuron": j, "conductance": float(total[u]),
                     "phrase_share": float(v[phrase].abs().sum()) / mass,
                     "negation_share": float(v[neg].clamp_min(0).sum()) / mass,
                     "per_token": _fmt(tokens, v.tolist()), "values": v.tolist()})
    table = pd.DataFrame(rows)
    table["falls_on_phrase"] = (table["phrase_share"] >= min_phrase_share) & \
        (table["negation_share"] >= min_negation_share)
    found = table[table["falls_on_phrase"]].head(top)
    return {"probe": probe, "tokens": tokens, "phrase": phrase, "sign": sign, "log_odds": lo,
            "predicted": "positive" if sign > 0 else "negative", "table": table,
            "found": [(int(r.layer), int(r.neuron)) for r in found.itertuples()],
            "attributions": {(int(r.layer), int(r.neuron)): r.values for r in found.itertuples()}}


def _unit(layer: int, neuron: int) -> str:
    """``L2:n1265``: neuron 1265 of layer 2's MLP."""
    return f"L{layer}:n{neuron}"


def _fmt(tokens, values) -> str:
    return " ".join(f"{w}[{v:+.3f}]" for w, v in zip(tokens, values))


def _cnn_negation(corpus, probes, *, n_steps: int = 16):
    """The sentiment CNN's negation filters for the same probes (``studies.sentiment.negation_filters``) and its
    top corpus sentences among ``corpus`` (``negation_examples``)."""
    from ..zoo.sentiment import sentiment_cnn
    from .sentiment import corpus_conductance, negation_examples, negation_filters

    net = sentiment_cnn(progress=False)
    cond, _ = corpus_conductance(net, corpus, n_steps=n_steps)
    out = []
    for probe in probes:
        found = negation_filters(net, probe)
        ex = negation_examples(net, corpus, cond, found, k=1, n_steps=n_steps)
        out.append({"probe": probe, "predicted": found.predicted, "log_odds": round(found.log_odds, 3),
                    "filters": [{"filter": int(f), "per_token": _fmt(found.tokens, found.attributions[f]),
                                 "phrase_share": round(float(found.table.set_index("filter").loc[f, "phrase_share"]),
                                                       3),
                                 "negation_share": round(float(found.table.set_index("filter")
                                                               .loc[f, "negation_share"]), 3)}
                                for f in found.found],
                    "examples": [{"filter": int(e["filter"]), "sentence": e["sentence"],
                                  "per_token": _fmt(e["tokens"], e["attributions"]),
                                  "negation_share": round(float(e["negation_share"]), 3)} for e in ex]})
    return net, out


def _strips_figure(rows, path: str) -> str:
    """``rows``: (title, tokens, {label: per-token values}) — one signed heat strip per sentence."""
    from ..report.figures import plt, save_figure

    rows = [r for r in rows if r[2]]
    if not rows:
        rows = [("no negation neurons found", ["-"], {"-": np.zeros(1)})]
    height = sum(0.9 + 0.25 * len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, height), squeeze=False)
    for ax, (title, tokens, by_unit) in zip(axes[:, 0], rows):
        m = np.array([np.asarray(v, dtype=float)[:len(tokens)] for v in by_unit.values()])
        lim = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels(tokens, fontsize=6, rotation=60)
        ax.set_yticks(range(len(by_unit)))
        ax.set_yticklabels(list(by_unit), fontsize=6)
        ax.set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------------------------------- figures --
def _layer_figure(by_layer: pd.DataFrame, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0))
    x = np.arange(len(by_layer))
    axes[0].bar(x - 0.2, by_layer["mlp_share_median"], 0.4, label="MLP neurons")
    axes[0].bar(x + 0.2, by_layer["attention_share_median"], 0.4, label="attention heads")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("Σ conductance / (F(x) − F(x')), median", fontsize=7)
    axes[0].set_title("share of the prediction through each sub-layer", fontsize=8)
    axes[0].legend(fontsize=7)
    axes[1].semilogy(x, by_layer["cut_gap_median"].clip(lower=1e-8), "o-", label="median")
    axes[1].semilogy(x, by_layer["cut_gap_max"].clip(lower=1e-8), "s--", label="max")
    axes[1].set_title("completeness gap at the residual stream after the layer", fontsize=8)
    axes[1].set_ylabel("|gap| / |F(x) − F(x')|", fontsize=7)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels([f"layer {i}" for i in x], fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _agreement_figure(summary: pd.DataFrame, heads: pd.DataFrame, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), sharey=True)
    for ax, df, title in ((axes[0], summary, "MLP neurons (top-k)"), (axes[1], heads, "attention heads (all 12)")):
        for m, g in df.groupby("method", sort=False):
            ax.plot(g["layer"], g["mean"], "o-", label=m)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"Pearson with ablation scores: {title}", fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("mean Pearson over sentences", fontsize=7)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------- main --
def _adaptive_vs_fixed(lm, sentences, budget: int) -> dict:
    """Worst residual-cut completeness gap on a few sentences: gausslegendre vs adaptive, same evaluation budget."""
    from ..zoo.minilm import log_odds

    enc = lm.encode(sentences)
    out = {}
    for method in ("gausslegendre", "adaptive"):
        s = attribute(lm.model, enc.embeddings, CUTS, scores=["conductance"], baselines=enc.baselines, target=log_odds,
                      additional_forward_args=(enc.attention_mask,), n_steps=budget, method=method,
                      gap_warning=None, progress=False)["conductance"]
        out[method] = {"worst_gap": max(float(s.relative_delta(c).max()) for c in CUTS),
                       "median_gap": float(torch.stack([s.relative_delta(c) for c in CUTS]).median()),
                       "evals_per_sentence": int(s.n_evals.max())}
    return out


@restores_process_state
def main(argv=None) -> dict:
    from ..zoo.minilm import minilm_sentiment
    from ..zoo.sentiment import NEGATIONS, movie_reviews, tokenize
    from .sentiment import NEGATION_PROBES

    p = argparse.ArgumentParser(prog="python -m unitscope.studies.transformer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 agreement sentences (full: 120), 8 path points (full: 32, adaptive), 4 negation "
                        "sentences (full: 60), no adaptive comparison")
    p.add_argument("--out", default="unitscope-out/transformer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--no-cnn", action="store_true", help="skip the comparison with the sentiment CNN")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.set_grad_enabled(True)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    seconds = {}
    t0 = time.perf_counter()
    data = movie_reviews()
    lm = minilm_sentiment(progress=False)
    seconds["data_and_model"] = time.perf_counter() - t0
    print(f"all-MiniLM-L6-v2 + linear head ({'cached' if lm.cached else 'trained'}, C={lm.info['C']}): test "
          f"accuracy {lm.test_accuracy:.3f}, dev {lm.dev_accuracy:.3f} ({lm.info['n_train']}/{lm.info['n_dev']}/"
          f"{lm.info['n_test']} sentences)", flush=True)

    n_agree, steps, n_neg, k, max_flip = (6, 8, 4, 10, 10) if args.quick else (120, 32, 60, 10, 20)
    mlp, att = _layers()

    # 1 + 2. one call per batch: all methods, all 18 sites ----------------------------------------------------
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(data.test), size=min(n_agree, len(data.test)), replace=False))
    sents = [data.test.sentences[i] for i in pick]
    sc = score_sentences(lm, sents, n_steps=steps)
    seconds["scores"] = time.perf_counter() - t0
    by_layer = pd.DataFrame({
        "layer": range(6),
        "cut_gap_median": sc["cut_gap"].median(0).values.numpy(), "cut_gap_max": sc["cut_gap"].max(0).values.numpy(),
        "mlp_share_median": sc["mlp_share"].median(0).values.numpy(),
        "attention_share_median": sc["attention_share"].median(0).values.numpy()})
    cond_lo = {li: sc["neurons"]["conductance"][l] * (2 * sc["sign"]).unsqueeze(1) for li, l in enumerate(mlp)}
    by_layer["both_sign_share"] = [both_sign_share(cond_lo[li]) for li in range(6)]
    head_lo = {li: sc["heads"]["conductance"][l] * (2 * sc["sign"]).unsqueeze(1) for li, l in enumerate(att)}
    by_layer["head_both_sign_share"] = [both_sign_share(head_lo[li]) for li in range(6)]
    _layer_figure(by_layer, os.path.join(args.out, "transformer_layers.png"))

    t0 = time.perf_counter()
    agree, head_agree, flips, _ = agreement_and_flips(lm, sc, k=k, max_flip=max_flip, progress=False)
    seconds["ablation"] = time.perf_counter() - t0
    summary, head_summary = _summary(agree), _summary(head_agree)
    flip_summary = _flip_summary(flips, max_flip)
    _write(by_layer, args.out, "transformer_layers", index=False)
    _write(summary, args.out, "transformer_agreement", index=False)
    _write(head_summary, args.out, "transformer_head_agreement", index=False)
    _write(flip_summary, args.out, "transformer_flips", index=False)
    agree.to_csv(os.path.join(args.out, "transformer_agreement_rows.csv"), index=False)
    _agreement_figure(summary, head_summary, os.path.join(args.out, "transformer_agreement.png"))
    pearson = {m: float(agree[agree["method"] == m]["pearson"].mean()) for m in METHODS}
    head_pearson = {m: float(head_agree[head_agree["method"] == m]["pearson"].mean()) for m in METHODS}
    pearson_b = {m: float(agree[agree["method"] == m]["pearson_to_baseline"].mean()) for m in METHODS}
    head_pearson_b = {m: float(head_agree[head_agree["method"] == m]["pearson_to_baseline"].mean()) for m in METHODS}
    print(f"\n{len(sents)} test sentences, {steps} path points ({int(sc['n_evals'].max())} evaluations each), "
          f"6 MLP + 6 attention layers + 6 residual cuts in one call per batch ({seconds['scores']:.1f}s):")
    print(by_layer.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nagreement with ablation (mean Pearson, top-{k} neurons per sentence and layer):")
    print(summary.pivot(index="layer", columns="method", values="mean").to_string(float_format=lambda v: f"{v:+.3f}"))
    print("the same, ablation = the neuron's value at the baseline input:")
    print(summary.pivot(index="layer", columns="method", values="mean_to_baseline")
          .to_string(float_format=lambda v: f"{v:+.3f}"))
    print("heads (all 12 per layer):")
    print(head_summary.pivot(index="layer", columns="method", values="mean")
          .to_string(float_format=lambda v: f"{v:+.3f}"))
    print(f"flips (top neurons ablated together, up to {max_flip}):")
    print(flip_summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)

    adaptive = None
    if not args.quick:
        t0 = time.perf_counter()
        adaptive = _adaptive_vs_fixed(lm, sents[:6], budget=16)
        seconds["adaptive"] = time.perf_counter() - t0
        print(f"\nresidual-cut completeness gap, 6 sentences, 16 evaluations each: {adaptive}", flush=True)

    # 3. negation neurons -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    from ..zoo.minilm import log_odds, negation_mask

    negset = set(NEGATIONS)
    corpus = [s for s in data.test.sentences if negset & set(tokenize(s))][:n_neg]
    neg = score_sentences(lm, corpus, methods=["conductance"], target=log_odds, n_steps=steps, per_token=True)
    totals = {li: neg["neurons"]["conductance"][l] for li, l in enumerate(mlp)}
    table = negation_neurons(neg["per_token"], neg["tokens"], totals, candidates=32 if args.quick else 64)
    _write(table, args.out, "transformer_negation_corpus", index=False)
    chance = table.attrs["token_share"]
    probes = [probe_neurons(lm, pr, n_steps=16 if args.quick else 32) for pr in NEGATION_PROBES]
    lines = ["## MiniLM neurons whose per-token conductance falls on the negated phrase",
             "", "F = log-odds towards the predicted class; `L2:n1265` is neuron 1265 of layer 2's MLP; values are its "
             "conductance at each token position.", ""]
    negation, highlighted, fig_rows = [], [], []
    for pr in probes:
        lines.append(f"- **{pr['probe']}**: predicted {pr['predicted']} (log-odds {pr['log_odds']:+.2f}); neurons "
                     f"on “{' '.join(pr['tokens'][i] for i in pr['phrase'])}”: "
                     f"{', '.join(_unit(l, j) for l, j in pr['found']) or 'none'} "
                     f"(of {len(pr['table'])} candidates)")
        t = pr["table"].set_index(["layer", "neuron"])
        for (li, j) in pr["found"]:
            r = t.loc[(li, j)]
            negation.append({"probe": pr["probe"], "layer": li, "neuron": j,
                             "conductance": round(float(r["conductance"]), 4),
                             "phrase_share": round(float(r["phrase_share"]), 3),
                             "negation_share": round(float(r["negation_share"]), 3), "per_token": r["per_token"]})
            lines.append(f"  - {_unit(li, j)}: {r['per_token']}")
            # the corpus sentences where this neuron's conductance (signed like the probe's F) is highest
            signed = pr["sign"] * totals[li][:, j]
            for i in signed.topk(min(2, len(corpus))).indices.tolist():
                vals = pr["sign"] * neg["per_token"][i][li][:, j]
                m = negation_mask(neg["tokens"][i])
                share = float(vals[m].abs().sum() / vals.abs().sum().clamp_min(1e-12))
                highlighted.append({"probe": pr["probe"], "layer": li, "neuron": j, "sentence": corpus[i],
                                    "negation_share": round(share, 3),
                                    "tokens": [[w, round(float(v), 4)] for w, v in zip(neg["tokens"][i],
                                                                                        vals.tolist())]})
                lines.append(f"    - corpus: {_fmt(neg['tokens'][i], vals.tolist())} (on negations: {share:.2f})")
        fig_rows.append((f"MiniLM: {pr['probe']!r} → {pr['predicted']} (log-odds {pr['log_odds']:+.2f})",
                         pr["tokens"], {_unit(l, j): v for (l, j), v in pr["attributions"].items()}))
    best = table.head(5)
    shown = best.assign(unit=[_unit(int(r.layer), int(r.neuron)) for r in best.itertuples()])
    shown = shown[["unit"] + [c for c in best.columns if c not in ("layer", "neuron")]]
    lines += ["", f"## corpus ranking: share of per-token |conductance| on negation WordPieces ({len(corpus)} test "
              f"sentences with a negation; negations are {100 * chance:.1f}% of their tokens)", "",
              shown.to_markdown(index=False, floatfmt=".3f"), ""]
    for r in best.head(2).itertuples():
        li, j = int(r.layer), int(r.neuron)
        on = torch.tensor([float(v[li][negation_mask(t), j].abs().sum()) for v, t in zip(neg["per_token"],
                                                                                        neg["tokens"])])
        i = int(on.argmax())
        vals = neg["per_token"][i][li][:, j]
        fig_rows.append((f"MiniLM {_unit(li, j)} (corpus): {corpus[i][:80]}", neg["tokens"][i][:30],
                         {_unit(li, j): vals[:30].numpy()}))

    cnn = None
    if not args.no_cnn:
        try:
            net, cnn_probes = _cnn_negation(corpus, NEGATION_PROBES)
        except Exception as e:  # noqa: BLE001 — the comparison is optional; say why it is missing
            print(f"\n(no comparison with the sentiment CNN: {type(e).__name__}: {e})")
        else:
            cnn = {"test_accuracy": round(net.test_accuracy, 4), "probes": cnn_probes}
            side = pd.DataFrame([{
                "probe": pr["probe"],
                "minilm_predicted": pr["predicted"],
                "minilm_neurons": ", ".join(_unit(l, j) for l, j in pr["found"]) or "none",
                "cnn_predicted": c["predicted"],
                "cnn_filters": ", ".join(f"#{f['filter']}" for f in c["filters"]) or "none"}
                for pr, c in zip(probes, cnn_probes)])
            _write(side, args.out, "transformer_negation_vs_cnn", index=False)
            lines += ["", f"## side by side with the sentiment CNN (test accuracy {cnn['test_accuracy']:.3f}; "
                      f"per-token conductance = Eq. 2 through the filter, summed over the embedding dims)", "",
                      side.to_markdown(index=False), ""]
            for c in cnn_probes:
                for f in c["filters"]:
                    lines.append(f"- CNN #{f['filter']} on **{c['probe']}**: {f['per_token']}")
                for e in c["examples"]:
                    lines.append(f"  - corpus (#{e['filter']}): {e['per_token']} (on negations: "
                                 f"{e['negation_share']:.2f})")
    _strips_figure(fig_rows, os.path.join(args.out, "transformer_negation.png"))
    with open(os.path.join(args.out, "transformer_negation_examples.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    seconds["negation"] = time.perf_counter() - t0
    print("\n" + "\n".join(lines), flush=True)

    result = {
        "model": "all-MiniLM-L6-v2 (frozen) + linear head on the mean-pooled embedding",
        "test_accuracy": round(lm.test_accuracy, 4), "dev_accuracy": round(lm.dev_accuracy, 4),
        "cnn_test_accuracy": cnn["test_accuracy"] if cnn else None,
        "n_agreement": len(sents), "n_steps": steps, "k": k,
        "completeness_gap_by_layer": {"site": "residual stream after each layer (bert.encoder.layer.i)",
                                      "median": [round(float(v), 6) for v in by_layer["cut_gap_median"]],
                                      "max": [round(float(v), 6) for v in by_layer["cut_gap_max"]]},
        "mlp_share_by_layer": [round(float(v), 4) for v in by_layer["mlp_share_median"]],
        "attention_share_by_layer": [round(float(v), 4) for v in by_layer["attention_share_median"]],
        "adaptive_vs_fixed": adaptive,
        "pearson": {m: round(v, 3) for m, v in pearson.items()},
        "pearson_by_layer": {m: [round(float(v), 3) for v in summary[summary["method"] == m]["mean"]]
                             for m in METHODS},
        "head_pearson": {m: round(v, 3) for m, v in head_pearson.items()},
        "pearson_ablation_to_baseline": {m: round(v, 3) for m, v in pearson_b.items()},
        "pearson_ablation_to_baseline_by_layer": {
            m: [round(float(v), 3) for v in summary[summary["method"] == m]["mean_to_baseline"]] for m in METHODS},
        "head_pearson_ablation_to_baseline": {m: round(v, 3) for m, v in head_pearson_b.items()},
        "flips_by_layer": {m: {"flipped_within": max_flip,
                               "flipped_share": [round(float(v), 3) for v in g["flipped"]],
                               "median_flips_at": [None if np.isnan(v) else float(v) for v in g["median_flips_at"]]}
                           for m, g in flip_summary.groupby("method", sort=False)},
        "both_sign_share_by_layer": [round(float(v), 3) for v in by_layer["both_sign_share"]],
        "head_both_sign_share_by_layer": [round(float(v), 3) for v in by_layer["head_both_sign_share"]],
        "negation_neurons": negation, "negation_corpus_top": [
            {"layer": int(r.layer), "neuron": int(r.neuron), "negation_share": round(float(r.negation_share), 3)}
            for r in best.itertuples()],
        "negation_token_share": round(chance, 3), "n_negation": len(corpus),
        "cnn_negation": cnn, "highlighted": highlighted,
        "seconds": {k_: round(v, 1) for k_, v in seconds.items()},
    }
    with open(os.path.join(args.out, "transformer.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
