"""The fast path (alexnet.training.speed, the fast LRN, channels_last, bf16 autocast) computes what
the reference path computes: float32 to 1e-5, bfloat16 to its stated tolerance."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet.models import AlexNet
from alexnet.training import speed
from alexnet.training.module import ImageClassifier

CROP = 67  # AlexNet's smallest crop: every layer, two columns, LRN on 48-map columns


def _net(**kwargs) -> AlexNet:
    torch.manual_seed(0)
    return AlexNet(10, crop_size=CROP, init="kaiming", dropout=0.0, **kwargs)


def _batch(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, CROP, CROP, generator=gen), torch.randint(0, 10, (batch,))


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: bool = False):
    """Logits and every parameter's gradient of one training step."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach().float(), grads


def _assert_close(a, b, rtol: float, atol: float) -> None:
    logits_a, grads_a = a
    logits_b, grads_b = b
    torch.testing.assert_close(logits_a, logits_b, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        scale = grads_b[name].abs().max().clamp_min(1e-12)
        torch.testing.assert_close(grads_a[name] / scale, grads_b[name] / scale,
                                   rtol=rtol, atol=atol, msg=name)


def test_fast_path_matches_reference_in_float32() -> None:
    """fast LRN + channels_last (the defaults) against torch's LRN in NCHW, same weights."""
    x, y = _batch()
    reference = ImageClassifier(_net(lrn_impl="torch"), torch.optim.SGD, channels_last=False)
    fast = ImageClassifier(_net(lrn_impl="fast"), torch.optim.SGD, channels_last=True)
    fast.net.load_state_dict(reference.net.state_dict())
    assert fast.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_close(_step(fast, x, y), _step(reference, x, y), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_within_stated_tolerance() -> None:
    """bf16 autocast (the GPU default) against float32, stated tolerances: bf16 keeps 8 bits of
    mantissa, so the logits agree to 1% (relative L2 error); the gradients, where rounding flips
    some ReLUs of a small batch, point the same way (cosine similarity >= 0.95 per tensor; about
    0.97 at worst here, 1.0 in float32)."""
    x, y = _batch()
    net = ImageClassifier(_net(), torch.optim.SGD, channels_last=True)
    want = _step(net, x, y)
    got = _step(copy.deepcopy(net), x, y, autocast=True)
    assert ((got[0] - want[0]).norm() / want[0].norm()).item() < 0.01
    for name, grad in want[1].items():
        cosine = F.cosine_similarity(got[1][name].flatten(), grad.flatten(), dim=0).item()
        assert cosine >= 0.95, (name, cosine)


def test_speed_options_and_errors() -> None:
    assert speed.speed_options(None) == {"channels_last": True, "compile": None}
    assert speed.speed_options({"speed": {"channels_last": False, "compile": True}}) == {
        "channels_last": False, "compile": "default"}
    assert speed.speed_options({"speed": {"compile": "max-autotune"}})["compile"] == \
        "max-autotune"
    with pytest.raises(ValueError, match="speed.compile must be"):
        speed.speed_options({"speed": {"compile": "fast"}})
    with pytest.raises(ValueError, match="speed.channels_last must be true or false"):
        speed.speed_options({"speed": {"channels_last": "yes"}})
    with pytest.raises(ValueError, match="unknown speed switch"):
        speed.speed_options({"speed": {"bf16": True}})
    with pytest.raises(ValueError, match="lrn impl must be one of"):
        _net(lrn_impl="cudnn")


def test_auto_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert speed.auto_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert speed.auto_precision("auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert speed.auto_precision("auto") == "bf16-mixed"
    assert speed.auto_precision("gpu") == "bf16-mixed"
    assert speed.auto_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert speed.auto_precision("gpu") == "32-true"


def test_auto_precision_on_cpus_chooses_by_their_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16",
                                                      "amx_tile"})
    assert speed.precision_choice("auto") == ("bf16-mixed",
                                              "a CPU with AMX (amx_bf16, avx512_bf16)")
    assert speed.auto_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})  # no AMX
    assert speed.precision_choice("cpu") == ("32-true", "a CPU without native bf16 (no amx_bf16)")
    monkeypatch.setattr(speed, "cpu_flags", set)  # no /proc/cpuinfo
    assert speed.auto_precision("cpu") == "32-true"


def test_cpu_flags_reads_this_machine(monkeypatch) -> None:
    monkeypatch.delenv("ALEXNET_CPU_FLAGS")
    speed.cpu_flags.cache_clear()
    flags = speed.cpu_flags()
    speed.cpu_flags.cache_clear()
    assert not Path("/proc/cpuinfo").is_file() or {"fpu"} <= flags or "sse2" in flags


def test_config_defaults_resolve(tmp_path, data_dir) -> None:
    from helpers import compose_config

    cfg = compose_config("train", [], tmp_path, data_dir)
    expected = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
        else "32-true"
    assert cfg.trainer.precision == expected
    assert cfg.trainer.benchmark is True
    assert cfg.model.lrn_impl == "fast"
    assert dict(cfg.speed) == {"channels_last": True, "compile": False}


def test_bad_switch_is_a_user_error() -> None:
    """src/train.py's build phase turns the switch's ValueError into one `error: ...` line and
    exit status 2 (alexnet.jobs.build.building, tested end to end in test_cli)."""
    from alexnet.exits import UserError, building

    with pytest.raises(UserError, match=r"^invalid configuration: speed.compile must be true"):
        with building("invalid configuration"):
            speed.speed_options({"speed": {"compile": "fast"}})


def committed_precisions() -> list[tuple[str, str]]:
    """(experiment, trainer.precision) of each committed study: its preset is a run's first tag."""
    results = Path(__file__).resolve().parents[1] / "ablations" / "results"
    found = set()
    for path in results.rglob("summary.json"):
        summary = json.loads(path.read_text())
        found.add((summary["tags"][0], summary["config"]["trainer"]["precision"]))
    return sorted(found)


@pytest.mark.parametrize("cpu_flags", [{"avx512_bf16", "amx_bf16"}, {"avx512_bf16"}, set()],
                         ids=["amx", "avx512_bf16", "neither"])
def test_cpu_study_presets_pin_the_precision_their_committed_results_ran_in(
        monkeypatch, tmp_path, data_dir, cpu_flags: set[str]) -> None:
    """Each committed study reruns in the arithmetic it ran in, on any CPU: its preset pins
    trainer.precision (float32 for most, bf16 for sec33_short_jpeg, which ran on a CPU with AMX),
    while the recipe itself keeps the automatic choice, which differs between these CPUs."""
    from helpers import compose_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(speed, "cpu_flags", lambda: cpu_flags)
    automatic = "bf16-mixed" if "amx_bf16" in cpu_flags else "32-true"
    assert compose_config("train", [], tmp_path, data_dir).trainer.precision == automatic
    pairs = committed_precisions()
    assert {experiment for experiment, _ in pairs} >= {"study_cpu", "study_fig1",
                                                       "study_sec33_short_jpeg"}
    assert ("study_sec33_short_jpeg", "bf16-mixed") in pairs
    for experiment, precision in pairs:
        cfg = compose_config("train", [f"experiment={experiment}"], tmp_path, data_dir)
        assert cfg.trainer.precision == precision, experiment
