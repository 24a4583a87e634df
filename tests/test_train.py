"""`xclip-stream train`: short runs on a folder of clips and on the generator; the loss falls, a run
resumes where it stopped, and the folder it writes is a checkpoint transformers loads too."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from xclip_stream import cli
from xclip_stream.model import XCLIPModel
from xclip_stream.model.processor import XCLIPProcessor
from xclip_stream.pipeline.scoring import resolve_model_path
from xclip_stream.training.data import FolderData, SyntheticData, label_from_folder, unseen_combinations
from xclip_stream.training.progress import Progress
from xclip_stream.training.synthetic import Action, all_actions, render_clip, write_clip
from xclip_stream.training.train import (
    STATE_FILE,
    TrainSettings,
    build_model,
    init_num_frames,
    label_spread,
    sincos_2d,
    tiny_config,
    train,
)

FRAMES = 4


def small_config(tmp_path: Path) -> Path:
    """A config.json for a very small model (fast enough for many steps in a test)."""
    config = tiny_config(num_frames=FRAMES, image_size=32, patch_size=8)
    config.text_config.num_hidden_layers = 1
    config.vision_config.num_hidden_layers = 1
    folder = tmp_path / "config"
    config.save_pretrained(folder)
    return folder / "config.json"


NATURAL = {"going_left": "moving left", "going_right": "moving right", "getting_bigger": "growing"}
# A camera that mirrors its picture and plays it backwards: the demo model starts out wrong on every label.
MIRRORED = {"going_left": "moving right", "going_right": "moving left", "getting_bigger": "shrinking"}


def clip_folder(root: Path, per_label: int = 3, frames: int = 12, labels: dict[str, str] = NATURAL) -> Path:
    """root/<label>/*.mp4: three motions, any colour and shape, as a user's labelled clips would be."""
    rng = random.Random(0)
    for folder, motion in labels.items():
        (root / folder).mkdir(parents=True)
        for i in range(per_label):
            action = Action(rng.choice(["red", "green", "blue"]), rng.choice(["circle", "square"]), motion)
            write_clip(root / folder / f"{i}.mp4", action, num_frames=max(12, frames), size=64,
                       seed=rng.getrandbits(16))
    (root / "going_left" / "notes.txt").write_text("not a video: ignored")
    return root


def mean(xs):
    return sum(xs) / len(xs)


def test_folder_data_labels_split_and_sampling(tmp_path):
    data = FolderData(clip_folder(tmp_path / "clips"), num_frames=FRAMES, held_out_fraction=0.34)
    assert data.labels == ["getting bigger", "going left", "going right"]
    assert len(data.eval) == 3 and len(data.train) == 6  # one clip per label held out
    clip = data.draw(random.Random(1))
    assert clip.frames.shape == (FRAMES, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert sorted(c.label for c in data.held_out()) == [0, 1, 2]
    assert label_from_folder("person__falling_down") == "person falling down"


def test_folder_data_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderData(tmp_path / "missing", num_frames=FRAMES)
    (tmp_path / "one" / "walking").mkdir(parents=True)
    with pytest.raises(ValueError, match="at least two label sub-folders"):
        FolderData(tmp_path / "one", num_frames=FRAMES)
    (tmp_path / "one" / "running").mkdir()
    write_clip(tmp_path / "one" / "running" / "a.mp4", Action("red", "circle", "moving left"), 8, 32)
    with pytest.raises(ValueError, match="walking.*has no video files"):
        FolderData(tmp_path / "one", num_frames=FRAMES)
    (tmp_path / "one" / "walking" / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="broken.mp4"):
        FolderData(tmp_path / "one", num_frames=FRAMES)
    (tmp_path / "one" / "walking" / "broken.mp4").unlink()
    write_clip(tmp_path / "one" / "walking" / "short.mp4", Action("red", "circle", "moving left"), 2, 32)
    with pytest.raises(ValueError, match="2 frames, fewer than the model's 4"):
        FolderData(tmp_path / "one", num_frames=FRAMES)


def test_unseen_combinations_keep_every_word_in_training():
    unseen = unseen_combinations()
    seen = [a for a in all_actions() if a not in unseen]
    assert 10 <= len(unseen) <= 15
    for field in ("color", "shape", "motion"):
        assert {getattr(a, field) for a in unseen} <= {getattr(a, field) for a in seen}


def test_synthetic_data_draws_and_held_out_are_reproducible_and_disjoint():
    actions = all_actions()[:4]
    data = SyntheticData(actions, num_frames=FRAMES, held_out_per_label=2, seed=3)
    a, b = data.held_out(), data.held_out()
    assert [c.label for c in a] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b))
    draws = [data.draw(random.Random(7), progress=1.0) for _ in range(3)]
    again = [data.draw(random.Random(7), progress=1.0) for _ in range(3)]
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(draws, again))
    assert all(c.frames.shape[0] == FRAMES and c.frames.shape[1] in data.sizes for c in draws)


def _first_group(actions: list[Action]) -> list[Action]:
    """The run of actions from the first that differ from it in exactly one word, all in the same one."""
    def differing(a: Action, b: Action) -> set[str]:
        return {f for f in ("color", "shape", "motion") if getattr(a, f) != getattr(b, f)}
    first, group, word = actions[0], [actions[0]], None
    for action in actions[1:]:
        diff = differing(first, action)
        if len(diff) != 1 or (word and diff != word) or action in group:
            break
        group, word = group + [action], diff
    return group


@pytest.mark.parametrize(("groups", "varied"), [(("motion", "shape"), 0.0), (("motion",), 0.0),
                                               (("motion", "shape"), 1.0)])
def test_synthetic_batches_hold_scenes_that_differ_only_in_their_motion_or_shape(groups, varied):
    unseen = set(unseen_combinations())
    data = SyntheticData([a for a in all_actions() if a not in unseen], num_frames=FRAMES, sizes=(32,),
                         groups=groups, varied=varied)
    kinds = set()
    for seed in range(8):
        clips = data.batch(random.Random(seed), 24, progress=1.0)
        assert len(clips) == 24
        actions = [data.actions[c.label] for c in clips]
        assert not unseen & set(actions)
        # The first half comes in groups: one scene, done by actions that differ in one word.
        group = _first_group(actions[:12])
        assert len(group) >= 2, actions[:12]
        assert len({a.color for a in group}) == 1
        if len({a.shape for a in group}) == 1:
            kinds.add("motion")
            assert {a.motion for a in group} <= {"moving left", "moving right", "moving up", "moving down"} or \
                {a.motion for a in group} <= {"growing", "shrinking"}
        else:
            kinds.add("shape")
            assert len({a.motion for a in group}) == 1 and len({a.shape for a in group}) == len(group)
        # One scene: the same backdrop behind every member.
        first, second = clips[0].frames[0].astype(int), clips[1].frames[0].astype(int)
        assert np.median(np.abs(first - second)) < 10
    assert kinds == set(groups)
    with pytest.raises(ValueError, match="unknown group kinds"):
        SyntheticData(all_actions(), groups=("colour",))


def test_a_varied_share_draws_scenes_from_dark_to_bright():
    actions = all_actions()[:16]
    varied = SyntheticData(actions, num_frames=FRAMES, sizes=(64,), varied=1.0)
    dim = SyntheticData(actions, num_frames=FRAMES, sizes=(64,))
    bright = [varied.draw(random.Random(seed)).frames.mean() for seed in range(30)]
    assert min(bright) < 60 and max(bright) > 150, bright
    assert max(dim.draw(random.Random(seed)).frames.mean() for seed in range(30)) < 120
    with pytest.raises(ValueError, match="varied"):
        SyntheticData(actions, varied=1.5)


def test_label_spread_pushes_apart_only_labels_above_the_margin():
    text = torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    loss = label_spread(text, margin=0.7)
    assert loss.item() > 0
    loss.backward()
    assert torch.all(text.grad[2] == 0)  # far from both others: untouched
    moved = torch.nn.functional.normalize(text.detach() - 0.5 * text.grad, dim=-1)
    assert moved[0] @ moved[1] < torch.nn.functional.normalize(text.detach(), dim=-1)[0:2].prod(0).sum()
    assert label_spread(torch.eye(3), margin=0.7).item() == 0.0


def test_training_from_a_config_resumes_and_loads_in_transformers(tmp_path):
    out = tmp_path / "run"
    data = SyntheticData([Action(c, "square", m) for c in ("red", "blue") for m in ("moving left", "moving right")],
                         num_frames=FRAMES, sizes=(32,), held_out_per_label=1, easy_until=0.0)
    settings = TrainSettings(steps=45, batch_size=8, lr=2e-3, warmup=5, eval_every=20, text_frozen_steps=0,
                             text_lr_scale=1.0, stop_after=40)
    history = train(out, data, init=str(small_config(tmp_path)), settings=settings, progress=False)
    losses = history["loss"]
    assert len(losses) == 40 and all(np.isfinite(losses)), losses
    assert [step for step, _ in history["eval"]] == [20, 40]
    assert (out / STATE_FILE).is_file() and (out / "model.safetensors").is_file()

    # Resume: the step count and history carry on from the saved state.
    settings.stop_after = None
    more = train(out, data, settings=settings, progress=False)
    assert len(more["loss"]) == 45 and more["loss"][:40] == pytest.approx(losses)
    with pytest.raises(ValueError, match="other labels"):
        train(out, SyntheticData(all_actions()[:3], num_frames=FRAMES), settings=settings, progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        train(tmp_path / "config", data, settings=settings, progress=False)

    # The folder is a checkpoint both loaders read, with the same logits.
    transformers = pytest.importorskip("transformers")
    ours = XCLIPModel.from_pretrained(out).eval()
    theirs = transformers.XCLIPModel.from_pretrained(out).eval()
    processor = XCLIPProcessor.from_pretrained(out)
    inputs = processor(text=data.labels, videos=[render_clip(Action("red", "square", "moving left"), FRAMES, 32, 5)],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits_per_video, theirs(**inputs).logits_per_video, atol=1e-4)


def test_cli_fine_tunes_the_demo_model_on_a_clip_folder_and_the_loss_falls(tmp_path, capsys):
    """A user's case: new wording for motions the demo model knows, from a folder of mp4 clips, and a
    camera whose picture the demo model reads wrongly at first (so there is something to learn)."""
    frames = init_num_frames("demo")
    out = tmp_path / "tuned"
    clips = clip_folder(tmp_path / "clips", frames=frames, labels=MIRRORED)
    code = cli.main(["train", str(out), "--data", str(clips), "--init", "demo", "--steps", "30",
                     "--batch-size", "6", "--lr", "5e-4", "--text-frozen-steps", "0", "--text-lr-scale", "1",
                     "--warmup", "3", "--eval-every", "15"])
    assert code == 0
    err = capsys.readouterr().err
    assert "3 labels, 30 steps" in err and "held-out top-1" in err
    state = torch.load(out / STATE_FILE, weights_only=True)
    losses = state["loss"].tolist()
    assert state["step"] == 30 and mean(losses[-8:]) < mean(losses[:8]) - 0.1, losses
    assert list(state["labels"]) == ["getting bigger", "going left", "going right"]
    # Same architecture and tokenizer as the model it started from.
    demo = resolve_model_path("demo")
    for name in ("config.json", "vocab.json"):
        assert json.loads((out / name).read_text()) == json.loads((demo / name).read_text())


def test_cli_train_errors(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "x"), "--init", "nonsense"]) == 2
    assert "--init 'nonsense'" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "x"), "--data", str(tmp_path / "nowhere"), "--init",
                     str(small_config(tmp_path))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_progress_bar_logs_one_line_per_5_percent():
    out = io.StringIO()
    bar = Progress(100, stream=out)
    for step in range(1, 101):
        bar.update(step, f"loss {1 / step:.3f}")
    bar.write("step 100: held-out top-1 0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 21 and lines[0].startswith("[#") and "5/100" in lines[0] and "100/100" in lines[-2]
    assert lines[-1] == "step 100: held-out top-1 0.5"


def test_new_models_start_with_sine_cosine_patch_positions():
    model, _ = build_model("tiny", ["a red circle growing", "a blue square shrinking"])
    weight = model.vision_model.embeddings.position_embedding.weight.detach()  # (1 + 8*8, 128)
    assert torch.count_nonzero(weight[0]) == 0  # the class token has no position
    assert torch.equal(weight[1:], sincos_2d(8, 128))
    codes = sincos_2d(8, 128)
    # every patch has its own code, and neighbours are closer than far-apart patches
    assert torch.cdist(codes, codes).add(torch.eye(64) * 1e3).min() > 0.1
    row = codes.view(8, 8, 128)[0]  # the top row, left to right
    assert (row[1] - row[0]).norm() < (row[7] - row[0]).norm()
    assert sincos_2d(3, 10).shape == (9, 10)  # widths not divisible by 4 are zero-padded
