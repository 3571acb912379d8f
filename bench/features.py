"""Dictionary features as units (issue 31) on MiniLM's residual stream: speed against Captum and a per-feature loop,
completeness over features + error node, memory for a 16k-feature dictionary.

    .venv/bin/python bench/features.py            # the full run
    .venv/bin/python bench/features.py --quick    # fewer sentences and repeats: a smoke run

The dictionaries: tied ReLU dictionaries with 4× expansion (1,536 features on the 384-dim residual stream after
encoder layers 1, 3 and 5): unit-norm random decoder rows, the encoder their transpose, ``b_dec`` the layer's mean
activation (subtracted before encoding), ``b_enc`` set so that about 5 % of the features are active on a token. They
are no trained SAE — the timing and the exactness checks do not depend on what the features mean (unitscope's zoo has
no trained SAE yet). The model is the zoo's MiniLM sentiment model with its head conditioned (:func:`conditioned`: the
zoo's head gives three dead dims of the pooled embedding weights up to 1.6e31, so that rounding moves the logit).
Measurements (one torch thread unless ``--threads``; CPU time of this process; with ``--device cuda`` the models,
dictionaries and tensors on the GPU, Captum's spliced copy too, times by wall clock between two
``torch.cuda.synchronize()``, and memory as the peak GPU memory torch allocated):

1. ``speedup_vs_captum_3_layers``: every feature of the three dictionaries from one ``us.conductance`` call
   (``captum_compatible=True``, Gauss–Legendre, ``--steps`` points) against Captum's ``LayerConductance`` on a copy of
   the model with the dictionaries spliced in as explicit modules (features and error node as separate outputs), one
   layer per call; the largest relative difference of the numbers is reported too (target ≥ 3×).
2. ``speedup_vs_loop_64``: per-input conductance (Eq. 2) through 64 features of one dictionary in one
   ``us.neuron_conductance`` call against a loop of 64 one-feature calls (target ≥ 20×); beside it
   ``speedup_ceiling_vs_loop_64``, the most any exact batching could win: each feature still needs its own VJP from
   the layer to the inputs, so the ceiling is (forward + backward + one VJP) / one VJP on the same rows.
3. ``max_gap_pct``: completeness over features + error node (Σ of ``per_unit`` against F(x) − F(x')) at the
   adaptive default with the target's budget (``n_steps=64`` evaluations at most), over 64 test sentences and the three
   layers (target ≤ 1 %); with the error node's share of F(x) − F(x'). ``internal_batch_size=512`` (8 sentences a
   block): the adaptive rule keeps every node's values and gradients of a block, ``budget × units × 2`` floats per
   sentence — about 140 MB for three 1,536-feature dictionaries on 60 tokens, 9 GB for the 64 sentences in one block.
4. ``peak_rss_mb_16k``: the peak resident memory (sampled every 2 ms) of a child process while it computes the
   conductance of a 16,384-feature dictionary at layer 3 on 8 sentences of up to 64 tokens (adaptive,
   ``internal_batch_size=64``: one sentence a block), above its memory just before the call.

The last line is JSON.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings

import torch
from _timing import add_device, clock, device_of, sync

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from splice import spliced  # noqa: E402  (tests/splice.py: the dictionaries as explicit modules, for Captum)

LAYERS = ["bert.encoder.layer.1.output", "bert.encoder.layer.3.output", "bert.encoder.layer.5.output"]


class Bench:
    """The MiniLM sentiment model (``model``, its head conditioned: :func:`conditioned`) and its tokenizer."""

    def __init__(self, lm, model):
        self.lm, self.model = lm, model

    def encode(self, *a, **kw):
        return self.lm.encode(*a, **kw)


def conditioned(lm, sentences):
    """A copy of the zoo's MiniLM sentiment model whose head reads no dead dim of the pooled embedding.

    The zoo folds a StandardScaler into the head; three dims of MiniLM's pooled embedding are constant (≈1e-32, and
    ≈−1e-7), so their folded weights are up to 1.6e31 and the logit moves by O(1) with float rounding there (a
    rounding-level change of the residual stream changes the prediction). Here those weights (|w| > 1e3) are zeroed and
    their mean contribution over ``sentences`` moved into the bias."""
    model = copy.deepcopy(lm.model)
    w = model.head.weight
    bad = (w.abs() > 1e3).any(0)
    if bool(bad.any()):
        enc = lm.encode(sentences)
        with torch.no_grad():
            z = model.pooled(enc.embeddings, enc.attention_mask)
            model.head.bias += (z[:, bad].double() @ w[:, bad].T.double()).mean(0).float()
            w[:, bad] = 0
    return model


def on(enc, device):
    """An encoding (``lm.encode``'s ``Encoded``) with its tensors on ``device``."""
    return dataclasses.replace(
        enc,
        **{
            f.name: getattr(enc, f.name).to(device)
            for f in dataclasses.fields(enc)
            if torch.is_tensor(getattr(enc, f.name))
        },
    )


def setup(n_sentences: int, *, max_length: int = 128, longest: bool = False, device="cpu"):
    """The bench's model on ``device`` (the zoo's own ``lm.model`` stays on the CPU: ``lm.encode`` embeds with it)
    and the encoding of the first ``n_sentences`` test sentences, on ``device``."""
    from unitscope.zoo.minilm import minilm_sentiment
    from unitscope.zoo.sentiment import movie_reviews

    lm = minilm_sentiment(progress=False)
    sentences = list(movie_reviews().test.sentences)
    model = conditioned(lm, sentences[:64]).to(device)
    if longest:
        sentences = sorted(sentences, key=len, reverse=True)
    enc = lm.encode(sentences[:n_sentences], max_length=max_length)
    return Bench(lm, model), on(enc, device)


def layer_values(model, enc, layer):
    seen = {}
    module = dict(model.named_modules())[layer]
    h = module.register_forward_hook(lambda m, a, out: seen.setdefault("y", out.detach()))
    try:
        with torch.no_grad():
            model(enc.embeddings, enc.attention_mask)
    finally:
        h.remove()
    return seen["y"][enc.attention_mask.bool()]  # [tokens, D]


def tied_dictionary(values: torch.Tensor, n_features: int, *, active: float = 0.05, seed: int = 0):
    """A tied ReLU dictionary centred on the data, with about ``active`` of its features on per token; made on the
    CPU (the same dictionary on every device), returned on ``values``' device."""
    import unitscope as us

    device, values = values.device, values.cpu()
    g = torch.Generator().manual_seed(seed)
    d = values.shape[1]
    W_dec = torch.randn(n_features, d, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    b_dec = values.mean(0)
    pre = (values - b_dec) @ W_dec.T
    b_enc = -torch.quantile(pre.flatten()[:200_000], 1 - active).expand(n_features).clone()
    return us.Dictionary.from_weights(W_dec.T.contiguous(), b_enc, W_dec, b_dec, b_dec_pre=True).to(device)


def bench_captum(lm, enc, dictionaries, steps, repeats, device):
    from captum.attr import LayerConductance

    import unitscope as us

    model = lm.model
    copy_ = spliced(model, dictionaries)
    kw = dict(target=1, n_steps=steps, method="gausslegendre")
    ours_t, theirs_t, diff = [], [], 0.0
    for _ in range(repeats):
        t, ours = clock(
            lambda: us.conductance(
                model,
                enc.embeddings,
                list(dictionaries),
                baselines=enc.baselines,
                additional_forward_args=(enc.attention_mask,),
                path=us.PathConfig(captum_compatible=True, gap_warning=None),
                dictionaries=dictionaries,
                **kw,
            ),
            device,
        )
        ours_t.append(t)
        total = 0.0
        for name in dictionaries:
            split = copy_.get_submodule(name).split
            t, ref = clock(
                lambda split=split: LayerConductance(copy_, split).attribute(
                    enc.embeddings, baselines=enc.baselines, additional_forward_args=(enc.attention_mask,), **kw
                ),
                device,
            )
            total += t
            for a, b in zip(ours[name], ref):
                b = b.detach()
                diff = max(diff, float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)))
        theirs_t.append(total)
    ours_s, theirs_s = min(ours_t), min(theirs_t)
    return dict(
        ours_s=round(ours_s, 3), captum_s=round(theirs_s, 3), speedup=round(theirs_s / ours_s, 2), max_rel_diff=diff
    )


