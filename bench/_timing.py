"""What every bench shares: the ``--device`` option and a clock that is honest on CUDA.

Not a bench itself (the leading underscore: ``bench/gpu.sh`` and ``tests/test_bench_device.py`` skip it). A bench
run as ``python bench/NAME.py`` finds it on ``sys.path`` (Python puts the script's folder first).

* :func:`add_device` adds ``--device`` (``cpu`` by default; ``cuda`` or ``cuda:N`` accepted) to a parser, and
  :func:`device_of` turns the parsed string into a ``torch.device``, with a clear error where CUDA is asked for
  and none is there.
* :func:`clock` times one call: on CPU with the bench's own clock (``time.process_time``, the CPU time of this
  process, by default; ``time.perf_counter`` where the bench reports wall time); on CUDA always by wall clock,
  between two ``torch.cuda.synchronize()`` calls, so that the kernels queued by the call are inside the interval
  and those queued before it are not (the CPU time of a process that waits on the GPU measures nothing useful).
* :class:`Stopwatch` does the same for a block (``with Stopwatch(device) as t: ...``; then ``t.seconds``), with
  the wall and the CPU seconds both kept for the benches that report both.
"""

from __future__ import annotations

import time

import torch

__all__ = ["add_device", "device_of", "sync", "clock", "Stopwatch"]


def add_device(parser, default: str = "cpu"):
    """Add ``--device`` to ``parser`` (returned, for chaining)."""
    parser.add_argument(
        "--device", default=default, help="torch device the models and tensors live on: cpu (default) or cuda[:N]"
    )
    return parser


def device_of(name) -> torch.device:
    """``torch.device(name)``; a CUDA device must exist (SystemExit with a message otherwise)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here (torch {torch.__version__})")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def sync(device) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn, device, cpu_clock=time.process_time):
    """``(seconds, fn())``: ``cpu_clock`` on CPU; on CUDA wall seconds between two synchronizes."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        w0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - w0, out
    t0 = cpu_clock()
    out = fn()
    return cpu_clock() - t0, out


class Stopwatch:
    """A timed block: ``wall`` and ``cpu`` seconds, synchronized on CUDA at both ends; ``seconds`` is the one
    :func:`clock` would give (``cpu_clock`` on CPU, wall on CUDA)."""

    def __init__(self, device, cpu_clock=time.process_time):
        self.device, self.cpu_clock = torch.device(device), cpu_clock
        self.wall = self.cpu = self.seconds = 0.0

    def __enter__(self):
        sync(self.device)
        self._w, self._c, self._k = time.perf_counter(), time.process_time(), self.cpu_clock()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c
        self.seconds = self.wall if self.device.type == "cuda" else self.cpu_clock() - self._k
        return False
