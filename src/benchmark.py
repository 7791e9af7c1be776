"""Training speed: the fast path beside a plain PyTorch loop and with every switch off.

    python src/benchmark.py [--tiny] [--json FILE] [--full-runs] [hydra overrides ...]

The overrides are src/train.py's (the default run is experiment=demo: batch 32, 115 x 115 crops;
``data.image_size=256 data.crop_size=227`` gives the paper's shapes). Prints a table and writes
JSON (every field present, null where it does not apply) with, for the device the run would use:
model-only images/s of a plain fp32 PyTorch loop over stock torch.nn modules (``baseline``), of
the fast path in the same bare loop (``fast``) and through the Lightning module (``lightning``);
training FLOPs per image, FLOP/s and MFU against a matrix-multiply peak measured in the same run;
peak memory; the LRN alone; end-to-end images/s of src/train.py's own assembly (prepared data,
augmentation, Trainer) with the fast path on and with every switch off (``--full-runs``: the whole
configured runs, wall time included); and the operators that take a fast step's time.
Ratios measured side by side compare across machines; absolute figures do not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from alexnet import exits
from alexnet.benchmarks import hardware
from alexnet.benchmarks import training_speed as bench
from alexnet.benchmarks.arguments import positive_int
from alexnet.exits import UserError
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.image_size=80", "data.crop_size=67", "data.train_per_class=2",
        "data.val_per_class=1", "data.batch_size=4", "data.num_workers=0"]
QUIET = ["~callbacks.progress_bar", "trainer.enable_progress_bar=false"]


def off_switches(cfg: DictConfig) -> list[str]:
    """Overrides that turn every fast-path switch off."""
    off = ["speed.channels_last=false", "speed.compile=false", "trainer.precision=32-true",
           "trainer.benchmark=false", "data.pin_memory=false"]
    if "lrn_impl" in cfg.model:
        off.append("model.lrn_impl=torch")
    return off


def compose_cfg(overrides: list[str], work: Path, tag: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(work / "runs" / tag)
    return cfg


def device_of(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": device.type, "cpu": hardware.cpu_model(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average": list(os.getloadavg()),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = bench.make_temp_dir()
    try:
        base = [f"paths.log_dir={work / 'logs'}"]
        if args.tiny:
            base += [f"paths.data_dir={work / 'data'}", *TINY]
        overrides = base + QUIET + args.overrides
        cfg = compose_cfg(overrides, work, "probe")
        device = device_of(cfg)
        where = environment(device)
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
            "environment": environment(device),
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="src/train.py's Hydra overrides")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a few seconds, for tests")
    parser.add_argument("--json", type=Path, default=ROOT / "logs" / "benchmark.json",
                        help="output file (default: logs/benchmark.json)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="steps per timed round")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="timed rounds per runner")
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="end-to-end epochs (last timed)")
    parser.add_argument("--full-runs", action="store_true",
                        help="end to end: the whole configured runs (wall time of each)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end runs")
    parser.add_argument("--lrn-batch", type=positive_int, default=None,
                        help="batch of the LRN-alone test (default 64; --tiny 2)")
    parser.add_argument("--local-batch", type=positive_int, default=None,
                        help="batch of the locally-connected-alone test (default 128; --tiny 4)")
    parser.add_argument("--matmul-n", type=positive_int, default=None,
                        help="size of the peak matmul")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch's CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (UserError, ValueError, HydraException) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(exits.USER_ERROR)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
