"""Do the MiniLM study's scores agree with ablation? Per test sentence, layer and score: the top-``k`` MLP neurons by
the score, their ablation scores and the Pearson correlation; the same over the 12 heads of each attention layer;
and how many of the top neurons (by a score) must go, together, before the prediction changes.

Everything goes through the library's one ablation implementation (:mod:`unitscope.data.ablation`) on the unit
specification: an int unit of an MLP layer is one neuron at every token, a unit of an attention layer under
``UnitSpec.heads(12)`` is one head (its 32 dims at every token). A unit is set to 0 (the paper's choice) and, as
a second column, to its value at the baseline input (what conductance, a path integral from the baseline,
measures): ``pearson`` and ``pearson_to_baseline``.

>>> import pandas as pd
>>> rows = pd.DataFrame({"layer": [0, 0], "score": ["conductance"] * 2, "pearson": [0.2, 0.4],
...                      "pearson_to_baseline": [0.5, 0.7]})
>>> summarize_agreement(rows)[["layer", "score", "mean", "n"]].round(3).values.tolist()
[[0, 'conductance', 0.3, 2]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attribution.scores import activation
from ..core.progress import bar
from ..data.ablation import ablation_scores, cumulative_ablation
from .agreement import pearson
from .transformer_scores import HEADS, layers

__all__ = ["agreement_and_flips", "summarize_agreement", "summarize_flips", "pearson"]


def _label(out: torch.Tensor) -> torch.Tensor:
    return out.argmax(1).to(out.dtype)


def agreement_and_flips(
    lm,
    scores: dict,
    *,
    k: int = 10,
    max_flip: int = 20,
    flip_scores=("conductance", "internal_influence"),
    internal_batch_size: int = 64,
    progress: bool | None = None,
):
    """Per sentence × layer × score: the Pearson correlation between the score's values of its top-``k`` MLP
    neurons and their ablation scores (``F(x) − F(x with the neuron ablated at every token)``, F = the predicted
    class's logit), and over all 12 heads of the layer; flip counts for ``flip_scores`` (the top 1 … ``max_flip``
    neurons by the score ablated together; NaN if none flips the prediction). ``scores``: what
    :func:`unitscope.studies.transformer_scores.score_sentences` returns.

    Returns ``(neuron rows, head rows, flip rows, ablation scores {(i, layer): {neuron: score}})``; the rows'
    ``score`` column names the score.
    """
    mlp, att = layers()
    enc = scores["encoded"]
    names = list(scores["neurons"])
    flip_scores = [m for m in flip_scores if m in names]
    rows, hrows, frows, ablations = [], [], [], {}
    model = lm.on_ids  # token ids in: ablation takes them at any layer
    for i in bar(
        range(enc.ids.shape[0]), desc="ablation (every layer of one sentence)", unit="sentence", progress=progress
    ):
        L = int(enc.lengths[i])
        ids, mask = enc.ids[i : i + 1, :L], enc.attention_mask[i : i + 1, :L]
        c = int(scores["label"][i])
        kw = dict(target=c, additional_forward_args=(mask,), internal_batch_size=internal_batch_size)
        at_base = activation(model, enc.baseline_ids[i : i + 1, :L], mlp + att, additional_forward_args=(mask,))
        for li, (mlp_name, att_name) in enumerate(zip(mlp, att)):
            values = {m: scores["neurons"][m][mlp_name][i] for m in names}
            top = {m: v.topk(k).indices for m, v in values.items()}
            units = sorted(set(torch.cat(list(top.values())).tolist()))
            abl = dict(zip(units, ablation_scores(model, ids, mlp_name, units=units, **kw)[0].tolist()))
            abl_b = dict(
                zip(
                    units,
                    ablation_scores(model, ids, mlp_name, units=units, value=at_base[mlp_name][0], **kw)[0].tolist(),
                )
            )
            ablations[(i, li)] = abl
            for m in names:
                a = values[m][top[m]].numpy()
                b = np.array([abl[u] for u in top[m].tolist()])
                bb = np.array([abl_b[u] for u in top[m].tolist()])
                rows.append(
                    {
                        "example": i,
                        "layer": li,
                        "score": m,
                        "pearson": pearson(a, b),
                        "pearson_to_baseline": pearson(a, bb),
                    }
                )
            if flip_scores:
                order = torch.stack([values[m].topk(max_flip).indices for m in flip_scores])  # [S, max_flip]
                s = len(flip_scores)
                after = cumulative_ablation(
                    model,
                    ids.expand(s, -1),
                    mlp_name,
                    order,
                    target=_label,
                    additional_forward_args=(mask.expand(s, -1),),
                    internal_batch_size=internal_batch_size,
                ).long()  # [S, max_flip]
                for m, labels in zip(flip_scores, after):
                    changed = (labels != c).nonzero()
                    frows.append(
                        {
                            "example": i,
                            "layer": li,
                            "score": m,
                            "flips_at": int(changed[0]) + 1 if changed.numel() else float("nan"),
                        }
                    )
            all_heads = list(range(HEADS.n_heads))
            habl = ablation_scores(model, ids, att_name, units=all_heads, spec=HEADS, **kw)[0].numpy()
            habl_b = ablation_scores(
                model, ids, att_name, units=all_heads, spec=HEADS, value=at_base[att_name][0][0], **kw
            )[0].numpy()
            for m in names:
                h = scores["heads"][m][att_name][i].numpy()
                hrows.append(
                    {
                        "example": i,
                        "layer": li,
                        "score": m,
                        "pearson": pearson(h, habl),
                        "pearson_to_baseline": pearson(h, habl_b),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(hrows), pd.DataFrame(frows), ablations


def summarize_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and median Pearson per layer × score (ablation to 0 and to the baseline value)."""
    g = df.groupby(["layer", "score"], sort=False)
    return pd.DataFrame(
        {
            "mean": g["pearson"].mean(),
            "median": g["pearson"].median(),
            "n": g["pearson"].count(),
            "mean_to_baseline": g["pearson_to_baseline"].mean(),
            "median_to_baseline": g["pearson_to_baseline"].median(),
        }
    ).reset_index()


def summarize_flips(df: pd.DataFrame, max_flip: int) -> pd.DataFrame:
    """Per layer × score: the share of sentences that flipped within ``max_flip`` neurons, the mean and median
    count among those, the share that flipped within 10, and how many never flipped."""
    out = []
    for (layer, m), g in df.groupby(["layer", "score"], sort=False):
        f = g["flips_at"].dropna()
        out.append(
            {
                "layer": layer,
                "score": m,
                "flipped": float(g["flips_at"].notna().mean()),
                "mean_flips_at": float(f.mean()) if len(f) else float("nan"),
                "median_flips_at": float(f.median()) if len(f) else float("nan"),
                "flip_top10": float((g["flips_at"] <= 10).mean()),
                f"never_within_{max_flip}": int(g["flips_at"].isna().sum()),
                "n": len(g),
            }
        )
    return pd.DataFrame(out)
