"""Trained weights cached under the user cache directory, keyed by a hash of their recipe.

>>> key = recipe_key({"model": "digits-cnn", "epochs": 30})
>>> len(key)
16
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

__all__ = ["cache_dir", "recipe_key", "cached_state"]


def cache_dir() -> Path:
    """``$UNITSCOPE_CACHE``, else ``$XDG_CACHE_HOME/unitscope``, else ``~/.cache/unitscope``."""
    root = os.environ.get("UNITSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "unitscope")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached_state(name: str, recipe: dict, train: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict, bool]:
    """``(state_dict, info, was_cached)``; ``train()`` returns ``(state_dict, info)`` and runs only on a miss."""
    path = cache_dir() / f"{name}-{recipe_key(recipe)}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            if blob.get("recipe") == json.loads(json.dumps(recipe, default=str)):
                return blob["state"], blob["info"], True
        except Exception:  # a corrupt cache entry is retrained, not fatal
            pass
    state, info = train()
    atomic_save({"recipe": json.loads(json.dumps(recipe, default=str)), "state": state, "info": info}, path)
    return state, info, False
