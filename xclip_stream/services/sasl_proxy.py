"""A SASL-terminating proxy in front of a plaintext Kafka broker, for tests (Tansu's own SASL does
not work in the build we have). It authenticates each connection itself, then relays bytes.

    client --ApiVersions-->          proxy --forwarded--> broker
    client --SaslHandshake v1-->     proxy answers (mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
    client --SaslAuthenticate v0-2-> proxy answers (RFC 4616 PLAIN; RFC 5802 / 7677 SCRAM, server side)
    then                             every byte both ways, unchanged

Anything else before authentication closes the connection, as a Kafka broker does. The broker's
advertised listener must be the proxy's port, or clients bypass it after bootstrap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import socket
import threading
from dataclasses import dataclass

from ..pipeline import kafka_wire as wire
from .tansu import free_port

log = logging.getLogger(__name__)

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
SCRAM_ITERATIONS = 4096  # RFC 7677's minimum for SCRAM-SHA-256
_FAILED = "Authentication failed: invalid username or password"


@dataclass(frozen=True)
class ScramCredential:
    """What a SCRAM server stores per user (RFC 5802 section 3): never the password itself."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def scram_credential(password: str, hash_name: str, salt: bytes | None = None,
                     iterations: int = SCRAM_ITERATIONS) -> ScramCredential:
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    server_key = hmac.new(salted, b"Server Key", hash_name).digest()
    return ScramCredential(salt, iterations, hashlib.new(hash_name, client_key).digest(), server_key)


class AuthFailed(Exception):
    pass


class ScramServer:
    """One SCRAM exchange, server side: ``step(client-first) -> server-first``, then
    ``step(client-final) -> server-final``; AuthFailed on a bad proof or a malformed message."""

    def __init__(self, mechanism: str, credentials: dict[str, ScramCredential], nonce_suffix: str | None = None):
        self.hash_name = _HASHES[mechanism]
        self.credentials = credentials
        self.nonce_suffix = nonce_suffix  # fixed only to replay the RFC's example; random otherwise
        self.state = 0
        self.user: str | None = None

    def step(self, message: bytes) -> bytes:
        text = message.decode("utf-8")
        if self.state == 0:
            self.state = 1
            return self._first(text)
        if self.state == 1:
            self.state = 2
            return self._final(text)
        raise AuthFailed("the SCRAM exchange is already over")

    def _first(self, text: str) -> bytes:
        gs2_flag, authzid, bare = (text.split(",", 2) + ["", ""])[:3]
        if gs2_flag not in ("n", "y") or not bare.startswith("n="):  # "p=" would ask for channel binding
            raise AuthFailed("malformed client-first message (or channel binding, which is not offered)")
        attrs = _attributes(bare)
        self.gs2_header = f"{gs2_flag},{authzid},"
        self.user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        client_nonce = attrs.get("r", "")
        if not client_nonce:
            raise AuthFailed("client-first message without a nonce")
        # An unknown user gets a made-up salt and fails at the proof, so names cannot be probed.
        self.credential = self.credentials.get(self.user) or scram_credential(os.urandom(8).hex(), self.hash_name)
        self.nonce = client_nonce + (self.nonce_suffix or base64.b64encode(os.urandom(18)).decode("ascii"))
        self.client_first_bare = bare
        self.server_first = (f"r={self.nonce},s={base64.b64encode(self.credential.salt).decode('ascii')},"
                             f"i={self.credential.iterations}")
        return self.server_first.encode("utf-8")

    def _final(self, text: str) -> bytes:
        without_proof, _, proof_attr = text.rpartition(",p=")
        attrs = _attributes(without_proof)
        binding = base64.b64encode(self.gs2_header.encode("utf-8")).decode("ascii")
        if attrs.get("c") != binding or attrs.get("r") != self.nonce or not proof_attr:
            raise AuthFailed("client-final message with a wrong nonce or channel binding")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(self.credential.stored_key, auth_message, self.hash_name).digest()
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError:
            raise AuthFailed("client proof is not base64") from None
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if len(proof) != len(signature) or not hmac.compare_digest(
                hashlib.new(self.hash_name, client_key).digest(), self.credential.stored_key):
            raise AuthFailed(_FAILED)
        server_signature = hmac.new(self.credential.server_key, auth_message, self.hash_name).digest()
        return b"v=" + base64.b64encode(server_signature)

    @property
    def done(self) -> bool:
        return self.state == 2


