"""Training and fine-tuning X-CLIP on labelled clips.

The objective is X-CLIP's video-text one as the paper trains recognition: each clip's logits
against the prompted text embeddings of every label (``logits_per_video``), under cross-entropy
with its own label. All labels are negatives at every step, not only those in the batch.

From scratch, the video embeddings start almost identical (cosine ~0.998), and a text tower
learning at full rate follows them and collapses the labels together; the contrastive loss then
stalls near ln(N). The text tower therefore learns at ``text_lr_scale`` (default 0.1) of the rate,
and a new model keeps it frozen at first (its random features are the video tower's first targets),
which lets the video tower pull apart first (measured on the synthetic set: stalled at 1.6 nats
after 150 steps at 1x, 0.2 at 0.1x).

Even so, the text tower collapses whichever labels the video tower cannot yet tell apart, and then
nothing rewards the video tower for learning the difference: one demo model ended with "moving
left" and "moving right" captions at cosine 0.993 and never learnt directions, the next (which
learnt directions first) with "circle" and "square" at 0.993 and shapes at 0.63. ``label_spread``
adds a penalty on every pair of labels above ``label_margin`` cosine, so no word can collapse.

``training_state.pt`` (tensors and numbers only, read back with ``weights_only=True``) makes a run
resumable; the output folder is a Hugging Face checkpoint folder.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..model import XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig
from ..model.files import read_json_object
from ..model.processor import XCLIPProcessor, XCLIPVideoProcessor
from ..model.tokenizer import CLIPTokenizer, train_clip_vocab
from ..pipeline.scoring import resolve_model_path
from .data import Clip, ClipData
from .progress import Progress

STATE_FILE = "training_state.pt"


def tiny_config(num_frames: int = 8, image_size: int = 64, patch_size: int = 8) -> XCLIPConfig:
    """A small X-CLIP (about 1.6 M parameters, 6.4 MB) that trains on a CPU: the demo model's shape."""
    return XCLIPConfig.from_text_vision_configs(
        XCLIPTextConfig(vocab_size=640, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=32),
        XCLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                          image_size=image_size, patch_size=patch_size, num_frames=num_frames,
                          mit_hidden_size=128, mit_intermediate_size=256, mit_num_attention_heads=4),
        projection_dim=128, prompt_num_attention_heads=4,
    )


def sincos_2d(grid: int, dim: int, base: float = 100.0) -> torch.Tensor:
    """(grid * grid, dim) fixed 2-D sine-cosine codes of patch positions, row-major: a quarter of
    the channels each for sin(x), cos(x), sin(y), cos(y) at geometric frequencies."""
    quarter = dim // 4
    omega = base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (dim/4,)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    x, y = xs.reshape(-1, 1) * omega, ys.reshape(-1, 1) * omega  # (grid*grid, dim/4)
    codes = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return F.pad(codes, (0, dim - codes.shape[1]))


@torch.no_grad()
def _init_positions(model: XCLIPModel) -> None:
    """Start a new model with position embeddings that matter: frame order (the MIT's) at the
    scale of the frame features, patch positions as 2-D sine-cosine codes at unit scale.

    X-CLIP sees the order of frames only through the MIT's position embeddings (its cross-frame
    message attention has none), and CLIP's initialisation (std 0.02, against unit-scale
    features) leaves left/right, up/down and growing/shrinking, which are time reversals of each
    other, almost indistinguishable at first. A direction also needs each frame's class token to
    say where the object is: a ridge probe recovers the object's x position from it with R^2 0.49
    at this initialisation, 0.18 with random positions (std 0.2).
    """
    torch.nn.init.normal_(model.mit.position_embedding, std=0.5)
    weight = model.vision_model.embeddings.position_embedding.weight  # (1 + grid*grid, D)
    grid = math.isqrt(weight.shape[0] - 1)
    weight[0] = 0.0  # the class token
    weight[1:] = sincos_2d(grid, weight.shape[1])


