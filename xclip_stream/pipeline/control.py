"""Changes to a running pipeline: add, replace or remove a camera, or relabel one, without a restart.

A change arrives as a JSON message on the control topic (or as an edited configuration file) and
is applied to the current ``PipelineConfig`` to give a new, fully re-validated one; the supervisor
then reconciles its actors with it. A bad change is refused with a message; nothing else moves.

Messages: ``{"op": "add_camera", "camera": {...}}`` (also replaces one with the same id),
``{"op": "remove_camera", "id": "cam-1"}``, ``{"op": "set_labels", "id": "cam-1", "labels": [...] or
"set-name"}``.
"""

from __future__ import annotations

import json

from ..schemas.config import ConfigError, PipelineConfig, parse_config

OPS = ("add_camera", "remove_camera", "set_labels")


def parse_control(value: bytes) -> dict:
    try:
        message = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"control message is not JSON: {e}") from None
    if not isinstance(message, dict) or message.get("op") not in OPS:
        raise ConfigError(f"control message needs an 'op' among {OPS}, got {str(message)[:200]!r}")
    return message


def apply_control(config: PipelineConfig, message: dict) -> PipelineConfig:
    """The configuration after one control message (validated), or ConfigError."""
    data = config.model_dump(exclude_unset=True, exclude_none=True)
    data.setdefault("model", config.model.model_dump())
    cameras = [c.model_dump(exclude_unset=True) for c in config.cameras]
    op = message["op"]
    if op == "add_camera":
        camera = message.get("camera")
        if not isinstance(camera, dict) or "id" not in camera:
            raise ConfigError("add_camera needs a 'camera' object with an 'id'")
        cameras = [c for c in cameras if c["id"] != camera["id"]] + [camera]
    else:
        ids = [c["id"] for c in cameras]
        if message.get("id") not in ids:
            raise ConfigError(f"{op}: no camera with id {message.get('id')!r} (cameras: {', '.join(ids)})")
        if op == "remove_camera":
            cameras = [c for c in cameras if c["id"] != message["id"]]
        else:
            if "labels" not in message:
                raise ConfigError("set_labels needs 'labels': a label set name or a list of labels")
            for c in cameras:
                if c["id"] == message["id"]:
                    c["labels"] = message["labels"]
    data["cameras"] = cameras
    return parse_config(data, f"control message {op}")
