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

from alexnet.resolvers import register_resolvers

register_resolvers()  # as every entry point does before it composes a config

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


@pytest.fixture(scope="session")
def tiny_wandb_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real tiny training run with ``logger=wandb`` (offline): two epochs of two batches, with
    its checkpoints, summary.json and wandb run directory. The figure, wandb and notebook tests
    share it."""
    import wandb

    from alexnet.jobs.train import train

    out = tmp_path_factory.mktemp("wandb_run")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(out / "wandb-home"))  # nothing of wandb's outside the test
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        cfg = compose_config(
            "train",
            [*TINY, "logger=wandb", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
             "test=false"],
            out, data_dir,
        )
        train(cfg)
        wandb.finish()  # flush the run's records to disk, as the end of a process does
    return out


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real tiny study sweep: the recipe (ReLU) and its tanh ablation, one seed, two epochs of
    two batches each, laid out as a study's multirun lays them out."""
    from alexnet.jobs.train import train

    sweep = tmp_path_factory.mktemp("sweep") / "tiny"
    for arm in ("none", "tanh"):
        cfg = compose_config(
            "train",
            [*(o for o in TINY if o != "~callbacks.progress_bar"), "experiment=study_cpu",
             "study.name=tiny", "study.arms=[none,tanh]", "study.seeds=[1]", "seed=1",
             f"+ablation={arm}", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
             "trainer.check_val_every_n_epoch=1"],
            sweep / arm / "seed1", data_dir,
        )
        train(cfg)
    return sweep
