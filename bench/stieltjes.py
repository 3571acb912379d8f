"""The Riemann rules with and without forward mode: is dy/dα by a JVP worth its cost?

Per rule (``riemann_left``, ``riemann_middle``, ``riemann_trapezoid``) and toy network (the test suite's MLPs with
ReLU and tanh, its CNN; float64): the worst top-unit error at 16 nodes of the rule applied to ``∂F/∂y · dy/dα`` with
dy/dα by forward mode (``jvp``) and of the Stieltjes trapezoid of consecutive nodes on the same nodes plus both ends
(``stieltjes``, values only: what the library does for these rules), against a 2,048-evaluation adaptive reference;
for ``gausslegendre`` the rule itself with dy/dα by forward mode (``jvp``) or from the values (``stieltjes``
column: the derivative of the polynomial through the nodes and both ends, what the library does).
Error = |estimate − reference| / the layer's largest |unit|, worst over units and examples. ``bench/floor.py`` gives
what each costs per evaluation.

    .venv/bin/python bench/stieltjes.py [--device cpu] [--steps 16]

The last line is JSON: ``{"<net>:<layer>": {"<rule>": {"jvp": err, "stieltjes": err}}}`` under ``"errors"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
from _timing import add_device, device_of

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

RULES = ("riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device(p)
    p.add_argument("--steps", type=int, default=16)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import unitscope as us
    import unitscope.attribution.paths as paths
    from nets import cnn, mlp

    device = device_of(args.device)
    torch.manual_seed(0)
    cases = {
        "mlp_relu:1": (mlp(3, act=nn.ReLU), (4, 5), "1"),
        "mlp_tanh:1": (mlp(4, act=nn.Tanh), (4, 5), "1"),
        "cnn:1": (cnn(5), (3, 3, 8, 8), "1"),
        "cnn:3": (cnn(5), (3, 3, 8, 8), "3"),
    }
    jvp_rules, tangents = paths.JVP_RULES, paths.TANGENTS
    errors = {}
    try:
        for name, (net, shape, layer) in cases.items():
            net = net.double().to(device)
            x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)

            def units(s, layer=layer):
                v = s[layer]
                return v.flatten(2).sum(2) if v.dim() > 2 else v

            ref = units(
                us.conductance(
                    net, x, [layer], target=0, n_steps=2048, path=us.PathConfig(rtol=1e-12, gap_warning=None)
                )
            )
            scale = ref.abs().amax(1, keepdim=True)
            errors[name] = {}
            for rule in RULES:
                row = {}
                for kind in ("jvp", "stieltjes"):
                    if rule in jvp_rules:  # dy/dα by forward mode, or from the values (the polynomial's derivative)
                        paths.TANGENTS = "forward" if kind == "jvp" else "values"
                    else:
                        paths.JVP_RULES = jvp_rules + ((rule,) if kind == "jvp" else ())
                        paths.TANGENTS = "forward"
                    got = units(
                        us.conductance(
                            net,
                            x,
                            [layer],
                            target=0,
                            n_steps=args.steps,
                            method=rule,
                            path=us.PathConfig(gap_warning=None),
                        )
                    )
                    row[kind] = float(((got - ref).abs() / scale).max())
                errors[name][rule] = row
                print(
                    f"{name:<11} {rule:<18} jvp {100 * row['jvp']:7.3f}%   stieltjes {100 * row['stieltjes']:7.3f}%",
                    flush=True,
                )
    finally:
        paths.JVP_RULES, paths.TANGENTS = jvp_rules, tangents
    out = {"bench": "stieltjes", "device": str(device), "steps": args.steps, "errors": errors}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
