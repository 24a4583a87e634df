"""Which camera URLs the pipeline opens, and as what kind of source: the one table of URL schemes.

FFmpeg opens far more than cameras: ``concat:``, ``subfile:``, ``data:``, ``pipe:``, ``tee:``,
``crypto:`` and dozens more protocols read local files, other processes' pipes or nested URLs, and a
server mode (``tcp://...?listen``, ``rtmp://...?listen=1``, SRT ``mode=listener``) turns a camera
into a port open to anyone. Only the schemes below are opened; anything else is refused when the
configuration is read, with the scheme named, instead of being handed to FFmpeg as a "file".
Every network kind is live: opened on a thread with open/read timeouts, reconnected with backoff,
and its oldest pending window dropped when the model falls behind.

The control topic's source policy (``pipeline.policy``) asks ``source_kind`` too and allows only the
``REMOTE_KINDS`` on top, so the configuration file and the control topic cannot disagree about which
schemes exist or which are refused; what the policy adds is the host and query rules.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")  # two characters or more: "C:\\x" is a path
_KINDS = {
    "rtsp": "rtsp", "rtsps": "rtsp",
    "http": "http", "https": "http",  # MJPEG, or HLS when the path ends in .m3u8
    "udp": "stream", "rtp": "stream", "srt": "stream", "tcp": "stream", "rtmp": "stream", "rtmps": "stream",
    "device": "device", "file": "file",
}
# What the control topic may add: clients of one host, vetted by the source policy. ``stream``
# protocols read FFmpeg options (listen, localport...) from the URL, files and devices are local:
# those come only from the configuration file.
REMOTE_KINDS = ("rtsp", "http", "hls")
REMOTE_SCHEMES = tuple(scheme for scheme, kind in _KINDS.items() if kind in REMOTE_KINDS)
# Where a camera's ``credentials`` go into the URL (FFmpeg's RTSP and HTTP authentication).
CREDENTIAL_KINDS = ("rtsp", "http", "hls")
# Query options that make FFmpeg wait for a peer instead of connecting out (``listen=0`` is a client).
_LISTEN_OPTIONS = {"listen", "mode"}
_CLIENT_VALUES = {"0", "caller", "client"}


class SourceURLError(ValueError):
    """A camera URL the pipeline refuses to open; the message says why."""


def source_kind(url: str) -> str:
    """``rtsp`` | ``http`` | ``hls`` | ``stream`` (udp, rtp, srt, tcp, rtmp) | ``device`` | ``file``;
    raises :class:`SourceURLError` for any other scheme and for server (listen) modes."""
    match = _SCHEME.match(url)
    if match is None:
        # FFmpeg reads "subfile,,start,0,end,9,,:path" as its subfile protocol, though no colon
        # follows the name.
        if url.startswith("subfile,") and ":" in url:
            raise SourceURLError(_unknown("subfile"))
        return "device" if url.startswith("/dev/video") else "file"
    scheme = match.group(1).lower()
    kind = _KINDS.get(scheme)
    if kind is None:
        raise SourceURLError(_unknown(scheme))
    if not url[match.end():].startswith("//"):
        raise SourceURLError(f"a {scheme} URL must be written {scheme}://...")
    if kind == "stream":
        for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if name.lower() in _LISTEN_OPTIONS and value.lower() not in _CLIENT_VALUES:
                raise SourceURLError(f"{scheme} server mode ({name}={value}) is refused: a camera source "
                                     "connects out and never opens a listening port")
    if kind == "http" and urlsplit(url).path.lower().endswith(".m3u8"):
        return "hls"
    return kind


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries user info (``user:password@``) before its host, also when a raw "/"
    in the password cuts the authority short (``rtsp://user:pa/ss@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return False
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority = head.split("/", 1)[0]
    if "@" in authority:
        return True
    port = authority.rpartition("]")[2].partition(":")[2]
    return "@" in head and ":" in authority.rpartition("]")[2] and not port.isdigit()


def ffmpeg_url(url: str) -> str:
    """``url`` with its scheme in lower case: schemes are case-insensitive (RFC 3986) and so is
    ``source_kind``, but FFmpeg's protocol names are not (``RTSP://`` is "Protocol not found")."""
    match = _SCHEME.match(url)
    return url if match is None else match.group(1).lower() + url[match.end(1):]


def _unknown(scheme: str) -> str:
    return (f"URL scheme {scheme!r} is not a camera source (known: {', '.join(sorted(_KINDS))}; a path "
            "with a colon is read as a scheme: write it as file:///...)")
