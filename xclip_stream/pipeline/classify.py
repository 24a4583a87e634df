"""Offline zero-shot classification of a video file: decode, window, score every window."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import torch

from ..schemas import WindowScores
from .clips import Window, WindowSampling, read_windows
from .scoring import BatchScorer


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """Labels from a comma-separated string or a list; blank entries dropped, duplicates refused."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    items = [label.strip() for label in items if label and label.strip()]
    if not items:
        raise ValueError("the label list is empty: give at least one label, e.g. --labels 'walking,running'")
    duplicates = sorted({label for label in items if items.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels: {', '.join(duplicates)}")
    return items


class WindowClassifier:
    """Scores raw windows of a file against one label set (text features computed once)."""

    def __init__(self, scorer: BatchScorer, labels: str | Sequence[str]):
        self.scorer = scorer
        self.labels = parse_labels(labels)
        scorer.text_features(tuple(self.labels))  # fail early on labels the tokenizer refuses

    def score(self, videos: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """videos: B clips of T frames (T, H, W, 3) uint8 -> (logits, probabilities), each (B, N)."""
        frames = [self.scorer.processor.video_processor.resize_and_crop(v).numpy() for v in videos]
        logits = torch.tensor(self.scorer.score(frames, [tuple(self.labels)] * len(frames)))
        return logits, logits.softmax(dim=-1)


def classify_file(
    path: str | Path, classifier: WindowClassifier, sampling: WindowSampling, batch_size: int = 8
) -> Iterator[WindowScores]:
    """Yield one WindowScores per window of the file, in order, scoring ``batch_size`` windows at a time."""
    windows = read_windows(path, sampling)
    while batch := list(islice(windows, batch_size)):
        logits, probs = classifier.score([w.frames for w in batch])
        for window, row_logits, row_probs in zip(batch, logits.tolist(), probs.tolist()):
            yield _scores(str(path), window, classifier.labels, row_logits, row_probs)


def _scores(source: str, window: Window, labels: list[str], logits: list[float], probs: list[float]) -> WindowScores:
    return WindowScores(
        source=source,
        window=window.index,
        start=round(window.times[0], 6),
        end=round(window.times[-1], 6),
        frame_indices=list(window.frame_indices),
        labels=labels,
        scores=probs,
        logits=logits,
    )
