"""X-CLIP configuration: the fields and defaults of Hugging Face's config.json (xclip-base-patch32).

Plain dataclasses, so a config is validated once when it is built and then passed down. Keys of a
config.json that we do not model (``transformers_version``, generation defaults of old configs, ...)
are ignored on load; everything needed to rebuild the model is written back by ``save_pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .files import read_json_object

CONFIG_NAME = "config.json"


class _Config:
    """Shared dict/JSON plumbing for the three config classes."""

    model_type: ClassVar[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["model_type"] = self.model_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(self.to_json_string())

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        return cls.from_dict(read_config_json(folder))

    def _check_heads(self, width: int, heads: int, what: str) -> None:
        if heads <= 0 or width % heads:
            raise ValueError(f"{type(self).__name__}: {what} width {width} is not divisible by {heads} heads")


def read_config_json(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/config.json`` with errors that name the folder and the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist or is not a folder")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an X-CLIP checkpoint: {CONFIG_NAME} is missing")
    return read_json_object(path)


class _TowerConfig(_Config):
    """A tower's config, which also loads from a full X-CLIP config.json (its ``base_config_key``)."""

    base_config_key: ClassVar[str]

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        data = read_config_json(folder)
        if data.get("model_type") == XCLIPConfig.model_type:
            return getattr(XCLIPConfig.from_dict(data), cls.base_config_key)
        return cls.from_dict(data)


@dataclass
class XCLIPTextConfig(_TowerConfig):
    model_type: ClassVar[str] = "xclip_text_model"
    base_config_key: ClassVar[str] = "text_config"

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2

    def __post_init__(self):
        self._check_heads(self.hidden_size, self.num_attention_heads, "text")


@dataclass
class XCLIPVisionConfig(_TowerConfig):
    model_type: ClassVar[str] = "xclip_vision_model"
    base_config_key: ClassVar[str] = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mit_hidden_size: int = 512
    mit_intermediate_size: int = 2048
    mit_num_hidden_layers: int = 1
    mit_num_attention_heads: int = 8
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    num_frames: int = 8
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    drop_path_rate: float = 0.0

    def __post_init__(self):
        self._check_heads(self.hidden_size, self.num_attention_heads, "vision")
        self._check_heads(self.mit_hidden_size, self.mit_num_attention_heads, "MIT")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")

    def mit_config(self) -> XCLIPVisionConfig:
        """The Multi-frame Integration Transformer reuses the vision config with its own sizes."""
        return dataclasses.replace(
            self,
            hidden_size=self.mit_hidden_size,
            intermediate_size=self.mit_intermediate_size,
            num_hidden_layers=self.mit_num_hidden_layers,
            num_attention_heads=self.mit_num_attention_heads,
        )


@dataclass
class XCLIPConfig(_Config):
    model_type: ClassVar[str] = "xclip"

    text_config: XCLIPTextConfig = field(default_factory=XCLIPTextConfig)
    vision_config: XCLIPVisionConfig = field(default_factory=XCLIPVisionConfig)
    projection_dim: int = 512
    prompt_layers: int = 2
    prompt_alpha: float = 0.1
    prompt_hidden_act: str = "quick_gelu"
    prompt_num_attention_heads: int = 8
    prompt_attention_dropout: float = 0.0
    prompt_projection_dropout: float = 0.0
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0

    def __post_init__(self):
        if isinstance(self.text_config, dict) or self.text_config is None:
            self.text_config = XCLIPTextConfig.from_dict(self.text_config or {})
        if isinstance(self.vision_config, dict) or self.vision_config is None:
            self.vision_config = XCLIPVisionConfig.from_dict(self.vision_config or {})
        self._check_heads(self.projection_dim, self.prompt_num_attention_heads, "prompt generator")
        if self.vision_config.mit_hidden_size != self.projection_dim:
            raise ValueError(
                f"vision_config.mit_hidden_size ({self.vision_config.mit_hidden_size}) must equal projection_dim "
                f"({self.projection_dim}): the MIT runs on projected frame features"
            )

    @classmethod
    def from_text_vision_configs(
        cls, text_config: XCLIPTextConfig, vision_config: XCLIPVisionConfig, **kwargs
    ) -> XCLIPConfig:
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XCLIPConfig:
        data = dict(data)
        if data.get("model_type", "xclip") != "xclip":
            raise ValueError(f"config model_type is {data['model_type']!r}, expected 'xclip'")
        # Configs written by old transformers releases carry text_config_dict / vision_config_dict,
        # which take precedence over text_config / vision_config.
        for name in ("text_config", "vision_config"):
            override = data.pop(f"{name}_dict", None)
            if override:
                data[name] = {**(data.get(name) or {}), **override}
        return super().from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["text_config"] = self.text_config.to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        return out
