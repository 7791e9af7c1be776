"""The paper's input pipeline after the loader, as batched tensor operations (Sec. 2 and 4.1).

The loader (``loader.PreparedImages``) already cut each image's patch out of the prepared
S x S image, on uint8, and mirrored it: a uint8 (B, H, W, 3) batch plus each patch's ``geometry``
(top, left, mirrored). A :class:`Preset` runs where the batch was sent (the GPU when there is one)
and turns it into network input: float32 on the paper's 0-255 scale, minus the mean image taken
at the same position and mirrored the same way (Sec. 2), plus the PCA colour shift (Sec. 4.1), and
for the test the ten patches (Sec. 4.1).

The PCA colour shift comes in two conventions (``PCA_CONVENTIONS``), because the paper's formula,
[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with a ~ N(0, 0.1), shifts colours by hundreds of grey levels
when read with 0-255 pixels (l1 is about 13 000 on ImageNet), so the text alone cannot be run:

- ``authors``: what the authors' released code computes (cuda-convnet2 ``convdata.py``,
  ``ColorNoiseMakerThread.run`` and ``ImageDataProvider.add_color_noise``, where the data
  already have the mean subtracted)::

      noise = n.dot(nr.randn(self.num_noise, 3).astype(n.single) * self.pca_stdevs.T,
                    self.pca_vecs.T)
      self.data[self.d_idx]['data'] += self.color_noise * self.color_noise_coeff
      self.data[self.d_idx]['data'] *= 1.0 / (1.0 + self.color_noise_coeff)

  i.e. x = (image - mean + c * [p1 p2 p3][z1 s1, z2 s2, z3 s3]^T) / (1 + c), z ~ N(0, 1), s the
  PCA standard deviations (the square roots of the 0-255 eigenvalues), c the coefficient
  (the ``--color-noise`` option; 0.1, the paper's 0.1). The factor 1 / (1 + c) scales the whole
  centred image, noise included ("so that the overall scale of the training data doesn't become
  too different from the test data", the code's comment), and only when the noise is added:
  test images are not scaled.
- ``fb_resnet``: fb.resnet.torch's ``Lighting`` transform (and most later code): the paper's
  a_i l_i with a ~ N(0, c) and l the eigenvalues of pixels on the [0, 1] scale (ImageNet's:
  0.2175, 0.0188, 0.0045), added on our 0-255 scale, i.e. c z_i l255_i / 255; nothing is scaled.
  Its colour components are below one grey level on real images: nearly brightness only.

The result is (B, 3, H, W) in the channels-last memory layout on the CPU (the layout the batch
arrives in, and the faster one for the CPU's convolutions), contiguous on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

MEAN_MODES = ("image", "channel")
PCA_CONVENTIONS = ("authors", "fb_resnet")  # see the module's docstring
PIXEL_RANGE = 255.0  # the prepared images' values run over 0-255


def ten_crop_corners(size: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of the paper's five test patches: the four corners, then the centre."""
    far, mid = size - crop, (size - crop) // 2
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


def ten_crop(images: Tensor, size: int) -> Tensor:
    """The paper's test-time patches (Sec. 4.1): four corners and the centre, then their mirror
    images: (B, C, H, W) -> (B, 10, C, size, size)."""
    crops = [images[..., t : t + size, x : x + size]
             for t, x in ten_crop_corners(images.shape[-1], size)]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=1)


def pca_shift(
    batch: int, eigval: Tensor, eigvec: Tensor, std: float = 0.1,
    generator: torch.Generator | None = None, convention: str = "authors",
) -> Tensor:
    """Each image's RGB shift, (batch, 3), before any scaling; drawn once per image each time the
    image is used (Sec. 4.1), on the CPU's generator so that a seed gives the same shifts on any
    device.

    ``eigval`` are the eigenvalues of the covariance of 0-255 pixels (``stats.json``'s
    ``pca_eigval``), ``eigvec`` the eigenvectors as columns; ``std`` is the coefficient c.
    ``authors``: ``c * [p1 p2 p3][z1 s1, z2 s2, z3 s3]^T`` with s = sqrt(eigval) (cuda-convnet2);
    ``fb_resnet``: ``[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T`` with a = c z and l = eigval / 255
    (fb.resnet.torch's eigenvalues of [0, 1] pixels, applied on the 0-255 scale). z ~ N(0, 1).
    """
    if convention not in PCA_CONVENTIONS:
        raise ValueError(
            f"data.pca_convention must be one of {list(PCA_CONVENTIONS)}, got {convention!r}")
    z = torch.randn(batch, 3, generator=generator).to(eigval.device)
    if convention == "authors":
        # A covariance's eigenvalues are >= 0; clamp the rounding error of a degenerate one.
        per_component = eigval.clamp_min(0).sqrt()
    else:
        per_component = eigval / PIXEL_RANGE
    return (z * std * per_component) @ eigvec.T


