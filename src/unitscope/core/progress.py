"""Progress for work that takes more than a few seconds: a tqdm bar on a terminal, a plain line every few seconds
in a log.

On a terminal (stderr is a tty) :func:`bar` is an ordinary tqdm bar. When stderr is not a terminal (a log file, a
pipe), tqdm would stay silent; with ``UNITSCOPE_PROGRESS=log`` in the environment (``unitscope demo`` sets it for
its studies) :func:`bar` instead prints one line at most every ``UNITSCOPE_PROGRESS_SECONDS`` (default 5) seconds,
``desc: 40/300 epochs, 12 s elapsed, about 18 s left``, and a last line when it ends. ``progress=False``
silences it everywhere.

>>> import io, os
>>> log = io.StringIO()
>>> with LogBar(total=3, desc="training the digits VAE", unit="epoch", file=log, every=0) as b:
...     for _ in range(3):
...         b.update()
>>> log.getvalue().splitlines()[-1].split(",")[0]
'training the digits VAE: 3/3 epochs'
>>> note("a line for the log", file=log)
>>> log.getvalue().splitlines()[-1]
'a line for the log'
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["bar", "note", "LogBar", "log_mode"]


def log_mode() -> bool:
    """Whether progress goes to a log as lines (``UNITSCOPE_PROGRESS=log``)."""
    return os.environ.get("UNITSCOPE_PROGRESS", "").lower() == "log"


def _every() -> float:
    try:
        return float(os.environ.get("UNITSCOPE_PROGRESS_SECONDS", "5"))
    except ValueError:
        return 5.0


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class LogBar:
    """A tqdm-like counter that prints a line at most every ``every`` seconds (and once at the end)."""

    def __init__(
        self, iterable=None, *, total=None, desc: str = "", unit: str = "it", file=None, every: float | None = None
    ):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n = total, 0
        self.file = file if file is not None else sys.stderr
        self.every = _every() if every is None else every
        self.t0 = self.last = time.monotonic()
        self.closed = False
        self.printed: int | None = None
        self.postfix = ""

    def _line(self) -> str:
        elapsed = time.monotonic() - self.t0
        units = self.unit if self.unit.endswith("s") else {"batch": "batches"}.get(self.unit, self.unit + "s")
        count = f"{self.n}/{self.total} {units}" if self.total else f"{self.n} {units}"
        text = f"{self.desc}: {count}, {_duration(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            text += f", about {_duration(elapsed / self.n * (self.total - self.n))} left"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def _print(self) -> None:
        print(self._line(), file=self.file, flush=True)
        self.last, self.printed = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        """A last line when the bar printed before and has moved since: work shorter than ``every`` seconds stays
        silent (the quick inner bars of a long job would flood its log)."""
        if not self.closed:
            self.closed = True
            if self.printed is not None and self.printed != self.n:
                self._print()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def bar(iterable=None, *, desc: str = "", total=None, unit: str = "it", progress: bool | None = None, **kw):
    """A progress bar for ``iterable`` (or for manual ``update`` calls): tqdm on a terminal, :class:`LogBar` in a
    log (see the module doc), nothing with ``progress=False`` or when neither applies."""
    from tqdm.auto import tqdm

    if progress is False:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty() or progress is True and not log_mode():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=kw.pop("leave", False), **kw)
    if log_mode():
        b = LogBar(iterable, total=total, desc=desc, unit=unit)
        b.n = kw.get("initial", 0)
        return b
    return tqdm(iterable, total=total, disable=True)


def note(message: str, *, file=None) -> None:
    """One line about what is happening now (a step of a study, a model being trained), flushed at once."""
    print(message, file=file if file is not None else sys.stderr, flush=True)
