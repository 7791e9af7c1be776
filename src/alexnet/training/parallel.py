"""Many devices: data parallelism (Lightning's DDP) and the paper's two-device model parallelism.

Layouts (``conf/trainer/``):

- one process (``trainer=default``, ``cpu``, ``gpu``);
- ``trainer=ddp`` / ``ddp_cpu``: N processes, each a whole replica of the net on its slice of every
  global batch; gradients averaged (Lightning's DDPStrategy);
- ``trainer=model_parallel``: the two columns of the paper's net on two devices (Sec. 3.2, Fig. 2;
  :class:`ColumnParallelStrategy`), and with 2N devices N such pairs, data parallel.

``data.batch_size`` is the global batch in every layout (alexnet.data.sampling): the layouts
train on the same batches and, with the same seed and no dropout, to the same weights
(tests/test_parallel.py). Checkpoints hold the whole net in every layout, so any of them loads into
a one-device net (``src/eval.py``); resuming is refused across layouts.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.nn.parallel import DistributedDataParallel

from alexnet.data.sampling import replica_of
from alexnet.models.alexnet import AlexNet
from alexnet.models.columns import (
    COLUMNS,
    AlexNetColumn,
    assemble,
    column_rows,
    gather_rows,
    is_split,
    rows,
)

LR_SCALINGS: tuple[str, ...] = ("none", "linear")


class ColumnParallelStrategy(DDPStrategy):
    """The paper's two GPUs (Sec. 3.2): each process holds one column of the two-column AlexNet
    (:class:`~alexnet.models.columns.AlexNetColumn`), and activations cross between the two only
    into conv3 and into each fully connected layer, as in Fig. 2.

    With 2N processes, ranks 2k and 2k + 1 hold columns 0 and 1 of replica k; the N replicas are
    data parallel (each column's gradients averaged over the N processes that hold it, through
    DDP over that column's group), and both processes of a replica read the same images.
    """

    strategy_name = "model_parallel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._column_group: dist.ProcessGroup | None = None
        self._replica_group: dist.ProcessGroup | None = None

    @property
    def column(self) -> int:
        return self.global_rank % COLUMNS

    @property
    def replicas(self) -> int:
        return max(1, self.world_size // COLUMNS)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        # One replica of the data = the two column processes of one network.
        return {"num_replicas": self.replicas, "rank": self.global_rank // COLUMNS}

    def setup_distributed(self) -> None:
        super().setup_distributed()
        if self.world_size % COLUMNS:
            raise ValueError(f"model parallelism needs an even number of processes, got "
                             f"{self.world_size}")
        # Every process creates every group, in the same order (torch.distributed requires it).
        for replica in range(self.replicas):
            group = dist.new_group([COLUMNS * replica + c for c in range(COLUMNS)])
            if replica == self.global_rank // COLUMNS:
                self._column_group = group
        for column in range(COLUMNS):
            group = dist.new_group(list(range(column, self.world_size, COLUMNS)))
            if column == self.column:
                self._replica_group = group

    def _split_net(self) -> None:
        module = self.lightning_module
        if not isinstance(module.net, AlexNetColumn):
            module.net = AlexNetColumn(module.net, self.column, self._column_group)

    def setup(self, trainer: L.Trainer) -> None:
        # DDPStrategy.setup, with the net cut into its column first and, when not fitting, the
        # states made equal within each column's group (not across the world: the columns differ).
        self._split_net()
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if trainer.state.fn == TrainerFn.FITTING:
            self.configure_ddp()
            self.setup_optimizers(trainer)
        else:
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=self.column, group=self._replica_group)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)

    def _setup_model(self, model: torch.nn.Module) -> DistributedDataParallel:
        device_ids = self.determine_ddp_device_ids()
        ctx = torch.cuda.stream(torch.cuda.Stream()) if device_ids is not None else nullcontext()
        with ctx:
            return DistributedDataParallel(module=model, device_ids=device_ids,
                                           process_group=self._replica_group, **self._ddp_kwargs)

    # Checkpoints hold the whole net and the whole optimizer state, as a one-process run's do.
    def lightning_module_state_dict(self) -> dict[str, Any]:
        state = self.lightning_module.state_dict()
        if isinstance(self.lightning_module.net, AlexNetColumn):
            state = assemble(state, self._column_group)
        return state

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        state = checkpoint["state_dict"]
        if isinstance(self.lightning_module.net, AlexNetColumn):
            state = column_rows(state, self.column)
        self.lightning_module.load_state_dict(state, strict=strict)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = super().optimizer_state(optimizer)
        names = self._parameter_names(optimizer)
        # New dicts: state_dict() hands out the optimizer's own per-parameter dicts.
        state["state"] = {
            index: {key: gather_rows(value, self._column_group)
                    if _per_parameter(value) and is_split(names[index]) else value
                    for key, value in state["state"][index].items()}
            for index in sorted(state["state"])
        }
        return state

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        states = []
        for optimizer, full in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            names = self._parameter_names(optimizer)
            state = {index: {key: rows(value, self.column)
                             if _per_parameter(value) and is_split(names[index]) else value
                             for key, value in entry.items()}
                     for index, entry in full["state"].items()}
            states.append({**full, "state": state})
        super().load_optimizer_state_dict({**checkpoint, "optimizer_states": states})

    def _parameter_names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        # The optimizer's state_dict numbers the parameters in the order of its groups.
        names = {id(p): n for n, p in self.lightning_module.named_parameters()}
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _per_parameter(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0


def describe(trainer: L.Trainer) -> dict[str, Any]:
    """The parallel layout of a run, as recorded in its checkpoints and summary.json."""
    replicas, _ = replica_of(trainer)
    model_parallel = isinstance(trainer.strategy, ColumnParallelStrategy)
    return {
        "layout": "model_parallel" if model_parallel else "ddp" if trainer.world_size > 1
        or isinstance(trainer.strategy, DDPStrategy) else "single",
        "processes": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "data_parallel_replicas": replicas,
        "columns_per_replica": COLUMNS if model_parallel else 1,
    }


def check_devices(trainer_cfg: Any) -> None:
    """ValueError naming the fix when the trainer asks for GPUs this machine does not have
    (Lightning's own messages do not say what to change)."""
    accelerator, devices = trainer_cfg.get("accelerator"), trainer_cfg.get("devices")
    if accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count()
    if available == 0:
        raise ValueError(
            f"trainer.accelerator={accelerator} but this machine has no GPU: use "
            "trainer.accelerator=cpu (trainer=ddp_cpu for data parallelism on CPU processes)"
        )
    if isinstance(devices, int) and devices > available:
        raise ValueError(
            f"trainer.devices={devices} but this machine has {available} GPU(s): set "
            f"trainer.devices={available} or fewer (or spread over nodes with trainer.num_nodes)"
        )


def layout_overrides(layout: dict[str, Any]) -> str:
    """The command-line overrides that give ``layout`` (a :func:`describe` record)."""
    processes, nodes = int(layout.get("processes", 1)), int(layout.get("num_nodes", 1) or 1)
    if layout.get("layout") == "single":
        return "one process (trainer.devices=1, no trainer=ddp or model_parallel)"
    trainer = "model_parallel" if layout.get("layout") == "model_parallel" else "ddp"
    nodes_part = f" trainer.num_nodes={nodes}" if nodes > 1 else ""
    return f"trainer={trainer} trainer.devices={processes // nodes}{nodes_part}"


def check_layout(cfg: Any, trainer: L.Trainer, net: torch.nn.Module) -> list[str]:
    """The mistakes of a parallel layout, one line each naming the fix (empty when none)."""
    problems = []
    replicas, _ = replica_of(trainer)
    if isinstance(trainer.strategy, ColumnParallelStrategy):
        if trainer.world_size % COLUMNS:
            problems.append(
                f"trainer=model_parallel puts the two columns of each net on two devices: "
                f"trainer.devices x trainer.num_nodes must be even, got {trainer.world_size}"
            )
        if not isinstance(net, AlexNet) or net.columns != COLUMNS:
            what = (f"model.columns={net.columns}" if isinstance(net, AlexNet)
                    else type(net).__name__)
            problems.append(
                f"trainer=model_parallel splits the paper's two-column AlexNet, not {what}: "
                "use model=alexnet with model.columns=2 (and no +ablation=one_gpu), or trainer=ddp"
            )
    batch = int(cfg.data.batch_size)
    if replicas > 1 and batch % replicas:
        near = sorted({batch - batch % replicas, batch - batch % replicas + replicas} - {0})
        problems.append(
            f"data.batch_size={batch} is the global batch and must divide across the {replicas} "
            f"data-parallel replicas: use data.batch_size={' or '.join(map(str, near))}, or "
            "another number of devices"
        )
    if trainer.world_size > 1 and cfg.get("seed") is None:
        problems.append("a run on several processes needs a seed that they share: set seed=N")
    return problems


def scaled_lr(lr: float, batch_size: int, scaling: str, reference_batch: int) -> float:
    """The learning rate for a global batch of ``batch_size``: unchanged ("none"), or multiplied
    by batch_size / reference_batch ("linear": Goyal et al. 2017's rule, for batches larger than
    the paper's 128 spread over many devices)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")
    if reference_batch < 1:
        raise ValueError(f"lr_reference_batch must be at least 1, got {reference_batch}")
    return lr * batch_size / reference_batch if scaling == "linear" else lr
