"""Trained weights cached under the user cache directory, keyed by a hash of their recipe.

>>> key = recipe_key({"model": "digits-cnn", "epochs": 30})
>>> len(key)
16

An entry is a ``torch.save`` archive of plain data (the state dict, the recipe, an info dict of numbers and
strings), read back with :func:`unitscope.core.files.safe_load` (``weights_only=True``): a cache entry cannot run
code. A damaged entry (truncated, bad checksum) is retrained with a warning; an entry that holds Python objects is
refused with an error (someone put it there). Training holds a file lock beside the entry (``filelock``), so
processes that start together — the ranks of a ``torchrun`` job, two terminals — train each model once: the others
wait and then read what the first one wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

from ..core.files import DamagedFileError, atomic_save, safe_load
from ..core.state import process_state_restored

__all__ = ["cache_dir", "recipe_key", "cached_state", "atomic_save"]


def cache_dir() -> Path:
    """``$UNITSCOPE_CACHE``, else ``$XDG_CACHE_HOME/unitscope``, else ``~/.cache/unitscope``."""
    root = os.environ.get("UNITSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "unitscope")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read(path: Path, recipe: dict):
    """The entry's ``(state, info)`` if it exists, is intact and holds this recipe; else None."""
    if not path.exists():
        return None
    try:
        blob = safe_load(path, what="cache entry")
    except DamagedFileError as e:  # truncated or corrupted: train again (UnsafeFileError propagates)
        warnings.warn(f"{e}; training it again", RuntimeWarning, stacklevel=3)
        return None
    if isinstance(blob, dict) and blob.get("recipe") == recipe and "state" in blob and "info" in blob:
        return blob["state"], blob["info"]
    return None


def cached_state(name: str, recipe: dict, train: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict, bool]:
    """``(state_dict, info, was_cached)``; ``train()`` returns ``(state_dict, info)`` and runs only on a miss —
    once across processes: training holds ``NAME-KEY.pt.lock``, and whoever waited on it reads the new entry."""
    from filelock import FileLock

    recipe = json.loads(json.dumps(recipe, default=str))
    path = cache_dir() / f"{name}-{recipe_key(recipe)}.pt"
    hit = _read(path, recipe)
    if hit is not None:
        return hit[0], hit[1], True
    with FileLock(str(path) + ".lock"):
        hit = _read(path, recipe)  # another process may have trained it while we waited
        if hit is not None:
            return hit[0], hit[1], True
        with process_state_restored():  # training seeds torch's global RNG (and may set threads): undone here
            state, info = train()
        atomic_save({"recipe": recipe, "state": state, "info": info}, path)
    return state, info, False
