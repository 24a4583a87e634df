"""Changes to a running pipeline: add, replace or remove a camera, or relabel one, without a restart.

A change arrives as a signed message on the control topic (see ``control_auth``) and is applied to
the current ``PipelineConfig`` to give a new, fully re-validated one; the supervisor then
reconciles its actors with it. Every record ends as an ``Outcome``: applied, or refused with a
reason (never with credentials); nothing a record holds can stop the pipeline.

Messages (the signed payload): ``{"op": "add_camera", "camera": {...}}`` (also replaces one with the
same id; its URL must pass the source policy, and it may not name ``credentials``: local secret files
are the configuration file's), ``{"op": "remove_camera", "id": "cam-1"}``,
``{"op": "set_labels", "id": "cam-1", "labels": [...] or "set-name"}``, and ``{"op": "reset"}`` or
``{"op": "reset", "id": "cam-1"}``, which drops the control topic's changes (to one camera) so the
configuration file's version comes back.

Precedence: accepted changes form an ``Overlay`` on top of the configuration file. A reloaded file
is the new base and the overlay is re-applied on top of it, so the control topic wins over the file
for the cameras it touched, and a warning names each camera where the file's edit is overridden.
The overlay is what the pipeline keeps across restarts (``control_topic``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..schemas.config import ConfigError, ControlConfig, PipelineConfig, parse_config
from .control_auth import Authenticator, AuthError
from .policy import PolicyError, SourcePolicy, resolve_host
from .redact import redact_exception, redact_text, redact_urls_in

log = logging.getLogger(__name__)

OPS = ("add_camera", "remove_camera", "set_labels", "reset")
MAX_DEPTH = 32  # JSON nesting allowed in a control record (Python's decoder would recurse ~1000 deep)
_FIELDS = {"add_camera": {"op", "camera"}, "remove_camera": {"op", "id"}, "set_labels": {"op", "id", "labels"},
           "reset": {"op", "id"}}


class Refused(ValueError):
    """A control record that is not applied; ``str()`` is the reason (redacted)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one control record. ``config`` is the new configuration when applied."""

    applied: bool
    reason: str
    op: str = ""
    camera_id: str = ""
    config: PipelineConfig | None = None


def json_depth_ok(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text``'s bracket nesting (outside strings) stays within ``limit``: checked before
    decoding, so deep nesting is refused with a reason instead of a RecursionError."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def decode_json(value: object, what: str, max_bytes: int) -> object:
    """Bytes of one JSON document, decoded with limits; Refused naming what was wrong."""
    if value is None:
        raise Refused(f"{what} is a tombstone (no value)")
    if not isinstance(value, (bytes, bytearray)):
        raise Refused(f"{what} is not bytes")
    if len(value) > max_bytes:
        raise Refused(f"{what} is {len(value)} bytes, over the limit of {max_bytes}")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(f"{what} is not UTF-8 (byte {e.start})") from None
    if not json_depth_ok(text):
        raise Refused(f"{what} nests JSON deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise Refused(f"{what} is not JSON: {str(e)[:120]}") from None


def parse_control(message: object) -> dict:
    """A decoded payload checked for shape: a known op with exactly its fields, of the right types."""
    if not isinstance(message, dict):
        raise Refused(f"a control message must be a JSON object, got {type(message).__name__}")
    op = message.get("op")
    if op not in OPS:
        raise Refused(f"unknown op {str(op)[:40]!r}: expected one of {', '.join(OPS)}")
    unknown = sorted(str(k)[:40] for k in set(message) - _FIELDS[op])
    if unknown:
        raise Refused(f"{op}: unknown fields {unknown[:5]}")
    if op == "add_camera":
        camera = message.get("camera")
        if not isinstance(camera, dict) or not isinstance(camera.get("id"), str):
            raise Refused("add_camera needs a 'camera' object with a string 'id'")
    elif op != "reset" or "id" in message:
        if not isinstance(message.get("id"), str):
            raise Refused(f"{op} needs a string 'id'")
    if op == "set_labels":
        labels = message.get("labels")
        if not (isinstance(labels, str) or (isinstance(labels, list) and all(isinstance(x, str) for x in labels))):
            raise Refused("set_labels needs 'labels': a label set name or a list of labels")
    return message


def apply_control(config: PipelineConfig, message: dict) -> PipelineConfig:
    """The configuration after one (shape-checked) control message, validated; ConfigError if invalid."""
    data = config.model_dump(exclude_unset=True, exclude_none=True)
    data.setdefault("model", config.model.model_dump())
    cameras = [c.model_dump(exclude_unset=True) for c in config.cameras]
    op = message["op"]
    if op == "add_camera":
        camera = message["camera"]
        cameras = [c for c in cameras if c["id"] != camera["id"]] + [camera]
    else:
        ids = [c["id"] for c in cameras]
        if message["id"] not in ids:
            raise ConfigError(f"{op}: no camera with id {message['id'][:200]!r} (cameras: {', '.join(ids)})")
        if op == "remove_camera":
            cameras = [c for c in cameras if c["id"] != message["id"]]
        else:
            for c in cameras:
                if c["id"] == message["id"]:
                    c["labels"] = message["labels"]
    data["cameras"] = cameras
    return parse_config(data, f"control message {op}")


@dataclass
class Overlay:
    """The control topic's accepted changes, per camera: what a reloaded file or a restart re-applies."""

    cameras: dict[str, dict | None] = field(default_factory=dict)  # id -> camera added/replaced, None: removed
    labels: dict[str, str | list[str]] = field(default_factory=dict)  # id -> labels set

    def record(self, message: dict) -> None:
        op = message["op"]
        if op == "reset":
            for table in (self.cameras, self.labels):
                if "id" in message:
                    table.pop(message["id"], None)
                else:
                    table.clear()
        elif op == "set_labels":
            self.labels[message["id"]] = message["labels"]
        else:
            camera_id = message["camera"]["id"] if op == "add_camera" else message["id"]
            self.cameras[camera_id] = message["camera"] if op == "add_camera" else None
            self.labels.pop(camera_id, None)

    def touches(self) -> set[str]:
        return set(self.cameras) | set(self.labels)

    def messages(self) -> list[dict]:
        """The overlay as control messages, in the order that rebuilds it."""
        out = [{"op": "add_camera", "camera": c} if c is not None else {"op": "remove_camera", "id": i}
               for i, c in self.cameras.items()]
        return out + [{"op": "set_labels", "id": i, "labels": labels} for i, labels in self.labels.items()]

    def to_json(self) -> dict:
        return {"cameras": self.cameras, "labels": self.labels}

    @classmethod
    def from_json(cls, data: object) -> Overlay:
        if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict) \
                or not isinstance(data.get("labels"), dict):
            raise Refused("the saved control state is not an overlay {cameras, labels}")
        return cls(dict(data["cameras"]), dict(data["labels"]))


