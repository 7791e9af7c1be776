"""After the loader: the mean image at the patch's position, PCA colour jitter, the 10 crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.data.presets import Preset, pca_shift, ten_crop, ten_crop_corners


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
def test_mean_image_at_the_patch_position_on_both_paths(jitter: bool) -> None:
    images, mean, geometry = random_case(0)
    eigval, eigvec = [900.0, 100.0, 10.0], torch.linalg.qr(torch.randn(3, 3))[0].tolist()
    kwargs = dict(crop_size=5, mean_image=mean, pca_jitter=jitter, pca_eigval=eigval,
                  pca_eigvec=eigvec)
    shift = pca_shift(len(images), torch.tensor(eigval) / 255, torch.tensor(eigvec),
                      generator=torch.Generator().manual_seed(3)) if jitter else None
    want = expected(images, mean, geometry, shift)
    cpu = Preset(**kwargs, generator=torch.Generator().manual_seed(3))(images, geometry)
    assert cpu.shape == (6, 3, 5, 5)
    assert torch.allclose(cpu, want, atol=1e-4)
    # The whole-batch path that GPUs take gives the same.
    batched = Preset(**kwargs)._fill_batched(images, geometry, shift).permute(0, 3, 1, 2)
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


def test_pca_jitter_statistics() -> None:
    """A per-image constant RGB shift along the eigenvectors, alpha ~ N(0, 0.1) (Sec. 4.1)."""
    n, size = 20000, 2
    eigval = torch.tensor([1000.0, 300.0, 50.0])
    lam = eigval.double() / 255  # the eigenvalues on the [0, 1] pixel scale: see Preset
    eigvec = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    preset = Preset(crop_size=size, mean_image=torch.zeros(size, size, 3), pca_jitter=True,
                    pca_std=0.1, pca_eigval=eigval.tolist(), pca_eigvec=eigvec.tolist(),
                    generator=torch.Generator().manual_seed(1))
    images = torch.full((n, size, size, 3), 100, dtype=torch.uint8)
    geometry = torch.zeros(n, 3, dtype=torch.long)
    shifted = preset(images, geometry) - 100  # (n, 3, size, size)
    shift = shifted[:, :, 0, 0]
    assert torch.equal(shifted, shift[:, :, None, None].expand_as(shifted))  # every pixel alike
    assert shift.mean(dim=0).abs().max() < 3 * 0.1 * lam[0] / n**0.5
    covariance = torch.cov(shift.T.double())
    want = eigvec.double() @ torch.diag((0.1 * lam) ** 2) @ eigvec.double().T
    assert torch.allclose(covariance, want, rtol=0.05, atol=0.05 * want.abs().max().item())
    # Along each eigenvector the shift is alpha_i * lambda_i with alpha_i of std 0.1.
    along = shift.double() @ eigvec.double()
    assert (along.std(dim=0) / lam).numpy() == pytest.approx([0.1] * 3, rel=0.03)
    # Drawn again each time an image is used.
    again = preset(images[:100], geometry[:100])[:, :, 0, 0] - 100
    assert not torch.allclose(again, shift[:100])


def test_no_jitter_outside_training() -> None:
    images, mean, geometry = random_case(2)
    preset = Preset(crop_size=5, mean_image=mean, pca_eigval=[1e4] * 3)
    assert torch.allclose(preset(images, geometry), expected(images, mean, geometry), atol=1e-4)


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
