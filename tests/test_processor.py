"""Video processor and XCLIPProcessor: parity with transformers (the test oracle), input forms,
config round trips and error cases.

The oracle. For the released checkpoints (preprocessor_config.json names VideoMAEFeatureExtractor)
transformers 5 builds ``VideoMAEImageProcessor`` (torchvision backend) when torchvision is installed
and ``VideoMAEImageProcessorPil`` otherwise. torchvision cannot be installed here, so the parity
oracle is the PIL backend (needs Pillow). Our resize mirrors the torchvision backend
(torch antialiased interpolate); PIL resamples in uint8 with its own fixed-point rounding, so the
resized uint8 frames may differ by one grey level (two for bicubic upsampling), and nothing else
differs: output sizes, crop offsets and rescale/normalise are checked exactly below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from xclip_stream.model.processor import (
    XCLIPProcessor,
    XCLIPVideoProcessor,
    center_crop_frames,
    resize_frames,
    resize_output_size,
)
from xclip_stream.model.tokenizer import CLIPTokenizer


@pytest.fixture(scope="module")
def pil_backend() -> None:
    """transformers' PIL image-processor backend (our oracle here) needs Pillow: a missing Pillow is
    a broken test environment, not a reason to skip the parity checks."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        pytest.fail("Pillow is required for the transformers parity oracle (pip install pillow)")


# microsoft/xclip-base-patch32's preprocessor_config.json, as published on the hub.
HUB_PREPROCESSOR_CONFIG = {
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "VideoMAEFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "processor_class": "XCLIPProcessor",
    "resample": 2,
    "size": 224,
}

# One grey level after normalisation is 1 / 255 / std; the largest is for the smallest std.
ONE_LEVEL = 1 / 255 / min(HUB_PREPROCESSOR_CONFIG["image_std"])  # ~0.0171
FLOAT_EPS = 1e-5  # float32 rounding of (x - mean) / std, both sides

# (height, width): landscape, portrait, square at/above/below 224, odd, much smaller, 1080p.
FRAME_SIZES = [(240, 320), (320, 240), (224, 224), (300, 300), (97, 131), (50, 100), (225, 401), (1080, 1920)]


def _video(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """(T,H,W,3) uint8: random noise frames plus one smooth frame (noise is the worst case for
    rounding differences, smooth content is the typical one)."""
    video = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = ((np.sin(yy / 17.0) + np.cos(xx / 23.0)) * 60 + 128).astype(np.uint8)
    video[-1] = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], -1)
    return video


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, clip_vocab_dir):
    """A checkpoint-like folder: the real CLIP tokenizer files + the hub preprocessor config."""
    folder = tmp_path_factory.mktemp("xclip_processor")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((clip_vocab_dir / name).read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR_CONFIG))
    return folder


@pytest.fixture(scope="module")
def hf_video_processor(hub_folder, pil_backend):
    proc = transformers.AutoImageProcessor.from_pretrained(str(hub_folder), backend="pil")
    assert type(proc).__name__ == "VideoMAEImageProcessorPil"
    return proc


@pytest.fixture(scope="module")
def processor() -> XCLIPVideoProcessor:
    return XCLIPVideoProcessor.from_dict(HUB_PREPROCESSOR_CONFIG)


def _assert_within_levels(ours: torch.Tensor, theirs: torch.Tensor, levels: float, max_frac: float) -> None:
    """Normalised pixels: at most `levels` grey levels apart, and few pixels differ at all."""
    diff = (ours - theirs).abs()
    assert float(diff.max()) <= levels * ONE_LEVEL + FLOAT_EPS, float(diff.max())
    frac = float((diff > FLOAT_EPS).float().mean())
    assert frac <= max_frac, frac
    # Mean |diff| is at most (fraction differing) x (levels); measured ~0.0035 for bilinear.
    assert float(diff.mean()) <= max_frac * levels * ONE_LEVEL + FLOAT_EPS


# ---- config -------------------------------------------------------------------------------


def test_defaults_are_the_hub_config(processor):
    assert XCLIPVideoProcessor() == processor
    assert processor.size == {"shortest_edge": 224} and processor.crop_size == {"height": 224, "width": 224}
    assert processor.resample == 2 and processor.rescale_factor == pytest.approx(1 / 255)


def test_config_matches_transformers(processor, hf_video_processor):
    ours, theirs = processor.to_dict(), hf_video_processor.to_dict()
    for key in ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "do_normalize"):
        assert ours[key] == theirs[key], key
    assert ours["rescale_factor"] == theirs["rescale_factor"]
    assert ours["image_mean"] == list(theirs["image_mean"]) and ours["image_std"] == list(theirs["image_std"])


