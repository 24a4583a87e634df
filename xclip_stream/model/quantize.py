"""Dynamic int8 for CPUs (``model.precision: int8``).

Nearly all of a window's time in the vision tower, the cross-frame transformer and the prompt
generator is spent in Linear layers. Dynamic quantization keeps each Linear's weight as int8 with one
scale per output channel and quantizes its input on each call (one scale per tensor), so the GEMM
runs on int8 dot products (fbgemm on x86: AVX2 everywhere, VNNI where present) and comes back as
float32. Everything else stays float32: the patch embedding, LayerNorm, GELU, attention's
softmax(QK^T)V, the cosines.

PyTorch has announced that its quantized tensors (what these layers hold) go in a later release;
the warning it prints for each one is silenced here once, and the README says so.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic


def quantize_linears(model: nn.Module) -> nn.Module:
    """In place: every Linear the forward uses becomes an int8 one. The separate q/k/v projections
    of an attention layer whose fused ``qkv_proj`` runs instead are dropped (this is an inference
    copy; quantizing them would only cost memory)."""
    for module in model.modules():
        if hasattr(module, "qkv_proj"):
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(module, name, None)
    spec = {name: per_channel_dynamic_qconfig for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def int8_linears(model: nn.Module) -> int:
    """How many Linear layers of ``model`` run in int8."""
    return sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
