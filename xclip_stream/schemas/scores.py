"""The scores of one window of video against a label set."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WindowScores:
    """One window's result. ``scores`` are softmax probabilities over the labels, ``logits`` the
    model's raw logits_per_video (comparable across windows; probabilities depend on the label set)."""

    source: str
    window: int
    start: float  # seconds, presentation time of the window's first sampled frame
    end: float  # seconds, presentation time of its last sampled frame
    frame_indices: list[int]
    labels: list[str]
    scores: list[float]
    logits: list[float]

    def __post_init__(self):
        if not (len(self.labels) == len(self.scores) == len(self.logits)):
            raise ValueError("labels, scores and logits must have one entry per label")

    @property
    def top_label(self) -> str:
        return self.labels[max(range(len(self.scores)), key=self.scores.__getitem__)]

    def to_json_dict(self) -> dict:
        out = asdict(self)
        out["scores"] = {label: round(s, 6) for label, s in zip(self.labels, self.scores)}
        out["logits"] = {label: round(v, 4) for label, v in zip(self.labels, self.logits)}
        del out["labels"]
        out["top_label"] = self.top_label
        out["top_score"] = round(max(self.scores), 6)
        return out
