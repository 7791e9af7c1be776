"""The command line as a user meets it: configs that compose, overrides, sweeps, loggers and the
one-line errors for mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    ABLATIONS,
    CONF,
    ROOT,
    TINY,
    compose_config,
    find_summaries,
    run_entry_point,
    run_watching_imports,
)
from omegaconf import OmegaConf

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_ablation_composes(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"+ablation={name}"], tmp_path, tmp_path)
    OmegaConf.resolve(cfg)
    assert name in cfg.ablations
    assert "claim" in cfg.ablations[name] and cfg.ablations[name].changes


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"experiment={name}"], tmp_path, tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.model._target_ and cfg.data._target_


def test_experiment_and_ablation_compose_together(tmp_path: Path) -> None:
    cfg = compose_config(
        "train", ["experiment=paper", "+ablation=no_dropout"], tmp_path, tmp_path
    )
    assert cfg.trainer.max_epochs == 90 and cfg.model.dropout == 0.0


def test_ablation_from_the_command_line(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point(
        "train.py", [*TINY, "trainer.fast_dev_run=true", "test=false", "+ablation=no_dropout"],
        tmp_path, data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = find_summaries(tmp_path / "logs")
    assert [a["name"] for a in summary["ablations"]] == ["no_dropout"]
    assert summary["config"]["model"]["dropout"] == 0.0


def test_multirun_sweeps_seeds(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point(
        "train.py", ["-m", *TINY, "trainer.fast_dev_run=true", "test=false", "seed=1,2"],
        tmp_path, data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = find_summaries(tmp_path / "logs" / "train" / "multirun")
    assert sorted(s["seed"] for s in summaries) == [1, 2]
    assert len({s["output_dir"] for s in summaries}) == 2


def test_tensorboard_writes_its_files_into_the_run_directory(tmp_path: Path,
                                                             data_dir: Path) -> None:
    """(logger=wandb's offline run directory: test_wandb_media.py's tiny run.)"""
    from alexnet.jobs.train import train

    train(compose_config("train", [*TINY, "logger=tensorboard", "trainer.max_steps=1",
                                   "trainer.limit_val_batches=1", "test=false", "tags=[unit]"],
                         tmp_path, data_dir))
    assert list(tmp_path.glob("tensorboard/events.out.tfevents.*")), sorted(tmp_path.iterdir())


# -- mistakes: one clear line, a non-zero exit, no traceback, no result ------------------------
# As the user's shell sees them: a real process of each entry point, for a mistake of each phase
# (what Hydra meets, the config's values, the data, the checkpoint). The whole table of mistakes,
# each with its exact line, runs in-process in test_bad_inputs.py.
def _assert_user_error(result, *needles: str) -> None:
    """One ``error:`` line on stderr, exit status 2 (docs/long-runs.md), no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr


def _assert_no_result(tmp_path: Path) -> None:
    assert not list((tmp_path / "logs").rglob("summary.json"))
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


