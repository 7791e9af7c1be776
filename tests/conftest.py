"""Shared test helpers: composing the real configs, running the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import alexnet.run  # noqa: F401  (registers the config resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"

# A tiny but real configuration: AlexNet at its smallest crop on small built-in images.
TINY = [
    "data.image_size=80",
    "data.crop_size=67",
    "data.train_per_class=2",
    "data.val_per_class=1",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session: the tiny built-in dataset is drawn once."""
    return tmp_path_factory.mktemp("data")


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path
) -> DictConfig:
    """Compose conf/<config_name>.yaml as the entry point would, with outputs in ``output_dir``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.data_dir={data_dir}", f"paths.log_dir={output_dir}", *overrides],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_entry_point(
    script: str, args: list[str], tmp_path: Path, data_dir: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run src/<script> as a user would, with logs under ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_SILENT": "true"}
    flags = [a for a in args if a.startswith("-") and not a.startswith("~")]
    overrides = [a for a in args if a not in flags]
    cmd = [
        sys.executable, str(ROOT / "src" / script), *flags,
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)


def find_summaries(log_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(log_dir.rglob("summary.json"))]
