"""The LightningModule's errors and losses from hand-made logits whose right answers are known:
the batch holds the logits themselves (a pass-through "network"), so that top-5 computed as top-1,
a shuffled pairing of rows and labels in any stage, or a 10-patch test that averages logits instead
of probabilities (Sec. 4.1) fails here."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from alexnet.training.module import ImageClassifier

NUM_CLASSES = 6


# -- top-1 and top-5 error on logits where they differ -----------------------------------------
# Every row ranks the classes 0 > 1 > 2 > 3 > 4 > 5 (in a different order of columns, so that
# nothing depends on the label's index); the label sits at the rank named on the right.
RANKED = torch.tensor([
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 0: rank 1, right in top-1 and top-5
    [0.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 2: rank 2, wrong in top-1, right in top-5
    [1.0, 0.0, 5.0, 4.0, 3.0, 2.0],  # label 0: rank 5, wrong in top-1, right in top-5
    [2.0, 1.0, 0.0, 5.0, 4.0, 3.0],  # label 2: rank 6, wrong in both
])
RANKED_LABELS = torch.tensor([0, 2, 0, 2])
RANKED_TOP1, RANKED_TOP5 = 3 / 4, 1 / 4


def _cross_entropy(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label], written out."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


RANKED_LOSS = sum(
    _cross_entropy(row, label) for row, label in zip(RANKED.tolist(), RANKED_LABELS.tolist(),
                                                     strict=True)
) / len(RANKED)


def _classifier() -> ImageClassifier:
    """The real LightningModule around a "network" that passes its input through: the batch
    holds the logits themselves, as (B, C, 1, 1) or (B, crops, C, 1, 1)."""
    return ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD, num_classes=NUM_CLASSES)


def _trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)


def _loader(x: Tensor, y: Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=2)  # two batches: epoch-level means


def _as_input(logits: Tensor, crops: int | None) -> Tensor:
    x = logits[:, :, None, None]
    return x if crops is None else x[:, None].expand(-1, crops, -1, -1, -1).contiguous()


@pytest.mark.parametrize(("stage", "crops"), [("val", None), ("test", None), ("test10", 10)])
def test_logged_errors_are_top1_and_top5_on_known_logits(stage: str, crops: int | None) -> None:
    # For test10 each image's ten patches are identical, so the average keeps the ranking.
    loader = _loader(_as_input(RANKED, crops), RANKED_LABELS)
    module, trainer = _classifier(), _trainer()
    if stage == "val":
        (logged,) = trainer.validate(module, dataloaders=loader, verbose=False)
    else:
        (logged,) = trainer.test(module, dataloaders=loader, verbose=False)
    assert logged[f"{stage}/top1_err"] == pytest.approx(RANKED_TOP1)
    assert logged[f"{stage}/top5_err"] == pytest.approx(RANKED_TOP5)
    assert logged[f"{stage}/loss"] == pytest.approx(RANKED_LOSS, rel=1e-5)


def test_training_logs_top1_and_top5_on_known_logits() -> None:
    module = _classifier()
    logged: dict[str, Any] = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)  # type: ignore[method-assign]
    module.training_step((_as_input(RANKED, None), RANKED_LABELS), 0)
    assert logged["train/top1_err"].compute().item() == pytest.approx(RANKED_TOP1)
    assert logged["train/top5_err"].compute().item() == pytest.approx(RANKED_TOP5)
    assert logged["train/loss"].item() == pytest.approx(RANKED_LOSS, rel=1e-5)


# -- top-1 and top-5 error row by row, where a shuffled pairing changes the count -------------
# Eight classes, so that top-5 leaves three out. Each row ranks the classes 7 > 6 > ... > 0 from a
# different column on; the label sits at the rank named on the right. Unlike RANKED, pairing each
# row's logits with another row's label (labels or logits rolled by one within the batch) or with
# the next class (labels + 1) changes both counts of errors.
SHUFFLE_CLASSES = 8
ASYMMETRIC = torch.tensor([
    [0.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 2: rank 2, wrong in top-1, right in top-5
    [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 7.0],  # label 6: rank 8, wrong in both
    [3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0, 4.0],  # label 1: rank 6, wrong in both
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 7.0, 6.0],  # label 6: rank 1, right in both
    [4.0, 3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0],  # label 5: rank 1, right in both
])
ASYMMETRIC_LABELS = torch.tensor([2, 6, 1, 6, 5])
ASYMMETRIC_RANKS = [2, 8, 6, 1, 1]
# Each row's (top-1 error, top-5 error): the batch's errors are their means, 3/5 and 2/5.
ASYMMETRIC_ROWS = [(float(rank > 1), float(rank > 5)) for rank in ASYMMETRIC_RANKS]


def _error_counts(logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """(top-1 errors, top-5 errors), counted by hand: a label's rank is 1 + the number of classes
    scored above it."""
    ranks = [1 + sum(v > row[label] for v in row)
             for row, label in zip(logits.tolist(), labels.tolist(), strict=True)]
    return sum(r > 1 for r in ranks), sum(r > 5 for r in ranks)


def test_the_asymmetric_logits_tell_every_shuffled_pairing_apart() -> None:
    """The fixture is what its comments say, and each slip that pairs logits with the wrong
    labels within the batch changes both counts, so that the tests below catch it."""
    right = _error_counts(ASYMMETRIC, ASYMMETRIC_LABELS)
    assert right == (3, 2)
    assert [_error_counts(ASYMMETRIC[i : i + 1], ASYMMETRIC_LABELS[i : i + 1])
            for i in range(len(ASYMMETRIC))] == [(int(a), int(b)) for a, b in ASYMMETRIC_ROWS]
    shuffles = {
        "labels rolled by one": (ASYMMETRIC, ASYMMETRIC_LABELS.roll(1)),
        "labels rolled back by one": (ASYMMETRIC, ASYMMETRIC_LABELS.roll(-1)),
        "labels + 1": (ASYMMETRIC, (ASYMMETRIC_LABELS + 1) % SHUFFLE_CLASSES),
        "logits rolled by one": (ASYMMETRIC.roll(1, 0), ASYMMETRIC_LABELS),
        "logits rolled back by one": (ASYMMETRIC.roll(-1, 0), ASYMMETRIC_LABELS),
    }
    for name, (logits, labels) in shuffles.items():
        top1, top5 = _error_counts(logits, labels)
        assert top1 != right[0] and top5 != right[1], name


def _step_errors(stage: str, logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """The top-1 and top-5 errors that the module's own training, validation or test step
    logs for one batch of these logits (test10: ten identical patches an image)."""
    module = ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD,
                             num_classes=SHUFFLE_CLASSES)
    logged: dict[str, Any] = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)  # type: ignore[method-assign]
    batch = (_as_input(logits, 10 if stage == "test10" else None), labels)
    if stage == "train":
        module.training_step(batch, 0)
    elif stage == "val":
        module.validation_step(batch, 0)
    else:
        module.test_step(batch, 0)
    return (logged[f"{stage}/top1_err"].compute().item(),
            logged[f"{stage}/top5_err"].compute().item())


@pytest.mark.parametrize("stage", ["train", "val", "test", "test10"])
def test_top1_and_top5_row_by_row_and_for_the_batch(stage: str) -> None:
    for row, expected in enumerate(ASYMMETRIC_ROWS):
        one = slice(row, row + 1)
        assert _step_errors(stage, ASYMMETRIC[one], ASYMMETRIC_LABELS[one]) == expected, row
    assert _step_errors(stage, ASYMMETRIC, ASYMMETRIC_LABELS) == pytest.approx((3 / 5, 2 / 5))


@pytest.mark.parametrize(("stage", "crops"), [("val", None), ("test", None), ("test10", 10)])
def test_evaluation_loops_log_the_asymmetric_errors(stage: str, crops: int | None) -> None:
    """The same batch through Lightning's validation and test loops, in one batch so that a
    shuffle within the batch reaches every row."""
    loader = DataLoader(TensorDataset(_as_input(ASYMMETRIC, crops), ASYMMETRIC_LABELS),
                        batch_size=len(ASYMMETRIC))
    module = ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD,
                             num_classes=SHUFFLE_CLASSES)
    run = _trainer().validate if stage == "val" else _trainer().test
    (logged,) = run(module, dataloaders=loader, verbose=False)
    assert logged[f"{stage}/top1_err"] == pytest.approx(3 / 5)
    assert logged[f"{stage}/top5_err"] == pytest.approx(2 / 5)
    if stage != "val":  # the test loops keep which images the top-1 guess got right, in order
        expected = (ASYMMETRIC.argmax(dim=1) == ASYMMETRIC_LABELS).tolist()
        assert set(module.test_correct) == {stage}
        assert torch.cat(module.test_correct[stage]).tolist() == expected
        assert sum(expected) == 2  # 3 of 5 wrong


# -- the 10-patch test averages probabilities, not logits (Sec. 4.1) ----------------------------
# One image of class 1: one patch is very sure of class 0, the other nine mildly prefer class 1.
# Averaging the logits picks class 0 (20 / 10 = 2 against 9 / 10); averaging the softmax outputs
# picks class 1 (the sure patch's probability mass is capped at 1).
SURE = [20.0, 0.0, 0.0, 0.0, 0.0, 0.0]
MILD = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
TEN_PATCHES = torch.tensor([[SURE] + [MILD] * 9])  # (1 image, 10 patches, 6 classes)
TEN_LABEL = 1


def _softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in logits)
    return [math.exp(v) / total for v in logits]


def test_ten_patch_test_averages_softmax_not_logits() -> None:
    probs = [(a + 9 * b) / 10 for a, b in zip(_softmax(SURE), _softmax(MILD), strict=True)]
    mean_logits = [(a + 9 * b) / 10 for a, b in zip(SURE, MILD, strict=True)]
    # The case is built so that the two averages disagree; check that it does.
    assert max(range(6), key=probs.__getitem__) == TEN_LABEL
    assert max(range(6), key=mean_logits.__getitem__) == 0
    x = TEN_PATCHES[:, :, :, None, None]
    (logged,) = _trainer().test(_classifier(), dataloaders=_loader(x, torch.tensor([TEN_LABEL])),
                                verbose=False)
    assert set(logged) == {"test10/loss", "test10/top1_err", "test10/top5_err"}
    assert logged["test10/top1_err"] == 0.0
    # The loss is that of the averaged prediction: -log of the mean probability of the label
    # (not the mean of the ten patches' losses, nor the loss of the mean logits).
    assert logged["test10/loss"] == pytest.approx(-math.log(probs[TEN_LABEL]), rel=1e-5)
    per_patch = (_cross_entropy(SURE, TEN_LABEL) + 9 * _cross_entropy(MILD, TEN_LABEL)) / 10
    assert logged["test10/loss"] != pytest.approx(per_patch, rel=1e-3)
    assert logged["test10/loss"] != pytest.approx(_cross_entropy(mean_logits, TEN_LABEL),
                                                  rel=1e-3)
