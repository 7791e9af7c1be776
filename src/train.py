"""Train a network: ``python src/train.py [overrides]`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from alexnet.exits import reports_user_errors, run_command
from alexnet.jobs.config_checks import check_train_config
from alexnet.names import VAL_TOP1
from alexnet.provenance import REPO_ROOT
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@reports_user_errors
def main(cfg: DictConfig) -> float | None:
    check_train_config(cfg)  # a mistaken value answered before Lightning's seconds of import
    from alexnet.jobs.train import train  # torch and Lightning: once the config is checked

    summary = train(cfg)
    return summary["final"].get(VAL_TOP1)  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    run_command(main, REPO_ROOT / "conf")
