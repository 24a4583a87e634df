"""The X-CLIP vision tower: a ViT whose layers exchange one message token per frame across time.

Shapes: B videos x T frames; the tower runs on BT images of S = patches + 1 tokens of width D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PreTrainedMixin
from .config import XCLIPVisionConfig
from .layers import MLP, Attention, DropPath, Encoder, LayerNorm, init_encoder_
from .outputs import BaseModelOutputWithPooling


class XCLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: XCLIPVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.patch_size = config.patch_size
        self.image_size = config.image_size
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(config.num_channels, d, config.patch_size, config.patch_size, bias=False)
        self.position_embedding = nn.Embedding((config.image_size // config.patch_size) ** 2 + 1, d)
        self.patch_gemm = False  # set by XCLIPModel.fuse_for_inference

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        n, _, h, w = pixel_values.shape
        if not interpolate_pos_encoding and (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"frames are {h}x{w} but the model takes {self.image_size}x{self.image_size} "
                "(preprocess with the checkpoint's processor, or pass interpolate_pos_encoding=True)"
            )
        if self.patch_gemm:
            patches = self._patchify(pixel_values)  # (n, S-1, D)
        else:
            weight = self.patch_embedding.weight
            patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        # The residual stream takes the weights' dtype, not the patches': float32 under autocast (as
        # the reference keeps it; a bf16 stream there doubles the drift of the logits), bf16 on a cast copy.
        dtype = self.class_embedding.dtype
        x = torch.cat([self.class_embedding.expand(n, 1, -1), patches.to(dtype)], dim=1)  # (n, S, D)
        return x + self._positions(h, w, interpolate_pos_encoding)

    def _patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The patch embedding (a conv with kernel = stride = patch) as one matmul over flattened
        patches: the same products summed in another order, as a plain GEMM, where cuDNN picks a slow
        implicit-GEMM kernel for this shape (4 ms of a 23 ms bf16 batch of 64 clips on an H200)."""
        weight = self.patch_embedding.weight  # (D, 3, p, p)
        p = self.patch_size
        n, c, h, w = pixel_values.shape
        gh, gw = h // p, w // p
        x = pixel_values[:, :, : gh * p, : gw * p].to(weight.dtype)  # a conv drops the remainder too
        x = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
        return x @ weight.reshape(weight.shape[0], -1).T  # (n, gh*gw, D), patches in row-major order

    def _positions(self, h: int, w: int, interpolate: bool) -> torch.Tensor:
        pos = self.position_embedding.weight[None]  # (1, S, D)
        grid = math.isqrt(pos.shape[1] - 1)
        new_h, new_w = h // self.patch_size, w // self.patch_size
        if not interpolate or (new_h, new_w) == (grid, grid):
            return pos
        # Bicubic resampling of the patch grid for frames of another size (the class position is kept).
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(new_h, new_w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, new_h * new_w, -1)], dim=1)


class XCLIPVisionEncoderLayer(nn.Module):
    """Cross-frame communication block (the paper's CCT layer).

    Each frame's class token is turned into a message; messages attend across the T frames of their
    video; each frame then attends over its own tokens plus its message token, which is dropped again
    before the MLP.
    """

    def __init__(self, config: XCLIPVisionConfig):
        super().__init__()
        d = config.hidden_size
        self.num_frames = config.num_frames
        self.message_fc = nn.Linear(d, d)
        self.message_ln = LayerNorm(d, eps=config.layer_norm_eps)
        self.message_attn = Attention(d, config.num_attention_heads, config.attention_dropout)
        self.drop_path = DropPath(config.drop_path_rate)
        self.self_attn = Attention(d, config.num_attention_heads, config.attention_dropout)
        self.layer_norm1 = LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = MLP(d, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        bt, s, d = x.shape
        msg = self.message_fc(x[:, 0]).view(bt // self.num_frames, self.num_frames, d)  # (B, T, D)
        msg = msg + self.drop_path(self.message_attn(self.message_ln(msg)))
        x = torch.cat([x, msg.reshape(bt, 1, d)], dim=1)  # (BT, S+1, D)
        x = x + self.self_attn(self.layer_norm1(x), attn_mask)
        x = x[:, :s]  # the message token never reaches the MLP
        return x + self.mlp(self.layer_norm2(x))


class XCLIPVisionModel(PreTrainedMixin, nn.Module):
    """Vision tower over BT frames; ``pooler_output`` is the post-normed class token of every frame."""

    config_class = XCLIPVisionConfig
    checkpoint_prefix = "vision_model."

    def __init__(self, config: XCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = XCLIPVisionEmbeddings(config)
        self.pre_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = Encoder(config, XCLIPVisionEncoderLayer)
        self.post_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_weights()

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> BaseModelOutputWithPooling:
        """pixel_values: (B*T, 3, H, W), frames of each video consecutive."""
        if pixel_values.ndim != 4 or pixel_values.shape[0] % self.config.num_frames:
            raise ValueError(
                f"pixel_values must be (B*T, C, H, W) with T={self.config.num_frames} frames per video, "
                f"got shape {tuple(pixel_values.shape)}"
            )
        x = self.pre_layernorm(self.embeddings(pixel_values, interpolate_pos_encoding))  # (BT, S, D)
        x = self.encoder(x)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.post_layernorm(x[:, 0]))

    def init_weights(self) -> None:
        c = self.config
        f = c.initializer_factor
        nn.init.normal_(self.embeddings.class_embedding, std=c.hidden_size**-0.5 * f)
        nn.init.normal_(self.embeddings.patch_embedding.weight, std=c.initializer_range * f)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=c.initializer_range * f)
        init_encoder_(self.encoder, c.hidden_size, c.num_hidden_layers, f)
        for layer in self.encoder.layers:
            nn.init.normal_(layer.message_fc.weight, std=c.hidden_size**-0.5 * f)
            nn.init.zeros_(layer.message_fc.bias)
