"""Prepare a dataset once: ``python src/prepare.py data=imagenet data.root=SRC``.

Reads the user's files (``data=imagenet``, ``imagefolder`` or ``cifar10``; nothing is downloaded)
and writes the prepared format at ``data.prepared_dir`` (conf/prepare.yaml). An interrupted run
resumes when started again with the same arguments.
"""

import sys

import hydra
from omegaconf import DictConfig

from alexnet import exits
from alexnet.data import preparation, prepared, registry, synthetic, writer
from alexnet.exits import (
    DataError,
    UserError,
    building,
    check_values_resolve,
    reports_user_errors,
    run_command,
)
from alexnet.jobs.config_checks import prepare_problems
from alexnet.provenance import REPO_ROOT
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    check_values_resolve(cfg)
    if problems := prepare_problems(cfg):
        raise UserError(f"invalid configuration: {problems[0]}")
    data = cfg.data
    source = data.get("source")
    if registry.is_built_in(data):  # drawn, not read from the user's files
        with building("cannot prepare"):
            stats = synthetic.prepare(
                data.prepared_dir, num_classes=data.num_classes,
                train_per_class=data.train_per_class, val_per_class=data.val_per_class,
                test_per_class=data.get("test_per_class"), image_size=data.image_size,
                seed=data.seed, workers=cfg.workers,
                progress=cfg.progress,
            )
        counts = ", ".join(f"{s} {c['total']}" for s, c in stats["counts"].items())
        print(f"completed: the built-in dataset, {counts} images -> {data.prepared_dir}")
        return
    with building("cannot prepare"):
        fractions = {k: data.get(k) for k in ("val_fraction", "test_fraction")}
        done = preparation.existing(data.prepared_dir, source, data.get("root"), data.image_size,
                                cfg.force, fractions)
        if done is None:
            job = preparation.plan(source, data.get("root"), data.prepared_dir, data.image_size,
                                   **fractions, expected_classes=data.get("expected_classes"),
                                   test_folder_required=data.get("test_folder_required", False))
            if len(job.classes) < 2:  # prepared, it would fail only once a run builds its net
                raise UserError(f"{data.get('root')} holds one class ({job.classes[0]}): a "
                                f"classifier needs at least two")
    if done is not None:
        counts = ", ".join(f"{s} {c['total']}" for s, c in done["counts"].items())
        print(f"completed: already prepared, {counts} images (force=true prepares it again) -> "
              f"{data.prepared_dir}")
        return
    try:
        result = writer.write(job, workers=cfg.workers, progress=cfg.progress)
    except DataError as err:  # no image of a split could be decoded
        raise UserError(" ".join(str(err).split())) from None
    except KeyboardInterrupt:
        print(f"interrupted: the work so far is kept in {prepared.partial_dir(job.root)}; run "
              f"the same command again to resume", file=sys.stderr)
        sys.exit(exits.CTRL_C)
    print(preparation.describe(result, source))
    counts = ", ".join(f"{s} {c['total']}" for s, c in result.stats["counts"].items())
    print(f"completed: {counts} images -> {job.root}")  # the last line of every run


if __name__ == "__main__":
    run_command(main, REPO_ROOT / "conf")
