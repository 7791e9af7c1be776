"""The paper's input pipeline, as batched tensor operations (Sec. 2 and 4.1).

The loaders deliver uint8 (B, S, S, 3) batches of the prepared S x S images; these presets run
after the batch reached its device (the GPU when there is one), so that augmentation never
limits the loader. Pixel values stay on the paper's 0-255 scale: the network sees raw RGB values
minus the training mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MEAN_MODES = ("image", "channel")


def to_float_nchw(images: Tensor) -> Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) on the 0-255 scale."""
    return images.permute(0, 3, 1, 2).float()


def pca_jitter(
    images: Tensor, eigval: Tensor, eigvec: Tensor, std: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T to every pixel of each image (Sec. 4.1).

    ``a ~ N(0, std)`` is drawn once per image each time the image is used; ``eigvec`` holds the
    eigenvectors as columns, ``eigval`` the eigenvalues, both of the RGB covariance on the pixel
    scale of ``images``.
    """
    alpha = torch.randn(images.shape[0], 3, generator=generator).to(images.device) * std
    shift = (alpha * eigval.to(images.device)) @ eigvec.to(images.device).T  # (B, 3) RGB shift
    return images + shift[:, :, None, None]


def center_crop(images: Tensor, size: int) -> Tensor:
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def random_crop(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A random ``size`` x ``size`` patch of each image, its own position per image (Sec. 4.1)."""
    batch, _, height, width = images.shape
    tops = torch.randint(0, height - size + 1, (batch,), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (batch,), generator=generator).tolist()
    return torch.stack(
        [im[:, t : t + size, x : x + size] for im, t, x in zip(images, tops, lefts, strict=True)]
    )


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2 (Sec. 4.1: "horizontal reflections")."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def ten_crop(images: Tensor, size: int) -> Tensor:
    """The paper's test-time patches (Sec. 4.1): four corners and the centre, then their mirror
    images: (B, C, H, W) -> (B, 10, C, size, size)."""
    height, width = images.shape[-2:]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    crops = [images[..., t : t + size, x : x + size] for t, x in corners]
    crops.append(center_crop(images, size))
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=1)


class Preset:
    """Turns a uint8 batch into network input; holds the dataset's mean and colour statistics."""

    def __init__(
        self,
        *,
        crop_size: int,
        mean_image: Tensor,
        mean: str = "image",
        train: bool,
        crop: bool = True,
        flip: bool = True,
        pca_jitter: bool = True,
        pca_std: float = 0.1,
        pca_eigval: Sequence[float] = (0.0, 0.0, 0.0),
        pca_eigvec: Sequence[Sequence[float]] = ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        ten_crop: bool = False,
    ) -> None:
        if mean not in MEAN_MODES:
            raise ValueError(f"data.mean must be one of {list(MEAN_MODES)}, got {mean!r}")
        size = mean_image.shape[0]
        if not 1 <= crop_size <= size:
            raise ValueError(f"data.crop_size must be between 1 and the image size {size}")
        self.crop_size = crop_size
        self.train = train
        self.crop, self.flip, self.pca_jitter, self.pca_std = crop, flip, pca_jitter, pca_std
        self.ten_crop = ten_crop
        mean_chw = mean_image.permute(2, 0, 1).float()
        # Sec. 2 subtracts the mean image; the per-channel mean is the common modern shortcut.
        self.mean = mean_chw if mean == "image" else mean_chw.mean(dim=(1, 2), keepdim=True)
        self.eigval = torch.as_tensor(pca_eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(pca_eigvec, dtype=torch.float32)

    def __call__(self, images: Tensor) -> Tensor:
        x = to_float_nchw(images)
        if self.mean.device != x.device:
            self.mean, self.eigval, self.eigvec = (
                t.to(x.device) for t in (self.mean, self.eigval, self.eigvec)
            )
        x = x - self.mean
        if not self.train:
            return ten_crop(x, self.crop_size) if self.ten_crop else center_crop(x, self.crop_size)
        if self.pca_jitter:
            x = pca_jitter(x, self.eigval, self.eigvec, self.pca_std)
        # Without crops the network sees the central patch: the paper's "no translations" control.
        x = random_crop(x, self.crop_size) if self.crop else center_crop(x, self.crop_size)
        return random_flip(x) if self.flip else x
