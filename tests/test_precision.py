"""Reduced precision: bf16 autocast and bf16 weights run (LayerNorm statistics and the final scores stay
float32) and stay as close to float32 as transformers itself does; int8 runs every Linear layer of the
video side in int8 on CPUs, float8 in e4m3 GEMMs (emulated here). On CPU this exercises the code paths the GPU uses; speed is measured in
bench/, and what int8 and bf16 cost on trained weights in bench/precision.py."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from xclip_stream.model import XCLIPModel
from xclip_stream.model.processor import XCLIPVideoProcessor
from xclip_stream.model.quantize import (
    E4M3,
    Float8Linear,
    float8_linears,
    float8_linears_,
    int8_linears,
    quantize_rows,
)
from xclip_stream.pipeline.scoring import BatchScorer, auto_precision, check_precision

from .test_model_parity import hf_config, make_inputs, perturbed


def cosine_err(model, got, want) -> float:
    """Largest logit error in units of cosine similarity (logits = logit_scale.exp() * cosine)."""
    return ((got.float() - want).abs().max() / model.logit_scale.exp()).item()


def uint8_windows(config, batch: int = 2, seed: int = 3) -> torch.Tensor:
    """(B, T, 3, S, S) random uint8 frames, as streams send a replica."""
    v = config.vision_config
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, v.num_frames, 3, v.image_size, v.image_size), dtype=torch.uint8, generator=g)


def video_linears(ours, copy_) -> int:
    """The Linear layers a scorer's copy of the video side runs: q, k and v become one qkv_proj."""
    fused = sum(hasattr(m, "qkv_proj") for m in copy_.modules())
    assert fused > 0
    return sum(isinstance(m, torch.nn.Linear) for name, m in ours.named_modules()
               if not name.startswith("text_model.")) - 2 * fused


def scored_and_reference(pair, scorer) -> tuple[torch.Tensor, torch.Tensor]:
    """The scorer's logits for two random windows, and transformers' float32 logits for them."""
    ours, ref, _ = pair
    ids, mask, _ = make_inputs(ours.config)
    frames = uint8_windows(ours.config)
    pixels = XCLIPVideoProcessor().normalize(frames)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        scorer.remember(("a", "b", "c"), ours.get_text_features(input_ids=ids, attention_mask=mask))
    return torch.tensor(scorer.score(list(frames.numpy()), [("a", "b", "c")] * 2)), want


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(our model, transformers' model) with the same weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("precision")
    ref = perturbed(transformers.XCLIPModel(hf_config()), seed=11)
    ref.save_pretrained(folder)
    return XCLIPModel.from_pretrained(folder), ref, folder


def test_bf16_autocast_no_worse_than_transformers(pair):
    ours, ref, _ = pair
    ids, mask, pixels = make_inputs(ours.config)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        features = ours.get_text_features(input_ids=ids, attention_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = ours.classify(pixels, features)
            ref_bf16 = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
    assert got.dtype == torch.float32  # scores are computed in float32 even under autocast
    assert torch.isfinite(got).all()
    # bf16 keeps 8 mantissa bits; on these random weights the cosines drift by 0.005-0.03 (seed
    # dependent) for transformers and for us alike. We must not be worse than the reference.
    ours_err, ref_err = cosine_err(ours, got, want), cosine_err(ours, ref_bf16, want)
    assert ours_err <= max(1.25 * ref_err, 0.01), (ours_err, ref_err)


def test_autocast_keeps_the_residual_streams_float32(pair):
    """The cause behind the drift the test above bounds: under autocast the projections run in bf16
    but the towers' residual streams must stay float32, as the reference keeps them. A bf16 stream
    (the patches' dtype carried into the embeddings and the MIT) doubled our logits' error on CPUs
    without native bf16 (0.026 against transformers' 0.012), whatever the GEMM kernels."""
    ours, _, _ = pair
    v = ours.config.vision_config
    pixels = torch.rand(v.num_frames, 3, v.image_size, v.image_size)
    seen = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
             for name, module in (("embeddings", ours.vision_model.embeddings),
                                  ("mit_layer", ours.mit.encoder.layers[0]))]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert ours.vision_model.embeddings.patch_embedding(pixels).dtype == torch.bfloat16  # autocast is on
            ours.encode_videos(pixels[None])
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"embeddings": torch.float32, "mit_layer": torch.float32}


