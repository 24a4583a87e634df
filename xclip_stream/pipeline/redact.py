"""Keeping camera credentials out of logs, events and error messages.

Camera URLs routinely carry secrets (``rtsp://admin:pw@cam/...``, signed ``?token=`` links), and
FFmpeg's error texts quote the URL they failed on, so both the URL and any text derived from it are
redacted before they leave a source.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+")  # two characters at least: "C:\..." is a path
# Substrings, so "access_token", "X-Amz-Signature", "apiKey", "passphrase" are caught too; redacting
# a harmless parameter by mistake costs nothing, leaking a secret does.
_SECRET_NAME = re.compile(r"pass|pw|token|key|secret|auth|sig|credential", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"(^|[&;])([^=&;]*)=([^&;]*)")
# A URL inside free text (a log line, an exception, a quoted control message): up to whitespace,
# a quote or a bracket that closes the surrounding text.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://[^\s'\"<>`]+")


def _split(url: str) -> tuple[str, str, str, str] | None:
    """(scheme://, userinfo, rest of authority and path, ?query#fragment), or None for a non-URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    end = len(rest)
    for ch in "/?#":
        pos = rest.find(ch)
        if pos != -1:
            end = min(end, pos)
    userinfo, at, host = rest[:end].rpartition("@")
    tail = rest[end:]
    if not at:
        userinfo, host = "", rest[:end]
        # A raw "/" in a password cuts the authority short ("user:pa/ss@host"); a colon followed by
        # something that is not a port number means the authority was credentials after all.
        user, colon, after = host.partition(":")
        path_end = min((p for p in (tail.find("?"), tail.find("#")) if p != -1), default=len(tail))
        cut = tail.rfind("@", 0, path_end)
        if colon and not after.isdigit() and cut != -1:
            userinfo, host, tail = host + tail[:cut], "", tail[cut + 1:]
            host_end = min((p for p in (tail.find(c) for c in "/?#") if p != -1), default=len(tail))
            host, tail = tail[:host_end], tail[host_end:]
    query_at = min((p for p in (tail.find("?"), tail.find("#")) if p != -1), default=len(tail))
    return scheme + "://", userinfo, host + tail[:query_at], tail[query_at:]


def _secret_values(query: str) -> list[str]:
    return [m.group(3) for m in _QUERY_PARAM.finditer(query.lstrip("?").partition("#")[0])
            if _SECRET_NAME.search(unquote(m.group(2))) and m.group(3)]


def redact_url(url: str) -> str:
    """``url`` with its userinfo and secret-looking query values replaced by ``***``; a path that is not
    a URL comes back unchanged."""
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, middle, query = parts
    if query.startswith("?"):
        body, hash_, fragment = query[1:].partition("#")

        def mask(m: re.Match[str]) -> str:
            secret = _SECRET_NAME.search(unquote(m.group(2)))
            return f"{m.group(1)}{m.group(2)}={MASK}" if secret else m.group(0)

        query = "?" + _QUERY_PARAM.sub(mask, body) + hash_ + fragment
    return scheme + (MASK + "@" if userinfo else "") + middle + query


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message, a log line) with ``url`` and each of its secrets masked wherever
    they appear, also percent-decoded (FFmpeg quotes URLs in its errors, sometimes decoded)."""
    parts = _split(url)
    if parts is None:
        return text
    text = text.replace(url, redact_url(url))
    _, userinfo, _, query = parts
    secrets = [userinfo, userinfo.partition(":")[2]] + _secret_values(query)
    for secret in sorted({s for value in secrets for s in (value, unquote(value)) if s}, key=len,
                         reverse=True):
        if len(secret) >= 2 or secret == userinfo:  # masking "a" everywhere would garble the message
            text = text.replace(secret, MASK)
    return text


def redact_urls_in(text: str) -> str:
    """``text`` with every URL it contains redacted (userinfo and secret query values): for text
    that quotes URLs nobody listed in advance, such as a refused control message."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_exception(error: BaseException) -> str:
    """``type: message`` of an exception with every URL in it redacted (safe to log or publish)."""
    return f"{type(error).__name__}: {redact_urls_in(str(error))}"
