"""Kafka TLS, mutual TLS and SASL (PLAIN, SCRAM-SHA-256/512) for every client the pipeline makes,
against real proxies in front of real Tansu brokers, and clear, bounded errors when refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.kafka_security_fixtures import KEY_PASSWORD, USERS, TlsFiles
from xclip_stream.pipeline.kafka_clients import KafkaAccessError, check_access, create_topics
from xclip_stream.pipeline.offsets import make_consumer
from xclip_stream.pipeline.sinks import KafkaSink
from xclip_stream.schemas.config import ConfigError, KafkaSecurity, parse_config

ERROR_BOUND_S = 10.0  # connect_timeout_s given to every refused check below


def _round_trip(bootstrap: str, security: KafkaSecurity, n: int = 5) -> list[bytes]:
    """Admin creates a topic, the events producer writes ``n`` records, a group consumer reads them."""
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    check_access(bootstrap, security, timeout_s=ERROR_BOUND_S)
    create_topics(bootstrap, {topic: 1}, security)
    with KafkaSink(bootstrap, client_id="secure-test", security=security) as sink:
        futures = [sink.send(topic, "cam", f"event-{i}".encode(), []) for i in range(n)]
        sink.flush(timeout=30)
        assert [f.get(timeout=1).offset for f in futures] == list(range(n))
    consumer = make_consumer(bootstrap, topic, f"group-{topic}", session_timeout_ms=2000, security=security)
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
    finally:
        consumer.close()
    return values


def _refused(bootstrap: str, security: KafkaSecurity) -> str:
    """The check's error message; the check must fail, and within its bound (run in a thread, so a
    hang fails the test instead of blocking it)."""
    result: dict = {}

    def attempt():
        try:
            check_access(bootstrap, security, timeout_s=ERROR_BOUND_S)
        except KafkaAccessError as e:
            result["error"] = e

    started = time.monotonic()
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(ERROR_BOUND_S + 5)
    assert not thread.is_alive(), f"check_access did not return within {ERROR_BOUND_S + 5} s"
    assert "error" in result, "check_access accepted settings the broker should refuse"
    assert time.monotonic() - started <= ERROR_BOUND_S + 5
    return str(result["error"])


# -- TLS ----------------------------------------------------------------------------------------
def test_tls_round_trip(tls_bootstrap: str, tls_files: TlsFiles):
    security = KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca))
    assert _round_trip(tls_bootstrap, security) == [f"event-{i}".encode() for i in range(5)]


def test_mutual_tls_round_trip_with_an_encrypted_key(mtls_bootstrap: str, tls_files: TlsFiles):
    security = KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca), cert_file=str(tls_files.client_cert),
                             key_file=str(tls_files.client_key), key_password_file=str(tls_files.key_password_file))
    assert len(_round_trip(mtls_bootstrap, security)) == 5


def test_wrong_ca_is_a_clear_error(tls_bootstrap: str, tls_files: TlsFiles):
    message = _refused(tls_bootstrap, KafkaSecurity(protocol="SSL", ca_file=str(tls_files.other_ca)))
    assert f"kafka {tls_bootstrap}: TLS certificate verification failed" in message
    assert str(tls_files.other_ca) in message


def test_missing_client_certificate_is_a_clear_error(mtls_bootstrap: str, tls_files: TlsFiles):
    message = _refused(mtls_bootstrap, KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca)))
    assert mtls_bootstrap in message and "client certificate" in message and "cert_file" in message


def test_client_certificate_from_another_ca_is_refused(mtls_bootstrap: str, tls_files: TlsFiles):
    security = KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca), cert_file=str(tls_files.stranger_cert),
                             key_file=str(tls_files.stranger_key))
    message = _refused(mtls_bootstrap, security)
    assert mtls_bootstrap in message and str(tls_files.stranger_cert) in message


def test_wrong_key_password_is_a_clear_error(tls_files: TlsFiles, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + KEY_PASSWORD)
    security = KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca), cert_file=str(tls_files.client_cert),
                             key_file=str(tls_files.client_key), key_password_file=str(wrong))
    with pytest.raises(KafkaAccessError, match="cannot load the client certificate") as err:
        check_access("127.0.0.1:1", security, timeout_s=1)
    assert KEY_PASSWORD not in str(err.value)


def test_plaintext_client_on_a_tls_port_is_a_clear_error(tls_bootstrap: str):
    message = _refused(tls_bootstrap, KafkaSecurity())
    assert tls_bootstrap in message and "PLAINTEXT" in message


# -- SASL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_round_trip(sasl_proxy, user_password_files, mechanism: str, caplog):
    caplog.set_level(logging.DEBUG)  # kafka-python logs its configuration at DEBUG
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, username="bob",
                             password_file=str(user_password_files["bob"]))
    before = sasl_proxy.stats["authenticated"]
    assert len(_round_trip(sasl_proxy.bootstrap, security)) == 5
    # check, admin, producer and consumer connections all authenticated through the proxy
    assert sasl_proxy.stats["authenticated"] - before >= 4
    assert any("sasl_plain_password" in r.getMessage() for r in caplog.records)  # the log this guards
    leaks = [r.name for r in caplog.records if USERS["bob"] in r.getMessage()]
    assert not leaks, f"the password appeared in logs of {sorted(set(leaks))}"


def test_sasl_password_from_the_environment(sasl_proxy, monkeypatch):
    monkeypatch.setenv("XCLIP_TEST_KAFKA_PASSWORD", USERS["alice"])
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", username="alice",
                             password_env="XCLIP_TEST_KAFKA_PASSWORD")
    check_access(sasl_proxy.bootstrap, security, timeout_s=ERROR_BOUND_S)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_is_a_clear_error(sasl_proxy, tmp_path, mechanism: str):
    wrong = tmp_path / "password"
    wrong.write_text("hunter2")
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, username="alice",
                             password_file=str(wrong))
    message = _refused(sasl_proxy.bootstrap, security)
    assert f"SASL authentication failed for user 'alice' ({mechanism})" in message
    assert "hunter2" not in message


def test_unset_password_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("XCLIP_TEST_UNSET", raising=False)
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="alice",
                             password_env="XCLIP_TEST_UNSET")
    with pytest.raises(KafkaAccessError, match="environment variable XCLIP_TEST_UNSET is not set"):
        check_access("127.0.0.1:1", security, timeout_s=1)


def test_sasl_over_tls_round_trip(sasl_ssl_bootstrap: str, tls_files: TlsFiles, user_password_files):
    security = KafkaSecurity(protocol="SASL_SSL", ca_file=str(tls_files.ca), sasl_mechanism="SCRAM-SHA-512",
                             username="alice", password_file=str(user_password_files["alice"]))
    assert len(_round_trip(sasl_ssl_bootstrap, security)) == 5


# -- configuration ------------------------------------------------------------------------------
def _config(security: dict) -> dict:
    return {"model": {"path": "demo"}, "labels": {"labels": ["a"]}, "cameras": [{"id": "c", "url": "x.mp4"}],
            "kafka": {"bootstrap": "127.0.0.1:9092", "security": security}}


def test_a_password_literal_is_refused_with_directions():
    with pytest.raises(ConfigError) as err:
        parse_config(_config({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "a",
                              "password": "p4ss"}))
    text = str(err.value)
    assert "kafka.security" in text and "password_file" in text and "p4ss" not in text


@pytest.mark.parametrize("security, expected", [
    ({"protocol": "SASL_SSL", "username": "a", "password_env": "X"}, "needs sasl_mechanism"),
    ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "a"}, "password_file or password_env"),
    ({"protocol": "SSL", "username": "a"}, "does not use SASL"),
    ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "a", "password_env": "X",
      "ca_file": "/ca.pem"}, "does not use TLS"),
    ({"protocol": "SSL", "key_file": "/k.pem"}, "set cert_file"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "username": "a", "password_env": "X"}, "sasl_mechanism"),
])
def test_inconsistent_security_is_refused(security: dict, expected: str):
    with pytest.raises(ConfigError, match=expected):
        parse_config(_config(security))


@pytest.mark.parametrize("protocol", ["SSL", "PLAINTEXT"])
def test_a_port_that_never_answers_is_an_error_within_the_bound(protocol: str, tls_files: TlsFiles):
    """A listener that accepts and then says nothing (a TLS handshake that never completes)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes the connection
        bootstrap = f"127.0.0.1:{silent.getsockname()[1]}"
        security = KafkaSecurity(protocol=protocol, **({"ca_file": str(tls_files.ca)} if protocol == "SSL" else {}))
        started = time.monotonic()
        with pytest.raises(KafkaAccessError, match="no answer within the connect timeout"):
            check_access(bootstrap, security, timeout_s=2)
        assert time.monotonic() - started < 5


def test_tls_client_on_a_plaintext_port_is_a_clear_error(sasl_proxy, tls_files: TlsFiles):
    message = _refused(sasl_proxy.bootstrap, KafkaSecurity(protocol="SSL", ca_file=str(tls_files.ca)))
    assert "TLS handshake failed" in message and "does this port speak TLS?" in message


def test_the_cli_reports_a_refused_password_and_exits_2(sasl_proxy, tmp_path):
    """Through ``xclip-stream run --config``: the check runs before Ray starts, so this is quick."""
    wrong = tmp_path / "password"
    wrong.write_text("hunter2\n")
    config = _config({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "username": "alice",
                      "password_file": str(wrong)})
    config["kafka"].update(bootstrap=sasl_proxy.bootstrap, connect_timeout_s=ERROR_BOUND_S)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "xclip_stream.cli", "run", "--config", str(path)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                          timeout=ERROR_BOUND_S + 50)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: kafka {sasl_proxy.bootstrap}: SASL authentication failed for user 'alice' (SCRAM-SHA-512)" \
        in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
