"""Checkpoint folders: every weight format transformers writes, and clear errors for the wrong ones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from xclip_stream.model import XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig
from xclip_stream.model.checkpoint import checkpoint_digest

from .test_model_parity import hf_config, make_inputs, perturbed, rel_err


@pytest.fixture(scope="module")
def reference():
    return perturbed(transformers.XCLIPModel(hf_config()), seed=7)


def logits(model, config):
    ids, mask, pixels = make_inputs(config)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_video


def test_sharded_safetensors(reference, tmp_path):
    reference.save_pretrained(tmp_path, max_shard_size="200KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert rel_err(logits(XCLIPModel.from_pretrained(tmp_path), reference.config), logits(reference, reference.config)) < 1e-5


def test_the_digest_follows_the_weights_not_the_folder(reference, tmp_path):
    reference.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert checkpoint_digest(tmp_path / "a") == checkpoint_digest(tmp_path / "b")
    state = load_file(tmp_path / "b" / "model.safetensors")
    state["logit_scale"] = state["logit_scale"] + 0.5
    save_file(state, tmp_path / "b" / "model.safetensors")
    assert checkpoint_digest(tmp_path / "a") != checkpoint_digest(tmp_path / "b")
    reference.save_pretrained(tmp_path / "c", max_shard_size="200KB")  # shards are read too
    shard = sorted((tmp_path / "c").glob("model-*.safetensors"))[-1]
    before = checkpoint_digest(tmp_path / "c")
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    assert checkpoint_digest(tmp_path / "c") != before


def test_legacy_pytorch_model_bin(reference, tmp_path):
    reference.config.save_pretrained(tmp_path)
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    assert rel_err(logits(XCLIPModel.from_pretrained(tmp_path), reference.config), logits(reference, reference.config)) < 1e-5


def test_pickled_objects_are_refused(reference, tmp_path):
    reference.config.save_pretrained(tmp_path)
    torch.save({"weights": torch.zeros(1), "payload": object()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only"):
        XCLIPModel.from_pretrained(tmp_path)


def test_dtype_and_device_arguments(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    model = XCLIPModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training


def test_old_hub_config_with_config_dicts(tmp_path):
    """Configs written by old transformers put the real values in text_config_dict / vision_config_dict."""
    config = {
        "model_type": "xclip",
        "projection_dim": 32,
        "text_config": {"hidden_size": 999, "architectures": None, "bad_words_ids": None},
        "text_config_dict": {"hidden_size": 64, "num_attention_heads": 4},
        "vision_config_dict": {"hidden_size": 96, "num_attention_heads": 4, "mit_hidden_size": 32, "patch_size": 16},
        "transformers_version": "4.22.0.dev0",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = XCLIPConfig.from_pretrained(tmp_path)
    assert loaded.text_config.hidden_size == 64 and loaded.vision_config.patch_size == 16
    assert XCLIPTextConfig.from_pretrained(tmp_path).hidden_size == 64
    assert XCLIPVisionConfig.from_pretrained(tmp_path).hidden_size == 96


def test_config_defaults_are_xclip_base_patch32():
    c = XCLIPConfig()
    assert (c.vision_config.patch_size, c.vision_config.num_frames, c.vision_config.hidden_size) == (32, 8, 768)
    assert (c.text_config.hidden_size, c.projection_dim, c.prompt_layers) == (512, 512, 2)
    ref = transformers.XCLIPConfig().to_dict()
    ours = c.to_dict()
    for key in ("projection_dim", "prompt_layers", "prompt_alpha", "logit_scale_init_value"):
        assert ours[key] == ref[key]
    for sub in ("text_config", "vision_config"):
        for key, value in ours[sub].items():
            assert ref[sub][key] == value, (sub, key)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no-folder", "does not exist"),
        ("no-config", "config.json is missing"),
        ("no-weights", "no weights found"),
        ("wrong-model-type", "model_type is 'clip'"),
        ("missing-key", "1 missing keys: logit_scale"),
        ("extra-key", "1 unexpected keys: not_xclip.weight"),
        ("wrong-shape", r"shape mismatches: text_projection.weight \(checkpoint \(32, 32\), model \(32, 64\)\)"),
        ("bad-config", "not divisible"),
    ],
)
def test_wrong_checkpoints_get_clear_errors(reference, tmp_path, breakage, message):
    from safetensors.torch import save_file

    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    config = json.loads((folder / "config.json").read_text())
    if breakage == "no-folder":
        folder = tmp_path / "nowhere"
    elif breakage == "no-config":
        (folder / "config.json").unlink()
    elif breakage == "no-weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "wrong-model-type":
        config["model_type"] = "clip"
    elif breakage == "missing-key":
        del state["logit_scale"]
    elif breakage == "extra-key":
        state["not_xclip.weight"] = torch.zeros(2)
    elif breakage == "wrong-shape":
        state["text_projection.weight"] = torch.zeros(32, 32)
    elif breakage == "bad-config":
        config["text_config"]["num_attention_heads"] = 5
    if folder.exists() and breakage != "no-config":
        (folder / "config.json").write_text(json.dumps(config))
        if (folder / "model.safetensors").exists():
            save_file(state, str(folder / "model.safetensors"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        XCLIPModel.from_pretrained(folder)
