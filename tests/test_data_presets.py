"""After the loader: the mean image at the patch's position, PCA colour jitter, the 10 crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import CONF, compose_config

from alexnet.data.presets import (
    PCA_CONVENTIONS,
    Preset,
    pca_factor,
    pca_shift,
    ten_crop,
    ten_crop_corners,
)

# Eigenvalues of the 0-255 RGB covariance near those of real ImageNet images (the 1000-image
# sample gives 12 940, 1136, 283), and an orthonormal basis for their eigenvectors (columns).
EIGVAL = [12940.0, 1136.0, 283.0]
EIGVEC = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(7),
                                     dtype=torch.float64))[0]


def test_ten_crop_geometry() -> None:
    size, crop = 10, 6
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.stack([y * 100 + x, -(y * 100 + x)])[:, None].float()  # (2, 1, 10, 10)
    crops = ten_crop(images, crop)
    assert crops.shape == (2, 10, 1, crop, crop)
    corners = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # four corners, then the centre
    assert ten_crop_corners(size, crop) == corners
    for i, (top, left) in enumerate(corners):
        patch = images[:, :, top : top + crop, left : left + crop]
        assert torch.equal(crops[:, i], patch)
        assert torch.equal(crops[:, 5 + i], patch.flip(-1))  # and their reflections
    assert crops[0, 1, 0, 0, 0] == 4 and crops[0, 6, 0, 0, 0] == 9  # top right, mirrored


def random_case(seed: int, batch: int = 6, size: int = 9, crop: int = 5):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, crop, crop, 3), generator=g, dtype=torch.uint8)
    mean = torch.rand(size, size, 3, generator=g) * 255
    geometry = torch.cat([torch.randint(0, size - crop + 1, (batch, 2), generator=g),
                          torch.tensor([0, 1] * (batch // 2))[:, None]], dim=1)
    return images, mean, geometry


def expected(images: torch.Tensor, mean: torch.Tensor, geometry: torch.Tensor,
             shift: torch.Tensor | None = None) -> torch.Tensor:
    """Each patch minus the mean image's patch at the same place, mirrored the same way."""
    crop = images.shape[1]
    out = []
    for image, (top, left, mirrored) in zip(images, geometry.tolist(), strict=True):
        patch = mean[top : top + crop, left : left + crop]
        centred = image.float() - (patch.flip(1) if mirrored else patch)
        out.append(centred + (0 if shift is None else shift[len(out)]))
    return torch.stack(out).permute(0, 3, 1, 2)


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("convention", PCA_CONVENTIONS)
def test_mean_image_at_the_patch_position_on_both_paths(jitter: bool, convention: str) -> None:
    images, mean, geometry = random_case(0)
    eigval, eigvec = [900.0, 100.0, 10.0], torch.linalg.qr(torch.randn(3, 3))[0].tolist()
    kwargs = dict(crop_size=5, mean_image=mean, pca_jitter=jitter, pca_eigval=eigval,
                  pca_eigvec=eigvec, pca_convention=convention)
    shift = pca_shift(len(images), torch.tensor(eigval), torch.tensor(eigvec),
                      generator=torch.Generator().manual_seed(3),
                      convention=convention) if jitter else None
    factor = pca_factor(0.1, convention) if jitter else 1.0
    want = expected(images, mean, geometry, shift) * factor
    cpu = Preset(**kwargs, generator=torch.Generator().manual_seed(3))(images, geometry)
    assert cpu.shape == (6, 3, 5, 5)
    assert torch.allclose(cpu, want, atol=1e-4)
    # The whole-batch path that GPUs take gives the same.
    batched = Preset(**kwargs, generator=torch.Generator().manual_seed(3))(
        images, geometry, per_image=False)
    assert torch.allclose(batched, want, atol=1e-4)


def test_channel_mean() -> None:
    images, mean, geometry = random_case(1)
    out = Preset(crop_size=5, mean_image=mean, mean="channel")(images, geometry)
    want = images.permute(0, 3, 1, 2).float() - mean.mean(dim=(0, 1))[None, :, None, None]
    assert torch.allclose(out, want, atol=1e-4)
    batched = Preset(crop_size=5, mean_image=mean, mean="channel")._fill_batched(
        images, geometry, None)
    assert torch.allclose(batched.permute(0, 3, 1, 2), want, atol=1e-4)
    with pytest.raises(ValueError, match="data.mean must be one of"):
        Preset(crop_size=5, mean_image=mean, mean="pixel")


