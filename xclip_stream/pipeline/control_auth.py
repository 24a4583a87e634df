"""Authenticated control messages: an HMAC-SHA256 envelope, a freshness window, no replays.

Whoever can write to the control topic could otherwise point the pipeline at any URL, so each
message carries proof that it was made by a holder of a shared secret, recently, once:

    {"v": 1, "ts_ms": 1767225600500, "nonce": "8f1c...", "payload": "{\\"op\\": \\"remove_camera\\", ...}",
     "sig": "<hex HMAC-SHA256>"}

``payload`` is the control message's JSON text; ``sig`` is HMAC-SHA256(secret, MAC input) in hex,
where the MAC input is the UTF-8 bytes of ``"xclip-control-v1\\n" + ts_ms + "\\n" + nonce + "\\n" +
payload`` (``ts_ms``: the signing time in integer UNIX milliseconds, in decimal; ``nonce``: 16-64
random characters of ``[A-Za-z0-9_-]``). The envelope is self-contained in the record value, so it
survives tools and mirrors that drop Kafka headers. Any language signs it in a few lines, e.g.
``openssl dgst -sha256 -hmac "$SECRET"`` over that text.

A message is refused when the signature is missing or wrong (compared in constant time), when
``ts_ms`` is more than ``max_age_s`` in the past or more than ``MAX_CLOCK_SKEW_S`` in the future, or
when its nonce was already seen within the window (a replayed copy). The secret is read from a
file or an environment variable named in the configuration, never from the YAML itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections import OrderedDict
from pathlib import Path

MAC_DOMAIN = "xclip-control-v1"
MAX_CLOCK_SKEW_S = 30.0  # how far in the future a sender's clock may run
MAX_NONCES = 100_000  # remembered at most: beyond it, the oldest are forgotten (and refused as stale sooner)
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIG = re.compile(r"[0-9a-f]{64}")
ENVELOPE_KEYS = {"v", "ts_ms", "nonce", "payload", "sig"}


class AuthError(ValueError):
    """A control message that is not authentic, fresh and new; the message says which."""


def read_secret(secret_file: str | None, secret_env: str | None) -> bytes:
    """The shared secret, from a file (surrounding whitespace stripped) or an environment variable.

    Raises AuthError naming where it looked (never the secret) when it is missing or shorter than
    16 bytes: a short secret is guessable, and a missing one must not mean "no authentication"."""
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as e:
            raise AuthError(f"cannot read the control secret file {secret_file}: {e.strerror}") from None
        where = f"file {secret_file}"
    elif secret_env:
        secret = os.environ.get(secret_env, "").strip().encode("utf-8")
        where = f"environment variable {secret_env}"
    else:
        raise AuthError("no control secret configured (control.secret_file or control.secret_env)")
    if len(secret) < 16:
        raise AuthError(f"the control secret in {where} is missing or shorter than 16 bytes")
    return secret


def mac_input(ts_ms: int, nonce: str, payload: str) -> bytes:
    return f"{MAC_DOMAIN}\n{ts_ms:d}\n{nonce}\n{payload}".encode()


def sign(payload: str | dict, secret: bytes, ts: float | None = None, nonce: str | None = None) -> bytes:
    """A signed envelope (record value bytes) for ``payload`` (a control message or its JSON text)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    ts_ms = round((time.time() if ts is None else ts) * 1000)
    nonce = nonce or secrets.token_hex(16)
    sig = hmac.new(secret, mac_input(ts_ms, nonce, text), hashlib.sha256).hexdigest()
    return json.dumps({"v": 1, "ts_ms": ts_ms, "nonce": nonce, "payload": text, "sig": sig}).encode("utf-8")


class Authenticator:
    """Checks envelopes and remembers the nonces of the window (one instance per control topic)."""

    def __init__(self, secret: bytes, max_age_s: float, clock=time.time):
        self._secret = secret
        self.max_age_s = max_age_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> ts (UNIX s), in the order seen
        # Messages signed at or before this time are refused: their nonces may have been forgotten.
        self.floor = 0.0

    def open(self, envelope: object) -> str:
        """The payload text of an authentic, fresh, unseen envelope (a parsed JSON value); AuthError if not."""
        if not isinstance(envelope, dict) or "sig" not in envelope:
            raise AuthError("unsigned: a control message must be a signed envelope {v, ts_ms, nonce, payload, sig}")
        unknown = sorted(str(k) for k in set(envelope) - ENVELOPE_KEYS)
        if unknown or envelope.get("v") != 1:
            raise AuthError(f"envelope must be version 1 with keys {sorted(ENVELOPE_KEYS)} only"
                            + (f"; unknown: {unknown[:5]}" if unknown else ""))
        ts_ms, nonce, payload, sig = (envelope.get(k) for k in ("ts_ms", "nonce", "payload", "sig"))
        if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not 0 <= ts_ms < 2**53:
            raise AuthError("envelope 'ts_ms' must be an integer (UNIX milliseconds)")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise AuthError("envelope 'nonce' must be 16-64 characters of [A-Za-z0-9_-]")
        if not isinstance(payload, str):
            raise AuthError("envelope 'payload' must be the control message's JSON text")
        if not isinstance(sig, str) or not _SIG.fullmatch(sig):
            raise AuthError("envelope 'sig' must be 64 lower-case hex digits")
        try:
            expected = hmac.new(self._secret, mac_input(ts_ms, nonce, payload), hashlib.sha256).hexdigest()
        except UnicodeEncodeError:
            raise AuthError("envelope 'payload' is not valid Unicode") from None
        if not hmac.compare_digest(expected, sig):
            raise AuthError("bad signature (wrong secret, or the message was altered)")
        now, ts = self._clock(), ts_ms / 1000
        if ts < now - self.max_age_s:
            raise AuthError(f"stale: signed {now - ts:.0f} s ago, more than max_age_s={self.max_age_s:g}")
        if ts > now + MAX_CLOCK_SKEW_S:
            raise AuthError(f"signed {ts - now:.0f} s in the future (clock skew over {MAX_CLOCK_SKEW_S:g} s)")
        if ts <= self.floor:
            raise AuthError("signed before the oldest remembered nonce: too old to rule out a replay")
        self._forget_before(now - self.max_age_s)
        if nonce in self._seen:
            raise AuthError("replayed: this nonce was already used within the freshness window")
        self.remember(nonce, ts)
        return payload

    def remember(self, nonce: str, ts: float) -> None:
        """Count ``nonce`` as used (also for nonces of messages read back at start-up)."""
        self._seen[nonce] = ts
        self._seen.move_to_end(nonce)
        while len(self._seen) > MAX_NONCES:
            self.floor = max(self.floor, self._seen.popitem(last=False)[1])

    def _forget_before(self, oldest: float) -> None:
        for nonce in [n for n, ts in self._seen.items() if ts < oldest]:
            del self._seen[nonce]

    def export(self, limit: int = 1000) -> dict:
        """The replay memory, for the saved state: the newest ``limit`` nonces and the floor below
        which nothing is accepted (raised to the newest nonce left out)."""
        self._forget_before(self._clock() - self.max_age_s)
        items = sorted(self._seen.items(), key=lambda item: item[1])
        floor = max([self.floor] + [ts for _, ts in items[:-limit]]) if len(items) > limit else self.floor
        return {"nonces": dict(items[-limit:]), "floor": floor}

    def restore(self, memory: dict) -> None:
        """Take back a replay memory from :meth:`export` (at start-up)."""
        self.floor = max(self.floor, float(memory.get("floor", 0.0)))
        for nonce, ts in dict(memory.get("nonces", {})).items():
            self.remember(str(nonce), float(ts))
