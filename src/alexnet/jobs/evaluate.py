"""``src/eval.py``'s job: a checkpoint measured on the test split of its dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from alexnet.callbacks.history import MetricHistory
from alexnet.exits import building
from alexnet.jobs.build import build_data, build_trainer
from alexnet.jobs.checks import check_record_path
from alexnet.jobs.config_checks import check_eval_config
from alexnet.training import parallel
from alexnet.training.ablation import applied_ablations
from alexnet.training.checkpoints import (
    check_classes,
    dataset_config,
    load_checkpoint,
    trained_classes,
    weights_mismatch,
)
from alexnet.training.module import CONFIG_KEY, ImageClassifier
from alexnet.training.summary import build_summary, final_line, write_summary


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split of its dataset (or ``prepared_dir``): ``test``,
    or ``val`` where the dataset has none."""
    started = time.time()
    check_eval_config(cfg)
    out = Path(cfg.paths.output_dir)
    check_record_path(out / "summary.json")
    out.mkdir(parents=True, exist_ok=True)
    with building("cannot evaluate"):
        parallel.check_devices(cfg.trainer)  # before Lightning's less helpful messages
    checkpoint = load_checkpoint(cfg.ckpt_path)
    train_cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    with building("cannot evaluate"):
        data_cfg = dataset_config(train_cfg, cfg.get("prepared_dir"))
        data_cfg.ten_crop = cfg.ten_crop
        if cfg.get("batch_size") is not None:
            data_cfg.eval_batch_size = cfg.batch_size
        datamodule = build_data(data_cfg)
        check_classes(trained_classes(checkpoint), datamodule.class_names, datamodule.root,
                      cfg.ckpt_path)
        net = instantiate(train_cfg.model, num_classes=datamodule.num_classes)
        module = ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=datamodule.num_classes)
        try:
            module.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise ValueError(
                f"{cfg.ckpt_path} does not fit the dataset or model it names: "
                f"{weights_mismatch(err)}"
            ) from None
        module.run_config = OmegaConf.to_container(train_cfg, resolve=True)
        history = MetricHistory()
        trainer = build_trainer(cfg, [history])
    trainer.test(module, datamodule=datamodule)
    history.history.append({"epoch": 0, **{
        k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k
    }})
    summary = build_summary(
        task="eval",
        cfg=cfg,
        trainer=trainer,
        history=history,
        num_params=sum(p.numel() for p in net.parameters()),
        num_classes=datamodule.num_classes,
        ablations=applied_ablations(train_cfg),
        wall_time_s=time.time() - started,
        img_per_s=None,
        checkpoints={"evaluated": str(Path(cfg.ckpt_path).resolve())},
        output_dir=out,
        train_config=module.run_config,
        extra={"evaluation": {"test_split": datamodule.test_split,
                              "test_split_from": datamodule.split_origins().get(
                                  datamodule.test_split, datamodule.test_split),
                              "test_copies_of_earlier_splits": datamodule.copies_in(
                                  datamodule.test_split)}},
    )
    if trainer.is_global_zero:
        write_summary(out / "summary.json", summary)
        print(final_line(summary), flush=True)
    return summary
