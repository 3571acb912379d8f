"""Files unitscope writes and reads back: written atomically, read without running code.

>>> import tempfile, pathlib, torch
>>> path = atomic_save({"w": torch.ones(2), "note": "plain data"}, pathlib.Path(tempfile.mkdtemp()) / "blob.pt")
>>> safe_load(path, what="blob")["note"]
'plain data'

Everything unitscope saves (scan results, scan checkpoints, zoo cache entries) is a ``torch.save`` zip archive of
plain data only — tensors, numbers, strings, lists, dicts. :func:`safe_load` reads it back with
``torch.load(weights_only=True)``, whose unpickler builds only those types: a file that names any other Python
object (a class, a function — what a hostile ``__reduce__`` needs) is refused before anything is built. A file that
is not a zip archive (a bare pickle) is refused without unpickling anything; a truncated or damaged archive (its
CRC checksums do not match) is reported as damaged.

Writes go to a temporary file beside the target, then ``os.replace``: a reader sees the old file or the new one,
never half of one — also when the writer is killed. :func:`atomic_write` is the one implementation (results,
checkpoints, caches, manifests, pages, figures); the file gets the permissions of any file written there (the
process's umask), not the private ones of a temporary file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import UnitscopeError
from .faults import is_oom

__all__ = [
    "atomic_write",
    "atomic_save",
    "atomic_write_text",
    "atomic_write_bytes",
    "safe_load",
    "check_writable",
    "UnsafeFileError",
    "DamagedFileError",
]


class UnsafeFileError(UnitscopeError):
    """A file that holds more than plain data: loading it could run code, so it is not loaded."""


class DamagedFileError(UnitscopeError):
    """A file that is truncated, corrupted or not in unitscope's format."""


def atomic_write(path, write) -> Path:
    """Call ``write(f)`` on a binary file beside ``path``, then rename it to ``path``: a reader sees the old file or
    the new one, never half of one; if ``write`` raises, the old file is left as it was. Returns ``path``.

    >>> import tempfile, pathlib
    >>> p = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "a.txt", lambda f: f.write(b"hello"))
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as any file written here (mkstemp makes 0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`), exactly as given (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def safe_load(path, *, what: str = "file"):
    """Load a ``torch.save`` archive of plain data (tensors, numbers, strings, lists, dicts) without running code.

    Raises :class:`UnsafeFileError` if the file names any other Python object, :class:`DamagedFileError` if it
    is truncated, corrupted or no zip archive (a bare pickle is refused unread), ``FileNotFoundError`` if absent.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, EOFError) as e:
        raise DamagedFileError(
            f"{what} {str(path)!r} is truncated or not a torch.save archive; not loaded",
            hint=f"{e}; delete it (or write it again) to start over",
        ) from None
    if bad is not None:
        raise DamagedFileError(
            f"{what} {str(path)!r} is damaged (checksum mismatch in {bad!r}); not loaded",
            hint="delete it (or write it again) to start over",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next(
            (line.strip() for line in str(e).splitlines() if "Unsupported" in line or "GLOBAL" in line),
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        raise UnsafeFileError(
            f"refused to load {what} {str(path)!r}: it holds Python objects, not only tensors and "
            "plain data, so loading it could run code",
            detail=detail,
            hint="unitscope writes only plain data; load files only from people you trust, "
            "and never with torch.load(weights_only=False)",
        ) from None
    except (RuntimeError, EOFError) as e:
        if is_oom(e):
            raise
        raise DamagedFileError(f"{what} {str(path)!r} cannot be read", hint=str(e).splitlines()[0]) from None


def check_writable(folder, *, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that a file can be written there — before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".unitscope-write-test.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UnitscopeError(
            f"cannot write to the {what} {str(folder)!r}: {e.strerror or e}",
            hint="choose a folder you can write to (--out DIR)",
        ) from None
    return folder
