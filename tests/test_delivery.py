"""At-least-once publishing under faults: a sink that fails, a broker that restarts (memory and
durable storage), a broker paused mid-stream, and a broker that is down when the pipeline starts.
Brokers here are real Tansu processes of their own (the session broker is never disturbed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError

from xclip_stream.actors.output import PRODUCER_TIMEOUTS
from xclip_stream.actors.runner import kafka_unreachable_errors
from xclip_stream.pipeline.backoff import Backoff, Stopped, retry
from xclip_stream.pipeline.delivery import Delivery
from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.pipeline.sinks import CompletedFuture, KafkaSink
from xclip_stream.services.s3 import S3Emulator
from xclip_stream.services.tansu import TansuBroker, free_port

FAST = Backoff(initial=0.05, maximum=0.2)
REPO_ROOT = Path(__file__).resolve().parents[1]


class FlakySink:
    """A sink (the boundary under test) whose first ``failures`` sends fail; records what arrived."""

    made = 0

    def __init__(self, failures: list[int]):
        self.failures = failures  # shared between instances: a recreated sink keeps failing
        self.sent: list[bytes] = []
        FlakySink.made += 1

    def send(self, topic, key, value, headers):
        if self.failures[0] > 0:
            self.failures[0] -= 1
            return CompletedFuture().failure(KafkaConnectionError("broker gone"))
        self.sent.append(value)
        return CompletedFuture().success(len(self.sent))

    def close(self, timeout=None):
        pass


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    records, deadline = [], time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=500).values():  # anything beyond what was expected
            records.extend(batch)
    finally:
        consumer.close()
    return records


def submit_numbered(delivery: Delivery, topic: str, numbers, acked: list) -> None:
    for i in numbers:
        delivery.submit(topic, "cam", b"%d" % i, [], on_ack=lambda meta, i=i: acked.append((i, meta)))


def test_failed_sends_are_retried_in_order_and_the_producer_recreated(caplog):
    failures, sinks = [5], []

    def make():
        sinks.append(FlakySink(failures))
        return sinks[-1]

    delivery = Delivery(make, "flaky", recreate_after=3, backoff=FAST).start()
    acked = []
    with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.delivery"):
        submit_numbered(delivery, "t", [0], acked)
        assert delivery.drain(10)
        # Five failures in a row: the third replaces the producer, the sixth send gets through.
        assert delivery.stats.retries == 5 and delivery.stats.recreated == 1 and len(sinks) == 2
        failures[0] = 2  # two more failures, in the middle of a run of sends
        submit_numbered(delivery, "t", range(1, 10), acked)
        assert delivery.drain(10)
    assert delivery.close(1) == 0
    assert [i for i, _ in acked] == list(range(10))  # each acknowledged once, in submit order
    assert delivery.stats.retries >= 6
    # The last copy of each record reached the sink in submit order (a resend repeats what followed).
    last_copy = {int(v): n for n, v in enumerate(b for s in sinks for b in s.sent)}
    assert sorted(last_copy, key=last_copy.get) == list(range(10))
    assert "send failed (KafkaConnectionError" in caplog.text and "recreating the producer" in caplog.text


def test_close_reports_what_was_never_acknowledged(caplog):
    delivery = Delivery(lambda: FlakySink([10**9]), "dead", backoff=FAST).start()
    acked = []
    submit_numbered(delivery, "t", range(3), acked)
    assert not delivery.drain(0.5) and delivery.congested is False
    assert delivery.health()["events_undelivered"] == 3
    with caplog.at_level(logging.ERROR, "xclip_stream.pipeline.delivery"):
        assert delivery.close(0.3) == 3
    assert acked == [] and "3 records never acknowledged" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        delivery.submit("t", "cam", b"late", [])


def test_backlog_over_the_high_water_mark_is_congested():
    delivery = Delivery(lambda: FlakySink([10**9]), "slow", high_water=4, backoff=FAST).start()
    submit_numbered(delivery, "t", range(4), [])
    assert delivery.congested
    delivery.close(0.1)


def kafka_delivery(bootstrap: str, name: str) -> Delivery:
    return Delivery(lambda: KafkaSink(bootstrap, client_id=name, **PRODUCER_TIMEOUTS), name,
                    backoff=Backoff(initial=0.2, maximum=2.0)).start()


def test_memory_broker_restart_recreates_the_producer(tmp_path):
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        delivery, acked = kafka_delivery(broker.bootstrap, "restart"), []
        submit_numbered(delivery, "ev", range(20), acked)
        assert delivery.drain(20)
        broker.restart()  # memory storage: the topic and the producer's id are gone
        submit_numbered(delivery, "ev", range(20, 40), acked)
        assert delivery.drain(60), delivery.stats
        assert delivery.close(5) == 0
        values = [int(r.value) for r in read_topic(broker.bootstrap, "ev", 20)]
    assert [i for i, _ in acked] == list(range(40))
    assert delivery.stats.recreated >= 1  # the idempotent producer fails every send until replaced
    assert set(range(20, 40)) <= set(values)


def test_broker_paused_mid_stream_loses_no_acknowledged_record(tmp_path):
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        create_topics(broker.bootstrap, {"ev": 1})
        delivery, acked = kafka_delivery(broker.bootstrap, "pause"), []
        submit_numbered(delivery, "ev", range(50), acked)
        assert delivery.drain(20)
        broker.pause()
        try:
            submit_numbered(delivery, "ev", range(50, 100), acked)  # queued while the broker hangs
            time.sleep(10)
            assert len(acked) == 50  # nothing is acknowledged by a broker that answers nothing
        finally:
            broker.resume()
        assert delivery.drain(60), delivery.stats
        assert delivery.close(5) == 0
        values = [int(r.value) for r in read_topic(broker.bootstrap, "ev", 100)]
    assert [i for i, _ in acked] == list(range(100))
    assert set(values) == set(range(100))  # every acknowledged record is on the topic


def test_durable_broker_restart_loses_no_acknowledged_record(tmp_path):
    """SIGKILL + restart of an s3:// broker while records are being produced. Tansu is known to lose
    a few acknowledged records when killed mid-produce (acks with offset -1, a non-atomic write on
    its side): a missing record must be one of those, and then the loss is the broker's, reported."""
    with S3Emulator() as s3:
        broker = TansuBroker(log_path=tmp_path / "broker.log", storage=s3.storage, env=s3.tansu_env())
        with broker:
            create_topics(broker.bootstrap, {"ev": 1})
            delivery, acked = kafka_delivery(broker.bootstrap, "durable"), []

            def steady():  # 100 records a second for 3 s: the kill lands mid-produce
                for i in range(300):
                    submit_numbered(delivery, "ev", [i], acked)
                    time.sleep(0.01)

            producer = threading.Thread(target=steady)
            producer.start()
            time.sleep(1.0)
            at_kill = len(acked)
            broker.kill()
            broker.start()
            producer.join()
            assert delivery.drain(60), delivery.stats
            assert delivery.close(5) == 0
            values = [int(r.value) for r in read_topic(broker.bootstrap, "ev", 300, timeout=30)]
    assert 0 < at_kill < 300 and sorted({i for i, _ in acked}) == list(range(300))
    missing = set(range(300)) - set(values)
    broker_lost = {i for i, meta in acked if i in missing and getattr(meta, "offset", 0) < 0}
    assert missing == broker_lost, f"lost without the broker's sign (offset -1): {sorted(missing - broker_lost)}"
    if missing:
        logging.getLogger(__name__).warning("Tansu lost %d acknowledged records on SIGKILL (acked with offset "
                                            "-1): %s", len(missing), sorted(missing))


