"""Why EfficientNet-Lite0 needs more than 32 evaluations for 1 %: the trapezoid's per-unit error on a dense graded grid.

    python bench/accuracy_nodes.py                    # cat and coffee, blocks.1 and blocks.3 (≈ 8 min per photo
                                                      # on one CPU thread for the grid, cached; then ≈ 2 min)
    python bench/accuracy_nodes.py --quick            # the cat, adaptive at 16 and 32 evaluations
    python bench/accuracy_nodes.py --device cuda      # on the GPU (its grid cached apart: cat-cuda.npz)

EfficientNet-Lite0 is ReLU6 + BatchNorm: along the straight path y(α) is piecewise linear and ∂F/∂y piecewise
constant, with a jump wherever any later ReLU6 switches; on the cat 7.5 of F(x) − F(x') = 9.2 accrue in
α ∈ [0.01, 1/16] (F is −0.004 at α = 0.0098, 7.52 at α = 1/16, 9.24 at α = 1). Every node gives the exact values
y(α_k) and gradients g(α_k); between nodes the integral ∫ g dy is only estimated.

One pass records y and g of both blocks at every node of a graded grid (spacing 1/4096 on [0, ¼], 1/512 on
[¼, 1]: 1,409 evaluations per photo, cached in ``--cache``). From it:

* ``reference``: the Stieltjes trapezoid on the whole grid; ``reference_halving`` its difference with every other
  node (an upper estimate of its own error), both relative to the layer's largest |channel|;
* ``panel_rss``: the root sum of squares over panels of ``T₂ − T₁`` for the top-3 channels, per panel width —
  it halves when the width halves (first order: the errors of the panels are random, of size ∝ width^1.5);
* ``oracle``: the trapezoid on N nodes placed by equidistributing ρ^⅓ (ρ = the measured density of the panels'
  squared errors, the node density that minimises the root-sum-square error of a first-order rule), the worst
  top-10 channel error against the reference: a placement by the measured error density, not a method (the
  adaptive rule, placing its nodes where its estimates say, does as well or better);
* ``adaptive``: ``us.conductance`` (the default) at 16…128 evaluations, against the dense reference, with the
  share of top-10 channels whose true error is within 3× ``s.unit_error``.

The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from _timing import add_device, clock, device_of

import unitscope as us
from unitscope.attribution.engine import evaluate
from unitscope.core.inputs import make_target, prepare
from unitscope.core.sites import resolve
from unitscope.core.state import analysis_mode

BLOCKS = ("1", "3")


class _Fixed(nn.Module):
    def __init__(self, m, c):
        super().__init__()
        self.m, self.c = m, c

    def forward(self, x):
        return self.m(x)[:, self.c : self.c + 1]


def _grid() -> np.ndarray:
    return np.unique(np.concatenate([np.linspace(0, 0.25, 1025), np.linspace(0.25, 1, 385)]))


def _record(net, img, path):
    """y and g of the blocks at every grid node (float32), F at every node (computed on ``img``'s device, kept on
    the CPU)."""
    device = img.device
    layers = [f"m.blocks.{b}" for b in BLOCKS]
    sites, batch, tgt = resolve(net, layers), prepare(img, None, None, device=device), make_target(0, 1)
    alphas = torch.from_numpy(_grid()).double()
    Y, G, Fs = {b: [] for b in BLOCKS}, {b: [] for b in BLOCKS}, []
    with analysis_mode(net):
        for k in range(0, alphas.numel(), 32):
            a = alphas[k : k + 32].to(device)
            ev = evaluate(
                net, batch, tgt, sites, torch.zeros(a.numel(), dtype=torch.long, device=device), a, need_grad=True
            )
            Fs.append(ev.F.double().cpu())
            for b, layer in zip(BLOCKS, layers):
                Y[b].append(ev.values[layer][0].cpu())
                G[b].append(ev.grads[layer][0].cpu())
    np.savez(
        path,
        alpha=alphas.numpy(),
        F=torch.cat(Fs).numpy(),
        **{f"y{b}": torch.cat(Y[b]).numpy() for b in BLOCKS},
        **{f"g{b}": torch.cat(G[b]).numpy() for b in BLOCKS},
    )


class _Layer:
    """One block's recorded path: channel sums of the Stieltjes trapezoid between any two grid nodes."""

    def __init__(self, d, b):
        self.a, self.F = d["alpha"], d["F"]
        n, c = d[f"y{b}"].shape[:2]
        self.y = d[f"y{b}"].reshape(n, c, -1).astype(np.float64)
        self.g = d[f"g{b}"].reshape(n, c, -1).astype(np.float64)
        self.ref = self.trap(np.arange(n))
        self.scale = float(np.abs(self.ref).max())
        self.top = np.argsort(-np.abs(self.ref))[:10]
        self.halving = self.err(self.trap(np.arange(0, n, 2)))

    def interval(self, i, j):
        return (0.5 * (self.g[i] + self.g[j]) * (self.y[j] - self.y[i])).sum(-1)

    def trap(self, nodes):
        nodes = np.unique(nodes)
        return self.interval(nodes[:-1], nodes[1:]).sum(0)

    def err(self, est):
        return float(np.abs(est - self.ref)[self.top].max() / self.scale)


