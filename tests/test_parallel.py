"""Data parallelism and the paper's two-device model parallelism, proven equal to one process.

The proof runs the real entry point on CPU processes over gloo: one process; DDP on 1 process and
on 2 (started by torchrun); the two columns on 2 processes (started by Lightning); and 2 x 2
(two data-parallel pairs of columns). With dropout and augmentation off, the same seed and the same
global batch, every layout must give the same training loss at every step and the same weights
and optimizer state after four steps (fp32, 1e-5 relative), and its checkpoint must evaluate on one
device to the same metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import ROOT, TINY, compose_config, run_entry_point
from omegaconf import open_dict

from alexnet.data.sampling import EpochOrder, GlobalBatchSampler
from alexnet.exits import UserError
from alexnet.jobs.evaluate import evaluate
from alexnet.jobs.train import train
from alexnet.models import AlexNet
from alexnet.models.alexnet import PaperDropout
from alexnet.models.columns import AlexNetColumn, ColumnDropout, assemble
from alexnet.training.checkpoints import load_checkpoint
from alexnet.training.parallel import scaled_lr

RTOL = 1e-5  # fp32: the layouts sum the same numbers in other orders
STEPS = 4
# Everything random switched off (dropout, crops, flips, colour noise): only the layout differs.
EQUAL = [o for o in TINY if not o.startswith("data.batch_size")] + [
    "data.batch_size=8", "model.dropout=0", "data.crop=false", "data.flip=false",
    "data.pca_jitter=false", f"trainer.max_steps={STEPS}", "test=false",
    "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1", "optimizer.lr=0.002",
]
LAYOUTS = {
    "single": [],
    "ddp1": ["trainer=ddp_cpu", "trainer.devices=1"],
    "ddp2": ["trainer=ddp_cpu", "trainer.devices=2"],  # started by torchrun, below
    "columns2": ["trainer=model_parallel", "trainer.accelerator=cpu"],
    "columns2x2": ["trainer=model_parallel", "trainer.accelerator=cpu", "trainer.devices=4"],
}


def _torchrun(args: list[str], run_dir: Path, data_dir: Path) -> subprocess.CompletedProcess:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "src" / "train.py"), f"hydra.run.dir={run_dir}",
           f"paths.data_dir={data_dir}", f"paths.log_dir={run_dir.parent}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=run_dir.parent)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Each layout's run directory, after four real training steps."""
    root = tmp_path_factory.mktemp("layouts")
    dirs = {}
    for name, layout in LAYOUTS.items():
        if name == "ddp2":
            result = _torchrun([*EQUAL, *layout], root / name / "run", data_dir)
        else:
            result = run_entry_point("train.py", [*EQUAL, *layout], root / name, data_dir)
        assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"
        (summary,) = (root / name).rglob("summary.json")
        dirs[name] = summary.parent
    return dirs


def _step_losses(run_dir: Path) -> list[float]:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    return [float(r["train/loss_step"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k != "single"])
def test_every_layout_trains_as_one_process(runs: dict[str, Path], layout: str) -> None:
    reference, other = _step_losses(runs["single"]), _step_losses(runs[layout])
    assert len(reference) == len(other) == STEPS
    assert other == pytest.approx(reference, rel=RTOL)
    assert reference[-1] < reference[0]  # the steps did train
    one = load_checkpoint(runs["single"] / "checkpoints" / "last.ckpt")
    many = load_checkpoint(runs[layout] / "checkpoints" / "last.ckpt")
    # Checkpoints hold the whole net in every layout: same keys, same shapes, same values.
    assert many["state_dict"].keys() == one["state_dict"].keys()
    for key, value in one["state_dict"].items():
        assert many["state_dict"][key].shape == value.shape, key
        assert _relative(many["state_dict"][key], value) < RTOL, key
    (states_one,), (states_many,) = one["optimizer_states"], many["optimizer_states"]
    for index, entry in states_one["state"].items():
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):  # the fused update's buffer_lr
                assert states_many["state"][index][key] == value, (index, key)
                continue
            assert _relative(states_many["state"][index][key], value) < RTOL, (index, key)
    layout_record = many["alexnet_parallel_layout"]
    assert layout_record["processes"] == {"ddp1": 1, "ddp2": 2, "columns2": 2,
                                          "columns2x2": 4}[layout]


@pytest.mark.parametrize("layout", ["ddp2", "columns2"])
def test_checkpoints_of_every_layout_evaluate_on_one_device(
    runs: dict[str, Path], layout: str, tmp_path: Path, data_dir: Path
) -> None:
    results = {}
    for name in ("single", layout):
        cfg = compose_config("eval", [f"ckpt_path={runs[name] / 'checkpoints' / 'last.ckpt'}",
                                      "trainer.enable_progress_bar=false"],
                             tmp_path / name, data_dir)
        results[name] = evaluate(cfg)["final"]
    assert results[layout]["test/top1_err"] == results["single"]["test/top1_err"]
    assert results[layout]["test/loss"] == pytest.approx(results["single"]["test/loss"], rel=RTOL)


