"""The figures README cites from a committed study are that study's: each decimal of a row of its
"measured here" table that names a folder of ablations/results/ is a figure of the folder's
report.md (which `python ablations/report.py <folder>` remakes from the summaries, test_study.py),
so that a study rerun or extended cannot leave the front door saying what it no longer measures."""

from __future__ import annotations

import re

from helpers import ROOT

RESULTS = ROOT / "ablations" / "results"
DECIMAL = re.compile(r"(?<![\d.])[+-]?\d+\.\d+")


def _numbers(text: str) -> set[float]:
    return {float(n) for n in DECIMAL.findall(text.replace(",", ""))}


def cited_rows(readme: str) -> list[tuple[str, str]]:
    """(folder, measured cell) for each row of a table with a "measured here" column that names a
    committed study as `folder/`."""
    rows, column = [], None
    for line in readme.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "measured here" in cells:
            column = cells.index("measured here")
        elif column is not None and not set(cells[0]) <= {"-", " "}:
            cell = cells[column]
            rows += [(name, cell) for name in re.findall(r"`([\w-]+)/`", cell)
                     if (RESULTS / name).is_dir()]
    return rows


def test_every_decimal_readme_cites_is_in_its_study_report() -> None:
    rows = cited_rows((ROOT / "README.md").read_text())
    assert {"fig1_cifar10_jpeg", "sec33_short_jpeg"} <= {name for name, _ in rows}
    for name, cell in rows:
        report = _numbers((RESULTS / name / "report.md").read_text())
        for number in _numbers(cell):
            # the report's figure rounded as README rounds it (7.70 cited as 7.7)
            places = len(f"{number}".split(".")[1])
            assert any(round(r, places) == number for r in report), (name, number, cell)


def test_a_figure_the_report_does_not_hold_is_found() -> None:
    row = ("| claim | paper | measured here |\n|---|---|---|\n"
           "| Sec. 3.3 | 11% | (`sec33_short_jpeg/`): 24.0% against 24.6%, delta +0.8 |\n")
    ((name, cell),) = cited_rows(row)
    report = _numbers((RESULTS / name / "report.md").read_text())
    assert 24.6 in report and 0.8 not in report and 0.8 in _numbers(cell)
