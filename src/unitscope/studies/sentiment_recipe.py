"""``python -m unitscope.studies.sentiment_recipe RECIPE [--seed N] [--negation]``: one recipe of the sentiment CNN
(:data:`unitscope.zoo.sentiment.RECIPES`), trained once and cached, measured as in the README's recipe table —
held-out movie-review test and dev accuracy and both probes' log-odds; with ``--negation`` also the paper's
negation procedure on every movie-review sentence (the study's part 4: :func:`negation_section`). The last line
printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ..core.state import restores_process_state, torch_threads
from .sentiment import NEGATION_PROBES, corpus_conductance
from .sentiment_negation import negation_section

__all__ = ["measure", "main"]


def measure(recipe: str, *, seed: int = 0, negation: bool = False, n_steps: int = 20, threads: int = 1) -> dict:
    """The recipe's row of the README's table (``negation``: with the best negation filter per probe)."""
    from ..zoo.sentiment import movie_reviews, sentiment_cnn

    t0 = time.perf_counter()
    net = sentiment_cnn(recipe=recipe, seed=seed, threads=threads)
    lo = net.log_odds(list(NEGATION_PROBES)).tolist()
    row = {
        "recipe": recipe,
        "seed": seed,
        "cached": net.cached,
        "test_accuracy": round(net.test_accuracy, 4),
        "dev_accuracy": round(net.dev_accuracy, 4),
        "best_epoch": net.info["best_epoch"],
        "dev_history": [round(v, 4) for v in net.info["dev_history"]],
        "n_train": net.info["n_train"],
        "n_augmented": net.info.get("n_augmented", 0),
        "train_seconds": round(net.info["train_seconds"]),
        "log_odds": {p: round(v, 3) for p, v in zip(NEGATION_PROBES, lo)},
    }
    if "dev_history_raw" in net.info:  # averaged weights: the trained weights' own dev accuracy per epoch beside
        row["dev_history_raw"] = [round(v, 4) for v in net.info["dev_history_raw"]]
    if negation:
        corpus = movie_reviews().all().sentences
        with torch_threads(threads), torch.enable_grad(), tempfile.TemporaryDirectory() as out:
            cond, _ = corpus_conductance(net, corpus, n_steps=n_steps)
            summary, *_ = negation_section(net, corpus, cond, out, k=20, echo=lambda *a: None)
        row["negation_sentence_share_in_corpus"] = summary["negation_sentence_share_in_corpus"]
        row["negation_filters"] = {
            p: [
                [f["filter"], f["top_sentences_with_negation"], f["top_sentences_with_negation_vs_base_rate"]]
                for f in v["filters"]
            ]
            for p, v in summary["negation"].items()
        }
    row["seconds"] = round(time.perf_counter() - t0)
    return row


@restores_process_state
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m unitscope.studies.sentiment_recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="a name of unitscope.zoo.sentiment.RECIPES")
    p.add_argument("--seed", type=int, default=0, help="the training seed (part of the cache key)")
    p.add_argument(
        "--negation",
        action="store_true",
        help="also the negation filters on all 10,568 movie-review sentences (minutes)",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from ..core.errors import UnitscopeError
    from ..zoo.sentiment import check_recipe

    try:
        check_recipe(args.recipe)
    except UnitscopeError as e:  # the one condition: an unknown name, said as a usage error (exit status 2)
        p.error(str(e))
    row = measure(args.recipe, seed=args.seed, negation=args.negation, threads=args.threads)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