def test_resuming_in_another_layout_is_refused(runs: dict[str, Path], tmp_path: Path,
                                               data_dir: Path) -> None:
    ckpt = runs["columns2"] / "checkpoints" / "last.ckpt"
    cfg = compose_config("train", [*EQUAL, f"ckpt_path={ckpt}"], tmp_path, data_dir)
    with pytest.raises(UserError, match="resume it with trainer=model_parallel trainer.devices=2"):
        train(cfg)
    assert not (tmp_path / "summary.json").exists()


# -- the column split itself, without Lightning -----------------------------------------------
def _column_worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results = {}
    for remove_conv in (None, 3, 4):
        torch.manual_seed(0)
        net = AlexNet(10, crop_size=67, dropout=0.0, init="kaiming", remove_conv=remove_conv)
        column = AlexNetColumn(net, rank, dist.group.WORLD)
        x, y = torch.randn(4, 3, 67, 67, generator=torch.Generator().manual_seed(1)), \
            torch.tensor([1, 2, 3, 4])
        logits = column(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads = assemble({n: p.grad for n, p in column.named_parameters()}, dist.group.WORLD)
        results[remove_conv] = (logits.detach(), grads, column.conv1.weight.shape)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_two_columns_compute_the_whole_net_and_its_gradients() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/out.pt"
        mp.spawn(_column_worker, args=(f"{tmp}/init", out), nprocs=2)
        results = torch.load(out)
    for remove_conv, (logits, grads, conv1_shape) in results.items():
        torch.manual_seed(0)
        net = AlexNet(10, crop_size=67, dropout=0.0, init="kaiming", remove_conv=remove_conv)
        x = torch.randn(4, 3, 67, 67, generator=torch.Generator().manual_seed(1))
        expected = net(x)
        torch.nn.functional.cross_entropy(expected, torch.tensor([1, 2, 3, 4])).backward()
        assert conv1_shape == (48, 3, 11, 11)  # one column holds half of conv1's 96 kernels
        torch.testing.assert_close(logits, expected, rtol=RTOL, atol=1e-6)
        for name, parameter in net.named_parameters():
            assert _relative(grads[name], parameter.grad) < RTOL, (remove_conv, name)


@pytest.mark.parametrize("inverted", [False, True])
def test_columns_drop_units_independently_as_the_whole_layer(inverted: bool) -> None:
    whole = torch.nn.Dropout(0.5) if inverted else PaperDropout(0.5)
    halves = []
    for column in (0, 1):  # both column processes draw from the same stream
        torch.manual_seed(7)
        halves.append(ColumnDropout(whole, column)(torch.ones(3, 6)))
    torch.manual_seed(7)
    mask = torch.empty(3, 12).bernoulli_(0.5)
    assert torch.equal(torch.cat(halves, dim=1), mask * (2.0 if inverted else 1.0))
    assert not torch.equal(halves[0], halves[1])  # not the same units in both columns
    at_test = ColumnDropout(whole, 0).eval()(torch.ones(2, 6))
    assert torch.equal(at_test, torch.ones(2, 6) * (1.0 if inverted else 0.5))  # Sec. 4.2


def test_the_one_column_net_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="needs the two-column net"):
        AlexNetColumn(AlexNet(10, columns=1, crop_size=67), 0, None)


# -- the global batch ------------------------------------------------------------------------
def test_replicas_read_slices_of_the_one_process_batches() -> None:
    order = EpochOrder(20, shuffle=True, seed=3)
    order.set_epoch(2)
    one = list(GlobalBatchSampler(order, 8, drop_last=True))
    slices = [list(GlobalBatchSampler(order, 8, drop_last=True, replicas=4, rank=r))
              for r in range(4)]
    assert len(one) == 2 and all(len(s) == 2 for s in slices)  # 20 // 8 global batches
    for step, batch in enumerate(one):
        assert sum((s[step] for s in slices), []) == batch
        assert all(len(s[step]) == 2 for s in slices)
    order.set_epoch(3)
    assert list(GlobalBatchSampler(order, 8, drop_last=True)) != one  # a new order each epoch
    order.set_epoch(2)
    assert list(GlobalBatchSampler(order, 8, drop_last=True)) == one  # from (seed, epoch) alone


