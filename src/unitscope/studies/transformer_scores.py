"""The MiniLM study's scores: all four scores of the six MLP layers, the six attention layers and the six
residual-stream cuts, one :func:`unitscope.attribute` call per batch of sentences of similar length.

Units follow the library's unit specification (:mod:`unitscope.core.units`): an MLP layer's output
``[N, T, 1536]`` is token-major, so its units are the 1,536 neurons over the tokens that the attention mask keeps
(``Scores.per_unit``); an attention layer's first output ``[N, T, 12 · 32]`` is read with ``UnitSpec.heads(12)``
(each head summed over the tokens and its 32 dims).

>>> both_sign_share(torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]]))
0.5
>>> by_length([3, 1, 2, 1], 2)
[[1, 3], [2, 0]]
"""

from __future__ import annotations

import torch

from ..attribution.config import PathConfig
from ..attribution.scores import SCORES, attribute
from ..core.progress import bar
from ..core.units import UnitSpec
from ..zoo.minilm import EMBEDDING

__all__ = [
    "CUTS",
    "HEADS",
    "layers",
    "by_length",
    "score_sentences",
    "both_sign_share",
    "adaptive_vs_fixed",
    "gap_by_steps",
]

CUTS = [f"bert.encoder.layer.{i}" for i in range(6)]
HEADS = UnitSpec.heads(12)  # an attention layer's first output, [N, T, 12 · 32]: its 12 heads over the tokens


def layers() -> tuple[list[str], list[str]]:
    """(the six MLP activation layers, the six self-attention layers) of MiniLM."""
    from ..zoo.minilm import attention_layers, mlp_layers

    return mlp_layers(), attention_layers()


