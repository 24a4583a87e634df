"""Quantized Linear layers for an inference copy of the video side: int8 on CPUs, FP8 on GPUs.

Nearly all of a window's time in the vision tower, the cross-frame transformer and the prompt
generator is spent in Linear layers; everything else keeps the copy's dtype (the patch embedding,
LayerNorm, GELU, attention's softmax(QK^T)V, the cosines).

``model.precision: int8`` (CPUs): dynamic quantization keeps each Linear's weight as int8 with one
scale per output channel and quantizes its input on each call (one scale per tensor), so the GEMM
runs on int8 dot products (fbgemm on x86: AVX2 everywhere, VNNI where present) and comes back as
float32. PyTorch has announced that its quantized tensors (what these layers hold) go in a later
release; the warning it prints for each one is silenced here once, and the README says so.

``model.precision: float8`` (GPUs with FP8 tensor cores: Hopper, Ada): each Linear keeps its weight
as e4m3 with one scale per output channel (the row's absolute maximum over 448, e4m3's largest
value) and quantizes its input on each call with one scale per row (per token), so an outlier token
costs only its own row precision. The GEMM (``torch._scaled_mm``) multiplies the e4m3 operands,
accumulates in float32, applies both scales and the bias, and returns bf16. A Linear whose sizes the
tensor cores cannot take (features not a multiple of 16) stays bf16. On CPUs the same arithmetic
runs emulated, slower than float32: that is how its accuracy is measured without such a GPU.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
TINY = 1e-12  # the scale of an all-zero row: any positive number does (its quantized values are zero)


def _drop_unfused_projections(model: nn.Module) -> None:
    """The separate q/k/v projections of an attention layer whose fused ``qkv_proj`` runs instead
    (an inference copy: quantizing them would only cost memory)."""
    for module in model.modules():
        if hasattr(module, "qkv_proj"):
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(module, name, None)


def quantize_linears(model: nn.Module) -> nn.Module:
    """In place: every Linear the forward uses becomes a dynamically quantized int8 one."""
    _drop_unfused_projections(model)
    spec = {name: per_channel_dynamic_qconfig for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def int8_linears(model: nn.Module) -> int:
    """How many Linear layers of ``model`` run in int8."""
    return sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def fits_float8(linear: nn.Linear) -> bool:
    """The FP8 GEMM's shape rule: input and output features both a multiple of 16."""
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (M, K) e4m3 and (M, 1) float32 scales, with x ~= q * scale row by row."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=TINY) / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


class Float8Linear(nn.Module):
    """A Linear with an e4m3 weight (one scale per output channel) and e4m3 inputs (one scale per row)."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not fits_float8(linear):
            raise ValueError(f"an FP8 GEMM takes features in multiples of 16, not {linear.in_features} -> "
                             f"{linear.out_features}")
        self.in_features, self.out_features, self.out_dtype = linear.in_features, linear.out_features, out_dtype
        weight, scale = quantize_rows(linear.weight.detach())  # (out, in), (out, 1)
        # Row-major (out, in): its transpose is the column-major (in, out) operand the GEMM takes.
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale.T.contiguous())  # (1, out)
        self.register_buffer("bias", linear.bias.detach().to(out_dtype) if linear.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_rows(x.reshape(-1, self.in_features))  # (M, K), (M, 1)
        out = torch._scaled_mm(q, self.weight.T, scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                               out_dtype=self.out_dtype)  # (M, N)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def float8_linears_(model: nn.Module, out_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """In place: every Linear of ``model`` that fits becomes a ``Float8Linear``."""
    _drop_unfused_projections(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and fits_float8(child):
                setattr(parent, name, Float8Linear(child, out_dtype))
    return model


def float8_linears(model: nn.Module) -> tuple[int, int]:
    """(Linear layers of ``model`` in FP8, Linear layers left in their dtype)."""
    return (sum(isinstance(m, Float8Linear) for m in model.modules()),
            sum(isinstance(m, nn.Linear) for m in model.modules()))
