"""Video preprocessing for X-CLIP, in torch, plus the text+video ``XCLIPProcessor``.

The released X-CLIP checkpoints' ``preprocessor_config.json`` names ``VideoMAEFeatureExtractor``;
transformers 5 loads it as ``VideoMAEImageProcessor`` (torchvision backend, the default when
torchvision is installed) or ``VideoMAEImageProcessorPil``. Per frame: resize the shortest edge to
``size`` (bilinear, antialiased), center crop, then rescale by 1/255 and normalise. This module
mirrors the torchvision backend's arithmetic step by step:

* output size of a shortest-edge resize: ``(size, int(size * long / short))`` (truncated), and no
  resize at all when that equals the input size;
* resize: ``F.interpolate(..., antialias=True, align_corners=False)``; on CPU on the uint8 frames
  directly when torchvision would (bicubic always, bilinear when torch reports an "AVX2" CPU),
  otherwise in float32 followed by clamp, round and cast back to uint8 (e.g. on GPU);
* center crop at ``int((H - crop) / 2)``, zero padding first when the image is smaller than the crop;
* rescale + normalise fused as ``(x - mean / rescale_factor) / (std / rescale_factor)`` in float32.

The work is split in two because the streaming pipeline keeps frames as preprocessed uint8 once
(:meth:`XCLIPVideoProcessor.resize_and_crop`, 4x smaller than float32) and normalises a clip only
when it is sent to the model (:meth:`XCLIPVideoProcessor.normalize`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .files import read_json_object
from .tokenizer import BatchEncoding, CLIPTokenizer

PREPROCESSOR_CONFIG = "preprocessor_config.json"
# PIL resampling codes used in preprocessor_config.json -> torch interpolate modes.
_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Frame arithmetic (pure functions on uint8 (N,3,H,W) tensors)
# --------------------------------------------------------------------------------------------


def resize_output_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """Target (height, width) of a resize, with transformers' rounding.

    ``{"shortest_edge": s}``: the short side becomes ``s`` and the long side ``int(s * long / short)``
    (truncated, not rounded). ``{"height": h, "width": w}``: exactly that.
    """
    if "shortest_edge" in size:
        s = size["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(s * long / short)
        return (new_long, s) if width <= height else (s, new_long)
    return size["height"], size["width"]


def _native_uint8_resize(device: torch.device, mode: str) -> bool:
    """Whether torchvision would interpolate uint8 frames directly (it does on CPU for bicubic, and
    for bilinear when torch's CPU capability string contains "AVX2"); the native uint8 kernel and
    the float32 path may differ by one grey level, so we take the same branch."""
    if device.type != "cpu":
        return False
    return mode == "bicubic" or "AVX2" in torch.backends.cpu.get_cpu_capability()


def resize_frames(frames: torch.Tensor, out_hw: tuple[int, int], mode: str, exact: bool = True) -> torch.Tensor:
    """Antialiased resize of uint8 frames (N,3,H,W) -> (N,3,*out_hw), as torchvision does it.
    ``exact=False`` always takes torch's native uint8 kernel on CPU (up to 1 grey level from
    torchvision where it would go through float32, and about 5x faster there)."""
    if tuple(frames.shape[-2:]) == tuple(out_hw):
        return frames
    if _native_uint8_resize(frames.device, mode) or (not exact and frames.device.type == "cpu"):
        return F.interpolate(frames, size=out_hw, mode=mode, align_corners=False, antialias=True)
    out = F.interpolate(frames.float(), size=out_hw, mode=mode, align_corners=False, antialias=True)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def center_crop_frames(frames: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """Center crop (N,3,H,W) -> (N,3,crop_h,crop_w); zero-pads first (extra pixel right/bottom)
    when the frames are smaller than the crop."""
    height, width = frames.shape[-2:]
    if crop_h > height or crop_w > width:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        # F.pad order: (left, right, top, bottom)
        frames = F.pad(frames, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=0)
        height, width = frames.shape[-2:]
    top = int((height - crop_h) / 2.0)
    left = int((width - crop_w) / 2.0)
    return frames[..., top : top + crop_h, left : left + crop_w]


# --------------------------------------------------------------------------------------------
# Video processor
# --------------------------------------------------------------------------------------------


def _size_dict(value: Any, name: str, allow_shortest_edge: bool) -> dict[str, int]:
    """Normalise an HF size entry: an int, {"shortest_edge": n} or {"height": h, "width": w}."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be an int or a dict, got {value!r}")
    if isinstance(value, int):
        value = {"shortest_edge": value} if allow_shortest_edge else {"height": value, "width": value}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an int or a dict, got {value!r}")
    keys = set(value)
    if allow_shortest_edge and keys == {"shortest_edge"}:
        result = {"shortest_edge": value["shortest_edge"]}
    elif keys == {"height", "width"}:
        result = {"height": value["height"], "width": value["width"]}
    else:
        allowed = "{'shortest_edge'} or {'height', 'width'}" if allow_shortest_edge else "{'height', 'width'}"
        raise ValueError(f"{name} must have keys {allowed}, got {sorted(keys)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in result.values()):
        raise ValueError(f"{name} values must be positive ints, got {result}")
    return result


def _frames_to_tensor(video: Any, device: torch.device | str | None, channels_last: bool = False) -> torch.Tensor:
    """One video (T,H,W,3) array/tensor or list of (H,W,3) frames -> uint8 tensor (T,3,H,W);
    ``channels_last`` keeps the input's memory layout (a view), which torch's uint8 resize prefers."""
    if isinstance(video, (list, tuple)):
        if len(video) == 0:
            raise ValueError("empty video: no frames given")
        frames = [_as_tensor(f, "frame") for f in video]
        for i, f in enumerate(frames):
            if f.ndim != 3:
                raise ValueError(f"frame {i} must have shape (H, W, 3), got {tuple(f.shape)}")
            if f.shape != frames[0].shape:
                raise ValueError(
                    f"all frames of a video must share one shape: frame 0 is {tuple(frames[0].shape)}, "
                    f"frame {i} is {tuple(f.shape)}"
                )
        video = torch.stack(frames)
    else:
        video = _as_tensor(video, "video")
        if video.ndim != 4:
            raise ValueError(f"a video must have shape (T, H, W, 3), got {tuple(video.shape)}")
    if video.shape[-1] != 3:
        raise ValueError(f"frames must be channels-last RGB (H, W, 3), got shape {tuple(video.shape)}")
    if video.shape[0] == 0:
        raise ValueError("empty video: no frames given")
    if video.shape[1] == 0 or video.shape[2] == 0:
        raise ValueError(f"frames must be non-empty, got shape {tuple(video.shape)}")
    if video.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0..255), got {video.dtype}")
    if device is not None:
        video = video.to(device)
    video = video.permute(0, 3, 1, 2)  # (T,3,H,W)
    return video if channels_last else video.contiguous()


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:  # e.g. np.frombuffer; torch.from_numpy warns on read-only memory
            x = x.copy()
        return torch.from_numpy(x)
    raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def _split_videos(videos: Any) -> list[Any]:
    """One video or a batch of videos -> list of videos (each a (T,H,W,3) array or list of frames)."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            return list(videos)
        if videos.ndim == 4:
            return [videos]
        raise ValueError(f"videos must have shape (T, H, W, 3) or (B, T, H, W, 3), got {tuple(videos.shape)}")
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise ValueError("no videos given")
        first = videos[0]
        if isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 3:
            return [videos]  # a single video as a list of frames
        return list(videos)
    raise TypeError(f"videos must be an array, a tensor or a list, got {type(videos).__name__}")


@dataclass
class XCLIPVideoProcessor:
    """Resize (shortest edge), center crop, rescale and normalise video frames, in torch.

    Defaults are those of microsoft/xclip-base-patch32's preprocessor_config.json.
    Frames are uint8 RGB, channels last.
    """

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = 2
    do_center_crop: bool = True
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, "size", allow_shortest_edge=True)
        self.crop_size = _size_dict(self.crop_size, "crop_size", allow_shortest_edge=False)
        if self.resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be 2 (bilinear) or 3 (bicubic), got {self.resample!r}")
        if not self.rescale_factor > 0:
            raise ValueError(f"rescale_factor must be > 0, got {self.rescale_factor}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                value = [float(value)] * 3
            value = [float(v) for v in value]
            if len(value) != 3:
                raise ValueError(f"{name} must have 3 values (RGB), got {value}")
            setattr(self, name, value)
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")

    # ---- config ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> XCLIPVideoProcessor:
        """Build from a preprocessor_config.json dict; keys this class does not use are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> XCLIPVideoProcessor:
        """Load ``preprocessor_config.json`` from a checkpoint folder (or that file's path)."""
        path = Path(folder)
        if path.is_dir():
            path = path / PREPROCESSOR_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{PREPROCESSOR_CONFIG} not found in {folder}")
        return cls.from_dict(read_json_object(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as preprocessor_config.json holds it (transformers reads it back as
        ``VideoMAEImageProcessor``, the class it uses for the released checkpoints)."""
        return {
            **asdict(self),
            "image_processor_type": "VideoMAEImageProcessor",
            "processor_class": "XCLIPProcessor",
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PREPROCESSOR_CONFIG
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    # ---- processing --------------------------------------------------------------------------

    def resize_and_crop(
        self, frames: Any, device: torch.device | str | None = None, exact: bool = True
    ) -> torch.Tensor:
        """uint8 frames (T,H,W,3) array/tensor or list of (H,W,3) -> uint8 tensor (T,3,S,S).

        ``device`` moves the raw frames first (e.g. "cuda"), so the resize runs there.
        ``exact=False`` trades up to one grey level for speed (see ``resize_frames``): streams use it.
        """
        video = _frames_to_tensor(frames, device, channels_last=not exact)  # (T,3,H,W) uint8
        if self.do_resize:
            out_hw = resize_output_size(video.shape[-2], video.shape[-1], self.size)
            video = resize_frames(video, out_hw, _RESAMPLE_MODES[self.resample], exact)
        if self.do_center_crop:
            video = center_crop_frames(video, self.crop_size["height"], self.crop_size["width"])
        return video.contiguous()

    def normalization(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale), each (3, 1, 1) float32, with ``normalize(x) == (x - shift) / scale``: rescale and
        normalise fused, as transformers does. Made once by callers that normalise every batch on a device
        (a CUDA graph cannot make tensors from host data while it is captured)."""
        shift, scale = torch.zeros(3), torch.ones(3)
        if self.do_normalize:
            shift, scale = torch.tensor(self.image_mean), torch.tensor(self.image_std)
        if self.do_rescale:
            shift, scale = shift * (1.0 / self.rescale_factor), scale * (1.0 / self.rescale_factor)
        return shift[:, None, None].to(device), scale[:, None, None].to(device)

    def normalize(self, frames: torch.Tensor,
                  normalization: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """uint8 (...,3,S,S) -> float32 (...,3,S,S), rescaled and normalised; ``normalization`` is
        :meth:`normalization` made ahead on the frames' device."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a torch tensor, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (from resize_and_crop), got {frames.dtype}")
        if frames.ndim < 3 or frames.shape[-3] != 3:
            raise ValueError(f"frames must have shape (..., 3, H, W), got {tuple(frames.shape)}")
        shift, scale = normalization if normalization is not None else self.normalization(frames.device)
        return (frames.float() - shift) / scale

    def __call__(
        self, videos: Any, return_tensors: str | None = "pt", device: torch.device | str | None = None
    ) -> BatchEncoding:
        """One video or a list of videos -> {"pixel_values": float32 (B,T,3,S,S)}.

        A video is a list of (H,W,3) uint8 frames or a (T,H,W,3) uint8 array/tensor; a (B,T,H,W,3)
        array is a batch. All videos of a batch must have the same number of frames.
        return_tensors: "pt" (tensor), "np" (array) or None (list of (T,3,S,S) tensors).
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        clips = [self.resize_and_crop(v, device=device) for v in _split_videos(videos)]
        if return_tensors is None:
            return BatchEncoding(pixel_values=[self.normalize(c) for c in clips])
        shapes = {tuple(c.shape) for c in clips}
        if len(shapes) > 1:
            frame_counts = [c.shape[0] for c in clips]
            raise ValueError(
                f"videos in one batch must have the same number of frames and output size, got "
                f"frame counts {frame_counts} and shapes {sorted(shapes)}"
            )
        pixel_values = self.normalize(torch.stack(clips))  # (B,T,3,S,S)
        if return_tensors == "np":
            pixel_values = pixel_values.cpu().numpy()
        return BatchEncoding(pixel_values=pixel_values)

    preprocess = __call__


# --------------------------------------------------------------------------------------------
# Text + video processor
# --------------------------------------------------------------------------------------------


class XCLIPProcessor:
    """Tokenizer + video processor behind one call, like transformers' ``XCLIPProcessor``.

    ``processor(text=labels, videos=clip)`` -> BatchEncoding with ``input_ids`` and
    ``attention_mask`` (N,L) and ``pixel_values`` (B,T,3,S,S), whichever inputs were given.
    """

    def __init__(self, tokenizer: CLIPTokenizer, video_processor: XCLIPVideoProcessor) -> None:
        self.tokenizer = tokenizer
        self.video_processor = video_processor

    @property
    def image_processor(self) -> XCLIPVideoProcessor:
        """Alias: transformers calls the video processor ``image_processor``."""
        return self.video_processor

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> XCLIPProcessor:
        return cls(CLIPTokenizer.from_pretrained(folder), XCLIPVideoProcessor.from_pretrained(folder))

    def save_pretrained(self, folder: str | Path) -> list[Path]:
        return [*self.tokenizer.save_pretrained(folder), self.video_processor.save_pretrained(folder)]

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        device: torch.device | str | None = None,
    ) -> BatchEncoding:
        if text is None and videos is None:
            raise ValueError("nothing to process: give text and/or videos")
        out = BatchEncoding()
        if text is not None:
            out.update(
                self.tokenizer(
                    text,
                    padding=padding,
                    truncation=truncation,
                    max_length=max_length,
                    return_tensors=return_tensors,
                )
            )
            if device is not None and return_tensors == "pt":
                out = out.to(device)
        if videos is not None:
            out.update(self.video_processor(videos, return_tensors=return_tensors, device=device))
        return out

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"XCLIPProcessor(tokenizer={self.tokenizer!r}, video_processor={self.video_processor!r})"