def _panel_rss(L: _Layer, widths=(1, 2, 4, 8, 16, 32)):
    """Per panel width (in grid steps of 1/4096 on [0, ¼]): rss over panels of T₂ − T₁, top-3 channels."""
    out = {}
    for s in widths:
        i = np.arange(0, 1025 - 2 * s, 2 * s)
        e = (L.interval(i, i + s) + L.interval(i + s, i + 2 * s) - L.interval(i, i + 2 * s))[:, L.top[:3]] / L.scale
        out[f"{s / 4096:.6f}"] = np.sqrt((e**2).sum(0)).round(5).tolist()
    return out


def _oracle(L: _Layer, ns=(16, 32, 64, 128)):
    a = L.a
    i = np.arange(0, a.size - 2, 2)
    e = (L.interval(i, i + 1) + L.interval(i + 1, i + 2) - L.interval(i, i + 2))[:, L.top] / L.scale
    w = a[i + 2] - a[i]
    rho = np.convolve((e**2).sum(1) / w**3, np.ones(8) / 8, mode="same")
    cum = np.r_[0, np.cumsum(rho ** (1 / 3) * w)]
    cum /= cum[-1]
    edges = np.r_[a[i], a[-1]]
    out = {}
    for n in ns:
        nodes = np.unique(
            np.r_[0, a.size - 1, np.searchsorted(a, np.interp(np.linspace(0, 1, n), cum, edges)).clip(0, a.size - 1)]
        )
        out[str(n)] = {"nodes": int(nodes.size), "error": L.err(L.trap(nodes))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", default="cat,coffee")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "unitscope", "accuracy_nodes"))
    p.add_argument("--quick", action="store_true", help="the cat only, the adaptive rule at 16 and 32 evaluations")
    add_device(p)
    args = p.parse_args(argv)
    device = device_of(args.device)
    warnings.simplefilter("ignore", us.CompletenessWarning)
    torch.manual_seed(0)
    from unitscope.zoo import efficientnet_lite0, photos

    eff = efficientnet_lite0(device)
    os.makedirs(args.cache, exist_ok=True)
    summary = {}
    photo_names = ["cat"] if args.quick else args.photos.split(",")
    budgets = (16, 32) if args.quick else (16, 32, 64, 128)
    for name in photo_names:
        img = eff.preprocess(photos([name])[name])[None].to(device)
        with torch.no_grad():
            net = _Fixed(eff.model, int(eff.model(img).argmax(1))).eval()
        # a grid recorded on another kind of device is another file: the values differ by rounding
        path = os.path.join(args.cache, f"{name}.npz" if device.type == "cpu" else f"{name}-{device.type}.npz")
        if not os.path.exists(path):
            sec, _ = clock(lambda net=net, img=img, path=path: _record(net, img, path), device, time.perf_counter)
            print(f"{name}: recorded {_grid().size} nodes in {sec:.0f} s on {device}", flush=True)
        d = np.load(path)
        layers = {b: _Layer(d, b) for b in BLOCKS}
        res = {}
        for b, L in layers.items():
            res[f"blocks.{b}"] = {"reference_halving": L.halving, "panel_rss": _panel_rss(L), "oracle": _oracle(L)}
            print(
                f"{name} blocks.{b}: reference halving difference {100 * L.halving:.3f}%; panel rss (top-3) by "
                f"width: {res[f'blocks.{b}']['panel_rss']}; oracle placement: "
                + ", ".join(f"{n} nodes {100 * o['error']:.2f}%" for n, o in res[f"blocks.{b}"]["oracle"].items()),
                flush=True,
            )
        for n in budgets:
            s = us.conductance(
                net,
                img,
                [f"m.blocks.{b}" for b in BLOCKS],
                target=0,
                n_steps=n,
                path=us.PathConfig(gap_warning=None),
                progress=False,
            )
            for b, L in layers.items():
                est = s[f"m.blocks.{b}"][0].double().sum((1, 2)).cpu().numpy()
                ue = s.unit_error[f"m.blocks.{b}"][0].double().cpu().numpy()
                true = np.abs(est - L.ref)[L.top] / L.scale
                res[f"blocks.{b}"].setdefault("adaptive", {})[str(n)] = {
                    "evals": int(s.n_evals[0]),
                    "error": L.err(est),
                    "coverage": float(np.mean(true <= 3 * ue[L.top] / L.scale)),
                }
            print(
                f"{name} adaptive {n}: "
                + "; ".join(
                    f"blocks.{b} {100 * res[f'blocks.{b}']['adaptive'][str(n)]['error']:.2f}% (true ≤ 3·estimate "
                    f"{res[f'blocks.{b}']['adaptive'][str(n)]['coverage']:.2f})"
                    for b in BLOCKS
                ),
                flush=True,
            )
        summary[name] = res
    summary["device"] = str(device)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