def test_bf16_weights_run_and_stay_close(pair):
    ours, _, folder = pair
    model = XCLIPModel.from_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, mask, pixels = make_inputs(model.config)
    with torch.no_grad():
        want = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        got = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
    assert got.dtype == torch.float32
    # With bf16 weights everywhere (the text tower and the label scoring too) the error is larger
    # (measured 0.008-0.045 over 8 seeds), which is why the scorer casts only its video encoder.
    assert cosine_err(ours, got, want) < 0.06


def test_scorer_bf16_video_encoder_no_worse_than_transformers(pair):
    """The replica's reduced-precision path: a bf16 copy of the video side in its fused inference
    layout (LayerNorm statistics float32 inside the kernel), from uint8, scored on that copy."""
    ours, ref, _ = pair
    ids, mask, _ = make_inputs(ours.config)
    frames = uint8_windows(ours.config)
    scorer = BatchScorer(ours, processor=None, precision="bfloat16")
    assert {p.dtype for p in scorer.encoder.model.parameters()} == {torch.bfloat16}
    assert scorer.encoder.model.vision_model.embeddings.patch_gemm and scorer.encoder.model.text_model is None
    assert next(ours.parameters()).dtype == torch.float32  # the caller's model is not cast
    pixels = XCLIPVideoProcessor().normalize(frames)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video
        ref_bf16 = copy.deepcopy(ref).to(torch.bfloat16)(
            input_ids=ids, attention_mask=mask, pixel_values=pixels.bfloat16()).logits_per_video
        scorer.remember(("a", "b", "c"), ours.get_text_features(input_ids=ids, attention_mask=mask))
    got = torch.tensor(scorer.score(list(frames.numpy()), [("a", "b", "c")] * 2))
    ours_err, ref_err = cosine_err(ours, got, want), cosine_err(ours, ref_bf16, want)
    assert ours_err <= max(1.25 * ref_err, 0.01), (ours_err, ref_err)


def test_bf16_label_scoring_keeps_the_label_stream_float32(pair):
    """On the scorer's bf16 copy the prompt generator runs in bf16, but the label embeddings it
    offsets, the norms and the cosines stay float32: the label half alone costs a fraction of bf16
    weights everywhere (0.008-0.045, test above), and the logits come out float32."""
    ours, _, _ = pair
    ids, mask, pixels = make_inputs(ours.config, batch=4, seed=5)
    scorer = BatchScorer(ours, processor=None, precision="bfloat16")
    with torch.no_grad():
        video, context = ours.encode_videos(pixels)
        text = ours.get_text_features(input_ids=ids, attention_mask=mask)
        want = ours.score_videos(video, context, text)
        got = scorer.encoder.score(video.bfloat16(), context.bfloat16(), text)
    assert got.dtype == torch.float32
    # measured 0.003-0.011 over 6 seeds of these weights, nearly all of it the generator's bf16
    assert cosine_err(ours, got, want) < 0.03, cosine_err(ours, got, want)


@pytest.mark.parametrize(("device", "native", "expected"), [
    ("cpu", True, "bfloat16"),  # AVX512-BF16 or AMX: oneDNN's bf16 GEMMs
    ("cpu", False, "float32"),  # bf16 would be emulated, slower than float32
    ("cuda", True, "bfloat16"),  # Ampere on
    ("cuda", False, "float16"),  # a T4: fp16 tensor cores, bf16 emulated
])
def test_auto_precision_is_what_the_device_runs_natively(monkeypatch, device, native, expected):
    """The hardware probes are the boundary here (this machine has one CPU and maybe no GPU)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0) if native else (7, 5))
    assert auto_precision(torch.device(device)) == expected


def test_auto_scorer_takes_the_device_s_precision(pair):
    ours, _, _ = pair
    scorer = BatchScorer(ours, processor=None)
    assert scorer.precision == auto_precision(torch.device("cpu"))
    dtypes = {p.dtype for p in scorer.encoder.model.parameters()}
    assert dtypes == {torch.bfloat16 if scorer.precision == "bfloat16" else torch.float32}


def test_int8_scorer_runs_every_linear_of_the_video_side_in_int8(pair):
    """int8 weights (one scale per output channel), float32 between the GEMMs: every Linear the
    encoder's copy runs is quantized, none is left in float32, the caller's model is untouched, and
    the logits stay near float32's (what it costs on trained weights: bench/precision.py)."""
    ours = pair[0]
    scorer = BatchScorer(ours, processor=None, precision="int8")
    copy_ = scorer.encoder.model
    assert scorer.encoder.dtype is None and copy_.text_model is None  # float32 activations
    assert not any(isinstance(m, torch.nn.Linear) for m in copy_.modules())  # every one quantized
    assert int8_linears(copy_) == video_linears(ours, copy_)
    assert int8_linears(ours) == 0 and hasattr(ours.vision_model.encoder.layers[0].self_attn, "q_proj")
    got, want = scored_and_reference(pair, scorer)
    assert 0 < cosine_err(ours, got, want) < 0.05, cosine_err(ours, got, want)


