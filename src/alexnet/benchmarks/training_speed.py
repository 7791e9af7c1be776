"""Training speed of the configured run beside baselines measured in the same process.

``python src/benchmark.py [--tiny] [--json PATH] [hydra overrides]`` (see ``src/benchmark.py``).
What is measured, on the device that a run of ``src/train.py`` with the same overrides uses:

- model only: images/s of forward + backward + optimizer step on one device-resident batch, for
  (a) ``baseline``: a plain PyTorch loop over the same network from stock ``torch.nn`` modules
  (``nn.LocalResponseNorm`` with the paper-equivalent alpha, nn.Dropout, ``torch.optim.SGD``),
  float32, NCHW; (b) ``fast``: the configured network, optimizer and fast-path switches in the same
  bare loop; (c) ``lightning``: (b) through the Lightning Trainer and the project's
  LightningModule (metrics and logging included). The three alternate round by round, so that a
  machine busy with something else slows all three alike; the medians are reported.
- end to end: images/s of the last training epoch of ``alexnet.jobs.train.train`` (what
  ``src/train.py`` runs: the prepared data, the loader, augmentation, the Trainer), with the fast
  path on and with every switch off.
- training FLOPs per image (``torch.utils.flop_counter``), achieved FLOP/s and MFU against a
  matrix-multiply peak measured here; peak memory (CUDA's allocator on a GPU, the growth of the
  resident set on a CPU): :mod:`alexnet.benchmarks.hardware`; the stock baseline:
  :mod:`alexnet.benchmarks.baselines`; the LRN alone; the locally connected layer alone (the
  CIFAR-10 nets'); the update step alone; the top operators of a fast step (where the time goes).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet.benchmarks.baselines import UnfoldLocallyConnected2d, stock_net
from alexnet.benchmarks.hardware import PeakMemory, sync, train_flops_per_image
from alexnet.models import LocallyConnected2d, LocalResponseNorm
from alexnet.training.optim import build_optimizer
from alexnet.training.speed import speed_options, to_layout

Runner = Callable[[int], float]  # runs n steps, returns the seconds they took


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``precision`` string (None: no autocast)."""
    precision = str(precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def loop_runner(net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                dtype: torch.dtype | None, channels_last: bool) -> Runner:
    """A bare training loop on one device-resident batch."""
    device = x.device
    x = to_layout(x, channels_last)

    def run(steps: int) -> float:
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return time.perf_counter() - started

    return run


class _SameBatch(torch.utils.data.Dataset):
    def __init__(self, x: Tensor, y: Tensor, length: int) -> None:
        self.x, self.y, self.length = x, y, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x, self.y


class _Rounds(L.Callback):
    """Times rounds of ``steps`` training steps inside ``Trainer.fit`` and, between two rounds,
    calls ``between`` (the other runners' rounds), so that all alternate in one process."""

    def __init__(self, steps: int, warmup: int, between: Callable[[], None]) -> None:
        self.steps, self.warmup, self.between = steps, warmup, between
        self.seconds: list[float] = []
        self.memory_mb = 0.0
        self._started: float | None = None
        self._peak: PeakMemory | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        index = trainer.global_step - self.warmup
        if index >= 0 and index % self.steps == 0:
            device = trainer.strategy.root_device
            sync(device)
            self._peak = PeakMemory(device).__enter__()
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        index = trainer.global_step - self.warmup  # global_step counts this step already
        if index > 0 and index % self.steps == 0 and self._started is not None:
            sync(trainer.strategy.root_device)
            self.seconds.append(time.perf_counter() - self._started)
            self._peak.__exit__(None, None, None)
            self.memory_mb = max(self.memory_mb, self._peak.mb)
            self._started = self._peak = None
            self.between()


def measure_lightning(module: L.LightningModule, x: Tensor, y: Tensor, *, precision: str,
                      benchmark: bool, steps: int, rounds: int, warmup: int,
                      between: Callable[[], None]) -> tuple[list[float], float]:
    """Seconds per round of ``steps`` steps of ``module`` through ``Trainer.fit``, and the peak
    memory of a round (MB, see :class:`PeakMemory`)."""
    device = x.device
    timer = _Rounds(steps, warmup, between)
    total = warmup + steps * rounds
    loader = torch.utils.data.DataLoader(_SameBatch(x, y, total), batch_size=None)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=total, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        benchmark=benchmark, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds, timer.memory_mb


def lrn_alone(device: torch.device, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Forward + backward of the paper's LRN (n=5, alpha=1e-4 as printed, beta=0.75, k=2) on
    (B, 96, 55, 55)-like input: stock ``nn.LocalResponseNorm`` against ``impl="fast"``."""
    gen = torch.Generator().manual_seed(0)
    x = (20.0 * torch.randn(shape, generator=gen)).relu().to(device)
    upstream = torch.randn(shape, generator=gen).to(device)
    stock = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    fast = LocalResponseNorm(5, 1e-4, 0.75, convention="paper", impl="fast")

    def run(layer: nn.Module) -> tuple[float, Tensor, Tensor]:
        a = x.detach().requires_grad_(True)
        sync(device)
        started = time.perf_counter()
        out = layer(a)
        out.backward(upstream)
        sync(device)
        return time.perf_counter() - started, out.detach(), a.grad

    times: dict[str, list[float]] = {"stock": [], "fast": []}
    run(stock), run(fast)  # warm-up
    for _ in range(repeats):
        for name, layer in (("stock", stock), ("fast", fast)):
            times[name].append(run(layer)[0])
    _, want, want_grad = run(stock)
    _, got, got_grad = run(fast)
    stock_s, fast_s = statistics.median(times["stock"]), statistics.median(times["fast"])
    return {
        "shape": list(shape), "stock_ms": stock_s * 1e3, "fast_ms": fast_s * 1e3,
        "speedup": stock_s / fast_s,
        "max_abs_diff": float((got - want).abs().max()),
        "max_grad_abs_diff": float((got_grad - want_grad).abs().max()),
    }


def local_alone(device: torch.device, batch: int, repeats: int,
                dtype: torch.dtype | None) -> dict[str, Any]:
    """Forward + backward of the CIFAR-10 nets' ``local3`` (64 -> 64 filters at each of 6 x 6
    positions, 3 x 3, padding 1; Sec. 3.3's nets) on a channels-last batch of the run's autocast
    ``dtype``, under autocast: :class:`~alexnet.models.LocallyConnected2d` against the same
    parameters through ``F.unfold`` and ``einsum`` (:class:`UnfoldLocallyConnected2d`)."""
    gen = torch.Generator().manual_seed(0)
    layer = LocallyConnected2d(64, 64, 6, 3, padding=1).to(device)
    stock = UnfoldLocallyConnected2d(layer)
    # in the dtype the layer before hands on under autocast, as in the net
    x = torch.randn(batch, 64, 6, 6, generator=gen).to(device, dtype or torch.float32,
                                                        memory_format=torch.channels_last)
    upstream = torch.randn(batch, 64, 6, 6, generator=gen).to(device)

    def run(module: nn.Module) -> tuple[float, Tensor, Tensor, Tensor]:
        a = x.detach().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        sync(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = module(a)
        out.float().backward(upstream)
        sync(device)
        return time.perf_counter() - started, out.detach().float(), a.grad, layer.weight.grad

    times: dict[str, list[float]] = {"stock": [], "fast": []}
    run(stock), run(layer)  # warm-up
    for _ in range(repeats):
        for name, module in (("stock", stock), ("fast", layer)):
            times[name].append(run(module)[0])
    _, want, want_x, want_w = run(stock)
    _, got, got_x, got_w = run(layer)
    stock_s, fast_s = statistics.median(times["stock"]), statistics.median(times["fast"])
    return {
        "shape": [batch, 64, 6, 6], "dtype": str(dtype or torch.float32).removeprefix("torch."),
        "stock_ms": stock_s * 1e3, "fast_ms": fast_s * 1e3, "speedup": stock_s / fast_s,
        "max_abs_diff": float((got - want).abs().max()),
        "max_grad_abs_diff": max(float((got_x - want_x).abs().max()),
                                 float((got_w - want_w).abs().max())),
    }


def update_step(net: nn.Module, device: torch.device, repeats: int) -> dict[str, Any]:
    """One optimizer update of every parameter of ``net`` (float32, on ``device``, random
    gradients): PaperSGD's four passes, PaperSGD fused, and torch's SGD (foreach and fused) as
    the reference; median milliseconds of ``repeats`` updates each."""
    from alexnet.training.optim import PaperSGD

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(p.shape, generator=gen).to(device).requires_grad_(True)
              for p in net.parameters()]
    optimizers = {
        "paper_loop": lambda: PaperSGD(params, lr=0.01, fused=False),
        "paper_fused": lambda: PaperSGD(params, lr=0.01, fused=True),
        "torch_foreach": lambda: torch.optim.SGD(params, lr=0.01, momentum=0.9,
                                                 weight_decay=5e-4, foreach=True),
        "torch_fused": lambda: torch.optim.SGD(params, lr=0.01, momentum=0.9,
                                               weight_decay=5e-4, fused=True),
    }
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in params)}
    built = {name: make() for name, make in optimizers.items()}
    times: dict[str, list[float]] = {name: [] for name in built}
    names = list(built)
    for i in range(repeats + 1):  # interleaved, each first in turn: load falls on all alike
        for name in names[i % len(names):] + names[:i % len(names)]:
            optimizer = built[name]
            for p in params:  # the fused kernels scale gradients in place: fresh ones each time
                p.grad = torch.ones_like(p)
            sync(device)
            started = time.perf_counter()
            optimizer.step()
            sync(device)
            if i:  # the first allocates the velocities
                times[name].append(time.perf_counter() - started)
    for name, measured in times.items():
        result[f"{name}_ms"] = statistics.median(measured) * 1e3
    result["fused_vs_loop"] = result["paper_loop_ms"] / result["paper_fused_ms"]
    return result


def profile_step(run: Runner, steps: int, top: int = 8) -> list[dict[str, Any]]:
    """The operators that take the most time in ``steps`` steps (self time, per step)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        run(steps)
    events = prof.key_averages()
    use_cuda = torch.cuda.is_available()

    def self_us(event: Any) -> float:
        if use_cuda:
            return float(getattr(event, "self_device_time_total", 0.0))
        return float(event.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    return [{"op": e.key, "ms_per_step": self_us(e) / 1e3 / steps, "share": self_us(e) / total}
            for e in ranked]


def end_to_end(cfg: Any, overrides: list[str], work: Path, name: str) -> dict[str, Any]:
    """The last training epoch's images/s of ``alexnet.jobs.train.train`` on ``cfg`` plus
    ``overrides`` (composed by the caller), its wall time and status."""
    from alexnet.jobs.train import train

    started = time.perf_counter()
    summary = train(cfg)
    rates = [row["train/epoch_img_per_s"] for row in summary.get("history", [])
             if row.get("train/epoch_img_per_s") is not None]
    return {
        "name": name, "overrides": overrides,
        "img_per_s": rates[-1] if rates else summary.get("img_per_s"),
        "epochs": len(rates), "wall_s": time.perf_counter() - started,
        "status": summary.get("status"),
    }


def model_only(cfg: Any, device: torch.device, *, steps: int, rounds: int,
               warmup: int = 2) -> dict[str, Any]:
    """Model-only throughput of the baseline, the fast bare loop and the Lightning module, with
    FLOPs, MFU inputs, peak memory and a profile of the fast step."""
    from hydra.utils import instantiate

    from alexnet.training.module import ImageClassifier

    batch, crop = int(cfg.data.batch_size), int(cfg.data.crop_size)
    num_classes = int(cfg.data.get("num_classes") or 1000)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    options = speed_options(cfg)
    precision = str(cfg.trainer.precision)
    dtype = autocast_dtype(precision)

    net = instantiate(cfg.model, num_classes=num_classes)
    baseline_net = stock_net(net).to(device)
    fast_net = copy.deepcopy(net).to(device)
    lightning_net = copy.deepcopy(net).to(device)
    flops = train_flops_per_image(baseline_net, x, y)
    lr = float(cfg.optimizer.get("lr", 0.01))
    baseline = loop_runner(
        baseline_net,
        torch.optim.SGD(baseline_net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4),
        x, y, None, channels_last=False)
    if options["channels_last"]:
        fast_net = fast_net.to(memory_format=torch.channels_last)
    compile_s = None
    if options["compile"] is not None:
        fast_net.compile(mode=options["compile"])
    fast = loop_runner(fast_net, build_optimizer(instantiate(cfg.optimizer), fast_net), x, y,
                       dtype, options["channels_last"])
    for run in (baseline, fast):  # warm-up; the first fast call compiles
        took = run(warmup)
        compile_s = took if options["compile"] is not None and compile_s is None else compile_s

    seconds: dict[str, list[float]] = {"baseline": [], "fast": []}
    memory: dict[str, float] = {}

    def other_rounds() -> None:
        for name, run in (("baseline", baseline), ("fast", fast)):
            with PeakMemory(device) as peak:
                seconds[name].append(run(steps))
            memory[name] = max(memory.get(name, 0.0), peak.mb)

    module = ImageClassifier(lightning_net, optimizer=instantiate(cfg.optimizer),
                             num_classes=num_classes, **options)
    seconds["lightning"], memory["lightning"] = measure_lightning(
        module, x, y, precision=precision, benchmark=bool(cfg.trainer.get("benchmark")),
        steps=steps, rounds=rounds, warmup=warmup, between=other_rounds)
    rows = {}
    for name, times in seconds.items():
        rate = batch * steps / statistics.median(times)
        rows[name] = {"img_per_s": rate, "step_ms": 1e3 * batch / rate,
                      "flops_per_s": flops * rate, "peak_memory_mb": memory.get(name),
                      "rounds": len(times)}
    return {"batch_size": batch, "crop_size": crop, "num_classes": num_classes,
            "precision": precision, "flops_per_image": flops, "compile_s": compile_s,
            "rows": rows, "profile": profile_step(fast, max(1, steps))}