def pca_factor(std: float, convention: str = "authors") -> float:
    """What the jittered, centred image is multiplied by: 1 / (1 + c) in the authors' code
    (cuda-convnet2 ``add_color_noise``), 1 in fb.resnet.torch's."""
    return 1.0 / (1.0 + std) if convention == "authors" else 1.0


def _rows(per_pixel: Tensor, width: int) -> Tensor:
    """(B, 3) per-image RGB values -> (B, 1, width * 3), one image row of them: subtracting rows
    from (B, H, W * 3) views keeps the innermost loop long (a broadcast over the last dimension of
    size 3 is several times slower on a CPU)."""
    return per_pixel.repeat(1, width)[:, None, :]


class Preset:
    """Turns a loader batch into network input; holds the dataset's mean and colour statistics.

    ``mean``: ``image`` subtracts the mean training image (Sec. 2), ``channel`` the mean RGB value
    (the common modern shortcut). ``pca_jitter`` adds the colour shift (training only) in the
    ``pca_convention`` of :func:`pca_shift`, with the coefficient ``pca_std`` and the 0-255
    eigenvalues and eigenvectors of ``stats.json``; ``ten_crop`` expects whole S x S images and
    returns their ten patches (testing only). ``scale`` multiplies the centred values: 1 is the
    paper's raw pixel scale (Sec. 2); like Caffe's ``transform_param.scale``, a smaller value
    suits initialisations made for unit inputs. It applies after centring and jitter (and after
    the authors' 1 / (1 + c)), which are on the 0-255 scale.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        mean_image: Tensor,
        mean: str = "image",
        pca_jitter: bool = False,
        pca_std: float = 0.1,
        pca_convention: str = "authors",
        pca_eigval: Sequence[float] = (0.0, 0.0, 0.0),
        pca_eigvec: Sequence[Sequence[float]] = ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        ten_crop: bool = False,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"data.scale must be positive, got {scale}")
        if mean not in MEAN_MODES:
            raise ValueError(f"data.mean must be one of {list(MEAN_MODES)}, got {mean!r}")
        if pca_convention not in PCA_CONVENTIONS:
            raise ValueError(f"data.pca_convention must be one of {list(PCA_CONVENTIONS)}, "
                             f"got {pca_convention!r}")
        if pca_std < 0:
            raise ValueError(f"data.pca_std must be >= 0, got {pca_std}")
        size = mean_image.shape[0]
        if mean_image.shape != (size, size, 3):
            raise ValueError(f"the mean image must be (S, S, 3), got {tuple(mean_image.shape)}")
        if not 1 <= crop_size <= size:
            raise ValueError(f"data.crop_size must be between 1 and the image size {size}")
        self.size, self.crop_size = size, crop_size
        self.mean_mode = mean
        self.pca_jitter, self.pca_std = pca_jitter, pca_std
        self.pca_convention = pca_convention
        self.ten_crop = ten_crop
        self.scale = scale
        self.generator = generator
        mean_image = mean_image.float().contiguous()
        self.mean_image = mean_image
        self.mean_image_flipped = mean_image.flip(1).contiguous()
        self.mean_rgb = mean_image.mean(dim=(0, 1))
        # The 0-255 eigenvalues, as stats.json holds them; pca_shift puts them on each
        # convention's scale.
        self.eigval = torch.as_tensor(pca_eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(pca_eigvec, dtype=torch.float32)
        self._buffers: list[Tensor] = []
        self._threads: ThreadPoolExecutor | None = None
        self._threads_size = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_buffers": [], "_threads": None}  # neither can be pickled

    def _to(self, device: torch.device) -> None:
        if self.mean_image.device != device:
            for name in ("mean_image", "mean_image_flipped", "mean_rgb", "eigval", "eigvec"):
                setattr(self, name, getattr(self, name).to(device))

    def __call__(self, images: Tensor, geometry: Tensor, *,
                 per_image: bool | None = None) -> Tensor:
        """uint8 (B, H, W, 3) patches and their (B, 3) geometry -> float (B, 3, H, W), or
        (B, 10, 3, crop, crop) with ``ten_crop``. ``per_image``: the CPU's one-image-at-a-time
        path (CPU batches only), or the whole-batch path of GPUs; by default the one for the
        batch's device. Both compute the same, which the tests check on the CPU."""
        self._to(images.device)
        batch, height, width, _ = images.shape
        if self.ten_crop and (height, width) != (self.size, self.size):
            raise ValueError(f"ten_crop needs whole {self.size}x{self.size} images")
        shift, factor = None, self.scale
        if self.pca_jitter:
            shift = pca_shift(batch, self.eigval, self.eigvec, self.pca_std, self.generator,
                              self.pca_convention)
            # The authors' 1 / (1 + c) scales the jittered image (training only), before scale.
            factor = self.scale * pca_factor(self.pca_std, self.pca_convention)
        if per_image is None:
            per_image = images.device.type == "cpu"
        # factor applies after centring and jitter, which are on the 0-255 scale.
        if per_image:
            x = self._output(images.shape)
            self._fill_per_image(x, images, geometry, shift, factor)
        else:
            x = self._fill_batched(images, geometry, shift)
            if factor != 1.0:
                x.mul_(factor)
        x = x.permute(0, 3, 1, 2)
        if self.ten_crop:
            return ten_crop(x, self.crop_size)
        return x if x.device.type == "cpu" else x.contiguous()

    def _mean_patches(self, geometry: Tensor, height: int, width: int) -> list[Tensor]:
        """Each patch's part of the mean image as a (H, W * 3) view, mirrored with the patch."""
        mean = self.mean_image.view(self.size, self.size * 3)
        flipped = self.mean_image_flipped.view(self.size, self.size * 3)
        patches = []
        for top, left, mirrored in geometry.tolist():
            if mirrored:  # the patch's column j is column left + W - 1 - j of the image
                left, source = self.size - left - width, flipped
            else:
                source = mean
            patches.append(source[top : top + height, 3 * left : 3 * (left + width)])
        return patches

    def _fill_per_image(self, x: Tensor, images: Tensor, geometry: Tensor,
                        shift: Tensor | None, factor: float = 1.0) -> None:
        """``x = (images - mean (+ shift)) * factor`` one image at a time, so that each step works
        on data that stays in the CPU's cache (2-3x faster than whole-batch steps; the factor
        costs almost nothing there, a pass of its own over the batch would not). The images are
        shared among threads of our own rather than each step among torch's: the steps are too
        small for torch's threads, which spin while they wait."""
        batch, height, width, _ = images.shape
        rows, sources = x.view(batch, height, width * 3), images.view(batch, height, width * 3)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if self.mean_mode == "image":
                means = self._mean_patches(geometry, height, width)
                shifts = None if shift is None else _rows(shift, width)
            else:  # one (1, W * 3) row per image, broadcast over the image's rows
                offset = self.mean_rgb.expand(batch, 3)
                means = _rows(offset if shift is None else offset - shift, width)
                shifts = None

            def fill(part: range) -> None:
                for k in part:
                    out = rows[k]
                    out.copy_(sources[k])
                    out.sub_(means[k])
                    if shifts is not None:
                        out.add_(shifts[k])
                    if factor != 1.0:
                        out.mul_(factor)

            if threads > 1:
                # Small pieces, taken by whichever thread is free: a thread that the system
                # suspends (the loader's workers want the same cores) holds up little.
                step = max(1, batch // (4 * threads))
                pieces = [range(i, min(i + step, batch)) for i in range(0, batch, step)]
                list(self._pool(threads).map(fill, pieces))
            else:
                fill(range(batch))
        finally:
            torch.set_num_threads(threads)

    def _pool(self, size: int) -> ThreadPoolExecutor:
        if self._threads is None or self._threads_size != size:
            self._threads = ThreadPoolExecutor(size, thread_name_prefix="preset")
            self._threads_size = size
        return self._threads

    def _fill_batched(self, images: Tensor, geometry: Tensor, shift: Tensor | None) -> Tensor:
        """The same in a few whole-batch steps (one gather for the mean patches): for GPUs."""
        batch, height, width, _ = images.shape
        x = images.float()
        if self.mean_mode == "channel":
            x -= self.mean_rgb
        else:
            geometry = geometry.to(x.device)
            top, left, mirrored = geometry[:, 0:1], geometry[:, 1:2], geometry[:, 2:3].bool()
            dy = torch.arange(height, device=x.device)
            dx = torch.arange(width, device=x.device)
            ys = top + dy
            xs = torch.where(mirrored, left + width - 1 - dx, left + dx)
            x -= self.mean_image[ys[:, :, None], xs[:, None, :]]
        if shift is not None:
            x += shift[:, None, None, :]
        return x

    def _output(self, shape: torch.Size) -> Tensor:
        """A float32 CPU tensor for the batch, reused from an earlier batch when nothing holds
        that one any more: a fresh 79 MB tensor per batch costs more in page faults than all the
        arithmetic."""
        for buffer in self._buffers:
            if buffer.shape == shape and _unused(buffer):
                return buffer
        with torch.inference_mode(False):  # a buffer made while testing is reused in training
            buffer = torch.empty(shape)
        self._buffers = [*self._buffers[-(_POOL - 1):], buffer]
        return buffer


_POOL = 4


def _unused(buffer: Tensor) -> bool:
    """Whether no tensor other than ``buffer`` itself (a view, autograd's saved input) holds its
    memory."""
    try:
        # 2: the buffer's own reference, and the storage object made to ask.
        return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata) <= 2
    except (AttributeError, RuntimeError):  # an internal API: without it, never reuse
        return False
