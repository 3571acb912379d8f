"""Scan checkpoints: saved atomically, read without running code, resumed only by the same scan.

>>> import torch, torch.nn as nn
>>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
>>> model_digest(a) == model_digest(a), model_digest(a) == model_digest(b)
(True, False)

A checkpoint's fingerprint holds every setting of the scan (layers, scores, target, by, top_k, num_classes, the
reduction, n_steps, method, batch size, ``unpack``, the rank and world size), a hash of the model's weights and
buffers (``state_dict``), a hash of the baselines, and of the data its length and a hash of its first batch
(inputs and labels). Resuming with any of them changed is refused with an error that names what differs: a scan
never merges the statistics of two models or two data sets. ``internal_batch_size`` is not part of it (it changes
how rows are chunked, not the result), so a scan that ran out of memory can resume with a smaller one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from ..core.errors import UnitscopeError
from ..core.files import atomic_save, safe_load

__all__ = ["checkpoint_path", "fingerprint", "model_digest", "digest", "save_checkpoint", "load_checkpoint"]

FORMAT = 2


def checkpoint_path(path, rank: int, world: int) -> Path:
    """One file per rank: ``scan.ckpt`` alone, ``scan.rank0-of-2.ckpt`` … under ``world`` ranks."""
    p = Path(path)
    return p if world == 1 else p.with_name(f"{p.stem}.rank{rank}-of-{world}{p.suffix}")


def _feed(h, obj) -> None:
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict) or hasattr(obj, "items") and callable(obj.items):
        h.update(b"D")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif callable(obj):
        h.update(f"F{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__name__)}".encode())
    else:
        h.update(f"V{obj!r}".encode())


def digest(obj) -> str:
    """A short hash of nested tensors / lists / dicts / numbers (exact bytes, dtypes and shapes)."""
    h = hashlib.blake2b(digest_size=12)
    _feed(h, obj)
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer of ``model`` (names, dtypes, shapes, values)."""
    return digest(dict(model.state_dict(keep_vars=False)))


def fingerprint(model: nn.Module, settings: dict, *, baselines, data_size, first_batch) -> dict:
    """What a checkpoint must match to be resumed: ``settings`` plus the model, baselines and data hashes.
    ``first_batch``: the data's first ``(inputs, labels)``, or None where it cannot be read without consuming it."""
    return dict(
        settings,
        model_weights=model_digest(model),
        baselines=digest(baselines),
        data_size=data_size,
        data_first_batch=None if first_batch is None else digest(list(first_batch)),
    )


def _describe(key, old, new) -> str:
    if key in ("model_weights", "baselines", "data_first_batch"):
        return f"{key} (hash {old} then, {new} now)"
    return f"{key} ({old!r} then, {new!r} now)"


def save_checkpoint(
    path: Path, fingerprint: dict, done: int, stats: dict, count: int, class_counts, *, extra=None
) -> None:
    blob = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "batches_done": done,
        "count": count,
        "class_counts": class_counts,
        "stats": {m: {n: st.state() for n, st in d.items()} for m, d in stats.items()},
    }
    if extra is not None:
        blob["extra"] = extra.state()
    atomic_save(blob, path)


def load_checkpoint(path: Path, fingerprint: dict, unit_stats, *, extra=None):
    """``(batches_done, stats, count, class_counts)`` of the checkpoint at ``path`` — only if it was written by the
    same scan (``fingerprint``); a damaged file or another scan's checkpoint is an error, and nothing is merged."""
    blob = safe_load(path, what="scan checkpoint")
    if not isinstance(blob, dict) or not {"stats", "batches_done", "fingerprint"} <= set(blob):
        raise UnitscopeError(f"{str(path)!r} is not a scan checkpoint", hint="delete it to start over")
    if blob.get("format") != FORMAT:
        raise UnitscopeError(
            f"checkpoint {str(path)!r} was written by another version of unitscope",
            format=blob.get("format"),
            hint="delete it to start over",
        )
    old = blob["fingerprint"] or {}
    differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if differ:
        raise UnitscopeError(
            f"checkpoint {str(path)!r} belongs to another scan: "
            + "; ".join(_describe(k, old.get(k), fingerprint.get(k)) for k in differ)
            + " differ",
            differing=differ,
            hint="use the same model, data and arguments, or delete the file to start over",
        )
    try:
        stats = {m: {n: unit_stats(**st) for n, st in d.items()} for m, d in blob["stats"].items()}
        done, count, class_counts = int(blob["batches_done"]), int(blob["count"]), blob["class_counts"]
        if extra is not None:
            extra.load_state(blob.get("extra") or {})
    except (TypeError, ValueError, KeyError) as e:
        raise UnitscopeError(f"checkpoint {str(path)!r} is incomplete", hint=f"{e}; delete it to start over") from None
    return done, stats, count, class_counts
