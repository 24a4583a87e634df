"""Whether a checkpoint and the label sets given to it can work, asked once, before any frame moves.

``classify``, ``run`` (at start-up and on every configuration change) and each replica ask the
same questions here, so a model that cannot score is refused with one message wherever it is
used, instead of failing window after window at run time:

- the processor must produce the frames the model takes (crop size = the vision tower's image size);
- every label must encode without truncation (CLIP cuts at 77 tokens, silently changing a long
  label's meaning), to ids the text tower has, with no unknown-token ids;
- a label set must not exceed ``max_labels`` (text features are N x P per window and per set).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..model import XCLIPConfig
from ..model.processor import XCLIPVideoProcessor
from ..model.tokenizer import CLIPTokenizer
from ..schemas.config import ConfigError, PipelineConfig

DEFAULT_MAX_LABELS = 1000


class ModelMismatch(ValueError):
    """A checkpoint, label set or window the model cannot score; the message says what and why."""


def output_frame_size(processor: XCLIPVideoProcessor) -> tuple[int, int] | None:
    """(H, W) of every frame the processor makes, or None when it depends on the input's aspect."""
    if processor.do_center_crop:
        return processor.crop_size["height"], processor.crop_size["width"]
    if processor.do_resize and "height" in processor.size:
        return processor.size["height"], processor.size["width"]
    return None


def check_processor_fits(config: XCLIPConfig, processor: XCLIPVideoProcessor, where: str = "the checkpoint") -> None:
    """The processor's frames must be the vision tower's input size (no position interpolation here)."""
    side = config.vision_config.image_size
    size = output_frame_size(processor)
    if size is None:
        raise ModelMismatch(
            f"{where}: preprocessor_config.json makes frames whose size depends on the video (no center crop "
            f"and no fixed resize) but the model takes {side}x{side}; set crop_size to {side}")
    if size != (side, side):
        raise ModelMismatch(
            f"{where}: frames are {size[0]}x{size[1]} (preprocessor_config.json) but the model takes "
            f"{side}x{side} (config.json vision_config.image_size); the processor does not fit the model")
    if config.vision_config.num_frames < 1:
        raise ModelMismatch(f"{where}: vision_config.num_frames must be >= 1, got {config.vision_config.num_frames}")


@dataclass(frozen=True)
class LabelChecker:
    """Refuses label sets the text tower cannot encode as written. Cheap: tokenizer only, no weights."""

    tokenizer: CLIPTokenizer
    max_tokens: int  # bos + label + eos must fit: the tokenizer's and the text tower's length
    vocab_size: int  # ids the text tower's embedding has
    max_labels: int = DEFAULT_MAX_LABELS

    @classmethod
    def for_model(cls, tokenizer: CLIPTokenizer, config: XCLIPConfig,
                  max_labels: int = DEFAULT_MAX_LABELS) -> LabelChecker:
        text = config.text_config
        return cls(tokenizer, min(tokenizer.model_max_length, text.max_position_embeddings), text.vocab_size,
                   max_labels)

    @classmethod
    def load(cls, folder: str | Path, max_labels: int = DEFAULT_MAX_LABELS) -> LabelChecker:
        """From a checkpoint folder's tokenizer and config.json (the weights are not read)."""
        return cls.for_model(CLIPTokenizer.from_pretrained(folder), XCLIPConfig.from_pretrained(folder), max_labels)

    def problems(self, labels: Sequence[str]) -> list[str]:
        """What is wrong with one label set (empty when it can be scored)."""
        if not labels:
            return ["the label set is empty"]
        if len(labels) > self.max_labels:
            return [f"{len(labels)} labels, more than serve.max_labels ({self.max_labels})"]
        out = []
        specials = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id}
        rows = self.tokenizer(list(labels), padding=False, truncation=False, return_tensors=None)["input_ids"]
        for label, ids in zip(labels, rows):
            shown = label if len(label) <= 60 else label[:57] + "..."
            if len(ids) > self.max_tokens:
                out.append(f"label {shown!r} is {len(ids) - 2} tokens, over the model's {self.max_tokens - 2}")
            elif max(ids) >= self.vocab_size:
                out.append(f"label {shown!r} encodes to token id {max(ids)}, but the text model has only "
                           f"{self.vocab_size} (tokenizer and model do not match)")
            elif self.tokenizer.unk_token_id not in specials and self.tokenizer.unk_token_id in ids:
                out.append(f"label {shown!r} has characters the tokenizer does not know")
        return out

    def check(self, labels: Sequence[str], where: str = "labels") -> None:
        problems = self.problems(labels)
        if problems:
            raise ModelMismatch(f"{where}: " + "; ".join(problems))

    def check_all(self, label_sets: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Every (where, labels) pair; one error listing all the problems."""
        lines = [f"  {where}: {p}" for where, labels in label_sets for p in self.problems(labels)]
        if lines:
            raise ModelMismatch("label sets the model cannot score:\n" + "\n".join(lines))

    def check_config(self, config: PipelineConfig) -> None:
        """Every label set a pipeline configuration defines or names inline (a named set unused now
        may be switched to later). ConfigError, so a refused reload reads like any bad edit."""
        try:
            self.check_all(config_label_sets(config))
        except ModelMismatch as e:
            raise ConfigError(str(e)) from None


def config_label_sets(config: PipelineConfig) -> Iterator[tuple[str, list[str]]]:
    """(where, labels) for each label set of a configuration."""
    if config.labels is not None:
        yield "labels", config.labels.labels
    for name, label_set in config.label_sets.items():
        yield f"label_sets.{name}", label_set.labels
    for c in config.cameras:
        if isinstance(c.labels, list):
            yield f"camera {c.id!r}", config.label_set(c.labels).labels
    for f in config.kafka.frames if config.kafka else []:
        if isinstance(f.labels, list):
            yield f"kafka frames topic {f.topic!r}", config.label_set(f.labels).labels
