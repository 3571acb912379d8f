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

**Reproducible trainings.** ``train()`` runs inside :func:`reproducible`: torch's deterministic algorithms on
(``torch.use_deterministic_algorithms``), a fixed number of threads for torch and for the BLAS / OpenMP pools of
numpy, SciPy and scikit-learn (``threadpoolctl``), and everything put back afterwards (threads, the deterministic
flag, the RNGs, grad mode: :func:`unitscope.core.state.process_state_restored`). The thread count is part of the
cache key (:func:`entry_recipe`), since a different count sums in a different order. The trainers draw their data
order from their own seeded ``torch.Generator``. So the same recipe, seed and thread count give bit-identical
weights run after run, from an empty cache (``tests/test_zoo_reproducible.py``); the info of every entry records
what it was trained with (:func:`provenance`: torch version, CPU instruction set, threads) and the SHA-256 of the
weights (:func:`state_digest`), to compare machines — across CPUs with other instruction sets (AVX2 / AVX-512) or
other torch builds the vendor kernels may still round differently.

>>> entry_recipe({"model": "digits-cnn"}, threads=1)
{'model': 'digits-cnn', 'threads': 1}
>>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.zeros(2)})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from ..core.files import DamagedFileError, atomic_save, safe_load
from ..core.state import process_state_restored, torch_threads

__all__ = [
    "cache_dir",
    "recipe_key",
    "entry_recipe",
    "entry_path",
    "cached_state",
    "atomic_save",
    "reproducible",
    "deterministic_algorithms",
    "state_digest",
    "provenance",
]


def cache_dir() -> Path:
    """``$UNITSCOPE_CACHE``, else ``$XDG_CACHE_HOME/unitscope``, else ``~/.cache/unitscope``."""
    root = os.environ.get("UNITSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "unitscope"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _threads(threads: int | None) -> int:
    """The thread count a training runs with: ``threads``, or (None / 0) torch's current setting."""
    n = int(threads) if threads else torch.get_num_threads()
    if n < 1:
        raise ValueError(f"threads must be a positive number, got {threads!r}")
    return n


def entry_recipe(recipe: dict, *, threads: int | None = 1) -> dict:
    """What a cache entry is keyed by: the recipe plus the training's thread count (None: the current one)."""
    return dict(json.loads(json.dumps(recipe, default=str)), threads=_threads(threads))


def entry_path(name: str, recipe: dict, *, threads: int | None = 1) -> Path:
    """Where :func:`cached_state` keeps (or would keep) ``name`` trained by ``recipe`` on ``threads`` threads."""
    return cache_dir() / f"{name}-{recipe_key(entry_recipe(recipe, threads=threads))}.pt"


@contextmanager
def deterministic_algorithms(enabled: bool = True):
    """``torch.use_deterministic_algorithms(enabled)`` (and cuDNN's deterministic, non-benchmark mode) for the
    block; the previous settings are back on exit, also on error."""
    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(enabled)
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=enabled):
            yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@contextmanager
def reproducible(threads: int | None = 1):
    """The block as a zoo training runs: deterministic kernels, ``threads`` threads for torch and for the BLAS /
    OpenMP libraries numpy, SciPy and scikit-learn use; on exit the process is as it was (threads, deterministic
    flag, RNGs, grad mode, default dtype, warning filters).

    >>> before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    >>> with reproducible(1):
    ...     torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    (1, True)
    >>> (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    True
    """
    from threadpoolctl import threadpool_limits

    n = _threads(threads)
    with process_state_restored(), threadpool_limits(limits=n), torch_threads(n), deterministic_algorithms():
        yield


def state_digest(state: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (in key order): equal digests = equal weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{k}|{json.dumps(v, sort_keys=True, default=str)}|".encode())
    return h.hexdigest()


def provenance(threads: int) -> dict:
    """What a training ran on, recorded in its cache entry's info (``info["trained_with"]``)."""
    import platform

    return {
        "threads": threads,
        "torch": str(torch.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
        "deterministic": True,
    }


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


def cached_state(
    name: str, recipe: dict, train: Callable[[], tuple[dict, dict]], *, threads: int | None = 1
) -> tuple[dict, dict, bool]:
    """``(state_dict, info, was_cached)``; ``train()`` returns ``(state_dict, info)`` and runs only on a miss —
    once across processes: training holds ``NAME-KEY.pt.lock``, and whoever waited on it reads the new entry.

    ``train()`` runs inside :func:`reproducible` with ``threads`` threads (None: torch's current count); the count
    is part of the key (:func:`entry_recipe`). The info gets ``trained_with`` (:func:`provenance`) and
    ``state_sha256`` (:func:`state_digest`)."""
    from filelock import FileLock

    n = _threads(threads)
    recipe = entry_recipe(recipe, threads=n)
    path = cache_dir() / f"{name}-{recipe_key(recipe)}.pt"
    hit = _read(path, recipe)
    if hit is not None:
        return hit[0], hit[1], True
    with FileLock(str(path) + ".lock"):
        hit = _read(path, recipe)  # another process may have trained it while we waited
        if hit is not None:
            return hit[0], hit[1], True
        with reproducible(n):  # training seeds torch's global RNG and sets threads: undone here
            state, info = train()
        info = dict(info, trained_with=provenance(n), state_sha256=state_digest(state))
        atomic_save({"recipe": recipe, "state": state, "info": info}, path)
    return state, info, False
