"""Kafka fixtures: one real Tansu broker (Kafka protocol, memory storage) for the whole session.

Tests share the broker, so each one uses its own topic and group names (``kafka_topic``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from xclip_stream.services.tansu import TansuBroker, tansu_binary


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Tansu broker on a free port of 127.0.0.1, stopped when the session ends."""
    try:
        tansu_binary()
    except FileNotFoundError as e:
        pytest.fail(f"Kafka tests need the Tansu broker: {e}")
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    with TansuBroker(log_path=log_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: TansuBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic (or group) name no other test uses: the test's name plus a random suffix."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"
