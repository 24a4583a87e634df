"""Shared test fixtures.

The real CLIP vocabulary is rebuilt from OpenAI's merges file, which ships inside the
open-clip-torch wheel (``open_clip/bpe_simple_vocab_16e6.txt.gz``). The wheel is fetched once with
pip into the repo's git-ignored ``.cache/open_clip`` and reused afterwards. No model hub access.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from xclip_stream.model.tokenizer import clip_vocab_from_bpe, write_vocab_files

# Fixtures for real services live beside their tests' concerns: cameras (RTSP, MJPEG, HLS) and Kafka.
pytest_plugins = ["tests.camera_fixtures", "tests.kafka_fixtures", "tests.kafka_security_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
OPEN_CLIP_CACHE = REPO_ROOT / ".cache" / "open_clip"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"

# `make test` runs pytest twice. First the multi-node cluster test alone: a head and up to five
# fake nodes are more processes than 2 cores carry beside another pipeline (pipeline tests beside it
# got no window for 90 s, and it failed beside the torch.compile and evaluation tests). Then the
# rest on two pytest-xdist workers (--dist loadgroup), each module one xdist group: a module's
# tests run one after another on one worker, so a module whose tests start Ray (a local cluster in
# the test process, or pipelines in processes of their own) shares the 2 cores with at most one
# other pipeline, and a module's fixtures (an evaluation, a compiled model) are built once.
RAY_MODULES = {
    "test_pipeline", "test_pipeline_faults", "test_pipeline_security", "test_replica_faults",
    "test_frames_hardening", "test_camera_credentials", "test_placement", "test_ray_network",
    "test_delivery", "test_kafka_security", "test_demo", "test_cli_run", "test_bench_soak", "test_bench_serve",
    "test_member_scaling",
}
# Modules of a minute or more of CPU that start no Ray (evaluations, torch.compile, transformers).
SLOW_MODULES = {"test_demo_model", "test_stream_stages", "test_model_parity", "test_train", "test_precision"}
CLUSTER_MODULE = "test_cluster"


def _module(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marker into the node id's @group
def pytest_collection_modifyitems(config, items):
    slow = set()
    grouped = config.pluginmanager.hasplugin("xdist")  # without it (-p no:xdist) the mark is unknown
    for item in items:
        module = _module(item)
        if module == CLUSTER_MODULE:
            item.add_marker(pytest.mark.cluster)
            continue
        if grouped:
            item.add_marker(pytest.mark.xdist_group(module))
        if module in RAY_MODULES or module in SLOW_MODULES or "ray_session" in item.fixturenames:
            slow.add(module)
    # xdist hands out groups in collection order: the long modules first and the short ones last,
    # so that both workers end together instead of one finishing a pipeline module alone.
    items.sort(key=lambda item: _module(item) not in slow)


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: the multi-node cluster test (`make test` runs it alone)")
    # Ray starts its workers at nice 15 so that its daemons stay responsive on a busy node. Beside
    # the other xdist worker (nice 0), the replica and the members then got a sliver of a core: a
    # replica took minutes to start, and the timed pipeline tests failed. Here they share fairly.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def _open_clip_wheel() -> Path:
    wheels = sorted(OPEN_CLIP_CACHE.glob("open_clip_torch-*.whl"))
    if wheels:
        return wheels[-1]
    OPEN_CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    # Downloaded aside, then renamed in: the suite's workers may fetch it at the same time.
    staging = Path(tempfile.mkdtemp(dir=OPEN_CLIP_CACHE, prefix=".download-"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "open-clip-torch",
        "-d",
        str(staging),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for wheel in staging.glob("open_clip_torch-*.whl"):
        os.replace(wheel, OPEN_CLIP_CACHE / wheel.name)
    shutil.rmtree(staging, ignore_errors=True)
    wheels = sorted(OPEN_CLIP_CACHE.glob("open_clip_torch-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.fail(
            "could not download the open-clip-torch wheel (needed for OpenAI's CLIP merges file "
            f"{BPE_MEMBER}); command: {' '.join(cmd)}\nexit {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
        )
    return wheels[-1]


@pytest.fixture(scope="session")
def clip_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real CLIP vocab.json + merges.txt (49,408 tokens) and a
    tokenizer_config.json like the released X-CLIP checkpoints' (model_max_length 77)."""
    wheel = _open_clip_wheel()
    folder = tmp_path_factory.mktemp("clip_vocab")
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(BPE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        pytest.fail(f"{wheel}: cannot read {BPE_MEMBER} ({e}); delete the wheel to re-download it")
    bpe_path = folder / "bpe_simple_vocab_16e6.txt.gz"
    bpe_path.write_bytes(data)
    vocab, merges = clip_vocab_from_bpe(bpe_path)
    write_vocab_files(vocab, merges, folder)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def write_tiny_checkpoint(folder: Path, num_frames: int = 4, seed: int = 0, image_size: int = 32,
                          hidden: int = 32, layers: int = 1) -> Path:
    """A small random-weight X-CLIP checkpoint folder (config, weights, tokenizer, preprocessor) for
    pipeline tests: 32x32 input, so decoding and resizing dominate nothing on 2 cores."""
    import torch

    from xclip_stream.model import XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig
    from xclip_stream.model.processor import XCLIPVideoProcessor
    from xclip_stream.model.tokenizer import CLIPTokenizer, train_clip_vocab

    torch.manual_seed(seed)
    config = XCLIPConfig.from_text_vision_configs(
        XCLIPTextConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2),
        XCLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=2, image_size=image_size, patch_size=16, num_frames=num_frames, mit_hidden_size=32,
                          mit_intermediate_size=64, mit_num_attention_heads=2),
        projection_dim=32, prompt_num_attention_heads=2,
    )
    XCLIPModel(config).save_pretrained(folder)
    corpus = ["a person walking", "a person running", "a person falling", "a car", "an empty scene"] * 4
    vocab, merges = train_clip_vocab(corpus, vocab_size=config.text_config.vocab_size)
    CLIPTokenizer.from_vocab(vocab, merges).save_pretrained(folder)
    XCLIPVideoProcessor(size={"shortest_edge": image_size}, crop_size=image_size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-xclip"))


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wider, deeper 224x224 model: ~100 ms a window in float32 on one thread here, slower than a live camera."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("slow-xclip"), image_size=224, hidden=256, layers=6)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray cluster (loopback only) for one test module's pipelines, shut down after it."""
    import ray
    from ray import serve

    from xclip_stream.actors.runner import init_ray

    started = init_ray()
    yield
    if started:
        serve.shutdown()
        ray.shutdown()
