"""The benchmark commands' counts and durations, checked as argparse reads them: 0 or a negative
number would otherwise be taken as "the default" or time nothing, silently."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _at_least(kind: type, minimum: float, strict: bool) -> Callable[[str], float]:
    wanted = (f"a whole number >= {minimum:g}" if kind is int
              else f"a number {'>' if strict else '>='} {minimum:g}")

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


positive_int = _at_least(int, 1, strict=False)
non_negative_int = _at_least(int, 0, strict=False)
positive_float = _at_least(float, 0, strict=True)
