"""The one home of device rules: which device, which dtype on it, how big a batch fits.

>>> pick_device("cpu")
'cpu'
>>> default_dtype("cpu")
torch.float32
>>> auto_batch_size("cpu", per_item_bytes=10**6)
8
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Questions per forward pass on a CPU, and when nothing better is known.
CPU_BATCH = 8


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """The compute dtype for inference on ``device``: bfloat16 on GPUs with native bf16
    (compute capability 8.0 and later: A100, L4, H100), float16 on older ones (T4, V100),
    float32 on a CPU. ``torch.cuda.is_bf16_supported()`` is not asked: it also says yes where
    bf16 is only emulated (a T4), which is slower than fp16."""
    import torch

    if not str(device).startswith("cuda"):
        return torch.float32
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return torch.bfloat16 if major >= 8 else torch.float16


def auto_batch_size(device: str, per_item_bytes: int, *, default: int = CPU_BATCH,
                    fraction: float = 0.5, cap: int = 256) -> int:
    """Items per forward pass: ``default`` on a CPU; on CUDA as many as ``fraction`` of the
    GPU's free memory holds at ``per_item_bytes`` each (at least 1, at most ``cap``)."""
    if not str(device).startswith("cuda"):
        return default
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    n = int(max(1, min(cap, fraction * free // max(1, per_item_bytes))))
    log.info("batch size %d from %.1f of %.1f GB free on %s (~%.0f MB an item)", n, free / 1e9,
             total / 1e9, device, per_item_bytes / 1e6)
    return n


def activation_bytes(config, sequences: int, length: int, dtype_bytes: int) -> int:
    """Peak inference activations of ``sequences`` sequences of ``length`` tokens through a
    transformer ``config`` without gradients (one layer's live tensors at a time): hidden
    states and the feed-forward expansion (~``(4 + intermediate/hidden) x hidden``) plus the
    attention scores (``heads x length``) per token, doubled for temporaries."""
    hidden = int(getattr(config, "hidden_size", 768) or 768)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 12) or 12)
    per_token = 4 * hidden + inter + heads * length
    return 2 * sequences * length * per_token * dtype_bytes