def bench_loop(lm, enc, layer, d, steps, repeats, device, n_units=64):
    import unitscope as us

    units = list(range(n_units))
    kw = dict(
        target=1,
        n_steps=steps,
        method="gausslegendre",
        baselines=enc.baselines,
        additional_forward_args=(enc.attention_mask,),
        dictionaries={layer: d},
    )
    batched_t, loop_t = [], []
    for _ in range(repeats):
        t, batched = clock(lambda: us.neuron_conductance(lm.model, enc.embeddings, layer, units, **kw), device)
        batched_t.append(t)
    t, looped = clock(
        lambda: torch.cat([us.neuron_conductance(lm.model, enc.embeddings, layer, [u], **kw) for u in units], 1), device
    )
    loop_t.append(t)
    diff = float((batched - looped).abs().max() / looped.abs().max().clamp_min(1e-12))
    return dict(
        batched_s=round(min(batched_t), 3),
        loop_s=round(min(loop_t), 3),
        speedup=round(min(loop_t) / min(batched_t), 2),
        max_rel_diff=diff,
        ceiling=vjp_ceiling(lm, enc, layer, steps + 1, device),
    )


def vjp_ceiling(lm, enc, layer, rows, device, repeats=5):
    """The most any exact batching can win against the loop: the loop pays, per feature, one forward and backward
    over the path rows plus one VJP from the layer down to the inputs (Eq. 2); a batched call still pays that VJP
    per feature. ``(forward + backward + VJP) / VJP``, timed on the bench's model at ``rows`` path rows."""
    model = lm.model
    module = dict(model.named_modules())[layer]
    x = enc.embeddings.repeat(rows, *([1] * (enc.embeddings.dim() - 1))).detach().requires_grad_(True)
    mask = enc.attention_mask.repeat(rows, 1)
    seen = {}
    handle = module.register_forward_hook(lambda m, a, o: seen.__setitem__("y", o if torch.is_tensor(o) else o[0]))
    try:

        def full():
            out = model(x, mask)
            torch.autograd.grad(out[:, 1].sum(), [seen["y"], x])

        _ = model(x, mask)  # the hook keeps y, whose graph the VJPs below use
        y = seen["y"]
        v = torch.randn_like(y)
        t_full = sorted(clock(full, device)[0] for _ in range(repeats))[repeats // 2]
        t_vjp = sorted(
            clock(lambda: torch.autograd.grad(y, x, grad_outputs=v, retain_graph=True), device)[0]
            for _ in range(repeats)
        )[repeats // 2]
    finally:
        handle.remove()
    return dict(
        forward_backward_s=round(t_full, 4), vjp_s=round(t_vjp, 4), speedup_ceiling=round((t_full + t_vjp) / t_vjp, 2)
    )


#: the evaluations per sentence the completeness target allows (≤ 1 % at ≤ 64 evaluations)
GAP_BUDGET = 64


def bench_gap(lm, enc, dictionaries):
    import unitscope as us

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = us.conductance(
            lm.model,
            enc.embeddings,
            list(dictionaries),
            baselines=enc.baselines,
            target=1,
            additional_forward_args=(enc.attention_mask,),
            mask=enc.attention_mask,
            dictionaries=dictionaries,
            n_steps=GAP_BUDGET,
            internal_batch_size=8 * GAP_BUDGET,
        )  # 8 sentences a block
        plain = us.conductance(
            lm.model,
            enc.embeddings,
            list(dictionaries),
            baselines=enc.baselines,
            target=1,
            additional_forward_args=(enc.attention_mask,),
            mask=enc.attention_mask,
            n_steps=GAP_BUDGET,
            internal_batch_size=8 * GAP_BUDGET,
        )
    od = s.output_diff.double()
    gaps, shares, neurons = [], [], []
    above, flagged = 0, 0  # (sentence, layer) pairs with a gap above 1 %, and how many of them are not ok
    for name in dictionaries:
        per = s.per_unit(name).double()
        rel = (per.sum(1) - od).abs() / od.abs()
        bad = s.messages[name]
        above += int((rel > 0.01).sum())
        flagged += (
            int(
                (
                    (rel > 0.01) & torch.tensor([any(f", example {i}:" in m for m in bad) for i in range(rel.numel())])
                ).sum()
            )
            if bad
            else 0
        )
        gaps.append(rel.max())
        shares.append((per[:, -1] / od).abs().mean())
        neurons.append(((plain.per_unit(name).double().sum(1) - od).abs() / od.abs()).max())
    return dict(
        max_gap_pct=round(100 * float(torch.stack(gaps).max()), 4),
        max_gap_pct_same_layers_neurons=round(100 * float(torch.stack(neurons).max()), 4),
        median_gap_pct=round(
            100
            * float(
                torch.stack([((s.per_unit(n).double().sum(1) - od).abs() / od.abs()) for n in dictionaries]).median()
            ),
            4,
        ),
        max_evals=int(s.n_evals.max()),
        mean_evals=round(float(s.n_evals.double().mean()), 1),
        error_node_share_of_output_diff={n: round(float(v), 3) for n, v in zip(dictionaries, shares)},
        examples=int(od.numel()),
        gaps_above_1pct=above,
        of_them_flagged_not_ok=flagged,
        ok={n: bool(s.ok[n]) for n in dictionaries},
    )


def memory_child(n_features: int, n_sentences: int, device):
    """Run in a child process: peak RSS (MB) above the RSS after loading, for a big dictionary's conductance; on
    CUDA the peak of the GPU memory torch allocated above what it held before the call."""
    import unitscope as us

    lm, enc = setup(n_sentences, max_length=64, longest=True, device=device)
    layer = LAYERS[1]
    d = tied_dictionary(layer_values(lm.model, enc, layer), n_features)
    import gc
    import threading

    def rss():  # resident bytes now (Linux)
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    gc.collect()
    cuda = device.type == "cuda"
    if cuda:  # GPU memory: torch's own peak counter, no sampling needed
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        rss = lambda: torch.cuda.max_memory_allocated(device)  # noqa: E731
    base, peak, stop = rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = us.conductance(
                lm.model,
                enc.embeddings,
                [layer],
                baselines=enc.baselines,
                target=1,
                additional_forward_args=(enc.attention_mask,),
                mask=enc.attention_mask,
                dictionaries={layer: d},
                internal_batch_size=64,
            )
        sync(device)
        peak[0] = max(peak[0], rss())
    finally:
        stop.set()
        watcher.join()
    od = s.output_diff.double()
    gap = float(((s.per_unit(layer).double().sum(1) - od).abs() / od.abs()).max())
    print(
        json.dumps(
            dict(
                peak_rss_mb=round((peak[0] - base) / 2**20, 1),
                tokens=list(enc.attention_mask.shape),
                features=n_features,
                max_gap_pct=round(100 * gap, 4),
                memory="cuda" if cuda else "rss",
            )
        )
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument(
        "--parts",
        nargs="+",
        default=["captum", "loop", "gap", "memory"],
        choices=["captum", "loop", "gap", "memory"],
        help="which measurements (default: all)",
    )
    p.add_argument("--memory-child", nargs=2, type=int, metavar=("FEATURES", "SENTENCES"), help=argparse.SUPPRESS)
    add_device(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = device_of(a.device)
    if a.memory_child:
        return memory_child(*a.memory_child, device)
    from unitscope.zoo.sentiment import movie_reviews

    q = a.quick
    lm, enc = setup(2 if q else 8, device=device)
    values = {name: layer_values(lm.model, enc, name) for name in LAYERS}
    dictionaries = {name: tied_dictionary(v, 4 * v.shape[1], seed=i) for i, (name, v) in enumerate(values.items())}
    out = {
        "device": str(device),
        "threads": a.threads,
        "steps": a.steps,
        "features_per_layer": 4 * 384,
        "sentences": int(enc.embeddings.shape[0]),
        "tokens": int(enc.embeddings.shape[1]),
    }
    if "captum" in a.parts:
        out["captum_3_layers"] = bench_captum(lm, enc, dictionaries, a.steps, 1 if q else 3, device)
        print("captum, three layers:", out["captum_3_layers"], flush=True)
    if "loop" in a.parts:
        small = on(lm.encode(list(movie_reviews().test.sentences[:1])), device)
        out["loop_64"] = bench_loop(lm, small, LAYERS[1], dictionaries[LAYERS[1]], a.steps, 1 if q else 3, device)
        print("64 features against a loop:", out["loop_64"], flush=True)
    if "gap" in a.parts:
        _, enc64 = setup(8 if q else 64, device=device)
        out["completeness"] = bench_gap(lm, enc64, dictionaries)
        print("completeness at the adaptive default:", out["completeness"], flush=True)
    feats, sents = (4096, 2) if q else (16384, 8)
    if "memory" in a.parts:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(feats),
                str(sents),
                "--threads",
                str(a.threads),
                "--device",
                str(device),
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)),
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr[-2000:])
        out["memory"] = json.loads(child.stdout.strip().splitlines()[-1])
        print("memory:", out["memory"], flush=True)
    summary = dict(
        speedup_vs_captum_3_layers=out.get("captum_3_layers", {}).get("speedup"),
        speedup_vs_loop_64=out.get("loop_64", {}).get("speedup"),
        speedup_ceiling_vs_loop_64=out.get("loop_64", {}).get("ceiling", {}).get("speedup_ceiling"),
        max_gap_pct=out.get("completeness", {}).get("max_gap_pct"),
        max_evals=out.get("completeness", {}).get("max_evals"),
        peak_rss_mb_16k=out.get("memory", {}).get("peak_rss_mb") if feats == 16384 else None,
        device=str(device),
        details=out,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
