"""The paper's figures: Fig. 1 from runs, Fig. 3 and Fig. 4 from a real tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import ROOT, fake_fig1_run, load_script, run_watching_imports
from PIL import Image

from alexnet.analysis.fig1_report import fig1_result
from alexnet.analysis.network_figures import (
    Loaded,
    fig3,
    fig4,
    image_rows,
    load_network,
    nearest_neighbours,
)
from alexnet.analysis.study import load_study
from alexnet.exits import UserError
from alexnet.models import AlexNet
from alexnet.models.conv1_kernels import (
    colour_specificity,
    column_scores,
    display_scale,
    grid_layout,
    kernel_grid,
)
from alexnet.run_record import epochs_to_error

cli = load_script(ROOT / "src" / "figures.py", "figures_cli")


def _grey_and_colour(count: int = 48, size: int = 11) -> torch.Tensor:
    """``count`` colour-agnostic kernels (R = G = B everywhere), then ``count`` kernels that see
    colour only (R + G + B = 0 everywhere)."""
    g = torch.Generator().manual_seed(0)
    grey = torch.randn(count, 1, size, size, generator=g).expand(count, 3, size, size)
    a, b = torch.randn(2, count, 1, size, size, generator=g)
    colour = torch.cat([a, b, -(a + b)], dim=1)
    return torch.cat([grey, colour])


# -- colour specificity, on kernels with a known answer
def test_colour_specificity_known_answers() -> None:
    kernels = _grey_and_colour()
    scores = colour_specificity(kernels)
    assert torch.allclose(scores[:48], torch.zeros(48, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scores[48:], torch.ones(48, dtype=torch.float64), atol=1e-12)
    assert column_scores(kernels, 2) == pytest.approx([0.0, 1.0], abs=1e-12)
    assert column_scores(kernels, 1) == pytest.approx([0.5])
    # grey g (1, 1, 1) plus chroma c (1, -1, 0) at every position: s = 2c^2 / (3g^2 + 2c^2)
    g, c = 2.0, 3.0
    mixed = torch.tensor([g + c, g - c, g]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    assert float(colour_specificity(mixed)[0]) == pytest.approx(2 * c**2 / (3 * g**2 + 2 * c**2))
    # scale-free; an all-zero kernel scores 0; random weights about 2/3 (two of three RGB axes)
    assert torch.allclose(colour_specificity(7 * kernels), scores)
    assert float(colour_specificity(torch.zeros(1, 3, 3, 3))[0]) == 0.0
    noise = torch.randn(2000, 3, 11, 11, generator=torch.Generator().manual_seed(1))
    assert float(colour_specificity(noise).mean()) == pytest.approx(2 / 3, abs=0.01)


def test_display_scaling_is_per_kernel_as_shownet() -> None:
    kernels = _grey_and_colour(2)
    scaled = display_scale(torch.cat([kernels, 10 * kernels]))
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0  # the whole range is used
    assert torch.allclose(scaled[:4], scaled[4:], atol=1e-6)  # each kernel its own contrast
    plain = display_scale(torch.cat([kernels, 10 * kernels]), "global")
    assert not torch.allclose(plain[:4], plain[4:], atol=1e-3)


def test_kernel_grid_geometry_two_blocks_of_48() -> None:
    kernels = _grey_and_colour()
    image, layout = kernel_grid(kernels, columns=2, zoom=3)
    image = image.numpy()
    assert (layout.blocks, layout.per_block, layout.rows, layout.per_row) == (2, 48, 3, 16)
    assert image.shape == (layout.height, layout.width, 3)
    assert image.shape == (2 * (3 * 36 + 3) + 12, 16 * 36 + 3, 3)
    scaled = (display_scale(kernels) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for index in (0, 47, 48, 95):
        top, left = layout.origin(index)
        tile = image[top:top + 33, left:left + 33]
        assert np.array_equal(tile[::3, ::3], scaled[index]), index
    # The second block starts below a white band: the first column's kernels are all above it.
    assert layout.origin(48)[0] == layout.block_height + layout.block_gap + layout.gap
    band = image[layout.block_height:layout.block_height + layout.block_gap]
    assert (band == 255).all()
    one = grid_layout(48, 1, 11)
    assert (one.blocks, one.rows) == (1, 3)


# -- Fig. 3 and Fig. 4 on a real tiny checkpoint
@pytest.fixture(scope="module")
def checkpoint(tiny_wandb_run: Path) -> Path:
    return tiny_wandb_run / "checkpoints" / "last.ckpt"


def test_fig3_command_on_a_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig3"
    assert cli.main(["fig3", str(checkpoint), "--out", str(out)]) == 0
    image = np.asarray(Image.open(out / "fig3_kernels.png"))
    inputs = json.loads((out / "inputs.json").read_text())
    layout = inputs["layout"]
    assert (layout["blocks"], layout["per_block"]) == (2, 48)  # 96 tiles in two blocks of 48
    assert image.shape == (layout["height"], layout["width"], 3)
    assert inputs["checkpoint"]["sha256"] and inputs["checkpoint"]["bytes"] == checkpoint.stat(
    ).st_size
    weight = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"][
        "net.conv1.weight"]
    measured = json.loads((out / "measurements.json").read_text())["colour_specificity"]
    assert measured["columns"] == pytest.approx(column_scores(weight, 2))
    assert len(measured["kernels"]) == 96


def test_fig3_of_other_first_layers() -> None:
    from alexnet.models import CifarLocalNet

    one_gpu = fig3(AlexNet(num_classes=10, columns=1, crop_size=67))
    assert (one_gpu.layout["blocks"], one_gpu.layout["per_block"]) == (1, 48)
    cifar = fig3(CifarLocalNet(num_classes=10))
    assert (cifar.layout["per_block"], cifar.layout["tile"]) == (64, 20)  # 64 5x5 kernels
    with pytest.raises(UserError, match="no first convolution"):
        fig3(torch.nn.Sequential(torch.nn.Linear(3, 3)))


def test_nearest_neighbours_match_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    queries, candidates = torch.randn(7, 16, generator=g), torch.randn(50, 16, generator=g)
    index, dist = nearest_neighbours(queries, candidates, 5)
    q, c = queries.double().numpy(), candidates.double().numpy()
    for i in range(7):
        brute = [np.sqrt(((q[i] - c[j]) ** 2).sum()) for j in range(50)]
        assert index[i].tolist() == sorted(range(50), key=lambda j: brute[j])[:5]
        assert dist[i].numpy() == pytest.approx(sorted(brute)[:5])


def test_fig4_neighbours_in_fc7_space(checkpoint: Path) -> None:
    from alexnet.data.loader import PreparedImages

    loaded = load_network(checkpoint)
    result = fig4(loaded, images=[0, 3], k=3, tile=80)
    # Brute force, image by image, through the same network input the test loader gives.
    datamodule = loaded_datamodule(loaded)
    train = PreparedImages(datamodule.root, "train", crop_size=67, crop="center")
    val = PreparedImages(datamodule.root, "val", crop_size=67, crop="center")

    def feature(dataset: PreparedImages, i: int) -> np.ndarray:
        images, _, geometry = dataset[i]
        x = datamodule.eval_preset(images[None], torch.as_tensor(geometry)[None])
        with torch.no_grad():
            return loaded.net.embed(x)[0].double().numpy()

    train_features = np.stack([feature(train, i) for i in range(len(train))])
    for row, query in enumerate([0, 3]):
        distances = np.linalg.norm(train_features - feature(val, query), axis=1)
        assert result.neighbours[row] == np.argsort(distances, kind="stable")[:3].tolist()
        assert result.distances[row] == pytest.approx(np.sort(distances)[:3], rel=1e-4)
    # The grid: a row per query, the query's own pixels first, then its neighbours'.
    assert result.image.shape == (4 + 2 * 84, 4 + 4 * 84 + 4, 3)
    val_pixels = np.load(Path(datamodule.root) / "val_images.npy")
    assert np.array_equal(result.image[4:84, 4:84], val_pixels[val.rows[0]])
    assert result.train_searched == len(train)
    # Sec. 6.1's "same class": the share of the neighbours whose label is their query's.
    same = [int(train[n][1]) == int(val[query][1])
            for query, row in zip([0, 3], result.neighbours, strict=True) for n in row]
    assert result.same_class == pytest.approx(sum(same) / len(same))


def loaded_datamodule(loaded: Loaded) -> Any:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    datamodule = instantiate(OmegaConf.create(loaded.config).data)
    datamodule.setup("validate")
    return datamodule


def test_fig4_command_and_its_mistakes(checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fig4"
    assert cli.main(["fig4", str(checkpoint), "--images", "1,2", "--neighbours", "2",
                     "--max-train", "8", "--out", str(out)]) == 0
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["val_images"] == [1, 2] and inputs["train_images_searched"] == 8
    measured = json.loads((out / "measurements.json").read_text())
    assert all(n < 8 for row in measured["neighbours"] for n in row)
    assert Image.open(out / "fig4_neighbours.png").size == (4 + 3 * 132 + 4, 4 + 2 * 132)

    capsys.readouterr()
    for args, message in [
        (["fig4", str(checkpoint), "--images", "999"], "validation image indices"),
        (["fig4", str(checkpoint), "--neighbours", "0"], "at least 1"),
        (["fig3", str(tmp_path / "missing.ckpt")], "checkpoint not found"),
        (["fig3", str(ROOT / "README.md")], "README.md"),
        (["fig3", str(checkpoint), "--out", str(out)], "is not empty"),
    ]:
        bad = tmp_path / "bad"
        assert cli.main([*args, "--out", str(bad)] if "--out" not in args else args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not bad.exists()


def test_foreign_checkpoint_and_net_without_fc7(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a checkpoint written by src/train.py"):
        load_network(foreign)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(UserError, match="no embed method"):
        fig4(Loaded(foreign, net, {}), k=1)


# -- Fig. 1
def test_fig1_of_a_sweep_uses_the_reports_measure(tiny_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig1"
    assert cli.main(["fig1", str(tiny_sweep), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"fig1.png", "inputs.json", "measurements.json"}
    assert Image.open(out / "fig1.png").size == (7 * 120, 4.5 * 120)  # 7 x 4.5 in at 120 dpi
    measured = json.loads((out / "measurements.json").read_text())
    assert {r["arm"] for r in measured["runs"]} == {"none", "tanh"}
    study = load_study(tiny_sweep)
    for row in measured["runs"]:
        (run,) = study.by_arm(row["arm"]).values()
        expected = epochs_to_error(run.history("train/top1_err"), 0.25, run.chance_error)
        assert row["epochs_to_25pct"] == expected
    inputs = json.loads((out / "inputs.json").read_text())
    assert len(inputs["summaries"]) == 2 and all(s["sha256"] for s in inputs["summaries"])


def test_fig1_of_the_committed_study_agrees_with_its_report(tmp_path: Path) -> None:
    sweep = ROOT / "ablations" / "results" / "fig1"
    out = tmp_path / "fig1"
    assert cli.main(["fig1", str(sweep), "--out", str(out)]) == 0
    measured = json.loads((out / "measurements.json").read_text())
    result = fig1_result(load_study(sweep))
    for row in measured["runs"]:
        assert row["epochs_to_25pct"] == result["arms"][row["arm"]]["best"]["epochs"][row["seed"]]
    assert measured["ratio_at_least"] == pytest.approx(result["ratio_at_least"])
    # Any runs (here two summary.json files of different studies) give one curve each.
    files = [sweep / "none/lr0.004/seed1/summary.json",
             ROOT / "ablations/results/fig1_h100/tanh/lr0.004/seed1/summary.json"]
    assert cli.main(["fig1", *map(str, files), "--out", str(tmp_path / "any")]) == 0
    runs = json.loads((tmp_path / "any" / "measurements.json").read_text())["runs"]
    assert [r["arm"] for r in runs] == ["none", "tanh"] and runs[1]["epochs_to_25pct"] > 4



def test_fig1_is_drawn_without_torch(tmp_path: Path) -> None:
    """Fig. 1 reads summaries only: src/figures.py draws it (and answers --help) without importing
    torch or Lightning, whose import takes seconds; the figures of a checkpoint import them."""
    out = tmp_path / "fig1"
    sweep = ROOT / "ablations" / "results" / "fig1"
    status, loaded, result = run_watching_imports(ROOT / "src" / "figures.py",
                                                  ["fig1", str(sweep), "--out", str(out)], tmp_path)
    assert (status, loaded) == (0, []), result.stdout + result.stderr[-2000:]
    inputs = json.loads((out / "inputs.json").read_text())
    assert (out / "fig1.png").is_file()
    assert inputs["torch"] == torch.__version__.split("+")[0]  # from its package metadata

def test_image_rows_layout() -> None:
    rows = [[np.full((10, 10, 3), i * 40 + j, np.uint8) for j in range(3)] for i in range(2)]
    canvas = image_rows(rows, tile=10, gap=2)
    assert canvas.shape == (2 + 2 * 12, 2 + 3 * 12 + 2, 3)
    assert (canvas[2:12, 2:12] == 0).all() and (canvas[14:24, 2 + 12 + 2:2 + 12 + 12] == 41).all()


def test_curves_of_the_committed_sec33_study_pair_the_seeds(tmp_path: Path) -> None:
    """The curves figure's gap at each epoch is the mean over the seeds of ablation minus
    baseline, each seed's pair read straight from its two summaries; drawn without torch."""
    sweep = ROOT / "ablations" / "results" / "sec33_short_jpeg"
    out = tmp_path / "curves"
    status, loaded, result = run_watching_imports(ROOT / "src" / "figures.py",
                                                  ["curves", str(sweep), "--out", str(out)],
                                                  tmp_path)
    assert (status, loaded) == (0, []), result.stdout + result.stderr[-2000:]
    measured = json.loads((out / "measurements.json").read_text())
    study = load_study(sweep)
    base, ablated = study.by_arm("none"), study.by_arm("no_lrn")
    assert measured["seeds_paired"] == {"no_lrn": [1, 2, 3, 4, 5]}
    gap = dict(measured["gap_points_by_epoch"]["no_lrn"])
    assert sorted(int(e) for e in gap) == list(range(1, 29))
    for epoch in (1, 20, 28):
        expected = np.mean([100 * (dict(ablated[s].history("val/top1_err"))[epoch]
                                   - dict(base[s].history("val/top1_err"))[epoch])
                            for s in range(1, 6)])
        assert gap[epoch] == pytest.approx(expected)
    means = measured["mean_by_epoch"]
    assert means["none"][-1][1] == pytest.approx(
        np.mean([base[s].history("val/top1_err")[-1][1] for s in range(1, 6)]))
    assert len(json.loads((out / "inputs.json").read_text())["summaries"]) == 10
    assert Image.open(out / "curves.png").size[0] > 0


