"""Which camera URLs the pipeline opens, and as what kind of source: validation of a config value.

FFmpeg opens far more than cameras: ``concat:``, ``subfile:``, ``data:``, ``pipe:``, ``tee:``,
``crypto:`` and dozens more protocols read local files, other processes' pipes or nested URLs, and a
server mode (``tcp://...?listen``, ``rtmp://...?listen=1``, SRT ``mode=listener``) turns a camera
into a port open to anyone. Only the schemes below are opened; anything else is refused when the
configuration is read, with the scheme named, instead of being handed to FFmpeg as a "file".
Every network kind is live: opened on a thread with open/read timeouts, reconnected with backoff,
and its oldest pending window dropped when the model falls behind.
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
        return "device" if url.startswith("/dev/video") else "file"
    scheme = match.group(1).lower()
    kind = _KINDS.get(scheme)
    if kind is None:
        known = ", ".join(sorted(_KINDS))
        raise SourceURLError(f"URL scheme {scheme!r} is not a camera source (known: {known}; a path "
                             "with a colon is read as a scheme: write it as file:///...)")
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
