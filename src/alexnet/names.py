"""Names that several layers must spell alike, defined once: the metrics the LightningModule logs
(and that checkpoints, schedulers, summaries, reports and figures read back) and the name of a
study's baseline arm. No imports: the networks, the runtime and the tools that read results all
may use it. ``conf/callbacks/default.yaml`` names ``VAL_TOP1`` too (a test checks it)."""

VAL_TOP1 = "val/top1_err"      # selects: the best checkpoint, the plateau schedule (Sec. 5)
TRAIN_TOP1 = "train/top1_err"  # the epoch's mean training error as the net trains (Fig. 1)
TEST_TOP1 = "test/top1_err"    # measured once, on the test split
TEST10_TOP1 = "test10/top1_err"  # the paper's 10-patch test (Sec. 4.1)
BASELINE_ARM = "none"          # the arm without an ablation (conf/ablation/none.yaml)
NONFINITE_MODES = ("stop",)    # what ``nonfinite`` may say a run does on a NaN or inf loss


def arm_name(ablations: list[str]) -> str:
    """A run's arm: its ablations joined by ``+``, or the baseline's name without one."""
    return "+".join(ablations) or BASELINE_ARM


__all__ = ["BASELINE_ARM", "NONFINITE_MODES", "TEST10_TOP1", "TEST_TOP1", "TRAIN_TOP1", "VAL_TOP1",
           "arm_name"]