def test_curves_of_a_study_over_learning_rates_and_their_mistakes(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture
                                                                  ) -> None:
    sweep = ROOT / "ablations" / "results" / "fig1"
    assert cli.main(["curves", str(sweep), "--metric", "train/top1_err",
                     "--out", str(tmp_path / "fig1")]) == 0
    measured = json.loads((tmp_path / "fig1" / "measurements.json").read_text())
    # each rate its curve, and tanh's gap to ReLU at the same rate
    assert set(measured["gap_points_by_epoch"]) == {"tanh, lr 0.001", "tanh, lr 0.002",
                                                     "tanh, lr 0.004"}
    capsys.readouterr()
    for args, line in (
            (["--metric", "test/top1_err"],
             "error: --metric 'test/top1_err': one of val/top1_err, train/top1_err"),
            ([], None)):
        target = sweep if line else tmp_path / "nowhere"
        out = tmp_path / "bad"
        assert cli.main(["curves", str(target), *args, "--out", str(out)]) == 2
        (said,) = capsys.readouterr().err.strip().splitlines()
        assert said == (line or f"error: no such sweep directory: {target}")
        assert not out.exists()


@pytest.mark.parametrize("command", ["fig1", "curves"])
def test_a_file_where_a_folder_goes(command: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    """A file given as the study or as --out: one line that says it is a file, before any
    figure is made (not "no such directory", nor a traceback once it is)."""
    sweep, file = ROOT / "ablations" / "results" / "fig1", tmp_path / "notes.txt"
    file.write_text("kept\n")
    as_study = f"error: {file} is a file, not a sweep directory" + (
        " or a summary.json" if command == "fig1" else "")
    capsys.readouterr()
    for study, out, line in (
            (sweep, file, f"error: --out {file} is a file: name a new or empty directory"),
            (file, tmp_path / "fig", as_study)):
        assert cli.main([command, str(study), "--out", str(out)]) == 2
        (said,) = capsys.readouterr().err.strip().splitlines()
        assert said == line
        assert file.read_text() == "kept\n" and not (tmp_path / "fig").exists()


def test_fig1_of_several_runs_names_one_without_a_training_error(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Given runs one by one (no study), a run without a per-epoch training error is left out of
    the figure and named."""
    from alexnet.analysis.fig1_figure import fig1_curves

    fake_fig1_run(tmp_path, "none", 0.01, 1, [0.5, 0.3, 0.2])
    fake_fig1_run(tmp_path, "tanh", 0.01, 1, [])
    runs = [tmp_path / arm / "lr0.01" / "seed1" / "summary.json" for arm in ("none", "tanh")]
    figure = fig1_curves(runs)
    assert [c.summary for c in figure.curves] == [runs[0]]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: {runs[1]} has no per-epoch train/top1_err in its history: left out of Fig. 1"]
