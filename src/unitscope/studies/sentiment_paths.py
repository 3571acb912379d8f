"""``python -m unitscope.studies.sentiment_paths [RECIPE …] [--n N]``: why conductance agrees with ablation more on
some sentiment CNNs than on others.

Above the 256 max-pooled filters the model is ``out(relu(fc(filters)))``: piecewise linear, so the gradient of the
output with respect to the filters depends only on which of the 10 hidden units are on. Ablating one filter at the
input ``x`` (and gradient × activation) sees the hidden pattern *at x*; conductance integrates the gradient over the
path from the zero-embedding baseline to ``x``, where the pattern can differ. Per recipe, on the first ``N`` test
sentences: conductance's agreement with ablation (mean Pearson over the top-10 filters, as the study; also against
ablation to each filter's value at the baseline instead of 0), the hidden units on at ``x``, the share of the path
(50 points) whose hidden pattern is the one at ``x``, and how the agreement differs between the sentences above and
below the median of that share. The last line printed is a JSON object.

>>> import torch
>>> from unitscope.zoo.sentiment_model import SentimentCNN
>>> net = SentimentCNN(vocab_size=5, maps=2)
>>> share, on = pattern_on_path(net, torch.randn(3, 12, 50), n_points=8)
>>> share.shape, on.shape, bool(((share >= 1 / 8) & (share <= 1)).all())
(torch.Size([3]), torch.Size([3]), True)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ..core.state import restores_process_state, torch_threads
from .agreement import top_k_pearson

__all__ = ["pattern_on_path", "measure", "main"]

RECIPES = (
    "minilm-context-all",
    "minilm-context-soft",
    "minilm-context-vader",
    "minilm-context-soft-vader",
    "minilm-context-soft-vader-edrop",
)  # the last: the default (zoo.sentiment.DEFAULT_RECIPE)


def pattern_on_path(model, emb: torch.Tensor, *, n_points: int = 50):
    """``(share [N], hidden units on at x [N])``: for each sentence, the share of the points ``α · emb`` (α from
    1/n to 1) where the on/off pattern of the hidden layer (``relu(fc(filters))``) is the one at ``emb`` itself."""
    with torch.no_grad():
        alphas = torch.arange(1, n_points + 1, dtype=emb.dtype) / n_points
        pats = torch.stack([model.fc(model.filters(a * emb)) > 0 for a in alphas])  # [A, N, hidden]
    return (pats == pats[-1]).all(-1).float().mean(0), pats[-1].sum(-1)


def _pearson_top(c: torch.Tensor, a: torch.Tensor, k: int = 10) -> np.ndarray:
    return np.asarray([r for *_, r in top_k_pearson(c, a, k)])


def measure(recipe: str, *, n: int = 200, n_steps: int = 50, seed: int = 0) -> dict:
    """One recipe's row (see the module's docs)."""
    from ..attribution.config import PathConfig
    from ..attribution.scores import attribute
    from ..data.ablation import ablation_scores
    from ..zoo.sentiment import movie_reviews, sentiment_cnn

    net = sentiment_cnn(recipe=recipe, seed=seed, progress=False)
    m = net.model
    _, emb = net.encode(movie_reviews().test.sentences[:n])
    with torch.enable_grad():
        cond = attribute(
            m, emb, ["filters"], scores=["conductance"], n_steps=n_steps, path=PathConfig(gap_warning=None)
        )["conductance"].per_channel("filters")
    with torch.no_grad():
        at_baseline = m.filters(torch.zeros(1, 20, emb.shape[-1]))[0]  # relu(conv bias): each filter at the baseline
    r0 = _pearson_top(cond, ablation_scores(m, emb, "filters"))
    rb = _pearson_top(cond, ablation_scores(m, emb, "filters", value=at_baseline))
    share, on = pattern_on_path(m, emb)
    share = share.numpy()
    hi = share >= np.median(share)
    return {
        "recipe": recipe,
        "seed": seed,
        "n": len(share),
        "pearson": round(float(np.nanmean(r0)), 3),
        "pearson_vs_ablation_to_baseline_value": round(float(np.nanmean(rb)), 3),
        "filters_above_0_at_baseline": int((at_baseline > 0).sum()),
        "hidden_on_at_x": round(float(on.float().mean()), 2),
        "path_share_with_x_pattern": round(float(share.mean()), 3),
        "pearson_share_above_median": round(float(np.nanmean(r0[hi])), 3),
        "pearson_share_below_median": round(float(np.nanmean(r0[~hi])), 3),
    }


@restores_process_state
def main(argv=None) -> list:
    p = argparse.ArgumentParser(
        prog="python -m unitscope.studies.sentiment_paths",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipes", nargs="*", default=list(RECIPES), help="recipes of unitscope.zoo.sentiment.RECIPES")
    p.add_argument("--n", type=int, default=200, help="test sentences (default 200)")
    p.add_argument("--seed", type=int, default=0, help="the recipes' training seed")
    args = p.parse_args(argv)
    rows = []
    with torch_threads(1):
        for r in args.recipes:
            rows.append(measure(r, n=args.n, seed=args.seed))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
