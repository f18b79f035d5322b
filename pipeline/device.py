"""The one rule for choosing a torch device.

>>> pick_device("cpu")
'cpu'
"""

from __future__ import annotations


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
