"""xclip-stream: streaming open-vocabulary video analytics with a native PyTorch X-CLIP."""

__version__ = "0.1.0"