def test_config_round_trip(tmp_path, processor, pil_backend):
    custom = XCLIPVideoProcessor(
        size={"height": 160, "width": 200},
        crop_size=128,
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=0.5,
    )
    for proc in (processor, custom):
        path = proc.save_pretrained(tmp_path)
        assert path.name == "preprocessor_config.json"
        assert XCLIPVideoProcessor.from_pretrained(tmp_path) == proc
        assert XCLIPVideoProcessor.from_pretrained(path) == proc
        # transformers reads our file back as the class it uses for the released checkpoints.
        hf = transformers.AutoImageProcessor.from_pretrained(str(tmp_path), backend="pil")
        assert type(hf).__name__ == "VideoMAEImageProcessorPil"
        assert hf.size == proc.size and hf.crop_size == proc.crop_size and hf.resample == proc.resample
    assert custom.crop_size == {"height": 128, "width": 128} and custom.image_std == [0.5] * 3


# ---- the arithmetic, step by step ---------------------------------------------------------


@pytest.mark.parametrize(
    "size", [{"shortest_edge": 224}, {"shortest_edge": 97}, {"height": 100, "width": 300}]
)
def test_resize_output_size_is_exact(size):
    from transformers.image_transforms import get_resize_output_image_size

    for h in (1, 2, 50, 97, 223, 224, 225, 240, 299, 320, 333, 480, 720, 1080, 1081):
        for w in (1, 3, 50, 100, 131, 224, 226, 320, 401, 640, 853, 1920):
            if "shortest_edge" in size:
                ref = get_resize_output_image_size(
                    np.zeros((3, h, w)),
                    size["shortest_edge"],
                    default_to_square=False,
                    input_data_format="channels_first",
                )
            else:
                ref = (size["height"], size["width"])
            assert resize_output_size(h, w, size) == tuple(ref), (h, w)


@pytest.mark.parametrize("hw", [(224, 224), (224, 298), (298, 224), (225, 225), (231, 300), (224, 225)])
def test_center_crop_is_exact(hw):
    from transformers.image_transforms import center_crop

    image = np.random.default_rng(0).integers(0, 256, (3, *hw), dtype=np.uint8)
    ours = center_crop_frames(torch.from_numpy(image)[None], 224, 224)[0].numpy()
    ref = center_crop(image, (224, 224), input_data_format="channels_first")
    np.testing.assert_array_equal(ours, ref)


def test_center_crop_pads_like_torchvision():
    # Smaller than the crop: zero-pad, the odd pixel going right/bottom (torchvision backend;
    # the PIL backend puts it left/top instead: this case never arises with the released configs).
    frames = torch.full((1, 3, 2, 3), 7, dtype=torch.uint8)
    out = center_crop_frames(frames, 5, 6)
    assert out.shape == (1, 3, 5, 6)
    rows, cols = torch.nonzero(out[0, 0], as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 2, 1, 3)
    assert int(out.sum()) == 7 * 3 * 6


def test_resize_uint8_within_one_level_of_pil(processor, hf_video_processor):
    rng = np.random.default_rng(1)
    for h, w in FRAME_SIZES:
        video = _video(rng, 2, h, w)
        ours = processor.resize_and_crop(video)  # (T,3,224,224) uint8
        assert ours.dtype == torch.uint8 and ours.shape == (2, 3, 224, 224)
        size = transformers.image_utils.SizeDict(**processor.size)
        crop = transformers.image_utils.SizeDict(**processor.crop_size)
        for t in range(2):
            chw = np.ascontiguousarray(video[t].transpose(2, 0, 1))
            ref = hf_video_processor.center_crop(hf_video_processor.resize(chw, size, 2), crop)
            diff = np.abs(ours[t].numpy().astype(int) - ref.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.25, ((h, w), diff.max(), (diff > 0).mean())


def test_normalize_is_exact_given_the_same_uint8(processor, hf_video_processor):
    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8))
    ours = processor.normalize(frames)
    assert ours.dtype == torch.float32
    for t in range(4):
        x = hf_video_processor.rescale(frames[t].numpy(), processor.rescale_factor)
        ref = hf_video_processor.normalize(x, processor.image_mean, processor.image_std)
        np.testing.assert_allclose(ours[t].numpy(), ref, rtol=0, atol=FLOAT_EPS)
    # The fused form torchvision uses: (x - 255 mean) / (255 std) in float32.
    mean = torch.tensor(processor.image_mean) * 255.0
    std = torch.tensor(processor.image_std) * 255.0
    fused = (frames.float() - mean[:, None, None]) / std[:, None, None]
    assert torch.equal(ours, fused)