def hand_made_batch(batch: int = 4, size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (batch, size, size, 3) images with known, distinct values, and a mean image."""
    values = torch.arange(batch * size * size * 3) * 37 % 256
    images = values.reshape(batch, size, size, 3).to(torch.uint8)
    mean = torch.linspace(90, 140, size * size * 3).reshape(size, size, 3)
    return images, mean


def cuda_convnet2_color_noise(images: torch.Tensor, mean: torch.Tensor, z: torch.Tensor,
                              coeff: float) -> np.ndarray:
    """cuda-convnet2 ``convdata.py`` as written, in numpy on its own data layout: one row per
    image of 3 x pixels values, channel-major (``ImageDataProvider.get_next_batch`` subtracts
    the mean, then ``add_color_noise``; ``ColorNoiseMakerThread.run`` makes the noise, its
    ``nr.randn(num_noise, 3)`` here the given ``z``). Returns (B, 3, H, W)."""
    ncases, height, width, _ = images.shape
    cropped_size = height * width
    data = images.double().permute(0, 3, 1, 2).reshape(ncases, 3 * cropped_size).numpy()
    data_mean_crop = mean.double().permute(2, 0, 1).reshape(1, 3 * cropped_size).numpy()
    pca_stdevs = np.c_[np.sqrt(np.array(EIGVAL))]  # batch_meta['color_pca'][0], a column
    pca_vecs = EIGVEC.numpy()  # batch_meta['color_pca'][1]: eigenvectors as columns
    data = data - data_mean_crop
    noise = np.dot(z.double().numpy() * pca_stdevs.T, pca_vecs.T)
    data = data.reshape((ncases * 3, cropped_size))
    noise = noise[:ncases, :].reshape((3 * ncases, 1))
    data += noise * coeff
    data = data.reshape((ncases, 3 * cropped_size))
    data *= 1.0 / (1.0 + coeff)
    return data.reshape(ncases, 3, height, width)


def fb_resnet_lighting(images: torch.Tensor, mean: torch.Tensor, z: torch.Tensor,
                       alphastd: float) -> np.ndarray:
    """fb.resnet.torch ``datasets/transforms.lua`` ``Lighting(alphastd, eigval, eigvec)`` on
    [0, 1] pixels, with the eigenvalues of [0, 1] pixels (ours / 255^2); the result back on the
    0-255 scale, minus the mean image. ``alpha = N(0, alphastd)`` is ``alphastd * z``."""
    eigval = np.array(EIGVAL) / 255.0**2
    eigvec = EIGVEC.numpy()
    out = []
    for image, zk in zip(images.double().numpy() / 255.0, z.double().numpy(), strict=True):
        alpha = alphastd * zk
        # rgb = eigvec:clone():cmul(alpha:view(1, 3):expand(3, 3))
        #                     :cmul(eigval:view(1, 3):expand(3, 3)):sum(2):squeeze()
        rgb = (eigvec * alpha[None, :] * eigval[None, :]).sum(axis=1)
        lit = image + rgb  # for i = 1, 3 do input[i]:add(rgb[i]) end
        out.append(lit * 255.0 - mean.double().numpy())
    return np.stack(out).transpose(0, 3, 1, 2)


REFERENCES = {"authors": cuda_convnet2_color_noise, "fb_resnet": fb_resnet_lighting}


@pytest.mark.parametrize("convention", PCA_CONVENTIONS)
@pytest.mark.parametrize("per_image", [True, False])
def test_pca_convention_against_its_source(convention: str, per_image: bool) -> None:
    """Each convention against a direct implementation of its source's code, same draws."""
    images, mean = hand_made_batch()
    geometry = torch.zeros(len(images), 3, dtype=torch.long)  # the whole image, not mirrored
    preset = Preset(crop_size=3, mean_image=mean, pca_jitter=True, pca_std=0.1,
                    pca_convention=convention, pca_eigval=EIGVAL, pca_eigvec=EIGVEC.tolist(),
                    generator=torch.Generator().manual_seed(11))
    got = preset(images, geometry, per_image=per_image)
    z = torch.randn(len(images), 3, generator=torch.Generator().manual_seed(11))
    want = REFERENCES[convention](images, mean, z, 0.1)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=2e-3)