def test_unknown_config_group_option_lists_the_choices(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point("train.py", ["model=resnet"], tmp_path, data_dir)
    _assert_user_error(result, "model=resnet: no such option; the options of model: alexnet, "
                               "cifar18pct, cifar_11pct, cifar_13pct")
    _assert_no_result(tmp_path)


def test_unknown_key(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point("train.py", ["model.activaton=tanh"], tmp_path, data_dir)
    _assert_user_error(result, "model.activaton", "not in struct", "+model.activaton=tanh")
    _assert_no_result(tmp_path)


@pytest.mark.parametrize("entry", ["train.py", "eval.py", "prepare.py"])
def test_help_lists_each_group_less_its_base(entry: str, tmp_path: Path) -> None:
    """--help names every config group with its options as Hydra does, less the _base files the
    options build on (alexnet.resolvers.config_groups), before any torch is imported."""
    status, loaded, result = run_watching_imports(ROOT / "src" / entry, ["--help"], tmp_path)
    assert (status, loaded) == (0, []), result.stdout + result.stderr[-2000:]
    expected = {f"{d.name}: " + ", ".join(sorted(p.stem for p in d.glob("*.yaml")
                                                 if not p.stem.startswith("_")))
                for d in CONF.iterdir() if d.is_dir() and d.name != "hydra"}
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line for line in groups.splitlines() if ": " in line}
    assert listed == expected and "_base" not in result.stdout
    assert "optimizer: sgd_paper, torch_sgd" in listed


@pytest.mark.parametrize(("entry", "override"), [("train.py", "model=resnet"),
                                               ("eval.py", "model=resnet"),
                                               ("prepare.py", "data=nope")])
def test_a_mistake_hydra_finds_is_answered_before_torch_is_imported(entry: str, override: str,
                                                                    tmp_path: Path) -> None:
    """The entry points import torch and Lightning (seconds) only once the config has composed,
    and src/prepare.py not at all, so an unknown option or key is answered at once."""
    status, loaded, result = run_watching_imports(ROOT / "src" / entry, [override], tmp_path)
    assert (status, loaded) == (2, []), result.stdout + result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and override in result.stderr


@pytest.mark.parametrize(("entry", "args", "says"), [
    ("train.py", ["optimizer.lr=fast"],
     "error: invalid configuration: optimizer.lr must be a number, got 'fast'"),
    ("train.py", ["+ablation=[no_lrn,lrn_authors]"],
     "error: invalid configuration: ablations 'no_lrn' and 'lrn_authors' both change the lrn "
     "component and contradict each other: apply one of them"),
    ("eval.py", ["ckpt_path=model.ckpt", "ten_crop=3"],
     "error: invalid configuration: ten_crop must be true or false, got 3"),
    ("eval.py", [], "error: no checkpoint given: python src/eval.py ckpt_path=PATH/TO/FILE.ckpt"),
    ("benchmark.py", ["--tiny", "--json", "bench.json", "optimizer.lr=fast"],
     "error: invalid configuration: optimizer.lr must be a number, got 'fast'"),
    ("benchmark_data.py", ["--images", "no-such-folder"],
     "error: no-such-folder does not exist: pass --images DIR of JPEGs"),
    ("benchmark.py", ["--tiny", "--json", "."],
     "error: --json . cannot be written (a folder is there, or a file above it): give the path "
     "of a JSON file"),
], ids=["train_lr_a_word", "train_contradicting_ablations", "eval_ten_crop_a_number",
        "eval_no_checkpoint", "benchmark_lr_a_word", "benchmark_data_no_images",
        "benchmark_json_a_folder"])
def test_a_mistaken_value_is_answered_before_lightning_is_imported(
        entry: str, args: list[str], says: str, tmp_path: Path) -> None:
    """The entry points check the values (src/train.py's and src/eval.py's checks, which need no
    data) before they import Lightning, seconds on a small machine: one line, status 2, and
    nothing written."""
    hydra = [f"paths.log_dir={tmp_path / 'logs'}"] if entry in ("train.py", "eval.py") else []
    status, loaded, result = run_watching_imports(ROOT / "src" / entry, [*hydra, *args], tmp_path)
    assert (status, "lightning" in loaded) == (2, False), result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [says]
    assert not list(tmp_path.rglob("summary.json")) and not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize(("entry", "args", "needles"), [
    # Hydra's own composition errors, said in one line instead of its several, with status 2
    ("train.py", ["seed=[1"], ["error: seed=[1: ", "override_grammar"]),
    ("train.py", ["-m", "seed=1,2", "model.activaton=tanh"], ["model.activaton"]),
    ("train.py", ["hydra/launcher=nope"], ["hydra/launcher=nope: no such option", "slurm"]),
    ("eval.py", ["model=nope"], ["Could not override 'model'", "+model=nope"]),
    ("prepare.py", ["data=nope"], ["data=nope: no such option", "cifar10_folder"]),
    # Hydra resolves --cfg hydra alone, without paths.log_dir that hydra.run.dir names
    ("train.py", ["--cfg=hydra", "--resolve"], ["error: --resolve: ", "'paths.log_dir'",
                                                   "use --cfg all --resolve"]),
    ("train.py", ["--cfg=job", "--resolve", "optimizer.lr=${nothing}"],
     ["error: --resolve: Interpolation key 'nothing' not found"]),
    # a group's _base is what its options build on, not one of them
    ("train.py", ["data=_base"], ["data=_base: not an option of data", "imagefolder"]),
    ("train.py", ["-m", "optimizer=torch_sgd,_base"], ["not an option of optimizer",
                                                          "sgd_paper, torch_sgd"]),
])
def test_hydras_own_errors_are_one_line(entry: str, args: list[str], needles: list[str],
                                         tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point(entry, args, tmp_path, data_dir)
    _assert_user_error(result, *needles)
    _assert_no_result(tmp_path)


def test_unknown_ablation_lists_the_choices(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point("train.py", ["+ablation=no_relu"], tmp_path, data_dir)
    _assert_user_error(result, "ablation=no_relu: no such option", "no_dropout")
    assert "_base" not in result.stderr


def test_bad_value(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point("train.py", [*TINY, "model.activation=sigmoid"], tmp_path, data_dir)
    _assert_user_error(result, "error: invalid configuration", "sigmoid", "relu", "tanh")
    assert len(result.stderr.strip().splitlines()) == 1
    _assert_no_result(tmp_path)


def test_missing_data_path(tmp_path: Path, data_dir: Path) -> None:
    missing = tmp_path / "no-such-dataset"
    result = run_entry_point(
        "train.py", ["data=imagenet", f"data.prepared_dir={missing}"], tmp_path, data_dir
    )
    _assert_user_error(result, str(missing))
    assert len(result.stderr.strip().splitlines()) == 1
    _assert_no_result(tmp_path)


def test_not_a_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    result = run_entry_point("eval.py", [f"ckpt_path={bogus}"], tmp_path, data_dir)
    _assert_user_error(result, "bogus.ckpt", "not a readable checkpoint")
    _assert_no_result(tmp_path)