def test_normalize_variants():
    frames = torch.full((1, 3, 2, 2), 51, dtype=torch.uint8)
    assert torch.allclose(
        XCLIPVideoProcessor(do_normalize=False).normalize(frames), torch.full((1, 3, 2, 2), 0.2)
    )
    plain = XCLIPVideoProcessor(do_normalize=False, do_rescale=False).normalize(frames)
    assert plain.dtype == torch.float32 and torch.all(plain == 51)
    raw = XCLIPVideoProcessor(do_rescale=False, image_mean=[1, 1, 1], image_std=[2, 2, 2]).normalize(frames)
    assert torch.all(raw == 25)


def test_resize_paths_agree_and_native_branch(monkeypatch):
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 120, 160), dtype=np.uint8))
    native = F.interpolate(frames, size=(224, 298), mode="bilinear", align_corners=False, antialias=True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert torch.equal(resize_frames(frames, (224, 298), "bilinear"), native)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    via_float = resize_frames(frames, (224, 298), "bilinear")
    assert via_float.dtype == torch.uint8
    assert (via_float.int() - native.int()).abs().max() <= 1
    assert resize_frames(frames, (120, 160), "bilinear") is frames  # same size: untouched


# ---- end to end parity --------------------------------------------------------------------


@pytest.mark.parametrize("hw", FRAME_SIZES)
def test_pixel_values_parity(processor, hf_video_processor, hw):
    video = _video(np.random.default_rng(hw[0] * 10000 + hw[1]), 3, *hw)
    ours = processor(video)["pixel_values"]
    theirs = hf_video_processor(list(video), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 3, 224, 224) and ours.dtype == torch.float32
    if hw == (224, 224):  # no resize, no crop: only float rounding may differ
        torch.testing.assert_close(ours, theirs, rtol=0, atol=FLOAT_EPS)
    else:
        # PIL resizes in uint8 with its own rounding: up to one grey level (~0.0175) on ~20% of pixels.
        _assert_within_levels(ours, theirs, levels=1, max_frac=0.25)


def test_bicubic_parity(hf_video_processor):
    ours_proc = XCLIPVideoProcessor(resample=3)
    hf = transformers.VideoMAEImageProcessorPil(**{**HUB_PREPROCESSOR_CONFIG, "resample": 3})
    rng = np.random.default_rng(4)
    for hw in [(240, 320), (97, 131), (50, 100)]:
        video = _video(rng, 2, *hw)
        ours = ours_proc(video)["pixel_values"]
        theirs = hf(list(video), return_tensors="pt")["pixel_values"]
        # Bicubic upsampling: PIL rounds between its two passes; up to 2 levels on <1% of pixels.
        _assert_within_levels(ours, theirs, levels=2, max_frac=0.02)


def test_batch_parity_and_input_forms(processor, hf_video_processor):
    rng = np.random.default_rng(5)
    a, b = _video(rng, 4, 240, 320), _video(rng, 4, 360, 480)
    theirs = hf_video_processor([list(a), list(b)], return_tensors="pt")["pixel_values"]
    ours = processor([a, b])["pixel_values"]
    assert ours.shape == (2, 4, 3, 224, 224)
    _assert_within_levels(ours, theirs, levels=1, max_frac=0.25)
    # The same video in every accepted form gives the same result.
    ref = processor(a)["pixel_values"]
    forms = [
        list(a),
        torch.from_numpy(a),
        [torch.from_numpy(f) for f in a],
        [a],
        [list(a)],
        a[None],
        tuple(a),
    ]
    for form in forms:
        assert torch.equal(processor(form)["pixel_values"], ref)
    # Two-step use (what the streaming pipeline does) equals the one-shot call.
    assert torch.equal(processor.normalize(processor.resize_and_crop(a))[None], ref)
    np.testing.assert_array_equal(processor(a, return_tensors="np")["pixel_values"], ref.numpy())
    as_list = processor([a, b], return_tensors=None)["pixel_values"]
    assert isinstance(as_list, list) and torch.equal(as_list[1], ours[1])


def test_non_contiguous_and_strided_input(processor):
    video = _video(np.random.default_rng(6), 2, 300, 400)
    flipped = video[:, ::-1, ::2]  # negative and step strides
    assert torch.equal(
        processor(flipped)["pixel_values"], processor(np.ascontiguousarray(flipped))["pixel_values"]
    )


def test_xclip_processor_parity(hub_folder, pil_backend):
    ours = XCLIPProcessor.from_pretrained(hub_folder)
    theirs = transformers.XCLIPProcessor.from_pretrained(str(hub_folder))
    assert ours.image_processor is ours.video_processor
    assert isinstance(ours.tokenizer, CLIPTokenizer)
    labels = ["playing sports", "eating spaghetti", "go shopping"]
    video = _video(np.random.default_rng(7), 8, 240, 320)
    out = ours(text=labels, videos=list(video), return_tensors="pt", padding=True)
    ref = theirs(text=labels, videos=list(video), return_tensors="pt", padding=True)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert torch.equal(out.input_ids, ref["input_ids"]) and torch.equal(
        out.attention_mask, ref["attention_mask"]
    )
    assert out.pixel_values.shape == ref["pixel_values"].shape == (1, 8, 3, 224, 224)
    _assert_within_levels(out.pixel_values, ref["pixel_values"], levels=1, max_frac=0.25)
    assert set(ours(text="a cat")) == {"input_ids", "attention_mask"}
    assert set(ours(videos=video)) == {"pixel_values"}
    assert ours.batch_decode(out.input_ids, skip_special_tokens=True) == labels
    assert ours.decode(out.input_ids[0], skip_special_tokens=True) == labels[0]


def test_xclip_processor_round_trip(hub_folder, tmp_path, pil_backend):
    proc = XCLIPProcessor.from_pretrained(hub_folder)
    names = {p.name for p in proc.save_pretrained(tmp_path)}
    assert {"tokenizer.json", "vocab.json", "merges.txt", "preprocessor_config.json"} <= names
    again = XCLIPProcessor.from_pretrained(tmp_path)
    assert again.video_processor == proc.video_processor
    assert again.tokenizer.backend_tokenizer.to_str() == proc.tokenizer.backend_tokenizer.to_str()
    hf = transformers.XCLIPProcessor.from_pretrained(str(tmp_path))
    assert hf.image_processor.crop_size == proc.video_processor.crop_size


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 32, 32, 4), np.uint8), "channels-last RGB"),
        (np.zeros((2, 3, 32, 32), np.uint8), "channels-last RGB"),
        (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((0, 32, 32, 3), np.uint8), "empty video"),
        (np.zeros((2, 0, 32, 3), np.uint8), "non-empty"),
        (np.zeros((32, 32), np.uint8), r"\(T, H, W, 3\)"),
        ([], "no videos"),
        ([[]], "empty video"),
        ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 30, 3), np.uint8)], "share one shape"),
        ([np.zeros((32, 32), np.uint8)], r"H, W, 3\)"),
        ([np.zeros((2, 32, 32, 3), np.uint8), np.zeros((3, 32, 32, 3), np.uint8)], "same number of frames"),
    ],
)
def test_bad_videos_raise(processor, bad, match):
    with pytest.raises(ValueError, match=match):
        processor(bad)


