# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     name: python3
#     display_name: Python 3
# ---

# %% [markdown]
# # Inverse sets: many diverse inputs whose unit lies in [a, b]
#
# The inverse set of a unit is every valid input whose activation lies in a range. It is sampled through a
# generator `x = G(z)`: a model without one gets `FFTImageGenerator`, images parameterized by their Fourier
# spectrum, with the model's early block as the encoder that measures how far apart two samples are. Every returned
# sample is checked again by a fresh forward pass.

# %%
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
import unitscope as us
from unitscope.synthesis.generators import FFTImageGenerator, early_block

torch.manual_seed(0)
d = load_digits()
x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
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
with torch.no_grad():
    logits = model(x[1500:])
print("class 3's logit on the test digits: median", float(logits[:, 3].median()), "max", float(logits[:, 3].max()))

# %% [markdown]
# A constraint is `(layer, unit, a, b)`; several constraints are an intersection. Here: class 3's logit between
# 2 and 4.

# %%
r = us.sample_inverse_set(model, [("7", 3, 2.0, 4.0)], FFTImageGenerator((1, 8, 8)),
                          encoder=early_block(model), n_samples=32, n_seeds=8, seed=0, progress=False)
print("ok:", r.ok, " feasible rate:", r.feasible_rate, " samples:", tuple(r.samples.shape))
with torch.no_grad():
    v = model(r.samples)[:, 3]
print("class 3's logit on the samples: min", float(v.min()), "max", float(v.max()))

# %%
import matplotlib.pyplot as plt
fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for ax, img in zip(axes.flat, r.samples[:16]):
    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
fig.suptitle("16 of the samples: class 3's logit in [2, 4]");
fig

# %% [markdown]
# An unreachable range ends with `r.ok == False` and a report of the values seen, never a hang.

# %%
bad = us.sample_inverse_set(model, [("7", 3, 1e4, 2e4)], FFTImageGenerator((1, 8, 8)), n_samples=8, n_seeds=4,
                            sampler=us.SamplerConfig(max_seed_steps=50), seed=0, progress=False)
print(bad.ok)
print(bad.report)
