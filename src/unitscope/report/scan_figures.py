"""Figures of a dataset scan: top examples per unit as an image grid, top sentences per sentiment filter."""

from __future__ import annotations

import torch

from ..data.scan import ScanResult

__all__ = ["top_grid", "top_sentences", "dead_units"]


def dead_units(result: ScanResult, layer: str) -> torch.Tensor:
    """``[U]`` bool: units whose activation is 0 on every scanned example (mean and spread 0; with no activation
    scores, every top value 0) — they have no top examples and no selectivity to show."""
    if "activation" in result.scores:
        return (result.mean(layer, score="activation") == 0) & (result.std(layer, score="activation") == 0)
    top = result.top(layer, score=result.scores[0])
    return (top.values == 0).all(1)


def top_grid(dataset, result: ScanResult, layer: str, score: str, units, *, title: str | None = None):
    """A figure: one row per unit, its top examples (images) left to right, each titled "label · value"; a dead
    unit's row says so instead of showing arbitrary examples (drawn by :func:`unitscope.report.grids.image_grid`)."""
    from .grids import image_grid

    top = result.top(layer, score=score)
    dead = dead_units(result, layer)
    k = top.indices.shape[1]
    units = list(units)
    images, titles, cell_notes, row_notes = [], [], {}, {}
    for r, u in enumerate(units):
        if bool(dead[u]):
            row_notes[r] = f"dead: activation 0 on all {result.count} examples"
        for c in range(k):
            i = int(top.indices[u, c])
            if i < 0 or float(top.values[u, c]) == 0:  # a tie at 0 is no top example: any example would do
                if i >= 0:
                    cell_notes[len(images)] = "0"
                images.append(None)
                titles.append(None)
                continue
            x, y = dataset[i][0], dataset[i][1]
            images.append(x)
            titles.append(f"{int(y)} · {float(top.values[u, c]):.3g}")
    return image_grid(
        images,
        titles,
        cols=k,
        row_labels=[f"unit {u}" for u in units],
        row_notes=row_notes,
        cell_notes=cell_notes,
        cmap="gray_r",
        cell=(1.25, 1.45),
        fontsize=9,
        title=(title or f"top {k} examples per unit — {score}, {layer}")
        + "\neach image: its true label · the unit's value on it, largest first; '0': no example above 0",
    )


def top_sentences(trained, sentences, labels, result: ScanResult, score: str, units, *, layer: str = "filters") -> str:
    """Markdown: per filter of the sentiment CNN, its top sentences with the n-gram that the filter's max over
    time picked in **bold** (recomputed for those sentences only)."""
    model = trained.model
    filt = model.filters
    top = result.top(layer, score=score)
    dead = dead_units(result, layer)
    lines = [f"# Top sentences per filter by {score} ({layer})", ""]
    for u in units:
        w = filt.windows[u // filt.maps]
        conv = filt.convs[f"w{w}"]
        lines.append(f"## filter {u} (window {w}, map {u % filt.maps})")
        lines.append("")
        if bool(dead[u]):
            lines += [f"dead: 0 on all {result.count} sentences (no top sentences)", ""]
            continue
        for rank, (i, v) in enumerate(zip(top.indices[u].tolist(), top.values[u].tolist()), start=1):
            if i < 0:
                continue
            tokens = trained.tokens(sentences[i])
            _, emb = trained.encode([sentences[i]])
            with torch.no_grad():
                t = int(torch.relu(conv(emb.transpose(1, 2)))[0, u % filt.maps].argmax()) - trained.min_pad
            words = [f"**{tok}**" if t <= k < t + w else tok for k, tok in enumerate(tokens)]
            sign = "+" if int(labels[i]) == 1 else "−"
            lines.append(f"{rank}. ({sign}, {v:.3g}) " + " ".join(words))
        lines.append("")
    return "\n".join(lines)
