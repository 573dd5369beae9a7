"""The constructor check the losses share."""
from __future__ import annotations


def require_positive(**values: float) -> None:
    """A ValueError naming the first parameter that is not > 0 (``require_positive(temperature=t)``)."""
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
