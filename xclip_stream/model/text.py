"""The CLIP text tower: token + position embeddings, a causal pre-LN transformer, pooling at end-of-text."""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import PreTrainedMixin
from .config import XCLIPTextConfig
from .layers import Encoder, LayerNorm, causal_padding_mask, init_encoder_
from .outputs import BaseModelOutputWithPooling


class XCLIPTextEmbeddings(nn.Module):
    def __init__(self, config: XCLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length > self.position_embedding.num_embeddings:
            raise ValueError(
                f"text of {length} tokens is longer than the model's {self.position_embedding.num_embeddings} "
                "positions: tokenize with truncation=True"
            )
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class XCLIPTextModel(PreTrainedMixin, nn.Module):
    """Text transformer; ``pooler_output`` is the final-normed state at the end-of-text token.

    As in the reference checkpoints, end-of-text is the largest token id, so its position is
    ``input_ids.argmax(-1)`` (the first one, when padding also uses it).
    """

    config_class = XCLIPTextConfig
    checkpoint_prefix = "text_model."

    def __init__(self, config: XCLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = XCLIPTextEmbeddings(config)
        self.encoder = Encoder(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        if input_ids is None:
            raise ValueError("input_ids are required")
        input_ids = input_ids.view(-1, input_ids.shape[-1])  # (N, L)
        x = self.embeddings(input_ids, position_ids)  # (N, L, D)
        mask = causal_padding_mask(attention_mask, input_ids.shape[1], x.dtype, x.device)
        x = self.final_layer_norm(self.encoder(x, mask))
        pooled = x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]  # (N, D)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)

    def init_weights(self) -> None:
        c = self.config
        nn.init.normal_(self.embeddings.token_embedding.weight, std=0.02 * c.initializer_factor)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.01 * c.initializer_factor)
        init_encoder_(self.encoder, c.hidden_size, c.num_hidden_layers, c.initializer_factor)
