"""The model replica under faults: one camera's bad window in a shared batch (real Ray Serve), and a
forward pass that never returns (the health check fails, Serve replaces the replica)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from ray.exceptions import GetTimeoutError

from xclip_stream.actors.replica import XCLIPReplica, deploy, replica_options
from xclip_stream.pipeline.model_check import ModelMismatch
from xclip_stream.schemas.config import ModelConfig, ServeConfig

GOOD = ("a person walking", "a car")


def frames(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (4, 3, size, size), dtype=np.uint8)


def test_one_cameras_bad_windows_do_not_fail_the_others_in_the_same_batch(ray_session, tiny_checkpoint):
    from ray import serve

    handle = deploy(ModelConfig(path=str(tiny_checkpoint), precision="float32"),
                    ServeConfig(num_cpus=0.25, max_labels=5, max_batch_size=8, batch_wait_timeout_s=0.5))
    try:
        good = [handle.score.remote(frames(i), GOOD) for i in range(4)]  # camera A
        bad_shape = handle.score.remote(frames(9, size=48), GOOD)  # camera B: a wrong-size window
        too_many = handle.score.remote(frames(10), tuple("abcdef"))  # camera B: a label set over the cap
        scored = [r.result(timeout_s=120) for r in good]
        assert all(len(logits) == 2 and all(np.isfinite(logits)) for logits in scored)
        for response, reason in [(bad_shape, "got uint8 (4, 3, 48, 48)"),
                                 (too_many, "6 labels, more than serve.max_labels (5)")]:
            with pytest.raises(Exception) as e:
                response.result(timeout_s=120)
            cause = getattr(e.value, "cause", e.value)  # what the scoring loop looks at: no retry
            assert isinstance(cause, ModelMismatch) and reason in str(cause)
        info = handle.info.remote().result(timeout_s=60)
        assert info["batches"] < 6  # the good and the bad windows did share batches
    finally:
        serve.delete("xclip-stream", _blocking=True)


class StuckReplica(XCLIPReplica):
    """The real replica, whose forward pass hangs (a wedged device) until a release file appears."""

    def __init__(self, *args, release: str):
        super().__init__(*args)
        real = self.scorer.score_each

        def stuck(windows, labels):
            while not os.path.exists(release):
                time.sleep(0.05)
            return real(windows, labels)

        self.scorer.score_each = stuck


def test_a_replica_stuck_in_a_forward_pass_fails_its_health_check_and_is_replaced(ray_session, tiny_checkpoint,
                                                                                   tmp_path):
    from ray import serve

    release = tmp_path / "release"
    options = {**replica_options(ServeConfig(num_cpus=0.25)), "health_check_period_s": 1.0}
    app = serve.deployment(StuckReplica).options(**options).bind(
        ModelConfig(path=str(tiny_checkpoint), precision="float32").model_dump(), 4, 0.0, None, 1000, 1.0,
        release=str(release))
    handle = serve.run(app, name="stuck-test", route_prefix=None)
    try:
        stuck = handle.score.remote(frames(0), GOOD)
        with pytest.raises(Exception) as e:  # the replica fails its health check and Serve replaces it
            stuck.result(timeout_s=120)
        assert not isinstance(e.value, GetTimeoutError), "the stuck replica was not replaced"
        assert not isinstance(getattr(e.value, "cause", e.value), ModelMismatch)  # a system error: retried
        release.touch()
        assert len(handle.score.remote(frames(1), GOOD).result(timeout_s=120)) == 2  # the new replica scores
    finally:
        serve.delete("stuck-test", _blocking=True)
