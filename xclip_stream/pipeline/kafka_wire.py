"""Just enough of the Kafka wire protocol to open a connection by hand: ApiVersions v0,
SaslHandshake v1 and SaslAuthenticate v0-v2 (Apache Kafka's protocol guide, "The Messages").

kafka-python retries a refused connection until its bootstrap timeout and then reports only
"unable to bootstrap"; speaking these three requests ourselves (see ``kafka_clients.check_access``)
tells a wrong CA from a wrong password within a bound. The SASL test proxy answers the same
requests from the other side. Frames are an int32 size followed by that many bytes.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
MAX_FRAME_BYTES = 1 << 20  # the answers spoken here are small; a bigger size means a garbled stream

# Error codes used here (Kafka's protocol guide, "Error Codes").
NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
SASL_AUTHENTICATION_FAILED = 58


class WireError(ValueError):
    """A frame that does not parse as the message it should be."""


class Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def int16(self, v: int) -> Writer:
        self.parts.append(struct.pack(">h", v))
        return self

    def int32(self, v: int) -> Writer:
        self.parts.append(struct.pack(">i", v))
        return self

    def int64(self, v: int) -> Writer:
        self.parts.append(struct.pack(">q", v))
        return self

    def uvarint(self, v: int) -> Writer:
        out = bytearray()
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        self.parts.append(bytes(out))
        return self

    def string(self, s: str | None, compact: bool = False) -> Writer:
        raw = None if s is None else s.encode("utf-8")
        if compact:
            return self.uvarint(0) if raw is None else self.uvarint(len(raw) + 1).raw(raw)
        return self.int16(-1) if raw is None else self.int16(len(raw)).raw(raw)

    def bytes_(self, b: bytes, compact: bool = False) -> Writer:
        return (self.uvarint(len(b) + 1) if compact else self.int32(len(b))).raw(b)

    def tags(self) -> Writer:
        return self.uvarint(0)  # no tagged fields

    def raw(self, b: bytes) -> Writer:
        self.parts.append(b)
        return self

    def frame(self) -> bytes:
        body = b"".join(self.parts)
        return struct.pack(">i", len(body)) + body


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError(f"message ends early: wanted {n} bytes at {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 28:
                raise WireError("varint too long")

    def string(self, compact: bool = False) -> str | None:
        n = self.uvarint() - 1 if compact else self.int16()
        return None if n < 0 else self._take(n).decode("utf-8", "replace")

    def bytes_(self, compact: bool = False) -> bytes:
        n = self.uvarint() - 1 if compact else self.int32()
        return b"" if n < 0 else self._take(n)

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self._take(self.uvarint())


@dataclass
class Request:
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: Reader


def flexible(api_key: int, version: int) -> bool:
    """Whether a request uses the tagged-field ("flexible") encoding, for the APIs spoken here."""
    return (api_key == SASL_AUTHENTICATE and version >= 2) or (api_key == API_VERSIONS and version >= 3)


def request(api_key: int, version: int, correlation_id: int, client_id: str, body: Writer | None = None) -> bytes:
    w = Writer().int16(api_key).int16(version).int32(correlation_id).string(client_id)
    if flexible(api_key, version):
        w.tags()
    if body is not None:
        w.raw(b"".join(body.parts))
    return w.frame()


def parse_request(frame: bytes) -> Request:
    r = Reader(frame)
    api_key, version, correlation_id = r.int16(), r.int16(), r.int32()
    client_id = r.string()
    if flexible(api_key, version):
        r.skip_tags()
    return Request(api_key, version, correlation_id, client_id, r)


def response(correlation_id: int, body: Writer, flexible_header: bool = False) -> bytes:
    w = Writer().int32(correlation_id)
    if flexible_header:
        w.tags()
    return w.raw(b"".join(body.parts)).frame()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, or ConnectionError when the peer closes first."""
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, limit: int = MAX_FRAME_BYTES) -> bytes:
    size = struct.unpack(">i", recv_exactly(sock, 4))[0]
    if not 0 <= size <= limit:
        raise WireError(f"frame size {size} out of range (0..{limit}): not a Kafka stream?")
    return recv_exactly(sock, size)
