"""wandb, offline, on real run directories: what a training run and a study report write."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from google.protobuf.message import DecodeError
from helpers import ROOT, load_script
from PIL import Image

from alexnet.callbacks.wandb_media import KERNELS_KEY, WandbMedia
from alexnet.models.conv1_kernels import column_scores, grid_layout

wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


def _records(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file: wandb's transaction log, a LevelDB-style log (a 7-byte
    file header, then 32 KiB blocks of chunks with a 7-byte header: crc, length, type). wandb
    0.31 keeps its reader in its Go core, so the test reads the documented format itself."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def read_run(run_dir: Path, wait_s: float = 30.0) -> dict[str, Any]:
    """A wandb run directory's config (key -> value) and history rows (key -> value), once the
    run's last record (``exit``) is on disk: wandb's core process may still be writing the file
    when ``finish()`` has returned."""
    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    while True:
        config: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        complete = False
        for raw in _records(log):
            record = wandb_pb.Record()
            try:
                record.ParseFromString(raw)
            except DecodeError:  # a record still being written
                break
            kind = record.WhichOneof("record_type")
            if kind in ("config", "run"):  # wandb.init's config arrives with the run record
                items = (record.config if kind == "config" else record.run.config).update
                config.update({i.key: json.loads(i.value_json) for i in items})
            elif kind == "history":
                history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                for i in record.history.item})
            complete = complete or kind == "exit"
        if complete:
            return {"config": config, "history": history}
        assert time.monotonic() < deadline, f"{log} has no exit record after {wait_s} s"
        time.sleep(0.2)


def _offline_run(root: Path) -> Path:
    (run_dir,) = [p for p in root.rglob("offline-run-*") if p.is_dir()]
    return run_dir


def test_training_run_logs_config_kernels_and_curves(tiny_wandb_run: Path) -> None:
    run_dir = _offline_run(tiny_wandb_run / "wandb")
    run = read_run(run_dir)
    config = run["config"]
    assert config["arm"] == "none" and config["ablations"] == {}
    assert config["model"]["columns"] == 2 and config["data"]["crop_size"] == 67
    assert "seed=2012" in config["tags"]

    images = [row for row in run["history"] if f"{KERNELS_KEY}/filenames" in row]
    assert len(images) == 2  # one per validation epoch
    layout = grid_layout(96, 2, 11)
    for row in images:
        (name,) = row[f"{KERNELS_KEY}/filenames"]
        png = run_dir / "files" / name
        assert Image.open(png).size == (layout.width, layout.height)
        assert "96 kernels in 2 column(s)" in row[f"{KERNELS_KEY}/captions"][0]

    # The curves are the run's own: epoch by epoch, the values its summary.json records.
    summary = json.loads((tiny_wandb_run / "summary.json").read_text())
    for name in ("val/top1_err", "val/top5_err", "train/top1_err", "train/top5_err"):
        values = [row[name] for row in run["history"] if name in row]
        assert values == pytest.approx([row[name] for row in summary["history"]]), name

    # The colour specificity logged at a step is that of the weights a checkpoint of that step
    # holds (last.ckpt: the last checkpoint written, at the best epoch so far).
    checkpoint = torch.load(tiny_wandb_run / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=False)
    (scores,) = [row for row in run["history"] if "conv1/colour_specificity_col0" in row
                 and row["trainer/global_step"] == checkpoint["global_step"]]
    expected = column_scores(checkpoint["state_dict"]["net.conv1.weight"], 2)
    assert [scores[f"conv1/colour_specificity_col{c}"] for c in (0, 1)] == pytest.approx(expected)


def test_kernel_images_switch_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kernels=false``: a real offline wandb run receives the config but no image."""
    from lightning.pytorch.loggers import WandbLogger

    from alexnet.models import AlexNet

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="alexnet")
    trainer = SimpleNamespace(loggers=[logger], sanity_checking=False, global_step=1,
                              current_epoch=0)
    module = SimpleNamespace(net=AlexNet(num_classes=10, crop_size=67),
                             run_config={"ablations": {"tanh": {"claim": "relu"}}, "seed": 1})
    for kernels in (False, True):
        callback = WandbMedia(kernels=kernels)
        callback.setup(trainer, module, "fit")
        callback.on_validation_epoch_end(trainer, module)
        logger.experiment.log({"marker": int(kernels)})
    logger.experiment.finish()
    run = read_run(_offline_run(tmp_path))
    assert run["config"].get("arm") == "tanh" and run["config"]["seed"] == 1, run["config"]
    keys = [k for row in run["history"] for k in row]
    assert sum(k == f"{KERNELS_KEY}/filenames" for k in keys) == 1  # only with kernels=True


def test_without_wandb_the_callback_does_nothing(tiny_sweep: Path) -> None:
    # The sweep's runs use the CSV logger, with the wandb callback in their configuration.
    summary = json.loads(next(tiny_sweep.rglob("summary.json")).read_text())
    assert summary["config"]["callbacks"]["wandb_media"]["kernels"] is True
    assert not list(tiny_sweep.rglob("wandb"))


def test_report_logs_study_to_wandb(tiny_sweep: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    report = load_script(ROOT / "ablations" / "report.py", "report_cli")
    assert report.main([str(tiny_sweep), "--wandb", "--wandb-dir", str(tmp_path / "wb")]) == 0
    run_dir = _offline_run(tmp_path / "wb")
    run = read_run(run_dir)
    assert run["config"]["study"]["name"] == "tiny" and run["config"]["runs"] == 2
    (row,) = [r for r in run["history"] if "study/runs/path" in r]
    for key in ("study/report", "study/curves", "study/fig1"):
        assert (run_dir / "files" / row[f"{key}/path"]).is_file(), key
    table = json.loads((run_dir / "files" / row["study/runs/path"]).read_text())
    arms = {line[table["columns"].index("arm")] for line in table["data"]}
    assert arms == {"none", "tanh"}
    deltas = json.loads((run_dir / "files" / row["study/deltas/path"]).read_text())
    assert [line[0] for line in deltas["data"]] == ["tanh"]
