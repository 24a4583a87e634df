"""Numerical parity with transformers' X-CLIP (the test-only oracle) on random-weight checkpoints.

Each configuration is built by transformers, its weights perturbed away from their structured init
(so a swapped LayerNorm weight/bias or a missing bias cannot hide), saved with save_pretrained, and
loaded by our classes from that folder.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from xclip_stream.model import XCLIPConfig, XCLIPModel, XCLIPTextModel, XCLIPVisionModel

RTOL = 1e-5
EOS = 49407

CONFIGS = {
    "base-like": dict(),
    "patch16": dict(vision=dict(patch_size=16, image_size=64)),
    "16-frames-2-mit-layers": dict(vision=dict(num_frames=16, mit_num_hidden_layers=2)),
    "1-prompt-layer": dict(top=dict(prompt_layers=1)),
    "3-prompt-layers-odd-heads": dict(
        top=dict(prompt_layers=3, prompt_num_attention_heads=2, projection_dim=48, prompt_alpha=0.3),
        text=dict(num_attention_heads=2),
        vision=dict(num_attention_heads=2, mit_hidden_size=48, mit_num_attention_heads=6, mit_intermediate_size=96),
    ),
}


def hf_config(text=None, vision=None, top=None) -> transformers.XCLIPConfig:
    """A small xclip-base-patch32-shaped config (widths shrunk so the CPU suite stays fast)."""
    text_cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) | (text or {})
    vision_cfg = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        mit_hidden_size=32, mit_intermediate_size=64, mit_num_attention_heads=4, image_size=96, patch_size=32,
        num_frames=8,
    ) | (vision or {})
    top_cfg = dict(projection_dim=32, prompt_num_attention_heads=4) | (top or {})
    return transformers.XCLIPConfig(text_config=text_cfg, vision_config=vision_cfg, **top_cfg)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def make_inputs(config: transformers.XCLIPConfig, batch: int = 2, seed: int = 0):
    """Three labels of different lengths, right-padded with end-of-text as CLIP's tokenizer pads."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 7, 5]
    ids = torch.full((len(lengths), max(lengths)), EOS)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 0] = 49406
        ids[i, 1 : n - 1] = torch.randint(0, 49000, (n - 2,), generator=g)
        mask[i, :n] = 1
    v = config.vision_config
    pixels = torch.randn(batch, v.num_frames, 3, v.image_size, v.image_size, generator=g)
    return ids, mask, pixels


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request, tmp_path_factory):
    """(folder, reference model) for one configuration, written by transformers."""
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    ref = perturbed(transformers.XCLIPModel(hf_config(**CONFIGS[request.param])), seed=len(request.param))
    ref.save_pretrained(folder)
    return folder, ref


def test_forward_matches_transformers(checkpoint):
    folder, ref = checkpoint
    ours = XCLIPModel.from_pretrained(folder)
    ids, mask, pixels = make_inputs(ref.config)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        got = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    for name in ("logits_per_video", "logits_per_text", "text_embeds", "video_embeds"):
        assert getattr(got, name).shape == getattr(want, name).shape, name
        assert rel_err(getattr(got, name), getattr(want, name)) < RTOL, name
    # Padding must not change a label's score: the reference and we both pool at end-of-text.
    assert not torch.allclose(got.logits_per_video[:, 0], got.logits_per_video[:, 1])


def test_classify_equals_forward(checkpoint):
    folder, ref = checkpoint
    ours = XCLIPModel.from_pretrained(folder)
    ids, mask, pixels = make_inputs(ref.config, batch=3, seed=1)
    with torch.no_grad():
        features = ours.get_text_features(input_ids=ids, attention_mask=mask)
        fast = ours.classify(pixels, features)
        full = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        want = ref.get_text_features(input_ids=ids, attention_mask=mask)
    assert fast.shape == (3, 3)
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    assert rel_err(features, getattr(want, "pooler_output", want)) < RTOL


def test_fused_inference_layout_matches_transformers(checkpoint):
    """fuse_for_inference (patch embedding and q/k/v as single GEMMs) keeps the weights: only the
    order of sums changes, so float32 stays within a few 1e-5 of the reference."""
    folder, ref = checkpoint
    fused = XCLIPModel.from_pretrained(folder).fuse_for_inference()
    assert fused.vision_model.embeddings.patch_gemm
    assert hasattr(fused.vision_model.encoder.layers[0].self_attn, "qkv_proj")
    ids, mask, pixels = make_inputs(ref.config, batch=3, seed=3)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        got = fused(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    for name in ("logits_per_video", "text_embeds", "video_embeds"):
        assert rel_err(getattr(got, name), getattr(want, name)) < 10 * RTOL, name


def test_video_features_and_loss_match(checkpoint):
    folder, ref = checkpoint
    ours = XCLIPModel.from_pretrained(folder)
    ids, mask, pixels = make_inputs(ref.config, batch=3, seed=2)  # square: 3 videos x 3 labels
    with torch.no_grad():
        want_video = ref.get_video_features(pixel_values=pixels)
        want_loss = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
        got = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True)
        got_video = ours.get_video_features(pixels)
    assert rel_err(got_video, getattr(want_video, "pooler_output", want_video)) < RTOL
    assert abs(got.loss.item() - want_loss.item()) < RTOL * abs(want_loss.item())


def test_towers_load_alone(checkpoint, tmp_path):
    """XCLIPTextModel / XCLIPVisionModel load from a full checkpoint and from their own folders."""
    folder, ref = checkpoint
    ids, mask, pixels = make_inputs(ref.config)
    frames = pixels.flatten(0, 1)
    ref.text_model.save_pretrained(tmp_path / "text")
    ref.vision_model.save_pretrained(tmp_path / "vision")
    with torch.no_grad():
        want_text = ref.text_model(input_ids=ids, attention_mask=mask)
        want_vision = ref.vision_model(pixel_values=frames)
        for source in (folder, tmp_path / "text"):
            got = XCLIPTextModel.from_pretrained(source)(input_ids=ids, attention_mask=mask)
            assert rel_err(got.pooler_output, want_text.pooler_output) < RTOL
            assert rel_err(got.last_hidden_state * mask[..., None], want_text.last_hidden_state * mask[..., None]) < RTOL
        for source in (folder, tmp_path / "vision"):
            got = XCLIPVisionModel.from_pretrained(source)(frames)
            assert rel_err(got.pooler_output, want_vision.pooler_output) < RTOL
            assert rel_err(got.last_hidden_state, want_vision.last_hidden_state) < RTOL


def test_our_checkpoint_loads_in_transformers(checkpoint, tmp_path):
    folder, ref = checkpoint
    ours = XCLIPModel.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    reloaded = transformers.XCLIPModel.from_pretrained(tmp_path).eval()
    ids, mask, pixels = make_inputs(ref.config, seed=3)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        got = reloaded(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
    assert rel_err(got, want) < RTOL
    assert XCLIPConfig.from_pretrained(tmp_path) == XCLIPConfig.from_pretrained(folder)
