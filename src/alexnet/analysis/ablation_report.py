"""``report.md`` and ``report.png`` of an ablation study: measured deltas beside the paper's.

Reads the runs through :mod:`alexnet.analysis.study` (their ``summary.json`` files and nothing
else) and the paper's numbers from ``ablations/claims.yaml``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from alexnet.analysis.fig1_report import (
    FIG1_ARMS,
    FIG1_TARGET,
    TRAIN_ERROR,
    fig1_lines,
    fig1_result,
)
from alexnet.analysis.study import (
    BASELINE,
    ERRORS,
    Delta,
    Study,
    StudyError,
    arm_errors,
    image_sampling,
    load_study,
    paired_delta,
    t_interval,
)
from alexnet.claims import load_claims
from alexnet.data.registry import BUILT_IN, is_built_in
from alexnet.run_record import Run


def claims_by_ablation(path: str | os.PathLike | None = None,
                       dataset: str | None = None) -> dict[str, dict[str, Any]]:
    """The paper's claims (``ablations/claims.yaml``) by the name of the ablation that tests them,
    each with its own key as ``key``. With ``dataset`` (a study's ``study.claims``, e.g.
    ``cifar10``), a claim's numbers on that dataset replace its ILSVRC ones, and claims the paper
    did not measure there have no number."""
    claims = {}
    for key, entry in load_claims(path).items():
        claim = {"key": key, **{k: v for k, v in entry.items() if not isinstance(v, dict)}}
        if dataset:
            claim.update({"delta_top1": None, "delta_top5": None, **(entry.get(dataset) or {})})
        claims[entry["ablation"]] = claim
    return claims


def _fmt(value: float | None, digits: int = 1, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(delta: Delta | None) -> str:
    if delta is None:
        return "—"
    if delta.low is None:
        return f"{_fmt(delta.mean)} (n = 1, no interval)"
    return f"{_fmt(delta.mean)} [{_fmt(delta.low)}, {_fmt(delta.high)}]"


def _paper_delta(claim: dict[str, Any] | None, error: str) -> float | None:
    return None if claim is None else claim.get(f"delta_{error.split('_')[0]}")


def _verdicts(delta: Delta | None, claim: dict[str, Any] | None, error: str) -> tuple[str, str]:
    """(does the sign agree, is the paper's value inside the interval) for one error."""
    paper = _paper_delta(claim, error)
    if delta is None or paper is None:
        return "—", "—"
    sign = "yes" if (delta.mean > 0) == (paper > 0) else "no"
    if delta.low is None:
        return sign, "—"
    if claim.get(f"delta_{error.split('_')[0]}_is_lower_bound"):
        return sign, "yes" if delta.high >= paper else "no"  # "over 1%": consistent if reachable
    return sign, "yes" if delta.contains(paper) else "no"


def describe_setting(study: Study) -> str:
    """Data, image size, epochs, seeds, device and commit: a proxy never passes for the paper."""
    run = next(iter(study.by_arm(BASELINE).values()), study.runs[0])
    cfg, summary = run.config, run.summary
    data = cfg.get("data") or {}
    name = BUILT_IN if is_built_in(data) else Path(str(data.get("prepared_dir", "data"))).name
    counts = ""
    if data.get("train_per_class"):
        counts = (f", {data['train_per_class']} training and {data.get('val_per_class')} "
                  f"validation images per class")
    env = summary.get("environment") or {}
    commit = _commits(study)
    device = env.get("device", "?")
    if device == "cpu":
        device = f"CPU ({env.get('cpu_count', '?')} cores)"
    trainer = cfg.get("trainer") or {}
    epochs = f"{trainer.get('max_epochs')} epochs"
    if trainer.get("fast_dev_run"):
        epochs = "fast_dev_run (one batch: a test of the code, not a result)"
    note = next((n for r in study.runs if (n := (r.config.get("study") or {}).get("note"))), None)
    if note:
        name = f"{name} ({note})"
    return (
        f"{name}: {summary.get('num_classes')} classes{counts}; "
        f"images {data.get('image_size')} px, crops {data.get('crop_size')} px; {epochs}; "
        f"{len(study.seeds)} seed{'s' if len(study.seeds) != 1 else ''} "
        f"({', '.join(map(str, study.seeds))}); {device}; "
        f"torch {env.get('torch', '?')}; {commit}"
    )


def _commits(study: Study) -> str:
    """The commit the runs ran at, or each commit with its number of runs."""
    counts: dict[str, int] = {}
    for run in study.runs:
        git = run.summary.get("git") or {}
        name = (git.get("commit") or "unknown")[:10]
        name += " (uncommitted changes)" if git.get("dirty") else ""
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return f"commit {next(iter(counts))}"
    return "commits " + ", ".join(f"{c} ({n} runs)" for c, n in counts.items())


def render_markdown(study: Study, claims: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Ablation study `{study.name}`", "", f"**Setting.** {describe_setting(study)}.", ""]
    lines += [
        "The paper measured its claims on ILSVRC (256 px images, 224 crops, about 90 epochs) and "
        "Fig. 1 on CIFAR-10. On other data or at another scale this is a proxy: it says whether "
        "a component helps *here*, not what it was worth there.", "",
    ]
    lines += _problems(study)
    if not study.spec.get("lrs"):
        lines += _delta_table(study, claims)
    fig1 = fig1_result(study)
    if fig1 is not None:
        paper = (claims.get("tanh") or {}).get("speedup")
        lines += fig1_lines(fig1, paper, bool(study.spec.get("lrs")))
    lines += _unclaimed_lines(study, claims)
    lines += ["", f"Runs read: {len(study.runs)} completed summary.json files below "
              f"`{study.directory.name}/`. Confidence intervals: Student t, 95%, over the "
              "seeds, each ablation's run paired with the baseline run of the same seed."
              + ("" if study.spec.get("lrs") else
                 " Every run is tested on the same images, so the intervals leave out what the "
                 "choice of those images adds to a delta (docs/studies.md, Sec. 3.3 on 60 "
                 "epochs)" + (", but for the last table's." if any(
                     image_sampling(study, a) for a in study.arms if a != BASELINE) else "."))]
    return "\n".join(lines) + "\n"


def _without_test_error(study: Study) -> list[Run]:
    """The completed runs that record no test error (``test=false``; or trainer settings that
    tested no batch, or a summary.json edited by hand): a study that compares test errors leaves
    them out of its deltas, and says so."""
    if study.spec.get("lrs"):  # Fig. 1 measures the training error: no test error is read
        return []
    return [r for r in study.runs if any(r.test_error(e) is None for e in ERRORS)]


def _problems(study: Study) -> list[str]:
    untested = _without_test_error(study)
    if not (study.missing or study.incomplete or untested):
        return []
    lines = ["## Runs not counted", ""]
    for arm, seed, lr in study.missing:
        done = [r for r in study.incomplete if (r.arm, r.seed) == (arm, seed)
                and (lr is None or r.lr == lr)]
        what = (f"{done[0].status}" + (f": {done[0].summary.get('error')}"
                                       if done[0].summary.get("error") else "")
                if done else "missing (no summary.json)")
        lines.append(f"- `{arm}` seed {seed}" + (f" lr {lr:g}" if lr else "") + f": {what}")
    for run in untested:
        why = ("completed without a test (its config has test=false)"
               if run.config.get("test") is False else
               "completed, but its summary.json records no test error (final "
               + ", ".join(f"test/{e}" for e in ERRORS if run.test_error(e) is None) + ")")
        lines.append(f"- `{run.arm}` seed {run.seed}: {why}: left out of those deltas")
    lines += ["", "The deltas below use only the seeds where both runs of a pair completed "
              + ("and tested " if untested else "") + "(n says how many). Run the same "
              "command again to complete the others.", ""]
    return lines


def _delta_table(study: Study, claims: dict[str, dict[str, Any]]) -> list[str]:
    base = {e: arm_errors(study, BASELINE, e) for e in ERRORS}
    lines = ["## Measured deltas beside the paper's", ""]
    if base["top1_err"]:
        mean, half = t_interval([100 * v for v in base["top1_err"].values()])
        mean5, half5 = t_interval([100 * v for v in base["top5_err"].values()])
        lines += [f"Baseline (`none`, the recipe unchanged): test top-1 error "
                  f"{mean:.1f}% ± {_fmt(half, signed=False)}, top-5 {mean5:.1f}% ± "
                  f"{_fmt(half5, signed=False)} (n = {len(base['top1_err'])}).", ""]
    lines += [_test_split_line(study), ""]
    lines += [
        "Δ = ablation minus baseline, in points of test error, mean [95% CI]: positive means "
        "the component helps (the paper's sign).", "",
        "| ablation | claim (Sec.) | n | Δ top-1 measured | paper | sign agrees | paper in CI "
        "| Δ top-5 measured | paper | sign agrees | paper in CI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in study.arms:
        if arm == BASELINE:
            continue
        claim = claims.get(arm)
        cells = [f"`{arm}`", f"{claim['key']} ({claim['section']})" if claim else "—"]
        deltas = {e: paired_delta(base[e], arm_errors(study, arm, e)) for e in ERRORS}
        cells.append(str(deltas["top1_err"].n if deltas["top1_err"] else 0))
        for error in ERRORS:
            paper = _paper_delta(claim, error)
            bound = claim and claim.get(f"delta_{error.split('_')[0]}_is_lower_bound")
            shown = "no number" if paper is None else (f"> {paper:g}" if bound else f"{paper:+g}")
            cells += [_interval(deltas[error]), shown, *_verdicts(deltas[error], claim, error)]
        lines.append("| " + " | ".join(cells) + " |")
    for arm in study.arms:  # a claim stated as two error rates: each beside its measurement
        claim = claims.get(arm) or {}
        if claim.get("error_with") is None or claim.get("error_without") is None:
            continue
        measured = [t_interval([100 * v for v in errors.values()]) + (len(errors),)
                    for errors in (base["top1_err"], arm_errors(study, arm, "top1_err"))]
        if all(n for *_, n in measured):
            (with_, half_with, n_with), (without, half_without, n_without) = measured
            lines += ["", f"`{arm}` as the paper states it ({claim.get('dataset')}): test error "
                      f"{with_:.1f}% ± {_fmt(half_with, signed=False)} with the component "
                      f"(n = {n_with}; paper {claim['error_with']:g}%), {without:.1f}% ± "
                      f"{_fmt(half_without, signed=False)} without (n = {n_without}; paper "
                      f"{claim['error_without']:g}%)."]
    lines += _val_lines(study)
    lines += _image_sampling_lines(study)
    no_number = [f"`{a}`: {claims[a]['claim']}" for a in study.arms
                 if a in claims and claims[a].get("delta_top1") is None]
    if no_number:
        lines += ["", "Claims without a number in the paper (the interval is still measured):", ""]
        lines += [f"- {text}" for text in no_number]
    return lines


def _unclaimed_lines(study: Study, claims: dict[str, dict[str, Any]]) -> list[str]:
    """The arms no claim names, said so that a claim missing from claims.yaml is not read as a
    claim the paper gave no number for."""
    unclaimed = [a for a in study.arms if a != BASELINE and a not in claims]
    if not unclaimed:
        return []
    return ["", "Arms that no claim of `ablations/claims.yaml` names (no paper number beside "
            "them):", "", *(f"- `{a}`" + (f" (its runs name the claim `{', '.join(named)}`)"
                                          if (named := _claims_named(study, a)) else "")
                            for a in unclaimed)]


def _claims_named(study: Study, arm: str) -> list[str]:
    """The claims an arm's runs record for their ablations (summary.json ``ablations``)."""
    return sorted({a.get("claim") for run in study.by_arm(arm).values()
                   for a in run.summary.get("ablations") or [] if a.get("claim")})


def _val_lines(study: Study) -> list[str]:
    """Where the val split selected nothing (a study tests each run's last epoch, on a fixed
    schedule), its last-epoch errors are a second held-out measurement of the same runs: the
    top-1 deltas on it beside the test split's."""
    records = [r.summary.get("evaluation") for r in study.runs]
    if not records or any(r is None or r.get("val_selects", ["unrecorded"])
                          or r.get("test_split") == "val" for r in records):
        return []
    base = {split: arm_errors(study, BASELINE, "top1_err", split) for split in ("val", "test")}
    rows = []
    for arm in study.arms:
        if arm == BASELINE:
            continue
        deltas = {split: paired_delta(base[split], arm_errors(study, arm, "top1_err", split))
                  for split in ("val", "test")}
        if deltas["val"] is not None:
            rows.append(f"| `{arm}` | {deltas['val'].n} | {_interval(deltas['val'])} | "
                        f"{_interval(deltas['test'])} |")
    if not rows:
        return []
    origins = sorted({r.get("val_split_from", "val") for r in records})
    return ["", f"**The val split, a second look.** These runs chose nothing on the val split "
            f"({', '.join(origins)}) either: no checkpoint, schedule or stop read it "
            f"(`val_selects` in each summary.json). Its errors at the last epoch measure the same "
            f"runs again, on other images they did not train on: a second look, not an "
            f"independent replication.",
            "", "| ablation | n | Δ top-1 on val | Δ top-1 on test |", "|---|---|---|---|", *rows]


def _image_sampling_lines(study: Study) -> list[str]:
    """Where every run records its per-image results: each top-1 delta's interval with what the
    choice of the test images adds."""
    rows = []
    for arm in study.arms:
        if arm != BASELINE and (found := image_sampling(study, arm)) is not None:
            seeds = paired_delta(arm_errors(study, BASELINE, "top1_err"),
                                 arm_errors(study, arm, "top1_err"))
            rows.append(f"| `{arm}` | {found.n} | {found.images:,} | {_interval(seeds)} | "
                        f"{found.image_se:.2f} | {_fmt(found.mean)} [{_fmt(found.low)}, "
                        f"{_fmt(found.high)}] |")
    if not rows:
        return []
    return ["", "**The test images' share.** Every run recorded which test images it got right "
            "(summary.json `evaluation.top1_correct`), so each pair is compared image by image: "
            "the standard error of a delta over the test images (each image's error difference "
            "averaged over the seeds), and the 95% interval of the seeds' and the images' errors "
            "together, what a delta on other images of the same kind could be.", "",
            "| ablation | n | test images | Δ top-1, seeds only | images' s.e. | Δ top-1, seeds "
            "and images |", "|---|---|---|---|---|---|", *rows]


def _test_split_line(study: Study) -> str:
    """Which split the test errors were measured on, and whether it also selected."""
    records = [r.summary.get("evaluation") for r in study.runs]
    if not records or any(r is None for r in records):
        return ("Test errors: runs made before summary.json recorded its test split (they were "
                "measured on the val split).")
    splits = sorted({(r["test_split"], r["test_split_from"], r["test_independent"])
                     for r in records})
    if len(splits) > 1:
        return f"Test errors were measured on different splits: {splits}."
    split, origin, independent = splits[0]
    if independent:
        return (f"Test errors are measured once, on the test split ({origin}), which selected "
                f"nothing.")
    return (f"Test errors are measured on the val split ({origin}), which also chose "
            f"{' and '.join(records[0]['val_selects'])}: the data have no test split of their "
            f"own.")


def render_plot(study: Study, claims: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig1 = fig1_result(study)
    arms = [] if study.spec.get("lrs") else [a for a in study.arms if a != BASELINE]
    panels = [("top1_err", "top-1")] * bool(arms) + [("top5_err", "top-5")] * bool(arms)
    ncols = len(panels) + (fig1 is not None)
    fig, axes = plt.subplots(1, max(1, ncols), figsize=(5.5 * max(1, ncols), 0.45 * len(arms) + 3),
                             squeeze=False)
    base = {e: arm_errors(study, BASELINE, e) for e in ERRORS}
    for ax, (error, label) in zip(axes[0], panels, strict=False):
        for y, arm in enumerate(arms):
            delta = paired_delta(base[error], arm_errors(study, arm, error))
            if delta is not None:
                err = None if delta.low is None else [[delta.mean - delta.low],
                                                      [delta.high - delta.mean]]
                ax.errorbar(delta.mean, y, xerr=err, fmt="o", color="tab:blue", capsize=4,
                            label="measured (95% CI)" if y == 0 else None)
            paper = _paper_delta(claims.get(arm), error)
            if paper is not None:
                bound = claims[arm].get(f"delta_{error.split('_')[0]}_is_lower_bound")
                ax.plot(paper, y, marker=">" if bound else "D", color="tab:red", linestyle="",
                        label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(arms)), arms)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {label} error, points (ablation − baseline)")
        ax.legend(loc="lower right", fontsize=8)
    if fig1 is not None:
        ax = axes[0][ncols - 1]
        for arm, label, color in zip(FIG1_ARMS, ("ReLU", "tanh"), ("tab:blue", "tab:orange"),
                                     strict=True):
            if fig1["arms"][arm] is None:  # a study still running
                continue
            best = fig1["arms"][arm]["best"]
            for i, run in enumerate(best["runs"].values()):
                curve = run.history(TRAIN_ERROR)
                lr = "" if best["lr"] is None else f", lr {best['lr']:g}"
                ax.plot([e for e, _ in curve], [100 * v for _, v in curve], color=color,
                        linestyle="-" if arm == BASELINE else "--", alpha=0.8,
                        label=f"{label}{lr}" if i == 0 else None)
        ax.axhline(100 * FIG1_TARGET, color="grey", linewidth=0.8)
        ax.set_xlabel("epochs")
        ax.set_ylabel("training error, %")
        ax.set_title("Fig. 1: ReLU (solid) vs tanh (dashed)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Study {study.name}: {describe_setting(study)}", fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(directory: str | os.PathLike,
                 claims_file: str | os.PathLike | None = None) -> tuple[Path, Path, Study]:
    """Write ``report.md`` and ``report.png`` into the sweep directory; StudyError when the runs
    cannot be compared (nothing is written then)."""
    study = load_study(directory)
    claims = claims_by_ablation(claims_file, study.spec.get("claims"))
    markdown = render_markdown(study, claims)
    md_path, png_path = study.directory / "report.md", study.directory / "report.png"
    for path in (md_path, png_path):  # checked before either is written
        if path.exists() and not path.is_file():
            raise StudyError(f"{path} is in the way of the report (it is not a file): move it "
                             "away and run the report again")
    render_plot(study, claims, png_path)
    md_path.write_text(markdown)
    return md_path, png_path, study
