"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=PATH [ten_crop=true]`` (conf/eval.yaml)."""

import os
from pathlib import Path

os.environ.setdefault("ALEXNET_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from alexnet.run import evaluate, reports_user_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
