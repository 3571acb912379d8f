"""Figures of a dataset scan: top examples per unit as an image grid, top sentences per sentiment filter."""

from __future__ import annotations

import torch

from ..data.scan import ScanResult

__all__ = ["top_grid", "top_sentences"]


def top_grid(dataset, result: ScanResult, layer: str, method: str, units, *, title: str | None = None):
    """A figure: one row per unit, its top examples (images) left to right, each titled label · value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = result.top(layer, method)
    k = top.indices.shape[1]
    units = list(units)
    fig, axes = plt.subplots(len(units), k, figsize=(1.05 * k + 0.8, 1.15 * len(units)), squeeze=False)
    for r, u in enumerate(units):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            i = int(top.indices[u, c])
            if i < 0:
                ax.axis("off")
                continue
            x, y = dataset[i][0], dataset[i][1]
            ax.imshow(x.squeeze().numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{int(y)} · {float(top.values[u, c]):.3g}", fontsize=6)
            if c == 0:
                ax.set_ylabel(f"unit {u}", fontsize=7)
    fig.suptitle(title or f"top {k} examples per unit — {method}, {layer}", fontsize=9)
    fig.tight_layout()
    return fig


def top_sentences(trained, sentences, labels, result: ScanResult, method: str, units, layer: str = "filters") -> str:
    """Markdown: per filter of the sentiment CNN, its top sentences with the n-gram that the filter's max over
    time picked in **bold** (recomputed for those sentences only)."""
    from ..zoo.sentiment import MIN_PAD, tokenize

    model = trained.model
    filt = model.filters
    top = result.top(layer, method)
    lines = [f"# Top sentences per filter by {method} ({layer})", ""]
    for u in units:
        w = filt.windows[u // filt.maps]
        conv = filt.convs[f"w{w}"]
        lines.append(f"## filter {u} (window {w}, map {u % filt.maps})")
        lines.append("")
        for rank, (i, v) in enumerate(zip(top.indices[u].tolist(), top.values[u].tolist()), start=1):
            if i < 0:
                continue
            tokens = tokenize(sentences[i])
            _, emb = trained.encode([sentences[i]])
            with torch.no_grad():
                t = int(torch.relu(conv(emb.transpose(1, 2)))[0, u % filt.maps].argmax()) - MIN_PAD
            words = [f"**{tok}**" if t <= k < t + w else tok for k, tok in enumerate(tokens)]
            sign = "+" if int(labels[i]) == 1 else "−"
            lines.append(f"{rank}. ({sign}, {v:.3g}) " + " ".join(words))
        lines.append("")
    return "\n".join(lines)