def _attributes(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def check_plain(message: bytes, passwords: dict[str, str]) -> str:
    """RFC 4616: [authzid] NUL authcid NUL passwd. Returns the user; AuthFailed otherwise."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise AuthFailed("malformed PLAIN message")
    authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
    expected = passwords.get(user)
    if expected is None or not hmac.compare_digest(expected.encode(), password.encode()) or authzid not in ("", user):
        raise AuthFailed(_FAILED)
    return user


class SaslProxy:
    """Listens on 127.0.0.1:``port`` and authenticates every connection against ``users`` (name ->
    password) before relaying it to ``upstream`` (host:port). Owns its listener and connection
    threads; ``stop`` closes them all. Counts outcomes in ``stats`` for tests."""

    def __init__(self, upstream: str, users: dict[str, str], port: int | None = None,
                 mechanisms: tuple[str, ...] = MECHANISMS):
        host, _, up_port = upstream.rpartition(":")
        self.upstream = (host, int(up_port))
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.mechanisms = mechanisms
        self.passwords = dict(users)
        self.scram = {m: {u: scram_credential(p, h) for u, p in users.items()} for m, h in _HASHES.items()}
        self.stats = {"authenticated": 0, "refused": 0}
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> SaslProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        thread = threading.Thread(target=self._accept, name=f"sasl-proxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            _close(conn)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> SaslProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.add(sock)

    def _accept(self) -> None:
        listener = self._listener
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            self._track(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            self._track(upstream)
            if self._authenticate(client, upstream):
                self.stats["authenticated"] += 1
                pump = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
                pump.start()
                _relay(client, upstream)
                pump.join()
        except (OSError, wire.WireError) as e:
            log.debug("sasl proxy connection ended: %s", e)
        finally:
            with self._lock:
                self._conns.difference_update((client, upstream))
            _close(client)
            if upstream is not None:
                _close(upstream)

    def _authenticate(self, client: socket.socket, upstream: socket.socket) -> bool:
        mechanism = None
        scram: ScramServer | None = None
        while True:
            frame = wire.read_frame(client)
            req = wire.parse_request(frame)
            if req.api_key == wire.API_VERSIONS:
                upstream.sendall(len(frame).to_bytes(4, "big") + frame)
                answer = wire.read_frame(upstream)
                client.sendall(len(answer).to_bytes(4, "big") + answer)
            elif req.api_key == wire.SASL_HANDSHAKE and req.version == 1 and mechanism is None:
                wanted = req.body.string()
                ok = wanted in self.mechanisms
                body = wire.Writer().int16(wire.NONE if ok else wire.UNSUPPORTED_SASL_MECHANISM).int32(len(self.mechanisms))
                for name in self.mechanisms:
                    body.string(name)
                client.sendall(wire.response(req.correlation_id, body))
                if not ok:
                    self.stats["refused"] += 1
                    return False
                mechanism = wanted
                scram = ScramServer(wanted, self.scram[wanted]) if wanted in _HASHES else None
            elif req.api_key == wire.SASL_AUTHENTICATE and mechanism is not None and req.version <= 2:
                flexible = req.version >= 2
                token = req.body.bytes_(compact=flexible)
                try:
                    if scram is None:
                        check_plain(token, self.passwords)
                        answer, done = b"", True
                    else:
                        answer = scram.step(token)
                        done = scram.done
                    error, message = wire.NONE, None
                except (AuthFailed, UnicodeDecodeError) as e:
                    answer, done, error, message = b"", True, wire.SASL_AUTHENTICATION_FAILED, str(e) or _FAILED
                body = wire.Writer().int16(error).string(message, compact=flexible).bytes_(answer, compact=flexible)
                if req.version >= 1:
                    body.int64(0)  # session lifetime: no re-authentication required
                if flexible:
                    body.tags()
                client.sendall(wire.response(req.correlation_id, body, flexible_header=flexible))
                if error != wire.NONE:
                    self.stats["refused"] += 1
                    return False
                if done:
                    return True
            else:
                self.stats["refused"] += 1
                log.debug("sasl proxy: api %d v%d before authentication; closing", req.api_key, req.version)
                return False


def _relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
