"""Transformer building blocks shared by the text tower, the vision tower and the MIT.

Attribute names follow the Hugging Face checkpoint keys (q_proj, out_proj, layer_norm1, mlp.fc1, ...)
so a state dict loads with no mapping table. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class Activation(nn.Module):
    """An activation chosen by its config name (a module, so it can sit in nn.Sequential)."""

    def __init__(self, name: str):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics are always computed in float32: the one place precision is decided.

    Where input and weights share a dtype this is nn.LayerNorm, whose kernels accumulate bf16/fp16 in
    float32; mixed (bf16 activations over float32 weights, as under autocast) it upcasts explicitly,
    which costs two extra passes over the activations.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or self.weight is None or x.dtype == self.weight.dtype:
            return super().forward(x)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections (CLIP's)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = heads
        self.head_dim = width // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def fuse_projections(self) -> None:
        """Inference only: one (3D, D) projection instead of three (D, D), a wider GEMM that runs
        closer to peak. The checkpoint's q/k/v weights are kept (they are what a state dict holds)."""
        self.qkv_proj = nn.Linear(self.q_proj.in_features, 3 * self.q_proj.out_features,
                                  device=self.q_proj.weight.device, dtype=self.q_proj.weight.dtype)
        with torch.no_grad():
            projs = (self.q_proj, self.k_proj, self.v_proj)
            self.qkv_proj.weight.copy_(torch.cat([p.weight for p in projs]))
            self.qkv_proj.bias.copy_(torch.cat([p.bias for p in projs]))
        self.qkv_proj.requires_grad_(False)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, width = x.shape
        # (n, L, D) -> (n, heads, L, head_dim)
        if hasattr(self, "qkv_proj"):
            q, k, v = self.qkv_proj(x).view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (
                proj(x).view(n, length, self.num_heads, self.head_dim).transpose(1, 2)
                for proj in (self.q_proj, self.k_proj, self.v_proj)
            )
        if attn_mask is not None and attn_mask.dtype != q.dtype:  # autocast: q is bf16/fp16, the mask is not
            attn_mask = attn_mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = Activation(act)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config):
        super().__init__()
        width = config.hidden_size
        self.self_attn = Attention(width, config.num_attention_heads, config.attention_dropout)
        self.layer_norm1 = LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = MLP(width, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attn_mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    """A stack of encoder layers (``encoder.layers.{i}`` in checkpoints)."""

    def __init__(self, config, layer_cls: type[nn.Module] = EncoderLayer):
        super().__init__()
        self.layers = nn.ModuleList([layer_cls(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drops the whole branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * mask / keep


def init_normal_(module: nn.Module, std: float) -> None:
    """Normal init for Linear/Embedding weights, zero biases (CLIP's initialisation scheme)."""
    nn.init.normal_(module.weight, std=std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def init_encoder_(encoder: Encoder, width: int, num_layers: int, factor: float) -> None:
    """CLIP's scaled init for attention and MLP weights of every layer of an encoder."""
    in_std = width**-0.5 * (2 * num_layers) ** -0.5 * factor
    for layer in encoder.layers:
        for attn in (m for m in layer.modules() if isinstance(m, Attention)):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                init_normal_(proj, in_std)
            init_normal_(attn.out_proj, width**-0.5 * factor)
        init_normal_(layer.mlp.fc1, (2 * width) ** -0.5 * factor)
        init_normal_(layer.mlp.fc2, in_std)


def causal_padding_mask(attention_mask: torch.Tensor | None, length: int, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    """Additive (n or 1, 1, L, L) mask: causal, plus padding when ``attention_mask`` (n, L) is given.

    A large finite negative (not -inf) keeps rows that are fully masked (left padding) finite.
    """
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].to(device=device, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)

