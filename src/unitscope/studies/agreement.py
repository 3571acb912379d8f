"""Do importance scores agree with ablation? (Dhamdhere et al., section 5.)

* ``ablation_agreement``: per input and method, the top-k channels by the method, their ablation scores,
  and the Pearson correlation between the two;
* ``flip_counts``: how many of the top channels (by a method) must be ablated, one more at a time,
  before the predicted label changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..data.ablation import ablation_scores, cumulative_ablation
from ..core.inputs import model_device, prepare
from ..attribution.config import PathConfig
from ..attribution.engine import outputs_at_x
from ..attribution.scores import SCORES, attribute
from ..core.state import analysis_mode

__all__ = ["ablation_agreement", "flip_counts", "summarize_agreement", "summarize_flips", "pearson", "top_k_pearson"]


def pearson(a, b) -> float:
    """Pearson's r, NaN when either side is constant."""
    return float(stats.pearsonr(a, b)[0]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


def ablation_agreement(
    model,
    inputs,
    layer,
    *,
    scores=SCORES,
    k: int = 10,
    n_steps: int = 50,
    method: str = "adaptive",
    baselines=None,
    additional_forward_args=None,
    internal_batch_size: int = 256,
) -> pd.DataFrame:
    """One row per input × method: ``pearson`` between the method's channel scores and the ablation scores
    of its top-``k`` channels (target: the top class; ablation sets a channel to 0).

    ``scores``: the score names to compute (see :data:`unitscope.attribution.scores.SCORES`), or scores already
    computed — ``{score: Scores}`` as :func:`unitscope.attribute` returns.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> df = ablation_agreement(net, torch.randn(6, 4), "1", k=5)
    >>> {"example", "score", "pearson"} <= set(df.columns), len(df)
    (True, 24)
    """
    if isinstance(scores, str) or not isinstance(scores, dict):
        scores = attribute(
            model,
            inputs,
            [layer],
            scores=scores,
            baselines=baselines,
            additional_forward_args=additional_forward_args,
            n_steps=n_steps,
            method=method,
            path=PathConfig(gap_warning=None),
        )
    name = next(iter(scores.values())).layers[0]
    abl = ablation_scores(
        model, inputs, layer, additional_forward_args=additional_forward_args, internal_batch_size=internal_batch_size
    )
    rows = []
    for m, s in scores.items():
        for i, (top, a, b, r) in enumerate(top_k_pearson(s.per_channel(name), abl, k)):
            rows.append(
                {
                    "example": i,
                    "score": m,
                    "pearson": r,
                    "top_units": top.tolist(),
                    "scores": a.tolist(),
                    "ablation_scores": b.tolist(),
                }
            )
    return pd.DataFrame(rows)


def top_k_pearson(scores: torch.Tensor, ablation: torch.Tensor, k: int = 10) -> list[tuple]:
    """Per example (row of ``[N, C]``): ``(top, scores there, ablation there, Pearson)`` over its top-``k``
    channels by ``scores``.

    >>> [round(r, 3) for *_, r in top_k_pearson(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0]]))]
    [-0.5]
    """
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    out = []
    for i in range(scores.shape[0]):
        a, b = scores[i, top[i]].numpy(), ablation[i, top[i]].numpy()
        out.append((top[i], a, b, pearson(a, b)))
    return out


def summarize_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and quartiles of the per-input Pearson correlation, one row per method."""
    g = df.groupby("score", sort=False)["pearson"]
    return pd.DataFrame(
        {"mean": g.mean(), "q25": g.quantile(0.25), "median": g.median(), "q75": g.quantile(0.75), "n": g.count()}
    )


def flip_counts(
    model,
    inputs,
    layer,
    order: torch.Tensor,
    *,
    max_units: int | None = None,
    additional_forward_args=None,
    internal_batch_size: int = 256,
) -> pd.DataFrame:
    """For each input, the smallest m such that ablating channels ``order[i, :m]`` changes the top label
    (``flips_at``; NaN if none up to ``max_units``, default: every channel in ``order``), and whether ablating
    the first 10 flips it (``flip_top10``).
    """
    batch = prepare(inputs, None, additional_forward_args, device=model_device(model))
    with analysis_mode(model), torch.no_grad():
        label = outputs_at_x(model, batch, None).argmax(1).cpu()
    after = cumulative_ablation(
        model,
        inputs,
        layer,
        order,
        max_units=max_units,
        target=lambda out: out.argmax(1).to(out.dtype),
        additional_forward_args=additional_forward_args,
        internal_batch_size=internal_batch_size,
    ).long()  # [N, M]: the label after
    m_max = after.shape[1]
    rows = []
    for i in range(len(label)):
        changed = (after[i] != int(label[i])).nonzero()
        rows.append(
            {
                "example": i,
                "label": int(label[i]),
                "flips_at": int(changed[0]) + 1 if changed.numel() else float("nan"),
                "flip_top10": bool(m_max >= 10 and after[i, 9] != label[i]),
            }
        )
    return pd.DataFrame(rows)


def summarize_flips(df: pd.DataFrame) -> dict:
    """Mean and max of the flip counts over the inputs that flipped, the share of all inputs that needed more
    than 10 (never flipping counts as more), and how many never flipped."""
    counts = df["flips_at"].dropna()
    over = float(((df["flips_at"] > 10) | df["flips_at"].isna()).mean())
    return {
        "mean": float(counts.mean()) if len(counts) else float("nan"),
        "max": float(counts.max()) if len(counts) else float("nan"),
        "over_10": over,
        "never": int(df["flips_at"].isna().sum()),
        "n": int(len(df)),
    }
