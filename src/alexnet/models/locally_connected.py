"""A locally connected layer: a convolution whose filters are not shared across positions.

cuda-convnet calls it ``type=local`` ("Locally-connected layer with unshared weights": "a
different set of filters is applied at every (x, y) location in the input image. Aside from that,
it behaves exactly as a convolutional layer"). The paper's four-layer CIFAR-10 nets use two of
them on top of two conv layers (``example-layers/layers-conv-local-11pct.cfg`` and ``-13pct.cfg``,
``[local3]`` and ``[local4]``).

What the layer holds, from cuda-convnet's ``layer.py`` (``LocalUnsharedLayerParser``):

* weights: ``modules * filterPixels * filterChannels`` rows by ``filters`` columns, i.e. a full
  filter bank (out_channels x in_channels x k x k) for each of the ``modules`` output positions;
* biases: ``modules * filters``, one per output position and filter (a conv layer with
  ``sharedBiases=1`` has one per filter), initialised to 0 there.

Output size: 1 + floor((in + 2 * padding - k) / stride), as ``torch.nn.Conv2d``. cuda-convnet
rounds up instead (``modulesX = 1 + ceil(...)``); the two agree whenever the stride divides
in + 2 * padding - k, which includes every stride-1 layer, as in the CIFAR-10 files.
"""

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


class LocallyConnected2d(nn.Module):
    """2-D locally connected layer (unshared weights) with a bias per output position.

    Args:
        in_channels: C, channels of the input.
        out_channels: O, filters at each output position.
        in_size: (H, W) of the input (or one int for square inputs); unlike a convolution the
            layer owns one filter bank per output position, so the input size is fixed.
        kernel_size, stride, padding: as ``torch.nn.Conv2d`` (ints or pairs; zero padding).
        bias: add a learned bias per output position and filter.

    Input: (B, C, H, W). Output: (B, O, H_out, W_out).

    Parameters: ``weight`` (H_out, W_out, O, C, kh, kw), the conv-style filter bank of every
    output position; ``bias`` (O, H_out, W_out).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.in_size = _pair(in_size, "in_size")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"need kernel_size >= 1, stride >= 1, padding >= 0; got {self.kernel_size}, "
                f"{self.stride}, {self.padding}"
            )
        self.out_size: tuple[int, int] = tuple(  # type: ignore[assignment]
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(self.in_size, self.kernel_size, self.stride, self.padding,
                                  strict=True)
        )
        if min(self.out_size) < 1:
            raise ValueError(
                f"a {self.kernel_size} kernel with padding {self.padding} does not fit an "
                f"input of {self.in_size}"
            )
        oh, ow = self.out_size
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(oh, ow, out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels, oh, ow)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default for a convolution with the same fan-in: U(-1/sqrt(fan_in), ...)."""
        # nn.Conv2d's kaiming_uniform_(a=sqrt(5)) bound is gain * sqrt(3 / fan_in) with
        # gain = sqrt(2 / 6), i.e. 1 / sqrt(fan_in); its bias uses the same bound.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.in_size:
            raise ValueError(
                f"expected input (B, {self.in_channels}, {self.in_size[0]}, {self.in_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        oh, ow = self.out_size
        kh, kw = self.kernel_size
        sh, sw = self.stride
        batch = x.shape[0]
        padded = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        # Every receptive field as a row, position-major: (L, B, C*kh*kw) with L = oh*ow in
        # row-major order and each row in the (C, kh, kw) order of a conv weight's rows. Built
        # from the kh*kw shifted views of the input, one copy, so that the products below read
        # it as it lies: F.unfold's (B, C*kh*kw, L) would need a transpose that costs a CPU more
        # than the products themselves (docs/speed.md, the locally connected layer).
        shifted = [padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                   .permute(2, 3, 0, 1) for i in range(kh) for j in range(kw)]
        cols = torch.stack(shifted, dim=-1).reshape(oh * ow, batch, -1)
        # One matrix product per position: (L, B, C*kh*kw) x (L, C*kh*kw, O) -> (L, B, O).
        weight = self.weight.reshape(oh * ow, self.out_channels, -1)
        out = torch.bmm(cols, weight.transpose(1, 2))
        out = out.reshape(oh, ow, batch, -1).permute(2, 3, 0, 1)  # (B, O, oh, ow), a view
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"out_size={self.out_size}, bias={self.bias is not None}"
        )


__all__ = ["LocallyConnected2d"]
