"""Write the JSON Schema files of the published events and the pipeline configuration.

    python -m xclip_stream.schemas.export [FOLDER]   (default: xclip_stream/schemas/json)

The files are generated from the types, committed, and checked against the types by the tests,
so consumers in other languages can validate what we publish.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from .activity import ActivityEvent
from .config import PipelineConfig
from .control import CONTROL_OUTCOMES, ControlEvent
from .events import STREAM_STATES, ScoreEvent, StreamEvent, WindowFailed

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
EVENT_TYPES = {  # the ``event_type`` field each published JSON carries (also its CloudEvents type)
    "score_event": ["xclip.window.scores"],
    "window_failed_event": ["xclip.window.failed"],
    "activity_event": ["xclip.activity.start", "xclip.activity.continue", "xclip.activity.end"],
    "stream_event": [f"xclip.stream.{state}" for state in STREAM_STATES],
    "control_event": [f"xclip.control.{outcome}" for outcome in CONTROL_OUTCOMES],
}
TYPES = {
    "score_event": ScoreEvent,
    "window_failed_event": WindowFailed,
    "activity_event": ActivityEvent,
    "stream_event": StreamEvent,
    "control_event": ControlEvent,
    "pipeline_config": PipelineConfig,
}


def schemas() -> dict[str, dict]:
    out = {}
    for name, cls in TYPES.items():
        schema = TypeAdapter(cls).json_schema(mode="serialization" if name != "pipeline_config" else "validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://xclip-stream.dev/schemas/{name}.json"
        schema.setdefault("description", (cls.__doc__ or "").strip().split("\n\n")[0])
        if name in EVENT_TYPES:
            schema["properties"]["event_type"] = {"enum": EVENT_TYPES[name], "type": "string"}
            schema["required"] = sorted({*schema.get("required", []), "event_type", "event_id"})
        out[name] = schema
    return out


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else SCHEMA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (folder / f"{name}.json").write_text(render(schema), encoding="utf-8")
        print(folder / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