def test_pca_conventions_differ_as_their_sources_say() -> None:
    """The authors' shift along p_i is c sqrt(l_i) z_i / (1 + c): about 10 / 3 / 1.5 grey
    levels with ImageNet's eigenvalues; fb.resnet.torch's c l_i z_i / 255: 5 / 0.4 / 0.1."""
    images, mean = hand_made_batch(batch=1)
    z = torch.ones(1, 3)
    authors = cuda_convnet2_color_noise(images, mean, z, 0.1)
    plain = cuda_convnet2_color_noise(images, mean, torch.zeros(1, 3), 0.1)
    along = (torch.from_numpy(authors - plain)[0, :, 0, 0] @ EIGVEC).numpy()
    np.testing.assert_allclose(along, 0.1 * np.sqrt(EIGVAL) / 1.1, rtol=1e-9)
    fb = fb_resnet_lighting(images, mean, z, 0.1) - fb_resnet_lighting(images, mean, 0 * z, 0.1)
    along = (torch.from_numpy(fb)[0, :, 0, 0] @ EIGVEC).numpy()
    np.testing.assert_allclose(along, 0.1 * np.array(EIGVAL) / 255, rtol=1e-9)
    # The authors' code also scales the centred image itself by 1 / (1 + c), in training only.
    centred = (images.double() - mean.double()).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(plain, centred / 1.1, rtol=1e-12)


@pytest.mark.parametrize("convention", PCA_CONVENTIONS)
def test_pca_jitter_statistics(convention: str) -> None:
    """A per-image constant RGB shift along the eigenvectors, drawn anew each time (Sec. 4.1), of
    its convention's size along each eigenvector."""
    n, size = 20000, 2
    eigval = torch.tensor([1000.0, 300.0, 50.0], dtype=torch.float64)
    per_component = {"authors": 0.1 * eigval.sqrt() / 1.1, "fb_resnet": 0.1 * eigval / 255}
    eigvec = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    preset = Preset(crop_size=size, mean_image=torch.zeros(size, size, 3), pca_jitter=True,
                    pca_std=0.1, pca_convention=convention, pca_eigval=eigval.tolist(),
                    pca_eigvec=eigvec.tolist(), generator=torch.Generator().manual_seed(1))
    images = torch.full((n, size, size, 3), 100, dtype=torch.uint8)
    geometry = torch.zeros(n, 3, dtype=torch.long)
    shifted = preset(images, geometry) - 100 * pca_factor(0.1, convention)  # (n, 3, size, size)
    shift = shifted[:, :, 0, 0]
    assert torch.allclose(shifted, shift[:, :, None, None].expand_as(shifted))  # every pixel
    std = per_component[convention]
    assert shift.mean(dim=0).abs().max() < 4 * std[0] / n**0.5
    covariance = torch.cov(shift.T.double())
    want = eigvec.double() @ torch.diag(std**2) @ eigvec.double().T
    assert torch.allclose(covariance, want, rtol=0.05, atol=0.05 * want.abs().max().item())
    along = shift.double() @ eigvec.double()
    assert (along.std(dim=0) / std).numpy() == pytest.approx([1.0] * 3, rel=0.03)
    # Drawn again each time an image is used.
    again = preset(images[:100], geometry[:100])[:, :, 0, 0]
    assert not torch.allclose(again, shift[:100] + 100 * pca_factor(0.1, convention))


def test_scale_applies_after_the_jitter_and_the_authors_factor() -> None:
    images, mean, geometry = random_case(3)
    kwargs = dict(crop_size=5, mean_image=mean, pca_jitter=True, pca_eigval=EIGVAL,
                  pca_eigvec=EIGVEC.tolist())
    raw = Preset(**kwargs, generator=torch.Generator().manual_seed(5))(images, geometry)
    scaled = Preset(**kwargs, scale=0.25, generator=torch.Generator().manual_seed(5))(
        images, geometry)
    assert torch.allclose(scaled, raw * 0.25, atol=1e-5)


def test_pca_settings_are_checked() -> None:
    mean = torch.zeros(4, 4, 3)
    with pytest.raises(ValueError, match="data.pca_convention must be one of"):
        Preset(crop_size=3, mean_image=mean, pca_convention="paper")
    with pytest.raises(ValueError, match="data.pca_std must be >= 0"):
        Preset(crop_size=3, mean_image=mean, pca_std=-0.1)


