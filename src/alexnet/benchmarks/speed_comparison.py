"""The benchmark's whole measurement (``src/benchmark.py``): the configured run composed as
``src/train.py`` would, with its all-off twin; each part measured beside its baseline in one
process (:mod:`alexnet.benchmarks.training_speed`); the ratios that compare across machines; and
the table printed from the result."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from alexnet.benchmarks import hardware
from alexnet.benchmarks import training_speed as bench
from alexnet.benchmarks.run_config import compose_cfg, run_overrides
from alexnet.exits import building


def off_switches(cfg: DictConfig) -> list[str]:
    """Overrides that turn every fast-path switch off."""
    off = ["speed.channels_last=false", "speed.compile=false", "trainer.precision=32-true",
           "trainer.benchmark=false", "data.pin_memory=false"]
    if "lrn_impl" in cfg.model:
        off.append("model.lrn_impl=torch")
    return off


def device_of(cfg: DictConfig) -> torch.device:
    """The device a run of ``cfg`` trains on (``auto``: the GPU where there is one)."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (the JSON's ``environment``)."""
    return {
        "device": device.type, "cpu": hardware.cpu_model(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average": list(os.getloadavg()),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def measure(args: argparse.Namespace, cfg: DictConfig, work: Path) -> dict[str, Any]:
    """Every figure of the benchmark, as its JSON holds them (``args``: src/benchmark.py's;
    ``cfg``: the benchmarked run's, :func:`~alexnet.benchmarks.run_config.checked_run_config`;
    ``work``: where its runs write)."""
    overrides = run_overrides(args, work)
    with building("invalid configuration"):
        instantiate(cfg.data)  # the data settings' own checks (crop, batch), no data read
    device = device_of(cfg)
    where = machine(device)
    print(f"benchmarking on {device}: {where['gpu'] or where['cpu']}", flush=True)
    steps = args.steps or (1 if args.tiny else 20 if device.type == "cuda" else 3)
    rounds = args.rounds or (1 if args.tiny else 5)
    model = bench.model_only(cfg, device, steps=steps, rounds=rounds,
                             warmup=1 if args.tiny else 2)
    dtype = bench.autocast_dtype(model["precision"])
    n = args.matmul_n or (128 if args.tiny else 8192 if device.type == "cuda" else 2048)
    seconds = 0.05 if args.tiny else 2.0
    peaks = {"float32": hardware.matmul_peak(device, torch.float32, n, seconds),
             "bfloat16": None}
    if dtype is not None:
        peaks[str(dtype).removeprefix("torch.")] = hardware.matmul_peak(device, dtype, n,
                                                                        seconds)
    for name, row in model["rows"].items():
        peak = peaks["float32"] if name == "baseline" or dtype is None else peaks.get(
            str(dtype).removeprefix("torch."))
        row["mfu"] = ratio(row["flops_per_s"], peak)
    lrn_batch = args.lrn_batch or (2 if args.tiny else 64)
    lrn_shape = (lrn_batch, 96, 13, 13) if args.tiny else (lrn_batch, 96, 55, 55)
    lrn = bench.lrn_alone(device, lrn_shape, repeats=1 if args.tiny else 3)
    local = bench.local_alone(device, args.local_batch or (4 if args.tiny else 128),
                              repeats=1 if args.tiny else 5, dtype=dtype)
    net = instantiate(cfg.model, num_classes=model["num_classes"])
    update = bench.update_step(net, device, repeats=1 if args.tiny else 5)

    e2e: dict[str, Any] = {"fast": None, "off": None}
    if not args.no_end_to_end:
        length = [] if args.full_runs else [
            f"trainer.max_epochs={args.epochs}", "test=false", "trainer.limit_val_batches=0",
            "trainer.enable_checkpointing=false"]
        for name, extra in (("fast", []), ("off", off_switches(cfg))):
            run_cfg = compose_cfg(overrides + length + extra, work, name)
            e2e[name] = bench.end_to_end(run_cfg, length + extra, work, name)
    rows = model["rows"]
    e2e_fast = (e2e["fast"] or {}).get("img_per_s")
    result = {
        "environment": machine(device),
        "config": {"overrides": args.overrides, "tiny": args.tiny,
                   "batch_size": model["batch_size"], "crop_size": model["crop_size"],
                   "num_classes": model["num_classes"], "precision": model["precision"],
                   **bench.speed_options(cfg),
                   "lrn_impl": cfg.model.get("lrn_impl"), "steps": steps, "rounds": rounds},
        "flops_per_image": model["flops_per_image"],
        "matmul_peak_flops": peaks,
        "compile_s": model["compile_s"],
        "model_only": rows,
        "end_to_end": e2e,
        "lrn": lrn,
        "locally_connected": local,
        "update_step": update,
        "ratios": {
            "fast_vs_baseline": ratio(rows["fast"]["img_per_s"], rows["baseline"]["img_per_s"]),
            "lightning_vs_bare_loop": ratio(rows["lightning"]["img_per_s"],
                                            rows["fast"]["img_per_s"]),
            "lightning_vs_baseline": ratio(rows["lightning"]["img_per_s"],
                                           rows["baseline"]["img_per_s"]),
            "end_to_end_fast_vs_off": ratio(e2e_fast, (e2e["off"] or {}).get("img_per_s")),
            "end_to_end_vs_model_only": ratio(e2e_fast, rows["fast"]["img_per_s"]),
            "lrn_fast_vs_stock": lrn["speedup"],
            "local_fast_vs_unfold": local["speedup"],
            "update_fused_vs_loop": update["fused_vs_loop"],
        },
        "profile": model["profile"],
    }
    return result


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value * scale, spec)


def print_table(r: dict[str, Any]) -> None:
    cfg, rows = r["config"], r["model_only"]
    print(f"\ntraining speed on {r['environment']['gpu'] or r['environment']['cpu']} "
          f"({r['environment']['threads']} threads), torch {r['environment']['torch']}; "
          f"batch {cfg['batch_size']}, crop {cfg['crop_size']}, {cfg['precision']}, "
          f"channels_last={cfg['channels_last']}, compile={cfg['compile']}, "
          f"lrn_impl={cfg['lrn_impl']}")
    print(f"training FLOPs per image {fmt(r['flops_per_image'], '.3f', 1e-9)} G; matmul peak "
          f"float32 {fmt(r['matmul_peak_flops']['float32'], '.1f', 1e-9)} GFLOP/s, bfloat16 "
          f"{fmt(r['matmul_peak_flops']['bfloat16'], '.1f', 1e-9)} GFLOP/s")
    base = rows["baseline"]["img_per_s"]
    print(f"\n  {'model only (device-resident batch)':<44}{'img/s':>9}{'vs base':>9}"
          f"{'GFLOP/s':>10}{'MFU':>7}{'peak MB':>9}")
    names = {"baseline": "plain loop, stock torch.nn, fp32, NCHW",
             "fast": "fast path, bare loop", "lightning": "fast path, Lightning module"}
    for key, label in names.items():
        row = rows[key]
        print(f"  {label:<44}{fmt(row['img_per_s'], '9.1f')}{fmt(row['img_per_s'] / base, '8.2f')}x"
              f"{fmt(row['flops_per_s'], '10.1f', 1e-9)}{fmt(row['mfu'], '6.1%')}"
              f"{fmt(row['peak_memory_mb'], '9.0f')}")
    e2e = r["end_to_end"]
    if e2e["fast"]:
        print(f"\n  {'end to end (src/train.py assembly)':<44}{'img/s':>9}{'wall s':>9}")
        for key, label in (("fast", "fast path"), ("off", "every switch off")):
            print(f"  {label:<44}{fmt(e2e[key]['img_per_s'], '9.1f')}"
                  f"{fmt(e2e[key]['wall_s'], '9.1f')}")
    lrn = r["lrn"]
    print(f"\n  LRN {tuple(lrn['shape'])} forward + backward: nn.LocalResponseNorm "
          f"{lrn['stock_ms']:.1f} ms, fast {lrn['fast_ms']:.1f} ms "
          f"(max |diff| {lrn['max_abs_diff']:.1e}, grad {lrn['max_grad_abs_diff']:.1e})")
    local = r["locally_connected"]
    print(f"  locally connected {tuple(local['shape'])} forward + backward, {local['dtype']}: "
          f"F.unfold + einsum {local['stock_ms']:.1f} ms, LocallyConnected2d "
          f"{local['fast_ms']:.1f} ms (max |diff| {local['max_abs_diff']:.1e}, grad "
          f"{local['max_grad_abs_diff']:.1e})")
    up = r["update_step"]
    print(f"\n  optimizer update of {up['parameters'] / 1e6:.1f} M parameters: PaperSGD four "
          f"passes {up['paper_loop_ms']:.1f} ms, fused {up['paper_fused_ms']:.1f} ms; torch SGD "
          f"foreach {up['torch_foreach_ms']:.1f} ms, fused {up['torch_fused_ms']:.1f} ms")
    print("\n  ratios (compare these across machines):")
    for key, value in r["ratios"].items():
        print(f"    {key:<28}{fmt(value, '.3f')}")
    print("\n  where a fast step's time goes (self time):")
    for op in r["profile"]:
        print(f"    {op['op'][:40]:<42}{op['ms_per_step']:9.1f} ms {op['share']:6.1%}")


