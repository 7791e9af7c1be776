"""What the machine itself gives: device synchronisation, a training step's FLOPs, the measured
matmul peak (MFU's denominator), peak memory and the CPU's name."""

from __future__ import annotations

import ctypes
import math
import platform
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_flops_per_image(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Forward + backward FLOPs per image, as torch's flop counter counts them (matrix products
    and convolutions; the elementwise work is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """FLOP/s of an n x n matrix product, the best of repeated timings over about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up: the library's first call picks its kernels
    sync(device)
    best, spent = math.inf, 0.0
    while spent < seconds or best == math.inf:
        started = time.perf_counter()
        a @ b
        sync(device)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best


class PeakMemory:
    """Peak memory of a block of training steps above what was held before it (activations,
    gradients, workspaces; not the weights or the optimizer's state), in MB: from CUDA's
    allocator on a GPU; on a CPU, the growth of the resident set (sampled every millisecond,
    after freed memory is handed back to the system)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _trim()
        self._base = self._peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.mb = max(self._peak, _rss()) - self._base


def _rss() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * 4096 / 2**20


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
