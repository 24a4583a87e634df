"""The SASL test proxy's server side, checked against the RFCs' own examples and on the wire
(flexible SaslAuthenticate v2, which kafka-python does not send)."""

from __future__ import annotations

import base64
import socket

import pytest

from tests.kafka_security_fixtures import USERS
from xclip_stream.pipeline import kafka_wire as wire
from xclip_stream.services.sasl_proxy import AuthFailed, ScramServer, check_plain, scram_credential

# RFC 7677 section 3: user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_SUFFIX = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FINAL = f"c=biws,r={CLIENT_NONCE}{SERVER_SUFFIX},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


def _rfc7677_server(password: str = "pencil") -> ScramServer:
    credential = scram_credential(password, "sha256", salt=SALT, iterations=4096)
    return ScramServer("SCRAM-SHA-256", {"user": credential}, nonce_suffix=SERVER_SUFFIX)


def test_scram_sha_256_replays_rfc7677():
    server = _rfc7677_server()
    first = server.step(f"n,,n=user,r={CLIENT_NONCE}".encode())
    assert first == f"r={CLIENT_NONCE}{SERVER_SUFFIX},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
    assert server.step(CLIENT_FINAL.encode()) == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.done


def test_scram_refuses_a_proof_made_with_another_password():
    server = _rfc7677_server(password="not pencil")
    server.step(f"n,,n=user,r={CLIENT_NONCE}".encode())
    with pytest.raises(AuthFailed):
        server.step(CLIENT_FINAL.encode())


def test_scram_refuses_channel_binding_and_a_foreign_nonce():
    with pytest.raises(AuthFailed, match="channel binding"):
        _rfc7677_server().step(f"p=tls-unique,,n=user,r={CLIENT_NONCE}".encode())
    server = _rfc7677_server()
    server.step(f"n,,n=user,r={CLIENT_NONCE}".encode())
    with pytest.raises(AuthFailed, match="nonce"):
        server.step(CLIENT_FINAL.replace(SERVER_SUFFIX, "forged").encode())


def test_plain_follows_rfc4616():
    passwords = {"tim": "tanstaaftanstaaf"}  # RFC 4616 section 4's example
    assert check_plain(b"\0tim\0tanstaaftanstaaf", passwords) == "tim"
    assert check_plain(b"tim\0tim\0tanstaaftanstaaf", passwords) == "tim"
    for message in (b"\0tim\0wrong", b"Ursel\0tim\0tanstaaftanstaaf", b"tim\0tanstaaftanstaaf"):
        with pytest.raises(AuthFailed):
            check_plain(message, passwords)


def _call(sock: socket.socket, api_key: int, version: int, correlation: int, body: wire.Writer) -> wire.Reader:
    sock.sendall(wire.request(api_key, version, correlation, "raw-test", body))
    r = wire.Reader(wire.read_frame(sock))
    assert r.int32() == correlation
    return r


@pytest.mark.parametrize("password, error", [(USERS["alice"], wire.NONE), ("wrong", wire.SASL_AUTHENTICATION_FAILED)])
def test_flexible_sasl_authenticate_v2_on_the_wire(sasl_proxy, password: str, error: int):
    with socket.create_connection(("127.0.0.1", sasl_proxy.port), timeout=10) as sock:
        r = _call(sock, wire.SASL_HANDSHAKE, 1, 1, wire.Writer().string("PLAIN"))
        assert r.int16() == wire.NONE
        token = f"\0alice\0{password}".encode()
        r = _call(sock, wire.SASL_AUTHENTICATE, 2, 2, wire.Writer().bytes_(token, compact=True).tags())
        r.skip_tags()  # response header v1
        assert r.int16() == error
        message = r.string(compact=True)
        assert (message is None) == (error == wire.NONE)
        assert r.bytes_(compact=True) == b""
