"""XCLIPModel: the text and vision towers, the multi-frame integration transformer (MIT) and the
video-specific prompt generator, scored as in the paper (arXiv 2208.02816).

Shapes: B videos, T frames, N labels, D_v vision width, P projection width, S-1 patches per frame.
The text tower does not see the video, so for streaming a label set is encoded once
(``get_text_features``) and every window only runs ``classify``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PreTrainedMixin
from .config import XCLIPConfig
from .layers import Activation, Attention, Encoder, LayerNorm, init_encoder_, init_normal_
from .outputs import BaseModelOutputWithPooling, XCLIPOutput
from .text import XCLIPTextModel
from .vision import XCLIPVisionModel


class XCLIPMultiframeIntegrationTransformer(nn.Module):
    """Temporal encoder over the T projected frame features; the video embedding is their mean."""

    def __init__(self, config):
        super().__init__()
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_frames, config.hidden_size))
        self.encoder = Encoder(config)

    def forward(self, frames: torch.Tensor) -> BaseModelOutputWithPooling:
        """frames: (B, T, P). The residual stream takes the weights' dtype: float32 under autocast
        (bf16 projections, as the reference keeps it), bf16 on a cast copy."""
        frames = frames.to(self.position_embedding.dtype)
        x = self.encoder(frames + self.position_embedding) + frames  # residual skips positions
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x.mean(dim=1))


class XCLIPCrossAttention(nn.Module):
    """Label queries attend over a video's patch features (q/k/v without bias, ``proj`` with bias)."""

    def __init__(self, config: XCLIPConfig):
        super().__init__()
        p = config.projection_dim
        self.num_heads = config.prompt_num_attention_heads
        self.attn_drop = config.prompt_attention_dropout
        self.q_proj = nn.Linear(p, p, bias=False)
        self.k_proj = nn.Linear(p, p, bias=False)
        self.v_proj = nn.Linear(p, p, bias=False)
        self.proj = nn.Linear(p, p)
        self.proj_drop = nn.Dropout(config.prompt_projection_dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """queries (B, N, P); keys, values (B, M, P) -> (B, N, P)."""
        b, n, p = queries.shape
        m = keys.shape[1]
        h = self.num_heads
        q = self.q_proj(queries).view(b, n, h, p // h).transpose(1, 2)
        k = self.k_proj(keys).view(b, m, h, p // h).transpose(1, 2)
        v = self.v_proj(values).view(b, m, h, p // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, p)))


class PromptGeneratorLayer(nn.Module):
    def __init__(self, config: XCLIPConfig):
        super().__init__()
        p = config.projection_dim
        eps = config.text_config.layer_norm_eps
        self.cross_attn = XCLIPCrossAttention(config)
        self.norm1 = LayerNorm(p, eps=eps)
        self.norm3 = LayerNorm(p, eps=eps)
        self.mlp = nn.Sequential(  # indices 0 and 3 are the checkpoint's mlp.0 / mlp.3
            nn.Linear(p, 4 * p),
            Activation(config.prompt_hidden_act),
            nn.Dropout(config.prompt_attention_dropout),
            nn.Linear(4 * p, p),
        )

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual, visual)
        return text + self.mlp(self.norm3(text))


class XCLIPPromptGenerator(nn.Module):
    """Video-specific prompting: label embeddings gather context from the video's patches.

    Returns ``alpha * prompted``, the offset the caller adds to the label embeddings.
    """

    def __init__(self, config: XCLIPConfig):
        super().__init__()
        p = config.projection_dim
        self.layernorm = LayerNorm(p, eps=config.vision_config.layer_norm_eps)
        self.decoder = nn.ModuleList([PromptGeneratorLayer(config) for _ in range(config.prompt_layers)])
        self.alpha = nn.Parameter(torch.full((p,), float(config.prompt_alpha)))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text (B, N, P), visual (B, S-1, P) -> (B, N, P)."""
        visual = self.layernorm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha * text


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over a square (N texts x N videos) score matrix: pair i matches pair i."""
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.T, target)) / 2.0


class XCLIPModel(PreTrainedMixin, nn.Module):
    config_class = XCLIPConfig
    checkpoint_prefix = ""

    def __init__(self, config: XCLIPConfig):
        super().__init__()
        self.config = config
        d_t, d_v, p = config.text_config.hidden_size, config.vision_config.hidden_size, config.projection_dim
        self.text_model = XCLIPTextModel(config.text_config)
        self.vision_model = XCLIPVisionModel(config.vision_config)
        self.visual_projection = nn.Linear(d_v, p, bias=False)
        self.text_projection = nn.Linear(d_t, p, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.prompts_visual_layernorm = LayerNorm(d_v, eps=config.vision_config.layer_norm_eps)
        self.prompts_visual_projection = nn.Parameter(torch.zeros(d_v, p))  # used as x @ W, not transposed
        self.mit = XCLIPMultiframeIntegrationTransformer(config.vision_config.mit_config())
        self.prompts_generator = XCLIPPromptGenerator(config)
        self.init_weights()

    # -- text ------------------------------------------------------------------------------------
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Projected label embeddings (N, P), before prompting and normalisation.

        Returns the tensor (as transformers 4 does; transformers 5 puts it in ``.pooler_output``).
        """
        return self.text_projection(self.text_model(input_ids, attention_mask, position_ids).pooler_output)

    # -- video -----------------------------------------------------------------------------------
    def _encode_video(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False):
        """pixel_values (B, T, 3, H, W) -> vision output, MIT output, prompt context (B, S-1, P)."""
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (B, T, C, H, W), got shape {tuple(pixel_values.shape)}")
        b, t = pixel_values.shape[:2]
        if t != self.config.vision_config.num_frames:
            raise ValueError(f"videos have {t} frames but the model takes {self.config.vision_config.num_frames}")
        vision = self.vision_model(pixel_values.flatten(0, 1), interpolate_pos_encoding)
        frames = self.visual_projection(vision.pooler_output).view(b, t, -1)  # (B, T, P)
        mit = self.mit(frames)
        # Prompt context: normed patch tokens, projected, averaged over time.
        patches = self.prompts_visual_layernorm(vision.last_hidden_state[:, 1:])  # (BT, S-1, D_v)
        context = patches @ self.prompts_visual_projection.to(patches.dtype)  # (BT, S-1, P)
        context = context.view(b, t, *context.shape[1:]).mean(dim=1)  # (B, S-1, P)
        return vision, mit, context

    def get_video_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Video embeddings (B, P) from the MIT, before normalisation."""
        return self._encode_video(pixel_values, interpolate_pos_encoding)[1].pooler_output

    # -- scores ----------------------------------------------------------------------------------
    def _scores(self, video_embeds: torch.Tensor, context: torch.Tensor, text_features: torch.Tensor):
        """video (B, P), context (B, S-1, P), labels (N, P) -> logits (B, N), normed video, normed labels."""
        # The generator runs in its weights' dtype (bf16 in a cast replica copy); the label residual
        # stream it adds to stays float32, so the labels keep their precision whatever the generator's.
        dtype = self.prompts_generator.alpha.dtype
        text = text_features.float().unsqueeze(0).expand(video_embeds.shape[0], -1, -1)  # (B, N, P)
        text = text + self.prompts_generator(text.to(dtype), context.to(dtype)).float()
        # Norms and cosines in float32 even under autocast: cheap (B x N x P), and the logits'
        # precision is decided here.
        with torch.autocast(video_embeds.device.type, enabled=False):
            video_embeds = F.normalize(video_embeds.float(), dim=-1)
            text = F.normalize(text.float(), dim=-1)
            logits = self.logit_scale.float().exp() * torch.einsum("bd,bkd->bk", video_embeds, text)
        return logits, video_embeds, text

    def classify(self, pixel_values: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Streaming fast path: (B, N) logits_per_video for cached label features (N, P)."""
        video_embeds, context = self.encode_videos(pixel_values)
        return self.score_videos(video_embeds, context, text_features)

    def encode_videos(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) -> video embeddings (B, P) and prompt context (B, S-1, P): the label-free
        half of ``classify``, so one batch of windows can be scored against several label sets."""
        _, mit, context = self._encode_video(pixel_values)
        return mit.pooler_output, context

    def score_videos(self, video_embeds: torch.Tensor, context: torch.Tensor, text_features) -> torch.Tensor:
        """Logits (B, N) of encoded videos against cached label features (N, P)."""
        text_features = getattr(text_features, "pooler_output", text_features)
        if text_features.ndim != 2 or text_features.shape[1] != self.config.projection_dim:
            raise ValueError(
                f"text_features must be (N, {self.config.projection_dim}) from get_text_features, "
                f"got shape {tuple(text_features.shape)}"
            )
        return self._scores(video_embeds, context, text_features)[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> XCLIPOutput:
        vision, mit, context = self._encode_video(pixel_values, interpolate_pos_encoding)
        text_out = self.text_model(input_ids, attention_mask, position_ids)
        text_features = self.text_projection(text_out.pooler_output)
        logits_per_video, video_embeds, text_embeds = self._scores(mit.pooler_output, context, text_features)
        logits_per_text = logits_per_video.T
        return XCLIPOutput(
            loss=contrastive_loss(logits_per_text) if return_loss else None,
            logits_per_video=logits_per_video,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            video_embeds=video_embeds,
            text_model_output=text_out,
            vision_model_output=vision,
            mit_output=mit,
        )

    def fuse_for_inference(self) -> XCLIPModel:
        """Inference-only layout changes that keep the weights but not the order of every sum: the
        patch embedding as one GEMM, q/k/v projected by one GEMM per attention layer. Faster on GPUs;
        float32 results then agree with transformers to ~1e-6 of each embedding rather than ~1e-7."""
        self.vision_model.embeddings.patch_gemm = True
        for module in self.modules():
            if isinstance(module, Attention):
                module.fuse_projections()
        return self

    def init_weights(self) -> None:
        """Initialise the parts outside the two towers (they initialise themselves)."""
        c = self.config
        f = c.initializer_factor
        d_t, d_v = c.text_config.hidden_size, c.vision_config.hidden_size
        init_normal_(self.text_projection, d_t**-0.5 * f)
        init_normal_(self.visual_projection, d_v**-0.5 * f)
        nn.init.normal_(self.prompts_visual_projection, std=d_v**-0.5 * f)
        nn.init.normal_(self.mit.position_embedding, std=0.02 * f)
        mit_cfg = c.vision_config.mit_config()
        init_encoder_(self.mit.encoder, mit_cfg.hidden_size, mit_cfg.num_hidden_layers, f)
        for layer in self.prompts_generator.decoder:
            for m in layer.modules():
                if isinstance(m, nn.Linear):
                    init_normal_(m, 0.02)