def test_int8_is_refused_off_the_cpu_and_unknown_precisions_are_named():
    check_precision("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="int8 runs on CPUs only.*not on cuda.*bfloat16 or float16"):
        check_precision("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="one of .*'int8'.* got 'int4'"):
        check_precision("int4", torch.device("cpu"))


def test_float8_linear_keeps_each_row_within_e4m3s_rounding():
    """One scale per output channel for the weight, one per row for the input: a row of inputs a
    thousand times larger than the others, and an all-zero row, lose no more than any other row."""
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 3, 64)
    x[1, 2] *= 1000.0
    x[4, 0] = 0.0
    fp8 = Float8Linear(linear)
    assert fp8.weight.dtype == E4M3 and fp8.weight.shape == (48, 64) and fp8.weight_scale.shape == (1, 48)
    with torch.no_grad():
        want, got = linear(x), fp8(x)
    assert got.shape == (5, 3, 48) and got.dtype == torch.bfloat16
    # the GEMM is the product of the dequantized operands plus the bias, to bf16's rounding
    q, scale = quantize_rows(x.reshape(-1, 64))
    exact = (q.float() * scale) @ (fp8.weight.float() * fp8.weight_scale.T).T + linear.bias.detach()
    assert torch.allclose(got.float().reshape(-1, 48), exact, rtol=1e-2, atol=1e-2 * exact.abs().max().item())
    rows_err = ((got.float() - want).norm(dim=-1) / want.norm(dim=-1)).flatten()
    # e4m3 keeps 3 mantissa bits (relative step 1/16) on each operand; over a 64-term sum the
    # rounding averages out to a few percent of each row
    assert rows_err.max() < 0.06, rows_err
    with pytest.raises(ValueError, match="multiples of 16, not 24 -> 48"):
        Float8Linear(torch.nn.Linear(24, 48))


def test_float8_scorer_runs_the_video_sides_linears_in_e4m3_and_stays_close(pair):
    """float8 (emulated on this CPU): every Linear of the encoder's copy is an e4m3 GEMM, bf16
    between them, the caller's model untouched, logits near float32's (on trained weights:
    bench/precision.py). A Linear whose sizes an FP8 GEMM cannot take stays as it was."""
    ours = pair[0]
    scorer = BatchScorer(ours, processor=None, precision="float8", emulate=True)
    copy_ = scorer.encoder.model
    assert scorer.encoder.dtype == torch.bfloat16 and copy_.text_model is None
    assert float8_linears(copy_) == (video_linears(ours, copy_), 0)
    assert float8_linears(ours)[0] == 0 and hasattr(ours.vision_model.encoder.layers[0].self_attn, "q_proj")
    got, want = scored_and_reference(pair, scorer)
    # e4m3's 3 mantissa bits against int8's 7 (per channel): on these random weights, whose logits
    # are mostly rounding, measured 0.039-0.091 over three seeds of frames (bf16 0.006-0.020, int8
    # 0.011-0.030). The layer's own arithmetic is checked exactly in the test above.
    assert 0 < cosine_err(ours, got, want) < 0.12, cosine_err(ours, got, want)
    odd = torch.nn.Sequential(torch.nn.Linear(64, 40), torch.nn.Linear(40, 64))
    assert float8_linears(float8_linears_(odd)) == (0, 2)


def test_float8_needs_fp8_tensor_cores_unless_emulated(monkeypatch):
    """The GPU's capability is the boundary here (this machine may have no GPU)."""
    with pytest.raises(ValueError, match="float8 needs a GPU with FP8 tensor cores .*not a cpu.*int8, bfloat16"):
        check_precision("float8", torch.device("cpu"))
    check_precision("float8", torch.device("cpu"), emulate=True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match="compute capability 8.9 on.*NVIDIA A100 is 8.0.*bfloat16"):
        check_precision("float8", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_precision("float8", torch.device("cuda"))
