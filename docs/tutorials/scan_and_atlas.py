# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     name: python3
#     display_name: Python 3
# ---

# %% [markdown]
# # A dataset scan and the atlas of your own model
#
# Your own model and data: a small CNN trained here for a few seconds on scikit-learn's 8×8 handwritten digits
# (installed with scikit-learn, nothing fetched). One streaming pass over the data gives every unit's statistics
# and top examples; the atlas adds, per unit, its importance, its exemplars and synthetic inputs.

# %%
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
import unitscope as us

torch.manual_seed(0)
d = load_digits()
x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16     # [1797, 1, 8, 8] in [0, 1]
y = torch.tensor(d.target)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(16, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(15):
    for i in range(0, 1500, 100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
        opt.step()
model.eval()
print("test accuracy:", float((model(x[1500:]).argmax(1) == y[1500:]).float().mean()))

# %% [markdown]
# ## The scan
#
# Any iterable of `(inputs, labels)` batches is a loader. With `by="class"` the scan keeps per-class sums, so
# selectivity comes with it; `target="label"` makes conductance each example's importance for its own class.
# Results are units first: `mean` is `[U]`, `class_means` `[K, U]`, `top(...).indices` `[U, k]` dataset indices.

# %%
loader = [(x[i:i + 256], y[i:i + 256]) for i in range(0, 1500, 256)]
r = us.scan(model, loader, ["4"], scores=["activation", "conductance"], target="label", by="class",
            top_k=5, path=us.PathConfig(n_steps=8))
print("mean activation:", r.mean("4")[:6])
print("selectivity:    ", r.selectivity("4").index[:6])
u = int(r.mean("4").argmax())          # the unit with the largest mean activation (some units are dead)
print(f"top examples of unit {u} by conductance:", r.top("4", score="conductance").indices[u].tolist())
r.to_frame().columns.tolist()

# %% [markdown]
# ## The atlas
#
# For a few units (`units=4`: the four most important), small settings: their exemplars' per-input conductance,
# an IAM image and inverse-set samples in activation bands through the FFT parameterization (no generator given).
# `a.save(folder)` writes `atlas.json`, the tensors and a browsable `index.html`.

# %%
a = us.atlas(model, (x[:512], y[:512]), ["4"], units=4, top_k=4, target="label", path=us.PathConfig(n_steps=8),
             synthesis=us.SynthesisConfig(iam_steps=16, inverse_samples=2, inverse_steps=10), progress=False)
card = a.units[0]
sorted(card)

# %%
print(card["importance"])
a.save("atlas-out")
import os
sorted(os.listdir("atlas-out"))
