"""Feature selection by importance (Dhamdhere et al., Table 1): are a label's most important filters
enough to tell the labels apart?

For a set of labels: per label, each channel's importance is averaged over that label's training examples
(target = the label); the ``k`` channels with the highest average for any label are kept; a linear classifier
(scikit-learn) is trained on those channels' (spatially averaged) activations and scored on held-out data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..core.errors import UnitscopeError
from ..attribution.config import PathConfig
from ..data.scan import scan
from ..attribution.scores import SCORES, activation

__all__ = ["feature_selection", "channel_features", "class_importance"]


def channel_features(model, x, layer, *, batch_size: int = 512) -> np.ndarray:
    """``[N, C]``: each channel's activation averaged over positions."""
    out = []
    for i in range(0, len(x), batch_size):
        a = activation(model, x[i : i + batch_size], [layer])
        v = a[a.layers[0]]
        out.append(v if v.dim() == 2 else v.flatten(2).mean(2))
    return torch.cat(out).numpy()


def class_importance(model, x, y, layer, *, scores=SCORES, n_steps: int = 20, batch_size: int = 128) -> dict:
    """Per label, each channel's importance for that label averaged over the label's examples:
    ``{score: {label: np.ndarray [C]}}`` — one :func:`unitscope.data.scan.scan` pass (target = each example's
    label, per-class sums of the channels' summed scores), never the per-example scores."""
    methods = [scores] if isinstance(scores, str) else list(scores)
    y = torch.as_tensor(y)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    r = scan(
        model,
        batches,
        [layer],
        scores={m: "sum" for m in methods},
        target="label",
        by="class",
        top_k=1,
        path=PathConfig(n_steps=n_steps),
        progress=False,
    )
    name = r.layers[0]
    labels = r.classes.tolist()
    return {m: dict(zip(labels, r.class_means(name, score=m).numpy())) for m in methods}


def feature_selection(
    model,
    train_x,
    train_y,
    test_x,
    test_y,
    layer,
    label_sets,
    *,
    ks=(5, 10, 15, 20),
    scores=SCORES,
    n_steps: int = 20,
    batch_size: int = 128,
    random_repeats: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per label set × method × k with the held-out ``accuracy`` (plus a ``random`` channel choice).

    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 3))
    >>> x, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    >>> df = feature_selection(net, x, y, x, y, "1", [[0, 1]], ks=(2,), scores=["activation"])
    >>> sorted(df.score.unique())
    ['activation', 'random']
    """
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    methods = [scores] if isinstance(scores, str) else list(scores)
    importance = class_importance(
        model, train_x, train_y, layer, scores=methods, n_steps=n_steps, batch_size=batch_size
    )
    f_train = channel_features(model, train_x, layer)
    f_test = channel_features(model, test_x, layer)
    rng = np.random.default_rng(seed)
    rows = []
    for set_id, labels in enumerate(label_sets):
        labels = [int(label) for label in labels]
        missing = [label for label in labels if label not in importance[methods[0]]]
        if missing:
            raise UnitscopeError("labels without training examples", labels=missing, label_set=labels)
        tr = np.isin(train_y.numpy(), labels)
        te = np.isin(test_y.numpy(), labels)
        choices = {}
        for m in methods:
            agg = np.stack([importance[m][label] for label in labels])  # [L, C]
            best = agg.max(0)
            choices[m] = np.argsort(-best)
        n_channels = f_train.shape[1]
        for k in ks:
            picks = [(m, choices[m][:k]) for m in methods]
            picks += [("random", rng.choice(n_channels, size=k, replace=False)) for _ in range(random_repeats)]
            accs = {}
            for m, cols in picks:
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
                clf.fit(f_train[tr][:, cols], train_y.numpy()[tr])
                accs.setdefault(m, []).append(float(clf.score(f_test[te][:, cols], test_y.numpy()[te])))
            for m, a in accs.items():
                rows.append(
                    {
                        "label_set": set_id,
                        "labels": "".join(map(str, labels)),
                        "score": m,
                        "k": k,
                        "accuracy": float(np.mean(a)),
                    }
                )
    return pd.DataFrame(rows)
