# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     name: python3
#     display_name: Python 3
# ---

# %% [markdown]
# # Conductance on a torchvision CNN, with error bars
#
# Which channels of a ResNet-18 matter for one class, how sure the numbers are, and what a layer that missed the
# tolerance looks like. Random weights and random inputs keep it small and offline; with your own weights and
# images nothing else changes.

# %%
import torch
import torch.nn as nn
import torchvision
import unitscope as us

torch.manual_seed(0)
cnn = torchvision.models.resnet18(num_classes=10).eval()
x = torch.randn(2, 3, 64, 64)
us.layer_names(cnn, inputs=x)[:8]

# %% [markdown]
# ResNet-18 uses each block's `relu` twice per forward pass, so each call is a site of its own: `layer1.0.relu@0`
# and `layer1.0.relu@1`. Both layers come from one pass over the path (16 evaluations per example here; the default
# is 50).

# %%
s = us.conductance(cnn, x, layers=["layer1.0.relu@1", "layer4"], target=3, n_steps=16)
s

# %% [markdown]
# A channel's conductance is the sum over its positions (`per_unit`: `[N, channels]`). `top` returns the values,
# their indices and their errors — the estimated integration error of each value: read `value ± error` as its
# typical size, `± 3 × error` as a bound.

# %%
print(s.per_unit("layer4").shape)
top = s.top("layer4", k=5)
for v, i, e in zip(top.values[0], top.indices[0], top.errors[0]):
    print(f"channel {int(i):3d}: {float(v):+.4f} ± {float(e):.1e}")
print("completeness gap |Σ − (F(x) − F(x'))| / |F(x) − F(x')|:", s.relative_delta("layer4"))

# %%
s.plot("layer4", k=10)

# %% [markdown]
# ## A layer that is not ok
#
# A LayerNorm after the first layer, the all-zero baseline and a budget of 16 evaluations: on this small network
# the top units' error estimates or the completeness gap miss the tolerance. The layer is marked not ok, a
# `CompletenessWarning` says so, and `s.messages` says where on the path the trouble is and what to try.

# %%
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
xs = torch.randn(4, 8)
s2 = us.conductance(net, xs, ["1", "2"], target=0, n_steps=16)
s2.ok

# %%
print(s2.messages["1"][0])

# %% [markdown]
# What the message suggests works: a larger budget (or another baseline).

# %%
s3 = us.conductance(net, xs, ["1", "2"], target=0, n_steps=256)
s3.ok