def build_model(init: str, labels: Sequence[str]) -> tuple[XCLIPModel, XCLIPProcessor]:
    """(model, processor) from ``tiny`` or a config.json (a new model, with a BPE vocabulary learnt
    from the labels), or a checkpoint folder / ``demo`` (fine-tuning: its own tokenizer)."""
    path = resolve_model_path(init)
    if path.is_dir():
        return XCLIPModel.from_pretrained(path), XCLIPProcessor.from_pretrained(path)
    if init == "tiny":
        config = tiny_config()
    elif path.is_file():
        config = XCLIPConfig.from_dict(read_json_object(path))
    else:
        raise FileNotFoundError(f"--init {init!r} is not 'tiny', 'demo', a config.json file or a checkpoint folder")
    model = XCLIPModel(config)
    _init_positions(model)
    vocab, merges = train_clip_vocab(list(labels) * 4, vocab_size=config.text_config.vocab_size)
    size = config.vision_config.image_size
    processor = XCLIPProcessor(CLIPTokenizer.from_vocab(vocab, merges),
                               XCLIPVideoProcessor(size={"shortest_edge": size}, crop_size=size))
    return model, processor


def init_num_frames(init: str) -> int:
    """Frames per clip of the model ``build_model(init)`` gives (cheap: reads the config only)."""
    if init == "tiny":
        return tiny_config().vision_config.num_frames
    path = resolve_model_path(init)
    if not path.exists():
        raise FileNotFoundError(f"--init {init!r} is not 'tiny', 'demo', a config.json file or a checkpoint folder")
    config = read_json_object(path / "config.json" if path.is_dir() else path)
    return XCLIPConfig.from_dict(config).vision_config.num_frames


@dataclass
class TrainSettings:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    text_lr_scale: float = 0.1
    text_frozen_steps: int = 0
    weight_decay: float = 0.05
    warmup: int = 100
    eval_every: int = 250
    seed: int = 0
    stop_after: int | None = None  # stop (and save) at this step; the schedule still spans ``steps``
    label_margin: float | None = 0.5  # cosine above which two labels' texts are pushed apart; None: off


def label_tokens(processor: XCLIPProcessor, labels: Sequence[str]) -> dict[str, torch.Tensor]:
    tokens = processor.tokenizer(list(labels), padding=True, return_tensors="pt")
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def label_spread(text_features: torch.Tensor, margin: float) -> torch.Tensor:
    """Per label, the summed squared excess of its cosine with every other label over ``margin``
    (see the module docstring); zero once every pair is below the margin."""
    text = F.normalize(text_features, dim=-1)
    cos = text @ text.T  # (N, N)
    excess = F.relu(cos - margin).masked_fill(torch.eye(len(cos), dtype=torch.bool), 0.0)
    return excess.square().sum() / len(cos)


def clip_loss(model: XCLIPModel, processor: XCLIPProcessor, tokens: dict, clips: Sequence[Clip],
              label_margin: float | None = None) -> torch.Tensor:
    """Cross-entropy of each clip against every label (``logits_per_video``, as ``forward``), plus
    ``label_spread`` when ``label_margin`` is set."""
    pixels = processor.video_processor([c.frames for c in clips])["pixel_values"]
    text = model.get_text_features(**tokens)  # (N labels, P)
    logits = model.score_videos(*model.encode_videos(pixels), text)  # (B, N labels)
    loss = F.cross_entropy(logits, torch.tensor([c.label for c in clips]))
    return loss if label_margin is None else loss + label_spread(text, label_margin)


@torch.no_grad()
def predict(model: XCLIPModel, processor: XCLIPProcessor, labels: Sequence[str], clips: Sequence,
            batch_size: int = 64) -> list[int]:
    """Top-1 label index for each clip ((T, H, W, 3) arrays or ``Clip``s) among ``labels``."""
    was_training = model.training
    model.eval()
    text = model.get_text_features(**label_tokens(processor, labels))
    top: list[int] = []
    for i in range(0, len(clips), batch_size):
        frames = [getattr(c, "frames", c) for c in clips[i:i + batch_size]]
        pixels = processor.video_processor(frames)["pixel_values"]
        top += model.classify(pixels, text).argmax(dim=-1).tolist()
    model.train(was_training)
    return top


