"""The nets' non-linearity by name (Sec. 3.1, Fig. 1): ReLU, the non-saturating one the paper
trains with, or the saturating tanh it replaced."""

from torch import nn

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def activation(name: str) -> nn.Module:
    """A new ReLU or tanh module (each layer its own, so that a net's modules name its layers)."""
    check_activation(name)
    return nn.ReLU() if name == "relu" else nn.Tanh()
