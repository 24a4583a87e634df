"""The plain-Python stages between a source and the model: window stage, pending queue, scorer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from xclip_stream.model import XCLIPModel
from xclip_stream.model.processor import XCLIPProcessor
from xclip_stream.pipeline.encoding import bucket, buckets_up_to
from xclip_stream.pipeline.scoring import BatchScorer, ModelInfo, frame_preprocessor, resolve_model_path
from xclip_stream.pipeline.stream import PendingWindows, QueueClosed, WindowStage
from xclip_stream.schemas.frames import SourceFrame
from xclip_stream.schemas.windows import FrameWindow


def window(i: int, camera: str = "cam") -> FrameWindow:
    return FrameWindow(camera, i, np.zeros((2, 3, 4, 4), np.uint8), (float(i), i + 0.5), (2 * i, 2 * i + 1))


def test_window_stage_samples_by_time_preprocesses_once_and_carries_pts(tiny_checkpoint):
    info = ModelInfo.read(str(tiny_checkpoint))
    calls = []
    pre = frame_preprocessor(info)

    def counting(image):
        calls.append(image.shape)
        return pre(image)

    stage = WindowStage("cam", counting, info.num_frames, sample_fps=5.0, hop=2)
    windows = []
    for seq in range(60):  # 30 fps for 2 s
        t = 1000.0 + seq / 30
        if not stage.keep(t):
            continue
        frame = SourceFrame("cam", seq, t, seq / 30, np.full((48, 64, 3), seq, np.uint8))
        if (w := stage.push(frame)) is not None:
            windows.append(w)
    assert len(calls) == 10  # 5 fps over 2 s: only sampled frames are preprocessed
    assert all(w.frames.shape == (4, 3, 32, 32) and w.frames.dtype == np.uint8 for w in windows)
    assert [w.frame_seqs[0] for w in windows] == [0, 12, 24, 36]  # every 2 sampled frames, 6 frames apart
    assert windows[0].frame_pts == pytest.approx((0.0, 0.2, 0.4, 0.6))
    assert windows[0].frames[1, 0, 0, 0] == 6  # the frame content is the sampled frame's


def test_pending_windows_drop_oldest_for_live_sources():
    q = PendingWindows(2, drop_oldest=True)
    assert q.put(window(0)) is None and q.put(window(1)) is None
    dropped = q.put(window(2))
    assert dropped.index == 0 and q.dropped == 1 and len(q) == 2
    assert [q.get(0).index, q.get(0).index] == [1, 2] and q.get(0) is None


def test_pending_windows_block_instead_of_dropping_for_files():
    q = PendingWindows(1, drop_oldest=False)
    q.put(window(0))
    done = threading.Event()

    def producer():
        q.put(window(1))  # blocks until the consumer makes room
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    assert not done.wait(0.3)
    assert q.get(1).index == 0
    assert done.wait(2) and q.get(1).index == 1 and q.dropped == 0


def test_pending_windows_close_wakes_blocked_producer_and_keeps_queued_windows():
    q = PendingWindows(1, drop_oldest=False)
    q.put(window(0))
    errors = []

    def producer():
        try:
            q.put(window(1))
        except QueueClosed as e:
            errors.append(e)

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    time.sleep(0.1)
    q.close()
    t.join(2)
    assert errors and q.get(0).index == 0 and q.get(0) is None


def test_batch_scorer_mixed_label_sets_equal_classify(tiny_checkpoint):
    scorer = BatchScorer.load(str(tiny_checkpoint), device="cpu", precision="float32")  # auto may be bf16
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8) for _ in range(3)]
    a, b = ("a person walking", "a person running"), ("a car", "an empty scene", "a person falling")
    logits = scorer.score(frames, [a, b, a])
    model = XCLIPModel.from_pretrained(tiny_checkpoint).eval()
    processor = XCLIPProcessor.from_pretrained(tiny_checkpoint)
    for row, labels in zip(range(3), [a, b, a]):
        tokens = processor.tokenizer(list(labels), padding=True, return_tensors="pt")
        with torch.inference_mode():
            text = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
            pixels = processor.video_processor.normalize(torch.from_numpy(frames[row]))[None]
            expected = model.classify(pixels, text)[0].tolist()
        assert logits[row] == pytest.approx(expected, abs=1e-5)
    assert len(scorer._text) == 2  # label features cached per set


def test_batch_buckets():
    assert [bucket(b) for b in (1, 2, 3, 5, 33, 64, 65)] == [1, 2, 4, 8, 64, 64, 65]
    assert buckets_up_to(8) == [1, 2, 4, 8] and buckets_up_to(6) == [1, 2, 4, 8]
    assert buckets_up_to(100) == [1, 2, 4, 8, 16, 32, 64, 100]  # past 64: one size, compiled, no graph


def test_compiled_batch_scorer_pads_to_buckets_and_equals_eager(tiny_checkpoint, caplog):
    eager = BatchScorer.load(str(tiny_checkpoint), device="cpu", precision="float32")
    compiled = BatchScorer.load(str(tiny_checkpoint), device="cpu", precision="float32", compile=True)
    assert not eager.encoder.compiled and compiled.encoder.compiled  # off on a CPU unless asked for
    assert not compiled.encoder.cuda_graphs  # graphs are for GPUs only
    compiled.encoder.warm_up(4)  # buckets 1, 2, 4: what a replica does at start
    rng = np.random.default_rng(1)
    labels = ("a person walking", "a person running")
    for batch in (3, 1):  # 3 runs padded to 4
        frames = [rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8) for _ in range(batch)]
        got, want = compiled.score(frames, [labels] * batch), eager.score(frames, [labels] * batch)
        assert len(got) == batch
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=1e-4)
    assert compiled.encoder.compiled and "compile failed" not in caplog.text


def test_batch_scorer_rejects_wrong_window_shape(tiny_checkpoint):
    scorer = BatchScorer.load(str(tiny_checkpoint), device="cpu")
    with pytest.raises(ValueError, match=r"\(4, 3, S, S\) uint8"):
        scorer.score([np.zeros((3, 3, 32, 32), np.uint8)], [("a car",)])


def test_model_path_errors_name_the_folder(tmp_path):
    assert resolve_model_path("demo").name == "demo-xclip"
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        ModelInfo.read(str(tmp_path))
