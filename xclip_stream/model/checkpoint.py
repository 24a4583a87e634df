"""Reading and writing Hugging Face checkpoint folders (config.json + weights), without pickle.

Weights come from model.safetensors, a sharded model.safetensors.index.json, or the legacy
pytorch_model.bin (opened with ``weights_only=True``, which refuses arbitrary objects). Our modules use
the checkpoint's key names as attribute names, so loading is a plain ``load_state_dict``; what this
module adds is the clear error a user needs when the folder is not the checkpoint they think it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file

from .files import read_json_object

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
IGNORED_SUFFIXES = ("position_ids",)  # non-persistent buffers some exporters still write

M = TypeVar("M", bound="PreTrainedMixin")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weight file {path} is missing")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read as a plain tensor file (weights_only=True): {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, from whichever weight format it has."""
    folder = Path(folder)
    for single, index in ((SAFE_WEIGHTS, SAFE_INDEX), (TORCH_WEIGHTS, TORCH_INDEX)):
        if (folder / single).is_file():
            return _load_file(folder / single)
        if (folder / index).is_file():
            weight_map = read_json_object(folder / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{folder / index} has no weight_map")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(_load_file(folder / shard))
            return state
    raise FileNotFoundError(
        f"{str(folder)!r} is not an X-CLIP checkpoint: no weights found "
        f"(looked for {SAFE_WEIGHTS}, {SAFE_INDEX}, {TORCH_WEIGHTS}, {TORCH_INDEX})"
    )


def checkpoint_digest(folder: str | Path) -> str:
    """A short digest of what a checkpoint folder scores with (config.json and its weight files, by
    name and content): two replicas that report the same digest give the same window the same
    logits, whatever the folder is called. Reads the weights once (about 1 s per GB)."""
    folder = Path(folder)
    names = ["config.json", SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX]
    index = next((folder / i for i in (SAFE_INDEX, TORCH_INDEX) if (folder / i).is_file()), None)
    if index is not None:
        names += sorted(set(read_json_object(index).get("weight_map", {}).values()))
    digest = hashlib.sha256()
    for name in names:
        path = folder / name
        if path.is_file():
            digest.update(f"{name}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:12]


def _select(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ignored buffers; when a sub-model is loaded from a full checkpoint, strip its prefix."""
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])})"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k])]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if keys:
            more = f" ... and {len(keys) - 8} more" if len(keys) > 8 else ""
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:8])}{more}")
    if problems:
        raise ValueError(
            f"checkpoint {str(folder)!r} does not fit {type(model).__name__} with its config.json: "
            + "; ".join(problems)
        )


class PreTrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for modules built from one config.

    ``checkpoint_prefix`` is where the module's keys live inside a full XCLIPModel checkpoint, so
    XCLIPTextModel / XCLIPVisionModel also load from one.
    """

    config_class: type
    checkpoint_prefix: str = ""

    @classmethod
    def from_pretrained(
        cls: type[M], folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> M:
        folder = Path(folder)
        config = cls.config_class.from_pretrained(folder)
        state = _select(read_state_dict(folder), cls.checkpoint_prefix)
        with torch.device("meta"):  # no time spent initialising weights that are overwritten next
            model = cls(config)
        _check_keys(model, state, folder)
        model.load_state_dict(state, strict=True, assign=True)
        model.to(device=device, dtype=dtype or torch.float32)
        return model.eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json and model.safetensors, a folder transformers' classes also load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        dtypes = {t.dtype for t in self.state_dict().values()}
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else "float32"
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / SAFE_WEIGHTS), metadata={"format": "pt"})
