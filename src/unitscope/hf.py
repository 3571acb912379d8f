"""Hugging Face models from a local folder (``hf:FOLDER`` on the command line): nothing is fetched.

An image classifier (``*ForImageClassification``) maps pixel values to its logits, with the image processor saved in
the folder (``preprocessor_config.json``) as its ``preprocess``. A text model is wrapped so that it maps token ids to
one row of logits per example (a classifier's logits; a causal
LM's next-token logits after the last real token) and builds the attention mask from the pad id; its sub-modules
keep their own names (``transformer.h.1.mlp.act``). Paths start at the token embedding (``EMBEDDING``). Attention is
loaded ``eager`` (not the fused SDPA kernel, which has no forward-mode derivative), so every integration rule works.

A folder without tokenizer files (``save_pretrained`` of the model alone) loads without a tokenizer: its inputs are
token-id tensors then. :func:`folder_info` reads what a folder holds from its files alone (no ``transformers``
import, no weights), so that the command line can check an ``hf:`` argument before it loads anything.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .core.errors import UnitscopeError

__all__ = ["HFLogits", "HFImageLogits", "load_hf", "folder_info", "FolderInfo", "TOKENIZER_FILES"]

#: files of which at least one is in a folder that a tokenizer was saved to (``tokenizer.save_pretrained``)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


@dataclass(frozen=True)
class FolderInfo:
    """What a ``save_pretrained`` folder holds, from its files: the architectures its config names, whether the
    model is a causal LM, and whether a tokenizer was saved beside it."""

    folder: str
    architectures: tuple
    causal: bool
    classifier: bool
    tokenizer: bool
    vocab_size: int | None
    image: bool = False  # a *ForImageClassification model: pixel inputs, no tokens
    image_processor: bool = False  # its image processor was saved beside it (preprocessor_config.json)


def folder_info(folder: str) -> FolderInfo:
    """Check a folder for ``hf:FOLDER`` without loading it: it exists, holds a ``config.json`` that names a
    classifier or a causal LM. A one-line :class:`UnitscopeError` otherwise."""
    path = Path(folder)
    if not path.is_dir():
        raise UnitscopeError(
            f"MODEL hf:{folder}: no folder {folder!r}",
            hint="hf:FOLDER is a folder written by model.save_pretrained(FOLDER)",
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise UnitscopeError(
            f"MODEL hf:{folder}: {folder!r} is not a saved Hugging Face model (no config.json)",
            hint="save one with model.save_pretrained(FOLDER)",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnitscopeError(f"MODEL hf:{folder}: its config.json cannot be read", hint=str(e)) from None
    arch = tuple(config.get("architectures") or ())
    text = " ".join(arch)
    causal = "CausalLM" in text or "LMHead" in text
    classifier = "SequenceClassification" in text
    image = "ImageClassification" in text
    if not (causal or classifier or image):
        raise UnitscopeError(
            f"MODEL hf:{folder}: a {text or 'model without architectures'} has no logits to score",
            hint="save a *ForSequenceClassification, *ForImageClassification or *ForCausalLM model",
        )
    if image:
        return FolderInfo(
            str(folder),
            arch,
            False,
            True,
            False,
            None,
            image=True,
            image_processor=(path / "preprocessor_config.json").is_file(),
        )
    has_tokenizer = any((path / f).is_file() for f in TOKENIZER_FILES)
    vocab = config.get("vocab_size")
    if vocab is None and isinstance(config.get("text_config"), dict):
        vocab = config["text_config"].get("vocab_size")
    return FolderInfo(str(folder), arch, causal, classifier, has_tokenizer, int(vocab) if vocab else None)


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
        mask = (
            attention_mask
            if attention_mask is not None
            else None
            if self.pad_id is None
            else (ids != self.pad_id).long()
        )
        logits = self.hf(input_ids=ids, attention_mask=mask).logits
        if not self.causal:
            return logits
        last = (mask.sum(1) - 1).clamp_min(0) if mask is not None else torch.full((ids.shape[0],), ids.shape[1] - 1)
        return logits[torch.arange(ids.shape[0], device=logits.device), last.to(logits.device)]


class HFImageLogits(nn.Module):
    """``forward(pixel_values) -> logits [N, classes]`` of a ``transformers`` image classifier, with its sub-modules'
    names; ``preprocess`` (PIL image → ``[C, H, W]``) is the image processor saved in the folder, when there is
    one."""

    def __init__(self, model: nn.Module, processor=None):
        super().__init__()
        object.__setattr__(self, "hf", model)  # not a registered child: the names stay the model's own
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "processor", processor)
        if processor is not None:
            self.preprocess = self._preprocess

    def _preprocess(self, image) -> torch.Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=pixel_values).logits


def _tokenizer(transformers, path: Path):
    """The folder's tokenizer, or None when no tokenizer was saved there. (``AutoTokenizer`` builds a tokenizer
    with an empty vocabulary for some models when the files are missing: it would turn every sentence into no
    tokens at all.)"""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer("a")["input_ids"]:
        raise UnitscopeError(
            f"MODEL hf:{path}: the tokenizer saved there turns text into no tokens",
            hint="save the model's own tokenizer with tokenizer.save_pretrained(FOLDER)",
        )
    return tokenizer


@contextmanager
def _quiet(transformers):
    """transformers' loading progress bars and warnings off while a local folder loads (a command's stderr is
    its own: one line for a mistake); put back afterwards."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def load_hf(folder: str, device):
    """(wrapped model, tokenizer or None, embedding module name) from a ``save_pretrained`` folder."""
    try:
        import transformers
    except ImportError:
        raise UnitscopeError("hf:FOLDER needs the transformers package", hint="pip install transformers") from None
    info = folder_info(folder)
    path = Path(folder)
    if info.image:
        with _quiet(transformers):
            model = (
                transformers.AutoModelForImageClassification.from_pretrained(
                    path, local_files_only=True, attn_implementation="eager"
                )
                .to(device)
                .eval()
            )
            processor = (
                transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
                if info.image_processor
                else None
            )
        return HFImageLogits(model, processor), None, None
    with _quiet(transformers):
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        auto = transformers.AutoModelForCausalLM if info.causal else transformers.AutoModelForSequenceClassification
        # eager attention: the fused SDPA kernel has no forward-mode derivative, which fixed rules (dy/dα) need
        model = auto.from_pretrained(path, local_files_only=True, attn_implementation="eager").to(device).eval()
        tokenizer = _tokenizer(transformers, path)
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb)
    return HFLogits(model, pad, info.causal), tokenizer, name