class ControlPlane:
    """Turns control records into configurations: authentication, parsing, source policy, apply.

    ``handle`` is the one entry point for a record's value (the runner and the tests call it), and
    ``reload`` the one for a changed configuration file. The file's own cameras are never checked
    against the source policy: the policy is for remote changes only."""

    def __init__(self, base: PipelineConfig, settings: ControlConfig, secret: bytes,
                 resolver: Callable[[str], list[str]] = resolve_host, clock: Callable[[], float] = time.time,
                 check: Callable[[PipelineConfig], None] | None = None):
        self.settings = settings
        self.check = check  # raises ConfigError for a configuration the model cannot run (label sets)
        self.auth = Authenticator(secret, settings.max_age_s, clock)
        self._resolver = resolver
        self.policy = self._policy(settings)
        self.base = base
        self.overlay = Overlay()
        self.config = base

    def _policy(self, settings: ControlConfig) -> SourcePolicy:
        p = settings.source_policy
        hosts = tuple(p.hosts) if p.hosts is not None else None
        return SourcePolicy(tuple(p.schemes), hosts, p.resolve, self._resolver)

    def handle(self, value: object) -> Outcome:
        """Apply one control record's value (bytes, or None for a tombstone) or refuse it."""
        op = camera_id = url = ""
        try:
            envelope = decode_json(value, "the record", self.settings.max_message_bytes)
            payload = self.auth.open(envelope)
            message = parse_control(decode_json(payload.encode("utf-8"), "the payload",
                                                self.settings.max_message_bytes))
            op = message["op"]
            camera_id = str(message["camera"]["id"] if op == "add_camera" else message.get("id", ""))[:200]
            if op == "add_camera":
                url = message["camera"].get("url", "")
                self._check_camera(message["camera"])
            if op == "reset":
                overlay = Overlay(dict(self.overlay.cameras), dict(self.overlay.labels))
                overlay.record(message)
                config = self._rebuild(self.base, overlay)
            else:
                config = apply_control(self.config, message)
                overlay = self.overlay
            if self.check is not None:
                self.check(config)
            if op != "reset":
                overlay.record(message)
            self.overlay, self.config = overlay, config
            return Outcome(True, "applied", op, camera_id, config)
        except (Refused, AuthError, PolicyError, ConfigError) as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001 - a record must never stop the control loop
            # Redacted, without the traceback: a chained exception's text could quote a camera URL.
            log.error("control record handling failed unexpectedly: %s", redact_exception(e))
            reason = f"internal error ({type(e).__name__})"
        if isinstance(url, str) and url:
            reason = redact_text(reason, url)
        return Outcome(False, redact_urls_in(reason), op, camera_id)

    def _check_camera(self, camera: dict) -> None:
        self.policy.check(camera.get("url"))
        if "credentials" in camera:
            # They name a local file or environment variable, which the pipeline would read and send
            # to the camera's host: a remote message must not choose which (the Kafka password, the
            # Ray token...). Cameras that need them are configured in the file, or carry them in the URL.
            raise Refused("'credentials' cannot be set through the control topic (they name local secret "
                          "files or environment variables): configure the camera in the configuration file")
        if camera.get("loop") or camera.get("realtime") is not None:
            raise Refused("'loop' and 'realtime' apply to files, which the control topic cannot add")

    def restore(self, overlay: Overlay) -> PipelineConfig:
        """Start from a saved overlay (the state kept across restarts)."""
        self.config = self._rebuild(self.base, overlay)
        return self.config

    def reload(self, base: PipelineConfig) -> PipelineConfig:
        """A changed configuration file: the new base, with the control topic's overlay on top."""
        if base.control is not None:
            self.settings = base.control
            self.auth.max_age_s = base.control.max_age_s
            self.policy = self._policy(base.control)
        old = {c.id: c for c in self.base.cameras}
        new = {c.id: c for c in base.cameras}
        for camera_id in sorted(self.overlay.touches()):
            if old.get(camera_id) != new.get(camera_id):
                log.warning("camera %r: the configuration file changed it, but the control topic changed it "
                            "too and wins (send {\"op\": \"reset\", \"id\": %r} to take the file's version)",
                            camera_id, camera_id)
        self.base = base
        self.config = self._rebuild(base, self.overlay)
        return self.config

    def _rebuild(self, base: PipelineConfig, overlay: Overlay) -> PipelineConfig:
        """``base`` with each overlay change re-applied; a change that no longer fits is dropped, logged."""
        config, kept = base, Overlay()
        for message in overlay.messages():
            present = any(c.id == message.get("id") for c in config.cameras)
            if message["op"] == "remove_camera" and not present:
                kept.record(message)  # already gone from the file: nothing to remove, still removed
                continue
            try:
                if message["op"] == "add_camera":
                    self._check_camera(message["camera"])
                config = apply_control(config, message)
                kept.record(message)
            except (Refused, PolicyError, ConfigError, AttributeError, TypeError, KeyError) as e:
                log.warning("control-topic change %s dropped: it no longer applies: %s", message["op"],
                            redact_urls_in(str(e)))
        self.overlay = kept
        return config
