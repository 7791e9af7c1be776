"""The notebooks run top to bottom on a tiny checkpoint and a tiny sweep; one that raises fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

NOTEBOOKS = ROOT / "notebooks"


_RUN = """
import sys, nbclient, nbformat
book = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(book, timeout=120, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(book, sys.argv[1])
"""


def execute(name: str, parameters: dict[str, object], tmp_path: Path) -> nbformat.NotebookNode:
    """Run a notebook with its ``parameters`` cell replaced, as papermill does, in the
    interpreter's own kernel ("python3", which ipykernel provides), from the notebooks' folder.
    nbclient runs in a process of its own: its event loop stays out of the test process."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    (cell,) = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    path = tmp_path / name
    nbformat.write(book, path)
    result = subprocess.run([sys.executable, "-c", _RUN, str(path), str(NOTEBOOKS)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:  # a cell raised: nbclient's CellExecutionError names it
        raise NotebookFailed(result.stderr[-3000:])
    return nbformat.read(path, as_version=4)


class NotebookFailed(Exception):
    pass


def _outputs(book: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs
            if kind in o.get("data", {})]


@pytest.mark.parametrize("name", ["ablation_report.ipynb", "figures.ipynb"])
def test_stored_without_outputs_and_parameters_first(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_ablation_report_notebook(tiny_sweep: Path, tmp_path: Path) -> None:
    book = execute("ablation_report.ipynb", {"SWEEP_DIR": str(tiny_sweep)}, tmp_path)
    markdown = "".join(o["data"]["text/markdown"] for o in _outputs(book, "text/markdown"))
    assert "# Ablation study `tiny`" in markdown and "| tanh | 1 |" in markdown
    assert len(_outputs(book, "image/png")) == 3  # the report's plot, Fig. 1 and the curves


def test_figures_notebook(tiny_wandb_run: Path, tmp_path: Path) -> None:
    checkpoint = tiny_wandb_run / "checkpoints" / "last.ckpt"
    book = execute("figures.ipynb", {"CHECKPOINT": str(checkpoint), "IMAGES": [0, 1],
                                     "NEIGHBOURS": 2, "MAX_TRAIN": None}, tmp_path)
    assert len(_outputs(book, "image/png")) == 2  # Fig. 3 and Fig. 4
    markdown = "".join(o["data"]["text/markdown"] for o in _outputs(book, "text/markdown"))
    assert "column 1: colour specificity" in markdown and "validation images [0, 1]" in markdown


def test_a_notebook_that_raises_fails(tmp_path: Path) -> None:
    with pytest.raises(NotebookFailed, match="(?s)CellExecutionError.*no such sweep directory"):
        execute("ablation_report.ipynb", {"SWEEP_DIR": str(tmp_path / "missing")}, tmp_path)
