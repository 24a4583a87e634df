"""Every Kafka client the pipeline makes gets its connection settings here: the producer of events
and dead letters, the frame consumers, the control-topic consumer and the admin client.

``client_config`` turns the validated ``kafka.security`` section into kafka-python keyword
arguments, reading secrets (password files or environment variables) only then, in the process
that makes the client: specs passed to actors carry file and variable names, never a secret.
``check_access`` opens one connection by hand within a time bound, so a wrong CA, a missing
client certificate or a wrong password is a clear startup error instead of kafka-python's retries
and a late "unable to bootstrap". No message here ever contains a password.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

from ..schemas.config import KafkaSecurity
from . import credentials
from . import kafka_wire as wire

log = logging.getLogger(__name__)

PLAINTEXT = KafkaSecurity()


class KafkaAccessError(ConnectionError):
    """The Kafka cluster cannot be used with these settings; the message says why (no secrets)."""


class KafkaUnreachable(KafkaAccessError):
    """No bootstrap broker could be connected to: it may be down or still booting (worth a retry),
    unlike a TLS or SASL refusal, which the same settings would meet again."""


class Secret(str):
    """A password that prints as ``<redacted>``: kafka-python logs its whole configuration at DEBUG
    (the admin client does), and a str subclass still encodes and joins as the real text."""

    def __repr__(self) -> str:
        return "'<redacted>'"

    def __str__(self) -> str:
        return "<redacted>"

    def __format__(self, spec: str) -> str:
        return format("<redacted>", spec)


def read_secret(file: str | None, env: str | None, what: str) -> str | None:
    """A ``kafka.security`` secret (``credentials.read_secret``), unreadable as a KafkaAccessError."""
    try:
        return credentials.read_secret(file, env, f"kafka.security.{what}")
    except credentials.SecretUnavailable as e:
        raise KafkaAccessError(str(e)) from None


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context of every client (and of ``check_access``): TLS 1.2+, the configured CA or the
    system's, the client certificate for mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = security.check_hostname
    try:
        if security.ca_file:
            ctx.load_verify_locations(cafile=security.ca_file)
        else:
            ctx.load_default_certs()
    except (OSError, ssl.SSLError) as e:
        raise KafkaAccessError(f"kafka.security.ca_file: cannot load {security.ca_file}: {_reason(e)}") from None
    if security.cert_file:
        password = read_secret(security.key_password_file, security.key_password_env, "key_password")
        try:
            ctx.load_cert_chain(security.cert_file, security.key_file, password=password)
        except (OSError, ssl.SSLError) as e:
            files = security.cert_file + (f" / {security.key_file}" if security.key_file else "")
            raise KafkaAccessError(f"kafka.security.cert_file: cannot load the client certificate {files}: "
                                   f"{_reason(e)} (a wrong key password reads the same)") from None
    return ctx


def client_config(security: KafkaSecurity | None) -> dict:
    """kafka-python keyword arguments for ``security`` (None: plaintext), secrets read now."""
    security = security or PLAINTEXT
    config: dict = {"security_protocol": security.protocol}
    if security.tls:
        config["ssl_context"] = ssl_context(security)
    if security.sasl:
        config["sasl_mechanism"] = security.sasl_mechanism
        config["sasl_plain_username"] = security.username
        config["sasl_plain_password"] = Secret(read_secret(security.password_file, security.password_env, "password"))
    return config


def check_access(bootstrap: str, security: KafkaSecurity | None = None, timeout_s: float = 15.0,
                 client_id: str = "xclip-stream-check") -> None:
    """Connect to the first bootstrap broker that answers and authenticate as the clients will,
    within ``timeout_s``; raises KafkaAccessError naming the problem. A TLS or SASL refusal is
    final (every broker shares the settings); an unreachable broker moves on to the next one."""
    security = security or PLAINTEXT
    config = client_config(security)  # unreadable secrets or certificate files fail here
    deadline = time.monotonic() + timeout_s
    unreachable = []
    for address in bootstrap.split(","):
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            _check_broker(host, int(port), security, config, deadline, client_id)
            return
        except _Unreachable as e:
            unreachable.append(str(e))
    raise KafkaUnreachable("no Kafka broker answered: " + "; ".join(unreachable))


class _Unreachable(Exception):
    pass


class _Connection:
    """One socket with an overall deadline: every step gets only the time that is left."""

    def __init__(self, sock: socket.socket, deadline: float, client_id: str):
        self.sock, self.deadline, self.client_id = sock, deadline, client_id
        self.correlation = 0

    def arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def call(self, api_key: int, version: int, body: wire.Writer | None = None) -> wire.Reader:
        """Send one request, return its response after the correlation id."""
        self.correlation += 1
        self.arm()
        self.sock.sendall(wire.request(api_key, version, self.correlation, self.client_id, body))
        self.arm()
        r = wire.Reader(wire.read_frame(self.sock))
        if r.int32() != self.correlation:
            raise wire.WireError("the answer does not match the request (correlation id)")
        return r


def _check_broker(host: str, port: int, security: KafkaSecurity, config: dict, deadline: float,
                  client_id: str) -> None:
    where = f"kafka {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 0.1))
    except OSError as e:
        raise _Unreachable(f"{where}: cannot connect: {_reason(e)}") from None
    conn = _Connection(sock, deadline, client_id)
    try:
        if security.tls:
            conn.arm()
            conn.sock = _tls_handshake(sock, host, where, security, config["ssl_context"])
        versions = _api_versions(conn, where, security)
        if security.sasl:
            _authenticate(conn, host, where, security, config, versions)
    except TimeoutError:
        raise KafkaAccessError(f"{where}: no answer within the connect timeout (protocol {security.protocol}: "
                               "does the port speak it?)") from None
    finally:
        conn.sock.close()


def _tls_handshake(sock: socket.socket, host: str, where: str, security: KafkaSecurity,
                   ctx: ssl.SSLContext) -> ssl.SSLSocket:
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        ca = security.ca_file or "the system CAs"
        raise KafkaAccessError(f"{where}: TLS certificate verification failed ({e.verify_message}; "
                               f"ca_file={ca}, check_hostname={security.check_hostname})") from None
    except ssl.SSLError as e:
        hint = _cert_hint(e, security) if "ALERT" in str(e).upper() else " (does this port speak TLS?)"
        raise KafkaAccessError(f"{where}: TLS handshake failed: {_reason(e)}{hint}") from None
    except ConnectionError as e:
        raise KafkaAccessError(f"{where}: the broker closed the connection during the TLS handshake "
                               f"({_reason(e)}){_cert_hint(e, security)}") from None


def _api_versions(conn: _Connection, where: str, security: KafkaSecurity) -> dict:
    """{api key: max version}; the first request, so a TLS refusal that TLS 1.3 reports only after
    the handshake (a missing or refused client certificate) surfaces here."""
    try:
        r = conn.call(wire.API_VERSIONS, 0)
        error = r.int16()
        if error != wire.NONE:
            raise KafkaAccessError(f"{where}: ApiVersions failed with Kafka error code {error}")
        versions = {}
        for _ in range(r.int32()):
            key, _low, high = r.int16(), r.int16(), r.int16()
            versions[key] = high
        return versions
    except ssl.SSLError as e:
        raise KafkaAccessError(f"{where}: the broker refused the TLS session: {_reason(e)}"
                               f"{_cert_hint(e, security)}") from None
    except KafkaAccessError:
        raise
    except (ConnectionError, wire.WireError) as e:
        raise KafkaAccessError(f"{where}: the broker closed the connection or answered garbage ({_reason(e)}): "
                               f"is protocol {security.protocol} what this port speaks?"
                               f"{_cert_hint(e, security)}") from None


def _authenticate(conn: _Connection, host: str, where: str, security: KafkaSecurity, config: dict,
                  versions: dict) -> None:
    """SaslHandshake v1, then SaslAuthenticate v1 rounds driven by kafka-python's own mechanism
    (the same client code the producer and consumers run)."""
    mech, user = security.sasl_mechanism, security.username
    if versions.get(wire.SASL_HANDSHAKE, -1) < 1 or versions.get(wire.SASL_AUTHENTICATE, -1) < 1:
        raise KafkaAccessError(f"{where}: the broker does not offer SASL (SaslHandshake v1 / SaslAuthenticate v1)")
    try:
        _sasl_exchange(conn, host, where, mech, user, config)
    except (KafkaAccessError, TimeoutError):
        raise
    except (ConnectionError, ssl.SSLError, wire.WireError) as e:
        raise KafkaAccessError(f"{where}: the broker closed the connection during SASL {mech} authentication "
                               f"of user {user!r} ({_reason(e)})") from None
    log.debug("%s: authenticated as %r (%s)", where, user, mech)


def _sasl_exchange(conn: _Connection, host: str, where: str, mech: str, user: str, config: dict) -> None:
    from kafka.net.sasl import get_sasl_mechanism

    r = conn.call(wire.SASL_HANDSHAKE, 1, wire.Writer().string(mech))
    error = r.int16()
    enabled = [r.string() for _ in range(r.int32())]
    if error != wire.NONE:
        raise KafkaAccessError(f"{where}: SASL mechanism {mech} is not enabled on the broker "
                               f"(it offers {', '.join(filter(None, enabled)) or 'none'})")
    mechanism = get_sasl_mechanism(mech)(host=host, **config)
    while not mechanism.is_done():
        r = conn.call(wire.SASL_AUTHENTICATE, 1, wire.Writer().bytes_(mechanism.auth_bytes()))
        error, message, auth_bytes = r.int16(), r.string(), r.bytes_()
        if error != wire.NONE:
            detail = f": {message}" if message else ""
            raise KafkaAccessError(f"{where}: SASL authentication failed for user {user!r} ({mech}){detail}")
        try:
            mechanism.receive(auth_bytes)
        except Exception as e:  # noqa: BLE001 - kafka-python's SCRAM raises ValueError on a bad server proof
            raise KafkaAccessError(f"{where}: SASL {mech}: the broker's answer failed verification "
                                   f"({type(e).__name__}): not the server holding this user's credentials?") from None
    if not mechanism.is_authenticated():
        raise KafkaAccessError(f"{where}: SASL authentication failed for user {user!r} ({mech})")


def _reason(e: BaseException) -> str:
    return getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__


# TLS alerts a server sends when it refuses the client's certificate (or its absence).
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                       "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "ACCESS_DENIED", "HANDSHAKE_FAILURE")


def _cert_hint(e: BaseException, security: KafkaSecurity) -> str:
    """A hint about the client certificate when the TLS refusal looks like it concerns it."""
    if not security.tls:
        return ""
    reason = str(getattr(e, "reason", None) or e).upper()
    alert = isinstance(e, ssl.SSLError) and any(a in reason for a in _CLIENT_CERT_ALERTS)
    if not alert and not isinstance(e, (ssl.SSLError, ConnectionError, wire.WireError)):
        return ""  # a refusal after the handshake without an alert (an EOF, a reset) may still be it
    if not security.cert_file:
        verb = "requires" if alert else "may require"
        return f" (the broker {verb} a client certificate: set kafka.security.cert_file and key_file)"
    verb = "did not accept" if alert else "may not accept"
    return f" (the broker {verb} the client certificate {security.cert_file})"


def create_topics(bootstrap: str, topics: dict[str, int], security: KafkaSecurity | None = None,
                  timeout: float = 10.0) -> None:
    """Create topics (name -> partitions) on any Kafka cluster; topics that already exist are left
    as they are. Replicated like a production topic where the cluster allows (3 copies)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    if not topics:
        return
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="xclip-create-topics",
                             request_timeout_ms=int(timeout * 1000),
                             bootstrap_timeout_ms=int(timeout * 1000),  # an unreachable broker fails in ``timeout``
                             **client_config(security))
    try:
        existing = set(admin.list_topics())
        replicas = max(1, min(3, len(admin.describe_cluster().get("brokers", [])) or 1))
        wanted = {name: {"num_partitions": n, "replication_factor": replicas}
                  for name, n in topics.items() if name not in existing}
        if not wanted:
            return
        try:
            admin.create_topics(wanted, timeout_ms=int(timeout * 1000), wait_for_metadata=True)
        except TopicAlreadyExistsError:
            pass  # a concurrent creator won the race: the topic exists, which is all we need
    finally:
        admin.close()
