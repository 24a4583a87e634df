"""Model outputs with the field names of the Hugging Face classes.

Like transformers' ModelOutput they are dataclasses that also index like a tuple of their non-None
fields (``out[0]``) and like a dict (``out["logits_per_video"]``), so code written against
transformers keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


class _Output:
    def to_tuple(self) -> tuple:
        return tuple(v for v in (getattr(self, f.name) for f in fields(self)) if v is not None)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: int | str):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class BaseModelOutputWithPooling(_Output):
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


@dataclass
class XCLIPOutput(_Output):
    loss: torch.Tensor | None = None
    logits_per_video: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None  # (B, N, P), L2-normalised, video-specific prompts added
    video_embeds: torch.Tensor | None = None  # (B, P), L2-normalised
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    mit_output: BaseModelOutputWithPooling | None = None