def by_length(lengths, size: int) -> list[list[int]]:
    """Indices in batches of ``size``, sorted by length (ties by index), so that a batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def score_sentences(
    lm,
    sentences,
    *,
    scores=SCORES,
    target=None,
    n_steps: int = 16,
    method: str = "adaptive",
    batch: int = 8,
    per_token: bool = False,
    internal_batch_size: int = 96,
    progress: bool | None = None,
    desc: str = "MiniLM scores",
) -> dict:
    """All ``scores`` for the 6 MLP layers, 6 attention layers and 6 residual-stream cuts, one ``attribute``
    call per batch of sentences of similar length, on token ids (``lm.on_ids``; paths start at the word-embedding
    output, ``embedding=EMBEDDING``; baseline: the [PAD] embedding at every non-special token; ``target``: default
    each sentence's predicted class).

    Returns ``neurons[score][layer]`` ``[N, 1536]`` and ``heads[score][layer]`` ``[N, 12]`` (the unit
    specification's reductions over the real tokens: sums for attributions, means for activations),
    ``cut_gap`` / ``mlp_share`` / ``attention_share`` ``[N, 6]`` (relative to ``F(x) − F(x')``), ``label`` and
    ``sign`` (+1 if the predicted class is positive) ``[N]``, ``n_evals`` ``[N]``, and with ``per_token`` the
    conductance per token ``per_token[i]`` ``[6, T_i, 1536]`` (real tokens only, [CLS]/[SEP] dropped) and the
    tokens.
    """
    mlp, att = layers()
    enc_all = lm.encode(sentences)
    n = len(sentences)
    neurons = {m: {l: torch.zeros(n, 1536) for l in mlp} for m in scores}
    heads = {m: {l: torch.zeros(n, 12) for l in att} for m in scores}
    cut_gap, mlp_share, att_share = torch.zeros(n, 6), torch.zeros(n, 6), torch.zeros(n, 6)
    label, evals = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    tok_values = [None] * n
    batches = by_length(enc_all.lengths.tolist(), batch)
    model = lm.on_ids
    for idx in bar(batches, desc=desc, unit="batch", progress=progress):
        t = int(enc_all.lengths[idx].max())
        ids, base_ids = enc_all.ids[idx, :t], enc_all.baseline_ids[idx, :t]
        mask = enc_all.attention_mask[idx, :t]
        with torch.no_grad():
            label[idx] = model(ids, mask).argmax(1)
        # token ids in, paths from the word embeddings ([PAD] at every word); the mask among the forward arguments
        # is found by the library and leaves padding out of per_unit
        res = attribute(
            model,
            ids,
            mlp + att + CUTS,
            scores=scores,
            embedding=EMBEDDING,
            baselines=base_ids,
            target=target if target is not None else label[idx].tolist(),
            additional_forward_args=(mask,),
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            path=PathConfig(gap_warning=None),
            progress=False,
            spec={a: HEADS for a in att},
        )
        for m, s in res.items():
            for l in mlp:
                neurons[m][l][idx] = s.per_unit(l)
            for l in att:
                heads[m][l][idx] = s.per_unit(l)
        if "conductance" in res:
            s = res["conductance"]
            diff = s.output_diff
            evals[idx] = s.n_evals
            for i, (l, a, c) in enumerate(zip(mlp, att, CUTS)):
                cut_gap[idx, i] = s.relative_delta(c)
                mlp_share[idx, i] = s.per_unit(l).sum(1) / diff
                att_share[idx, i] = s.per_unit(a).sum(1) / diff
            if per_token:
                for j, i in enumerate(idx):
                    L = int(enc_all.lengths[i])
                    tok_values[i] = torch.stack([s[l][j, 1 : L - 1] for l in mlp])
    sign = (label * 2 - 1).float()
    return {
        "neurons": neurons,
        "heads": heads,
        "cut_gap": cut_gap,
        "mlp_share": mlp_share,
        "attention_share": att_share,
        "label": label,
        "sign": sign,
        "n_evals": evals,
        "per_token": tok_values if per_token else None,
        "tokens": enc_all.tokens,
        "encoded": enc_all,
    }


def both_sign_share(cond_logodds: torch.Tensor, *, threshold: float = 0.01, min_share: float = 0.10) -> float:
    """The share of units (columns) whose conductance is > ``threshold`` on ≥ ``min_share`` of the sentences and
    < −``threshold`` on ≥ ``min_share`` of them (the sentiment CNN study's "division of labour" statistic)."""
    pos = (cond_logodds > threshold).float().mean(0)
    neg = (cond_logodds < -threshold).float().mean(0)
    return float(((pos >= min_share) & (neg >= min_share)).float().mean())


def adaptive_vs_fixed(lm, sentences, budget: int) -> dict:
    """Worst residual-cut completeness gap on a few sentences: gausslegendre vs adaptive, same evaluation budget
    (``F`` = the log-odds)."""
    from ..zoo.minilm import log_odds

    enc = lm.encode(sentences)
    out = {}
    for method in ("gausslegendre", "adaptive"):
        s = attribute(
            lm.on_ids,
            enc.ids,
            CUTS,
            scores=["conductance"],
            embedding=EMBEDDING,
            baselines=enc.baseline_ids,
            target=log_odds,
            additional_forward_args=(enc.attention_mask,),
            n_steps=budget,
            method=method,
            path=PathConfig(gap_warning=None),
            progress=False,
        )["conductance"]
        out[method] = {
            "worst_gap": max(float(s.relative_delta(c).max()) for c in CUTS),
            "median_gap": float(torch.stack([s.relative_delta(c) for c in CUTS]).median()),
            "evals_per_sentence": int(s.n_evals.max()),
        }
    return out


def gap_by_steps(lm, sentences, steps, *, target=None) -> dict:
    """The completeness gap on the six residual-stream cuts (conductance of the cuts alone, adaptive rule) at each
    path-point budget in ``steps``, on the same sentences: ``{"median": {str(n): …}, "worst": {str(n): …},
    "median_by_layer": {str(n): [6 values]}}`` — what makes a quick run's gap larger than a full run's."""
    enc = lm.encode(sentences)
    model = lm.on_ids
    if target is None:
        with torch.no_grad():
            target = model(enc.ids, enc.attention_mask).argmax(1).tolist()
    out = {"median": {}, "worst": {}, "median_by_layer": {}}
    for n in steps:
        s = attribute(
            model,
            enc.ids,
            CUTS,
            scores=["conductance"],
            embedding=EMBEDDING,
            baselines=enc.baseline_ids,
            target=target,
            additional_forward_args=(enc.attention_mask,),
            n_steps=n,
            method="adaptive",
            path=PathConfig(gap_warning=None),
            progress=False,
        )["conductance"]
        gaps = torch.stack([s.relative_delta(c) for c in CUTS], 1)  # [N, 6]
        out["median"][str(n)] = float(gaps.median())
        out["worst"][str(n)] = float(gaps.max())
        out["median_by_layer"][str(n)] = [round(float(v), 6) for v in gaps.median(0).values]
    return out
