"""Issue 16, part 4, the core: the gpu overlay's RayService and pipeline configuration run for real
on a multi-node Ray cluster whose node types are its worker groups (bench/cluster.py, scenario
"core"; bench/local_rayservice.py lists what is changed for one machine). The run itself, core
scenario included, is `python bench/cluster.py` for now: its 77 s test is kept out of `make test`
until the suite has room for it (on branch h/cluster)."""

from __future__ import annotations

import yaml

from tests.benches import load_bench


def test_node_types_are_the_worker_groups_as_kuberays_autoscaler_reads_them():
    """No Ray needed: the rendered RayService through Ray's KubeRay translation, with the local
    changes only. The replica asks for what only the replica nodes offer, camera actors for what
    only the stream nodes offer, and the head offers no CPU."""
    local = load_bench("local_rayservice")
    shipped = local.load_shipped()
    types = local.autoscaling_config(shipped.service, "127.0.0.1:1")["available_node_types"]
    assert set(types) == {"ray.head.default", "streams", "replicas"}
    head, streams, replicas = (types[k]["resources"] for k in ("ray.head.default", "streams", "replicas"))
    assert head["CPU"] == 0 and not {"xclip_stream", "xclip_replica", "GPU"} & set(head)
    assert streams["xclip_stream"] == 8 and not {"xclip_replica", "GPU"} & set(streams)
    assert replicas["xclip_replica"] == 1 and replicas["GPU"] == 1 and "xclip_stream" not in replicas
    assert types["streams"]["min_workers"] == 0 and types["replicas"]["min_workers"] == 1
    asks = shipped.serve["applications"][0]["deployments"][0]["ray_actor_options"]
    assert asks["num_gpus"] == 1 and asks["resources"] == {"xclip_replica": 1}
    assert asks["num_cpus"] <= replicas["CPU"]
    assert shipped.pipeline["placement"]["resources"] == {"xclip_stream": 1}
    # the local pipeline keeps the shipped structure: members, group, placement, serve.deploy false
    pipeline = local.local_pipeline(shipped.pipeline, "127.0.0.1:9", {"cam": {"url": "/dev/null"}},
                                    "/tmp/secret", {"frames": "f"})
    assert pipeline["kafka"]["frames"] == [{**shipped.pipeline["kafka"]["frames"][0], "topic": "f"}]
    assert {k: pipeline[k] for k in ("placement", "serve", "model", "labels", "defaults")} == {
        k: shipped.pipeline[k] for k in ("placement", "serve", "model", "labels", "defaults")}
    assert "security" not in pipeline["kafka"] and "password" not in yaml.safe_dump(pipeline)