def test_broker_down_at_start_is_waited_for_with_one_line_per_attempt(caplog):
    port = free_port()
    broker = TansuBroker(port=port)
    starter = threading.Timer(5.0, broker.start)
    starter.start()
    try:
        with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.backoff"):
            retry(lambda: create_topics(broker.bootstrap, {"ev": 1}, timeout=2.0), f"kafka {broker.bootstrap}",
                  retry_on=kafka_unreachable_errors(), backoff=Backoff(initial=1.0, maximum=2.0))
        starter.join()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        assert "ev" in consumer.topics()
        consumer.close()
    finally:
        starter.cancel()
        starter.join()
        broker.stop()
    lines = [r for r in caplog.records if r.name == "xclip_stream.pipeline.backoff"]
    assert lines and all(f"kafka 127.0.0.1:{port} unreachable, retrying in" in r.getMessage() for r in lines)
    assert not any(r.exc_info for r in lines)


def test_retry_gives_up_when_stopped():
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Stopped):
        retry(lambda: 1 / 0, "nothing", stop, retry_on=(ZeroDivisionError,), backoff=FAST)


def test_cli_run_exits_non_zero_when_events_were_never_acknowledged(tmp_path):
    # The pipeline itself is replaced (the boundary here): it reports a camera stopped with 2 events
    # its sink never acknowledged. A real run of that case is in test_pipeline_faults.py.
    script = (
        "import sys, xclip_stream.actors.runner as runner\n"
        "runner.run_pipeline = lambda *a, **k: {'camera:porch': {'windows_scored': 3, 'events_undelivered': 2}}\n"
        "from xclip_stream.cli import main\n"
        "sys.exit(main(['run', '--source', 'porch=x.mp4', '--labels', 'a car', '--model', 'm']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 events were never acknowledged by the sink" in proc.stderr
