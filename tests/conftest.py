"""The fixtures the tests share: the session's data cache and the real tiny runs that several
test files read. Plain helpers and constants are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TINY, compose_config
from hydra.core.hydra_config import HydraConfig

# The expected values of the tests are float32 ones: a CPU with AMX would otherwise run them in
# bf16 (alexnet.training.speed.precision_choice). Subprocesses inherit it.
os.environ["ALEXNET_CPU_FLAGS"] = ""


# The files that take longest, longest first (seconds of one worker, measured on a 2-core VM with
# --durations: device_check's --smoke alone about 100, parallel's layouts about 150). xdist's
# loadfile hands each worker whole files in collection order (pyproject: --no-loadscope-reorder;
# its default order, most tests first, put these few-test files last, where one ran alone for
# minutes while the other worker idled). The rest keep their order after them.
LONGEST_FIRST = ("test_device_check.py", "test_parallel.py", "test_cifar10_jpeg.py",
                 "test_cli.py", "test_study.py", "test_common_overrides.py", "test_train.py",
                 "test_resilience.py", "test_ablations.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(autouse=True)
def no_hydra_run_left_behind() -> None:
    """A test that runs an entry point in-process leaves Hydra's run config set (hydra.main does
    not clear it); the next in-process run would read that run's overrides (its resume command,
    its multirun mode). Each test starts without one, whatever ran before it on its worker."""
    HydraConfig.instance().cfg = None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session: the tiny built-in dataset is drawn once."""
    return tmp_path_factory.mktemp("data")


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
