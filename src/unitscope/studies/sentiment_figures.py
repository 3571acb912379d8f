"""Figures, the HTML snippet, the caption and the report's manifest entry of the sentiment study
(:mod:`unitscope.studies.sentiment`): the additivity histogram, the division-of-labour heat-map and the analogue of
the paper's Figures 4 and 5 — the negation filters' top corpus sentences, tokens coloured by per-token conductance,
the n-gram that the filter's max over time picked underlined (HTML) or framed in bold (PNG)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "negation_html",
    "negation_caption",
    "ratio_figure",
    "division_figure",
    "negation_figure",
    "write_manifest",
    "PAPER_PEARSON",
]

PAPER_PEARSON = {"conductance": 0.88, "internal_influence": -0.43, "grad_x_activation": 0.99, "activation": 0.19}


def ratio_figure(ratio: np.ndarray, path: str) -> str:
    from ..report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.hist(ratio, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    ax.axvline(np.median(ratio), color="k", ls="--", lw=1, label=f"median {np.median(ratio):.2f}")
    ax.set_xlabel("|Σ ablation scores| / Σ |ablation scores|", fontsize=8)
    ax.set_ylabel("sentences", fontsize=8)
    ax.set_title(f"additivity of filter ablations ({len(ratio)} test sentences)", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def division_figure(signs: torch.Tensor, path: str, title: str) -> str:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from scipy.cluster.hierarchy import leaves_list, linkage

    from ..report.figures import plt, save_figure

    s = signs.numpy().astype(np.float64)
    rows = leaves_list(linkage(s, method="average", metric="hamming")) if s.shape[0] > 2 else np.arange(s.shape[0])
    cols = leaves_list(linkage(s.T, method="average", metric="hamming"))
    cmap = ListedColormap(["blue", "green", "red"])
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    im = ax.imshow(s[rows][:, cols], aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    ax.set_xlabel("filter (clustered)", fontsize=8)
    ax.set_ylabel("sentence (clustered)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=ax, ticks=[-1, 0, 1], fraction=0.04)
    cb.ax.set_yticklabels(["negative", "≈ 0", "positive"], fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


_HTML = """<div class="unitscope-sentiment-negation" style="font-family: sans-serif; font-size: 14px; line-height: 1.9">
<p style="font-size: 12px; color: #555">Per-token conductance through each filter (F = log-odds towards the probe's
predicted class): <span style="background: rgba(33,102,172,0.6)">&nbsp;supports&nbsp;</span>
<span style="background: rgba(178,24,43,0.6)">&nbsp;opposes&nbsp;</span>; opacity ∝ |value| / the largest in the
block; <u>underlined</u>: the n-gram that the filter's max over time picked in that sentence. Hover a token
for its value.</p>
{% for p in probes %}<h3>“{{ p.probe }}” — predicted {{ p.predicted }}
(log-odds {{ "%+.2f"|format(p.log_odds) }})</h3>
{% if not p.blocks %}<p>No filter among the {{ p.n_candidates }} with the highest conductance has its per-token
conductance on “{{ p.phrase }}”.</p>{% endif %}
{% for b in p.blocks %}<h4>filter #{{ b.filter }} (window {{ b.window }}; conductance
{{ "%+.3f"|format(b.conductance) }} on the probe){% if b.n_negated is not none %}: {{ b.n_negated }} of its top
{{ b.examples|length }} corpus sentences contain a negation{% if base_rate is not none %} (corpus base rate
{{ "%.1f"|format(100 * base_rate) }}%){% endif %}{% endif %}</h4>
<p>{{ b.probe_html }}</p>
<ol>{% for e in b.examples %}<li>{{ e.html }}
<small style="color:#555">(conductance {{ "%+.3f"|format(e.conductance) }})</small></li>
{% endfor %}</ol>
{% endfor %}{% endfor %}</div>
"""


def _tokens_html(tokens, values, scale: float, ngram=None) -> str:
    from markupsafe import escape

    spans = []
    for w, v in zip(tokens, values):
        if abs(v) < 5e-4:  # no conductance: plain text keeps the snippet small
            spans.append(str(escape(w)))
            continue
        alpha = min(1.0, abs(v) / scale) if scale > 0 else 0.0
        rgb = "33,102,172" if v >= 0 else "178,24,43"
        style = f"background: rgba({rgb},{alpha:.2f}); padding: 1px 2px; border-radius: 3px"
        spans.append(f'<span style="{style}" title="{v:+.4f}">{escape(w)}</span>')
    if ngram is not None and ngram[1] > ngram[0]:
        a, b = ngram
        spans[a:b] = ['<u style="text-decoration-thickness: 2px">' + " ".join(spans[a:b]) + "</u>"]
    return " ".join(spans)


def negation_html(
    probes,
    examples: list[dict],
    path: str,
    *,
    candidates: int = 30,
    base_rate: float | None = None,
    windows=None,
    maps: int | None = None,
) -> str:
    """An HTML snippet (one ``<div>``, inline styles) with each probe and each found filter's top sentences,
    tokens coloured by their per-token conductance, the n-gram the filter picked underlined (the analogue of the
    paper's Figures 4 and 5)."""
    from jinja2 import Template
    from markupsafe import Markup

    out = []
    for p in probes:
        blocks = []
        for f in p.found:
            ex = [e for e in examples if e["probe"] == p.probe and e["filter"] == f]
            scale = max([abs(v) for v in p.attributions[f]] + [abs(v) for e in ex for v in e["attributions"]] + [1e-12])
            flags = [e["has_negation"] for e in ex if "has_negation" in e]
            blocks.append(
                {
                    "filter": f,
                    "conductance": float(p.table.set_index("filter").loc[f, "conductance"]),
                    "window": windows[f // maps] if windows and maps else "?",
                    "n_negated": sum(flags) if flags else None,
                    "probe_html": Markup(_tokens_html(p.tokens, p.attributions[f], scale, p.ngrams.get(f))),
                    "examples": [
                        {
                            "html": Markup(_tokens_html(e["tokens"], e["attributions"], scale, e.get("ngram"))),
                            "conductance": e["conductance"],
                        }
                        for e in ex
                    ],
                }
            )
        out.append(
            {
                "probe": p.probe,
                "predicted": p.predicted,
                "log_odds": p.log_odds,
                "blocks": blocks,
                "phrase": " ".join(p.tokens[i] for i in p.phrase),
                "n_candidates": candidates,
            }
        )
    with open(path, "w") as fh:
        fh.write(Template(_HTML, autoescape=True).render(probes=out, base_rate=base_rate))
    return path


def _window(values, width: int = 16) -> slice:
    """``width`` tokens around the largest |value|."""
    peak = int(np.argmax(np.abs(values))) if len(values) else 0
    start = max(0, min(peak - width // 2, len(values) - width))
    return slice(start, start + width)


def _token_colour(v: float, scale: float):
    alpha = min(1.0, abs(v) / scale) if scale > 0 else 0.0
    return (33 / 255, 102 / 255, 172 / 255, alpha) if v >= 0 else (178 / 255, 24 / 255, 43 / 255, alpha)


def negation_figure(probes, examples: list[dict], path: str, *, per_filter: int = 3, width: float = 10.0) -> str:
    """Tokens drawn as text on coloured boxes (blue: supports the probe's prediction, red: opposes; opacity ∝
    |per-token conductance|; bold with a black frame: the n-gram the filter's max over time picked), one block
    per probe × found filter: the probe, then the filter's top corpus sentences, each cropped to 24 tokens
    around its peak."""
    from ..report.figures import plt, save_figure

    lines = []  # (kind, text or (tokens, values, scale))
    for p in probes:
        lines.append(
            (
                "title",
                f"“{p.probe}”: predicted {p.predicted} (log-odds {p.log_odds:+.2f}); filters whose "
                f"conductance falls on “{' '.join(p.tokens[i] for i in p.phrase)}”: "
                f"{', '.join(f'#{f}' for f in p.found) or 'none'}",
            )
        )
        for f in p.found:
            ex = [e for e in examples if e["probe"] == p.probe and e["filter"] == f][:per_filter]
            scale = max([abs(v) for v in p.attributions[f]] + [abs(v) for e in ex for v in e["attributions"]] + [1e-12])
            lines.append(("head", f"filter #{f} — on the probe, then its top corpus sentences by conductance"))
            a, b = p.ngrams.get(f, (0, 0))
            lines.append(("tokens", (p.tokens, p.attributions[f], scale, [a <= k < b for k in range(len(p.tokens))])))
            for e in ex:
                w = _window(e["attributions"], 24)
                pre = ["…"] if w.start > 0 else []
                post = ["…"] if w.stop < len(e["tokens"]) else []
                a, b = e.get("ngram", (0, 0))
                picked = [a <= k < b for k in range(len(e["tokens"]))][w]
                lines.append(
                    (
                        "tokens",
                        (
                            pre + e["tokens"][w] + post,
                            [0.0] * len(pre) + e["attributions"][w] + [0.0] * len(post),
                            scale,
                            [False] * len(pre) + picked + [False] * len(post),
                        ),
                    )
                )
    fig = plt.figure(figsize=(width, 1.0))
    renderer = fig.canvas.get_renderer()
    fs, step, gap, left = 8, 0.24, 0.05, 0.15

    def measure(word):
        t = fig.text(0, 0, word, fontsize=fs)
        w = t.get_window_extent(renderer).width / fig.dpi
        t.remove()
        return w

    placed, y = [], step  # (x, y from the top in inches, kind, text, colour)
    for kind, item in lines:
        if kind != "tokens":
            y += 0.1 if kind == "title" and placed else 0.0
            placed.append((left - (0.1 if kind == "title" else 0.0), y, kind, item, None))
            y += step
            continue
        tokens, values, scale, picked = item
        x = left + 0.2
        for w, v, pk in zip(tokens, values, picked):
            wd = measure(w)
            if x + wd > width - left:
                x, y = left + 0.4, y + step
            placed.append((x, y, "picked" if pk else "token", w, _token_colour(v, scale)))
            x += wd + gap + 0.04
        y += step
    height = y + step
    fig.set_size_inches(width, height)
    for x, yy, kind, text, colour in placed:
        kw = dict(
            fontsize=fs + (1 if kind == "title" else 0),
            va="baseline",
            weight="bold" if kind in ("title", "picked") else "normal",
            style="italic" if kind == "head" else "normal",
        )
        if colour is not None:
            kw["bbox"] = dict(boxstyle="square,pad=0.12", fc=colour, ec="black" if kind == "picked" else "none", lw=0.8)
        fig.text(x / width, 1 - yy / height, text, **kw)
    return save_figure(fig, path, dpi=120)


def negation_caption(probes, examples: list[dict], base_rate: float, n_corpus: int, k: int) -> str:
    """Markdown caption of ``sentiment_negation.png`` / ``.html`` (the analogue of the paper's Figures 4 and 5)."""
    lines = [
        "**Negation filters (the analogue of the paper's Figures 4 and 5).** For each probe, the filters with "
        "the highest conductance whose per-token conductance falls on the negated phrase; under each, its "
        f"top {k} of {n_corpus} corpus sentences by conductance. Tokens are coloured by per-token conductance "
        "(blue: towards the probe's predicted class, red: against); the n-gram that the filter's max over time "
        f"picked is underlined (bold, framed in the PNG). {100 * base_rate:.1f}% of the corpus sentences contain "
        "not / n't / no / never (the base rate).",
        "",
    ]
    for p in probes:
        lines.append(
            f"- “{p.probe}”: predicted {p.predicted} (log-odds {p.log_odds:+.2f}); "
            + (
                "; ".join(
                    f"filter #{f}: {sum(e['has_negation'] for e in ex)} of {len(ex)} top sentences "
                    f"with a negation ("
                    f"{sum(e['has_negation'] for e in ex) / max(1, len(ex)) / max(base_rate, 1e-12):.1f}"
                    f"× the base rate), the picked n-gram holds one in "
                    f"{sum(e['ngram_has_negation'] for e in ex)}"
                    for f in p.found
                    for ex in [[e for e in examples if e["probe"] == p.probe and e["filter"] == f]]
                )
                or "no filter's conductance falls on the negated phrase"
            )
        )
    return "\n".join(lines) + "\n"


def write_manifest(out, result, net, probes, examples, base_rate, n_corpus, sz, with_recipes) -> None:
    from ..report.manifest import write_entry

    model = (
        f"the sentiment CNN ({result.get('model') or 'recipe ' + result['recipe']}; {result['n_train']} "
        f"training sentences)"
        if result.get("recipe")
        else "the sentiment CNN"
    )
    heads = [
        f"Test accuracy of {model}: {result['test_accuracy']:.3f} on the {net.info.get('n_test', '?')} "
        f"held-out movie-review sentences.",
        f"Agreement with ablation on {result['n_agreement']} test sentences (mean Pearson r over sentences, "
        f"top-10 filters): conductance {result['pearson']['conductance']:+.2f} (paper 0.88), internal "
        f"influence {result['pearson']['internal_influence']:+.2f} (paper −0.43).",
        f"Division of labour on {result['n_division']} sentences: {100 * result['both_sign_filter_share']:.1f} % "
        f"of the filters push towards both signs on at least 10 % of the sentences each.",
    ]
    for p in probes:
        found = result["negation"][p.probe]["filters"]
        best = max(found, key=lambda f: f["top_sentences_with_negation"], default=None)
        expected = "negative" if "good" in p.probe else "positive"
        right = "the right sign" if p.predicted == expected else f"the wrong sign: people read it as {expected}"
        heads.append(
            f"“{p.probe}” gets log-odds {p.log_odds:+.2f} ({p.predicted}, {right}); "
            + (
                f"of its negation filters, #{best['filter']} has a negation in "
                f"{100 * best['top_sentences_with_negation']:.0f} % of its top {best['n_top_sentences']} "
                f"corpus sentences ({best['top_sentences_with_negation_vs_base_rate']:.1f}× the base rate of "
                f"{100 * base_rate:.1f} %)."
                if best
                else "no filter's conductance falls on the negated phrase."
            )
        )
    caption = negation_caption(probes, examples, base_rate, n_corpus, sz["examples"]).replace("**", "")
    figures = [
        ("sentiment_negation.png", caption),
        (
            "sentiment_division.png",
            "Sign of each filter's conductance for logit(pos) − logit(neg) per sentence "
            "(rows: sentences, columns: filters, both clustered): red pushes towards positive, blue towards "
            "negative, green |c| < 0.01.",
        ),
        (
            "sentiment_ablation_ratio.png",
            "Per test sentence, |Σ ablation| / Σ |ablation| over the 256 filters: "
            "1 means every filter's ablation pushes the same way; low values mean positive and negative effects "
            "cancel.",
        ),
    ]
    tables = [
        (
            "sentiment_agreement.csv",
            "Mean / median Pearson r between each score's values on a sentence's "
            "top-10 filters and their ablation scores, with the paper's numbers.",
        ),
        (
            "sentiment_negation.csv",
            "Candidate filters per probe, most conductance first: the share of their "
            "per-token conductance on the negated phrase and on the negation, and whether they qualify.",
        ),
    ]
    if with_recipes:
        tables.insert(
            0,
            (
                "sentiment_recipes.csv",
                "Recipes tried: training data, tokens, word vectors, held-out "
                "movie-review test accuracy and both probes' log-odds (negative = negative sentiment).",
            ),
        )
    comps = [
        {
            "quantity": f"Pearson r with ablation, {m}",
            "ours": result["pearson"][m],
            "ours_setting": f"{model}, {result['n_agreement']} movie-review test sentences",
            "paper": v,
            "paper_setting": "Kim CNN on movie reviews (Dhamdhere et al. 2018)",
        }
        for m, v in PAPER_PEARSON.items()
        if m in result["pearson"]
    ]
    write_entry(
        out,
        title="Sentiment CNN (Kim 2014): agreement, division of labour, negation filters",
        description="Conductance of the 256 max-pooled filters of the paper's sentiment CNN: agreement with "
        "ablation, the sign of each filter's conductance across sentences, and filters that "
        "carry negation, shown on their top corpus sentences with the n-gram they picked.",
        headlines=heads,
        figures=figures,
        tables=tables,
        comparisons=comps,
        snippets=[("sentiment_negation.html", caption)],
        documents=["sentiment_negation_caption.md"],
        summary="sentiment.json",
        quick=result["quick"],
        scale=f"{result['n_agreement']} agreement / {n_corpus} corpus sentences",
        order=40,
        name="sentiment",
    )
