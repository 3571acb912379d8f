"""Hugging Face models from a local folder (``hf:FOLDER`` on the command line): nothing is fetched.

The model is wrapped so that it maps token ids to one row of logits per example (a classifier's logits; a causal
LM's next-token logits after the last real token) and builds the attention mask from the pad id; its sub-modules
keep their own names (``transformer.h.1.mlp.act``). Paths start at the token embedding (``EMBEDDING``). Attention is
loaded ``eager`` (not the fused SDPA kernel, which has no forward-mode derivative), so every integration rule works.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .core.errors import UnitscopeError

__all__ = ["HFLogits", "load_hf"]


class HFLogits(nn.Module):
    """``forward(ids) -> logits [N, classes or vocab]`` of a ``transformers`` model, with its sub-modules' names."""

    def __init__(self, model: nn.Module, pad_id: int | None, causal: bool):
        super().__init__()
        object.__setattr__(self, "hf", model)  # not a registered child: the names stay the model's own
        for name, child in model.named_children():
            self.add_module(name, child)
        self.pad_id, self.causal = pad_id, causal

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attention_mask`` (a tokenizer's, ``[N, T]``): default ``ids != pad id``."""
        mask = attention_mask if attention_mask is not None else \
            None if self.pad_id is None else (ids != self.pad_id).long()
        logits = self.hf(input_ids=ids, attention_mask=mask).logits
        if not self.causal:
            return logits
        last = (mask.sum(1) - 1).clamp_min(0) if mask is not None else torch.full((ids.shape[0],), ids.shape[1] - 1)
        return logits[torch.arange(ids.shape[0], device=logits.device), last.to(logits.device)]


def load_hf(folder: str, device):
    """(wrapped model, tokenizer or None, embedding module name) from a ``save_pretrained`` folder."""
    try:
        import transformers
    except ImportError:
        raise UnitscopeError("hf:FOLDER needs the transformers package", hint="pip install transformers") from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UnitscopeError(f"{folder!r} is not a saved Hugging Face model (no config.json)",
                             hint="save one with model.save_pretrained(FOLDER)")
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = " ".join(config.architectures or [])
    causal = "CausalLM" in arch or "LMHead" in arch
    auto = (transformers.AutoModelForCausalLM if causal else
            transformers.AutoModelForSequenceClassification if "SequenceClassification" in arch else None)
    if auto is None:
        raise UnitscopeError(f"hf:{folder}: a {arch or 'model'} has no logits to score",
                             hint="save a *ForSequenceClassification or *ForCausalLM model")
    # eager attention: the fused SDPA kernel has no forward-mode derivative, which fixed rules (dy/dα) need
    model = auto.from_pretrained(path, local_files_only=True, attn_implementation="eager").to(device).eval()
    tokenizer = None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):  # no tokenizer files in the folder: token-id tensors still work
        tokenizer = None
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb)
    return HFLogits(model, pad, causal), tokenizer, name