def accuracy(model: XCLIPModel, processor: XCLIPProcessor, labels: Sequence[str], clips: Sequence[Clip]) -> float:
    top = predict(model, processor, labels, clips)
    return sum(t == c.label for t, c in zip(top, clips)) / max(1, len(clips))


def _optimizer(model: XCLIPModel, settings: TrainSettings) -> torch.optim.AdamW:
    """Two learning rates (text tower and its projection slower, see the module docstring); no
    weight decay on gains, biases and embeddings."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        text = name.startswith(("text_model.", "text_projection"))
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((text, decay), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "lr": settings.lr * (settings.text_lr_scale if text else 1.0), "text": text,
          "weight_decay": settings.weight_decay if decay else 0.0} for (text, decay), ps in groups.items()],
        lr=settings.lr,
    )


def _schedule(optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at ``steps``; the text tower stays frozen for the
    first ``text_frozen_steps`` (its random features are the video tower's first targets)."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, settings.warmup))
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, settings.steps))))

    def text_factor(step: int) -> float:
        return 0.0 if step < settings.text_frozen_steps else factor(step)

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [text_factor if group["text"] else factor for group in optimizer.param_groups])


def train(out: str | Path, data: ClipData, init: str = "tiny", settings: TrainSettings | None = None,
          log: Callable[[str], None] | None = None, progress: bool = True) -> dict:
    """Train (or resume, when ``out`` holds a training state) and write the checkpoint folder.

    Returns the history: per-step losses and ``(step, held-out top-1)`` evaluations.
    """
    settings = settings or TrainSettings()
    out = Path(out)
    say = log or (lambda message: None)
    torch.manual_seed(settings.seed)
    state_path = out / STATE_FILE
    resume = state_path.is_file()
    if not resume and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{str(out)!r} is not empty and holds no {STATE_FILE} to resume from; "
                              "train into a new folder")
    model, processor = build_model(str(out) if resume else init, data.labels)
    if model.config.vision_config.num_frames != data.num_frames:
        raise ValueError(f"the model takes {model.config.vision_config.num_frames} frames per clip, "
                         f"the data gives {data.num_frames}")
    optimizer, history, step = _optimizer(model, settings), {"loss": [], "eval": []}, 0
    schedule = _schedule(optimizer, settings)
    if resume:
        state = torch.load(state_path, weights_only=True)
        if list(state["labels"]) != list(data.labels):
            raise ValueError(f"{str(out)!r} was trained on other labels; resume with the same data")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step = int(state["step"])
        history = {"loss": state["loss"].tolist(), "eval": [tuple(e) for e in state["eval"].tolist()]}
        say(f"resuming {out} at step {step}")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{settings.seed}:{step}")  # a reproducible draw from the resume point on
    tokens = label_tokens(processor, data.labels)
    held_out = data.held_out()
    bar = Progress(settings.steps, start=step, enabled=progress)
    model.train()
    last = min(settings.steps, settings.stop_after or settings.steps)
    while step < last:
        done = step / settings.steps
        loss = clip_loss(model, processor, tokens, data.batch(rng, settings.batch_size, done),
                         settings.label_margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        history["loss"].append(loss.item())
        bar.update(step, f"loss {loss.item():.3f} lr {schedule.get_last_lr()[0]:.1e}")
        if step % settings.eval_every == 0 or step == last:
            if held_out:
                history["eval"].append((step, accuracy(model, processor, data.labels, held_out)))
                bar.write(f"step {step}: held-out top-1 {history['eval'][-1][1]:.3f} "
                          f"({len(held_out)} clips, {len(data.labels)} labels)")
            save(out, model, processor, optimizer, schedule, step, history, data.labels, settings)
    bar.close()
    return history


def save(out: Path, model, processor, optimizer, schedule, step: int, history: dict, labels: Sequence[str],
         settings: TrainSettings) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)
    evals = torch.tensor(history["eval"], dtype=torch.float64).reshape(-1, 2)
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step,
                "loss": torch.tensor(history["loss"]), "eval": evals, "labels": list(labels),
                "settings": asdict(settings)}, out / STATE_FILE)
