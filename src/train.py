"""Train a network: ``python src/train.py [overrides]`` (see conf/train.yaml)."""

import os
from pathlib import Path

os.environ.setdefault("ALEXNET_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from alexnet.names import VAL_TOP1  # noqa: E402
from alexnet.run import reports_user_errors, train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@reports_user_errors
def main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    return summary["final"].get(VAL_TOP1)  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
