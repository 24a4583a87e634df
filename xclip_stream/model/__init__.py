"""Native PyTorch X-CLIP with the public API of the Hugging Face classes.

Imports torch, tokenizers, numpy and safetensors only: no Ray, no Kafka, no transformers.
"""

from .config import XCLIPConfig, XCLIPTextConfig, XCLIPVisionConfig
from .outputs import BaseModelOutputWithPooling, XCLIPOutput
from .text import XCLIPTextModel
from .vision import XCLIPVisionModel
from .xclip import XCLIPModel

__all__ = [
    "BaseModelOutputWithPooling",
    "XCLIPConfig",
    "XCLIPModel",
    "XCLIPOutput",
    "XCLIPTextConfig",
    "XCLIPTextModel",
    "XCLIPVisionConfig",
    "XCLIPVisionModel",
]
