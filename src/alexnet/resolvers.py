"""Every resolver the configs use, registered by each entry point before it composes a config:
``${repo_root:}``, ``${div:a,b}``, ``${csv:list}``, ``${auto_precision:ACCELERATOR}`` and
``${config_groups:}`` (``--help``)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from alexnet.provenance import REPO_ROOT


def repo_root() -> str:
    """``${repo_root:}``: ``$ALEXNET_ROOT`` where set, else the directory above ``src/``: outputs
    and data land there whatever the working directory is."""
    return os.environ.get("ALEXNET_ROOT") or str(REPO_ROOT)


def auto_precision(accelerator: str = "auto") -> str:
    """``${auto_precision:ACCELERATOR}``: :func:`alexnet.training.speed.auto_precision`, imported
    when a config is resolved, not when the resolvers are registered: that imports torch, and an
    entry point registers them before Hydra composes, so a mistake Hydra finds (an unknown option
    or key) would wait seconds for torch to say it."""
    from alexnet.training import speed

    return speed.auto_precision(accelerator)


def config_groups() -> str:
    """``${config_groups:}``: the lines of ``--help`` (``hydra.help.template``) that name each
    config group and its options, as Hydra's own ``$APP_CONFIG_GROUPS`` does but less the
    ``_base`` each group's options build on, which is not one of them. Read from the config
    loader of the Hydra application answering ``--help``, so ``--config-dir`` groups are in."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    from alexnet.exits import group_options

    if not GlobalHydra.instance().is_initialized():  # resolved outside a Hydra application
        return "(the config groups: python src/train.py --help)"
    loader = GlobalHydra.instance().config_loader()

    def lines(parent: str) -> list[str]:
        found = []
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group == "hydra":  # Hydra's own groups: --hydra-help lists them
                continue
            options = group_options(loader.get_group_options(group, ObjectType.CONFIG))
            if options:
                found.append(f"{group}: {', '.join(options)}")
            found += lines(group)
        return found

    return "\n".join(sorted(lines("")))


def register_resolvers() -> None:
    """``${div:a,b}`` (e.g. the plateau schedule's floor, lr / 10^3), ``${csv:list}`` (a study's
    arms and seeds as the comma-separated sweep of a multirun) and ``${auto_precision:ACC}`` (the
    trainer's precision: :func:`alexnet.training.speed.precision_choice`)."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", repo_root)
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("csv"):
        OmegaConf.register_new_resolver("csv", lambda items: ",".join(str(i) for i in items))
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)
    if not OmegaConf.has_resolver("config_groups"):
        OmegaConf.register_new_resolver("config_groups", config_groups)