DATA_CONFIGS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def test_every_data_config_keeps_the_coefficient_and_the_authors_convention(
        tmp_path: Path) -> None:
    """pca_std is the coefficient c = 0.1 in both conventions (cuda-convnet2's color noise,
    fb.resnet.torch's alphastd, the paper's std of alpha): a config that changes it changes
    the recipe."""
    files = {name: yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())
             for name in DATA_CONFIGS}
    setting = [name for name, cfg in files.items() if "pca_std" in cfg]
    assert "_base" in setting  # stated once, inherited by every data config (composed below)
    for name in setting:
        assert files[name]["pca_std"] == 0.1, name
        assert files[name]["pca_convention"] == "authors", name
    for name in DATA_CONFIGS:  # and as composed, defaults included (demo inherits synthetic)
        data = compose_config("train", ["experiment=none", f"data={name}"], tmp_path,
                              tmp_path).data
        assert (data.pca_std, data.pca_convention) == (0.1, "authors"), name
    paper = compose_config("train", ["experiment=paper"], tmp_path, tmp_path).data
    assert (paper.pca_std, paper.pca_convention) == (0.1, "authors")


def test_no_jitter_outside_training() -> None:
    """Without the jitter nothing is added, and the authors' 1 / (1 + c) is not applied either
    (cuda-convnet2 calls ``add_color_noise`` only when not testing)."""
    images, mean, geometry = random_case(2)
    for convention in PCA_CONVENTIONS:
        preset = Preset(crop_size=5, mean_image=mean, pca_eigval=[1e4] * 3,
                        pca_convention=convention)
        for per_image in (True, False):
            out = preset(images, geometry, per_image=per_image)
            assert torch.allclose(out, expected(images, mean, geometry), atol=1e-4)


def test_ten_crop_preset_on_whole_images() -> None:
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (3, 8, 8, 3), generator=g, dtype=torch.uint8)
    mean = torch.rand(8, 8, 3, generator=g) * 255
    preset = Preset(crop_size=5, mean_image=mean, ten_crop=True)
    out = preset(images, torch.zeros(3, 3, dtype=torch.long))
    assert out.shape == (3, 10, 3, 5, 5)
    centred = (images.float() - mean).permute(0, 3, 1, 2)
    assert torch.allclose(out, ten_crop(centred, 5), atol=1e-4)
    with pytest.raises(ValueError, match="ten_crop needs whole 8x8 images"):
        preset(images[:, :5, :5], torch.zeros(3, 3, dtype=torch.long))


def test_output_memory_is_reused_only_when_free() -> None:
    images, mean, geometry = random_case(5)
    preset = Preset(crop_size=5, mean_image=mean)
    first = preset(images, geometry)
    kept = first.clone()
    second = preset(images.flip(0), geometry)  # ``first`` is still held: a new buffer
    assert torch.equal(first, kept)
    assert second.data_ptr() != first.data_ptr()
    pointer = first.data_ptr()
    del first
    third = preset(images, geometry)
    assert third.data_ptr() == pointer  # freed, so reused
    assert np.allclose(third.numpy(), kept.numpy())


def test_scale_multiplies_the_centred_values() -> None:
    images, mean, geometry = random_case(2)
    raw = Preset(crop_size=5, mean_image=mean)(images, geometry)
    scaled = Preset(crop_size=5, mean_image=mean, scale=0.25)(images, geometry)
    assert torch.allclose(scaled, raw * 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="data.scale must be positive"):
        Preset(crop_size=5, mean_image=mean, scale=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("convention", PCA_CONVENTIONS)
def test_the_gpu_gives_what_the_cpu_gives(convention: str) -> None:
    images, mean, geometry = random_case(4)
    kwargs = dict(crop_size=5, mean_image=mean, pca_jitter=True, pca_eigval=EIGVAL,
                  pca_eigvec=EIGVEC.tolist(), pca_convention=convention, scale=0.5)
    cpu = Preset(**kwargs, generator=torch.Generator().manual_seed(9))(images, geometry)
    gpu = Preset(**kwargs, generator=torch.Generator().manual_seed(9))(
        images.cuda(), geometry.cuda())
    assert gpu.is_cuda and gpu.is_contiguous()
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)
