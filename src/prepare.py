"""Prepare a dataset once: ``python src/prepare.py data=imagenet data.root=SRC``.

Reads the user's files (``data=imagenet``, ``imagefolder`` or ``cifar10``; nothing is downloaded)
and writes the prepared format at ``data.prepared_dir`` (conf/prepare.yaml). An interrupted run
resumes when started again with the same arguments.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("ALEXNET_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from alexnet import exits  # noqa: E402
from alexnet.data import prepare, prepared, registry, synthetic, writer  # noqa: E402
from alexnet.run import UserError, building, reports_user_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@reports_user_errors
def main(cfg: DictConfig) -> None:
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
        done = prepare.existing(data.prepared_dir, source, data.get("root"), data.image_size,
                                cfg.force, fractions)
        if done is None:
            job = prepare.plan(source, data.get("root"), data.prepared_dir, data.image_size,
                               **fractions)
    if done is not None:
        counts = ", ".join(f"{s} {c['total']}" for s, c in done["counts"].items())
        print(f"completed: already prepared, {counts} images (force=true prepares it again) -> "
              f"{data.prepared_dir}")
        return
    try:
        result = writer.write(job, workers=cfg.workers, progress=cfg.progress)
    except prepared.DataError as err:  # no image of a split could be decoded
        raise UserError(" ".join(str(err).split())) from None
    except KeyboardInterrupt:
        print(f"interrupted: the work so far is kept in {prepared.partial_dir(job.root)}; run "
              f"the same command again to resume", file=sys.stderr)
        sys.exit(exits.CTRL_C)
    print(prepare.describe(result, source))
    counts = ", ".join(f"{s} {c['total']}" for s, c in result.stats["counts"].items())
    print(f"completed: {counts} images -> {job.root}")  # the last line of every run


if __name__ == "__main__":
    main()
