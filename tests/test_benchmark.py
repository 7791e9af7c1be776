"""src/benchmark.py at tiny scale: it runs, prints its table and writes JSON with every field; its
baseline network computes the same function as the project's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SAMPLE
from PIL import Image

from alexnet.benchmarks.baselines import stock_net
from alexnet.benchmarks.training_speed import autocast_dtype
from alexnet.models import AlexNet

ROW_FIELDS = {"img_per_s", "step_ms", "flops_per_s", "peak_memory_mb", "rounds", "mfu"}
E2E_FIELDS = {"name", "overrides", "img_per_s", "epochs", "wall_s", "status"}
RATIOS = {"fast_vs_baseline", "lightning_vs_bare_loop", "lightning_vs_baseline",
          "end_to_end_fast_vs_off", "end_to_end_vs_model_only", "lrn_fast_vs_stock",
          "local_fast_vs_unfold", "update_fused_vs_loop"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "benchmark.py"), "--tiny", "--epochs", "1",
         "--json", str(out), "trainer.accelerator=cpu"],
        capture_output=True, text=True, timeout=240, env=env, cwd=out.parent)
    return proc, out


def test_tiny_benchmark_writes_every_field(tiny_run) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"environment", "config", "flops_per_image", "matmul_peak_flops",
                           "compile_s", "model_only", "end_to_end", "lrn", "locally_connected",
                           "update_step", "ratios", "profile"}
    assert result["environment"]["device"] == "cpu" and result["environment"]["gpu"] is None
    assert result["config"]["batch_size"] == 4 and result["config"]["crop_size"] == 67
    assert result["flops_per_image"] > 1e8
    assert result["matmul_peak_flops"]["float32"] > 0
    assert result["matmul_peak_flops"]["bfloat16"] is None  # float32 on the CPU: not used
    assert result["compile_s"] is None  # speed.compile is off by default
    assert set(result["model_only"]) == {"baseline", "fast", "lightning"}
    for row in result["model_only"].values():
        assert set(row) == ROW_FIELDS
        assert row["img_per_s"] > 0 and row["peak_memory_mb"] is not None
        assert row["flops_per_s"] == pytest.approx(row["img_per_s"] * result["flops_per_image"])
        # float32 on the CPU: each row's share of the measured float32 matmul peak
        assert row["mfu"] == pytest.approx(row["flops_per_s"]
                                           / result["matmul_peak_flops"]["float32"])
    for name in ("fast", "off"):
        run = result["end_to_end"][name]
        assert set(run) == E2E_FIELDS and run["status"] == "completed" and run["img_per_s"] > 0
    assert "model.lrn_impl=torch" in result["end_to_end"]["off"]["overrides"]
    assert set(result["ratios"]) == RATIOS
    rate = {name: row["img_per_s"] for name, row in result["model_only"].items()}
    e2e = {name: run["img_per_s"] for name, run in result["end_to_end"].items()}
    assert result["ratios"] == pytest.approx({
        "fast_vs_baseline": rate["fast"] / rate["baseline"],
        "lightning_vs_bare_loop": rate["lightning"] / rate["fast"],
        "lightning_vs_baseline": rate["lightning"] / rate["baseline"],
        "end_to_end_fast_vs_off": e2e["fast"] / e2e["off"],
        "end_to_end_vs_model_only": e2e["fast"] / rate["fast"],
        "lrn_fast_vs_stock": result["lrn"]["speedup"],
        "local_fast_vs_unfold": result["locally_connected"]["speedup"],
        "update_fused_vs_loop": result["update_step"]["fused_vs_loop"],
    })
    lrn = result["lrn"]
    assert lrn["shape"] == [2, 96, 13, 13] and lrn["max_abs_diff"] < 1e-4
    assert lrn["max_grad_abs_diff"] < 1e-4
    local = result["locally_connected"]  # float32 on this CPU: equal to rounding
    assert local["shape"] == [4, 64, 6, 6] and local["dtype"] == "float32"
    assert local["max_abs_diff"] < 1e-5 and local["max_grad_abs_diff"] < 1e-5
    assert local["speedup"] == pytest.approx(local["stock_ms"] / local["fast_ms"])
    assert result["profile"] and {"op", "ms_per_step", "share"} <= set(result["profile"][0])
    update = result["update_step"]
    assert update["parameters"] > 1e6  # the configured AlexNet's every parameter
    assert all(update[f"{name}_ms"] > 0 for name in ("paper_loop", "paper_fused",
                                                       "torch_foreach", "torch_fused"))
    assert update["fused_vs_loop"] == pytest.approx(update["paper_loop_ms"]
                                                    / update["paper_fused_ms"])
    for line in ("plain loop, stock torch.nn", "fast path, Lightning module", "ratios",
                 "where a fast step's time goes", "optimizer update of",
                 "locally connected (4, 64, 6, 6) forward + backward, float32: F.unfold"):
        assert line in proc.stdout


@pytest.mark.parametrize(("override", "says"), [
    ("speed.channels_last=2", "speed.channels_last must be true or false, got 2"),
    # src/train.py's checks of the configuration, made before anything is measured
    ("optimizer.lr=fast", "invalid configuration: optimizer.lr must be a number, got 'fast'"),
    ("data.crop_size=99", "invalid configuration: data.crop_size must be between 1 and "
                          "data.image_size=80, got 99"),
    ("data.batch_size=0", "invalid configuration: data.batch_size must be at least 1, got 0"),
], ids=["channels_last", "lr_a_word", "crop_beyond_image", "batch_zero"])
def test_bad_setting_gives_one_line(override: str, says: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "benchmark.py"), "--tiny", "--json",
         str(tmp_path / "bench.json"), override],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {says}"]
    assert not (tmp_path / "bench.json").exists()


def test_stock_baseline_is_the_same_network() -> None:
    """The baseline's stock nn.LocalResponseNorm (per column, alpha * n) computes the paper net's
    LRN: equal outputs. (Its nn.Dropout is PyTorch's inverted dropout: the same work in training,
    another scaling at test time, so dropout is off here.)"""
    torch.manual_seed(0)
    net = AlexNet(10, crop_size=67, init="kaiming", dropout=0.0).eval()
    stock = stock_net(net).eval()
    assert not any(type(m).__module__.startswith("alexnet.models") for m in stock.modules()
                   if m is not stock)
    x = torch.randn(2, 3, 67, 67)
    torch.testing.assert_close(stock(x), net(x), rtol=1e-5, atol=1e-5)
    assert autocast_dtype("bf16-mixed") == torch.bfloat16
    assert autocast_dtype("32-true") is None


def test_stock_baseline_of_a_cifar_net_is_the_same_network() -> None:
    """The CIFAR-10 nets' locally connected layers in the baseline are F.unfold and einsum over
    the same parameters: equal outputs."""
    from alexnet.models import CifarLocalNet

    torch.manual_seed(0)
    net = CifarLocalNet(10).eval()
    stock = stock_net(net).eval()
    assert not any(type(m).__module__.startswith("alexnet.models") for m in stock.modules()
                   if m is not stock)
    x = torch.randn(2, 3, 24, 24)
    torch.testing.assert_close(stock(x), net(x), rtol=1e-5, atol=1e-5)


def _benchmark_data(images: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "src" / "benchmark_data.py"), "--images",
                           str(images), "--seconds", "0.1", "--workers", "0", "--batch-size", "2",
                           "--prepare-workers", "1"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_the_input_pipeline_benchmark_skips_and_names_what_cannot_be_decoded(
        tmp_path: Path) -> None:
    """A file of --images that does not decode is left out of both pipelines (the torchvision
    baseline would stop on it) and named as the user's file, with why; the rest is measured."""
    if not SAMPLE.is_dir():
        pytest.skip("no ../shared/data/imagenet-sample")
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted(SAMPLE.glob("*.JPEG"))[:4]:
        (images / source.name).write_bytes(source.read_bytes())
    whole = (images / sorted(p.name for p in images.iterdir())[0]).read_bytes()
    (images / "n09999999_cut.JPEG").write_bytes(whole[:len(whole) // 3])
    (images / "n00000000_text.JPEG").write_text("not an image\n")
    result = _benchmark_data(images)
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    assert skipped == [
        f"skipped {images}/n00000000_text.JPEG, which cannot be decoded: UnidentifiedImageError: "
        f"cannot identify image file '{images}/n00000000_text.JPEG'",
        f"skipped {images}/n09999999_cut.JPEG, which cannot be decoded: OSError: image file is "
        "truncated" + skipped[1].split("truncated", 1)[1]]
    assert "torchvision ImageFolder + PIL" in result.stdout and "1.0x" in result.stdout


@pytest.mark.parametrize("content", ["nothing", "missing", "undecodable", "a_file",
                                     "class_folders"])
def test_the_input_pipeline_benchmark_without_an_image_it_can_read(content: str,
                                                                   tmp_path: Path) -> None:
    images = tmp_path / "images"
    if content == "a_file":
        Image.new("RGB", (8, 8)).save(images, format="JPEG")
    elif content != "missing":
        images.mkdir()
    if content == "undecodable":  # two classes (the name's part before "_"), no image
        (images / "n0_a.JPEG").write_text("not an image\n")
        (images / "n1_b.JPEG").write_text("not an image either\n")
    if content == "class_folders":  # an image folder's tree, not the flat folder it reads
        for name in ("cat", "dog"):
            (images / name).mkdir()
            Image.new("RGB", (8, 8)).save(images / name / "0.jpg")
    result = _benchmark_data(images)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == {
        "nothing": f"error: no images in {images}",
        "missing": f"error: {images} does not exist: pass --images DIR of JPEGs",
        "a_file": f"error: {images} is a file: pass --images DIR, a folder of JPEGs",
        "class_folders": f"error: no images in {images} itself (2 in its subfolders): it reads "
                         "one flat folder of images named <class>_<name>, as "
                         "../shared/data/imagenet-sample",
        "undecodable": f"error: {images}: none of the train images could be decoded (first: "
                       f"{images}/n0_a.JPEG: UnidentifiedImageError: cannot identify image file "
                       f"'{images}/n0_a.JPEG')"}[content]


@pytest.mark.parametrize(("script", "args", "says"), [
    ("benchmark.py", ["--steps", "0"], "argument --steps: must be a whole number >= 1, got 0"),
    ("benchmark.py", ["--rounds", "-2"], "argument --rounds: must be a whole number >= 1, got -2"),
    ("benchmark.py", ["--local-batch", "x"],
     "argument --local-batch: must be a whole number >= 1, got 'x'"),
    ("benchmark.py", ["--threads", "0"], "argument --threads: must be a whole number >= 1, got 0"),
    ("benchmark_data.py", ["--seconds", "0"], "argument --seconds: must be a number > 0, got 0"),
    ("benchmark_data.py", ["--seconds", "nan"],
     "argument --seconds: must be a number > 0, got nan"),
    ("benchmark_data.py", ["--workers", "-1"],
     "argument --workers: must be a whole number >= 0, got -1"),
    ("device_check.py", ["--budget", "-5"], "argument --budget: must be a number > 0, got -5"),
], ids=lambda v: "_".join(v) if isinstance(v, list) else None)
def test_a_count_or_duration_below_one_is_refused(script: str, args: list[str], says: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """0 or a negative count would be read as "the default" (or time nothing): argparse's usage
    and one error line, exit status 2, before any work."""
    from helpers import load_script

    main = load_script(ROOT / "src" / script).main
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"{script}: error: {says}"