def test_bad_types_raise(processor):
    with pytest.raises(TypeError):
        processor("video.mp4")
    with pytest.raises(TypeError):
        processor([["not a frame"]])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(np.zeros((1, 8, 8, 3), np.uint8), return_tensors="tf")
    with pytest.raises(ValueError, match="uint8"):
        processor.normalize(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        processor.normalize(torch.zeros(8, 8, 3, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": {"longest_edge": 224}}, "size must have keys"),
        ({"size": 0}, "positive"),
        ({"size": True}, "int or a dict"),
        ({"crop_size": {"shortest_edge": 224}}, "crop_size must have keys"),
        ({"resample": 1}, "resample"),
        ({"image_mean": [0.5, 0.5]}, "3 values"),
        ({"image_std": [0.5, 0.0, 0.5]}, "positive"),
        ({"rescale_factor": 0}, "rescale_factor"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        XCLIPVideoProcessor(**kwargs)


def test_missing_or_bad_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json not found"):
        XCLIPVideoProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        XCLIPVideoProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        XCLIPVideoProcessor.from_pretrained(tmp_path)


def test_xclip_processor_errors(hub_folder):
    proc = XCLIPProcessor.from_pretrained(hub_folder)
    with pytest.raises(ValueError, match="give text and/or videos"):
        proc()
    with pytest.raises(ValueError, match="no text given"):
        proc(text=[])
    with pytest.raises(ValueError, match="empty"):
        proc(text=["ok", ""])
