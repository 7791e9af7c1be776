"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=PATH [ten_crop=true]`` (conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from alexnet.exits import reports_user_errors, run_command
from alexnet.jobs.config_checks import check_eval_config
from alexnet.provenance import REPO_ROOT
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    check_eval_config(cfg)  # a mistaken value answered before Lightning's seconds of import
    from alexnet.jobs.evaluate import evaluate  # torch and Lightning: once the config is checked

    evaluate(cfg)


if __name__ == "__main__":
    run_command(main, REPO_ROOT / "conf")