def test_evaluation_slices_cover_every_image_once() -> None:
    order = EpochOrder(10, shuffle=False)  # global batches of 4, 4 and 2 over 3 replicas
    slices = [GlobalBatchSampler(order, 4, drop_last=False, replicas=3, rank=r) for r in range(3)]
    seen = sorted(i for s in slices for batch in s for i in batch)
    assert seen == list(range(10))
    # The last batch's two images go to replicas 0 and 1; replica 2 has nothing to do.
    assert [len(s) for s in slices] == [len(list(s)) for s in slices] == [3, 3, 2]


# -- mistakes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer=model_parallel", "trainer.accelerator=cpu", "+ablation=one_gpu"],
     "splits the paper's two-column AlexNet, not model.columns=1"),
    (["trainer=model_parallel", "trainer.accelerator=cpu", "trainer.devices=3"],
     "trainer.devices x trainer.num_nodes must be even, got 3"),
    (["trainer=ddp_cpu", "trainer.devices=3"],
     "data.batch_size=8 is the global batch and must divide across the 3 data-parallel "
     "replicas: use data.batch_size=6 or 9"),
    (["trainer=model_parallel", "trainer.accelerator=cpu", "trainer.devices=6"],
     "must divide across the 3 data-parallel replicas"),
    (["trainer=ddp_cpu", "seed=null"], "needs a seed that they share"),
    (["lr_scaling=square"], "lr_scaling must be one of ('none', 'linear')"),
])
def test_bad_layouts_are_refused_before_any_work(
    overrides: list[str], message: str, tmp_path: Path, data_dir: Path
) -> None:
    cfg = compose_config("train", [*EQUAL, *overrides], tmp_path, data_dir)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(cfg)
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "summary.json").exists()


def test_linear_scaling_multiplies_the_rate_by_the_global_batch(tmp_path: Path,
                                                                  data_dir: Path) -> None:
    assert scaled_lr(0.01, 1024, "linear", 128) == pytest.approx(0.08)
    assert scaled_lr(0.01, 1024, "none", 128) == 0.01
    cfg = compose_config("train", [*EQUAL, "lr_scaling=linear", "lr_reference_batch=4",
                                   "trainer.max_steps=1"], tmp_path, data_dir)
    with open_dict(cfg):
        cfg.callbacks = {}
    summary = train(cfg)
    assert summary["config"]["optimizer"]["lr"] == pytest.approx(0.002 * 8 / 4)


def test_a_local_multirun_cannot_start_processes(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point("train.py", ["-m", *EQUAL, "trainer=ddp_cpu"], tmp_path, data_dir)
    assert result.returncode != 0
    assert "error: a local Hydra multirun cannot start several processes per run" in result.stderr


# The variables torchrun and srun give the first of two processes (Lightning reads them).
LAUNCHERS = {
    "torchrun": {"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                 "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"},
    "srun": {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NAME": "alexnet", "SLURM_NODELIST": "localhost"},
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_external_launchers_processes_must_share_a_run_directory(
    launcher: str, tmp_path: Path, data_dir: Path
) -> None:
    env = LAUNCHERS[launcher]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = run_entry_point("train.py", [*EQUAL, "trainer=ddp_cpu"], tmp_path, data_dir)
    finally:
        for key, value in old.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: processes started by torchrun or srun must share one run directory" \
        in result.stderr



def test_processes_sharing_a_run_directory_check_it_with_probes_of_their_own(
        tmp_path: Path) -> None:
    """Each process of a parallel run checks the shared run directory writable as it starts
    (conf/hydra's check_writable); a probe file of one name for all let one process remove
    another's before that one did, and that process stopped with "cannot write the run
    directory". Here another process's probe is in place, under the name all shared before."""
    from alexnet.callbacks import check_writable

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = run_dir / ".write-test"  # the other process's probe, not yet removed
    other.write_bytes(b"")
    check_writable._check_writable(str(run_dir))
    assert [p.name for p in run_dir.iterdir()] == [".write-test"]  # its own probe gone, not this

def test_the_slurm_launcher_config_composes(tmp_path: Path, data_dir: Path) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "trainer=ddp"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node  # one process per GPU
    assert launcher.max_num_timeout > 0  # requeued after a timeout or preemption
    import hydra_plugins.hydra_submitit_launcher.submitit_launcher  # noqa: F401  (installed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_layout_without_a_gpu_names_the_fix(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("train", [*EQUAL, "trainer=ddp", "trainer.accelerator=gpu"], tmp_path,
                         data_dir)
    with pytest.raises(UserError, match="this machine has no GPU: use trainer.accelerator=cpu"):
        train(cfg)


def test_more_gpus_than_the_machine_has_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from alexnet.training.parallel import check_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="trainer.devices=8 but this machine has 2 GPU"):
        check_devices(OmegaConf.create({"accelerator": "gpu", "devices": 8}))
    check_devices(OmegaConf.create({"accelerator": "gpu", "devices": 2}))  # fits: no error
