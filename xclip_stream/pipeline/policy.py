"""Which camera URLs a remote party (the control topic) may add: the source policy.

The control topic is remote configuration, so a URL from it is untrusted input handed to FFmpeg,
which reads local files, devices and a dozen network protocols (``tcp:``, ``udp:``, ``concat:``,
``subfile:``, ``?listen=1`` servers...). A URL is accepted only in one narrow, canonical form that
FFmpeg and this check read the same way; everything else is refused with the reason:

- ``scheme://[user:password@]host[:port][/path][?query]``, ASCII, no whitespace, control characters,
  backslashes or fragments; the scheme in lower case and among ``schemes`` (a subset of rtsp, rtsps,
  http, https: local files and devices come only from the operator's own configuration file), and
  of a kind ``schemas.urls.source_kind`` gives (the one table of schemes, which the configuration
  file's cameras pass too) among its ``REMOTE_KINDS``;
- the host a DNS name of letters, digits, dots and hyphens, a dotted-quad IPv4 address, or a
  bracketed IPv6 address; a host that ends in a number must be a canonical dotted quad (integer,
  octal, hex and short forms such as ``http://2852039166/`` are refused), and percent-encoded hosts,
  zone ids and trailing dots are refused;
- never link-local (169.254.0.0/16, fe80::/10, which hold cloud metadata services), fd00:ec2::254,
  multicast or the unspecified address, in any IPv6 spelling that embeds one (mapped, 6to4, NAT64);
  loopback only when ``hosts`` names it;
- no FFmpeg option in the query (``listen``, ``localport``, ``-anything``...).

DNS names are resolved when checked (``resolve``): a name whose addresses include a denied one
(say, a name pointing at 169.254.169.254) is refused, and with a ``hosts`` allow-list a name passes
when it is listed (exactly, or ``*.suffix``) or every address it resolves to lies in a listed CIDR.
This is a check at the time of the change: DNS answers can change afterwards (rebinding), so
egress filtering of metadata addresses on the host stays the real wall; this check keeps honest
mistakes and simple attacks out and says why.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..schemas.urls import REMOTE_KINDS, REMOTE_SCHEMES, SourceURLError, source_kind

MAX_URL_CHARS = 2048
_DENIED_NETS = [ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8",
    "255.255.255.255/32",
)]
_LOOPBACK_NETS = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128")]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]*:[A-Za-z0-9._~!$&'()*+,;=%-]*")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_DOTTED_QUAD = re.compile(r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
# URL options FFmpeg's network protocols (tcp, udp, rtp, rtsp) read from the query string.
_FFMPEG_URL_OPTIONS = frozenset({
    "listen", "listen_timeout", "timeout", "rw_timeout", "tcp", "udp", "multicast", "http", "https",
    "filter_src", "localaddr", "localport", "localrtpport", "localrtcpport", "reuse", "connect", "sources",
    "block", "ttl", "pkt_size", "buffer_size", "fifo_size", "overrun_nonfatal", "protocol_whitelist",
    "protocol_blacklist", "tcp_nodelay", "recv_buffer_size", "send_buffer_size",
})

Resolver = Callable[[str], Sequence[str]]  # host name -> its IP addresses


class PolicyError(ValueError):
    """A URL the source policy refuses; the message says why (and never quotes credentials)."""


def resolve_host(name: str) -> list[str]:
    """Every address ``name`` resolves to (system resolver); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True)
class ParsedURL:
    scheme: str
    kind: str  # source_kind's: rtsp | http | hls
    host: str  # lower case; IPv6 without brackets
    port: int | None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # when the host is an IP literal


@dataclass(frozen=True)
class SourcePolicy:
    """Allowed schemes and hosts for cameras added remotely (see the module docstring).

    ``hosts``: None allows any host that is not denied; else names (``cam1.example``,
    ``*.cams.example``) and CIDRs (``10.0.0.0/8``), and only those."""

    schemes: tuple[str, ...] = REMOTE_SCHEMES
    hosts: tuple[str, ...] | None = None
    resolve: bool = True
    resolver: Resolver = field(default=resolve_host, compare=False, repr=False)

    def __post_init__(self):
        extra = sorted(set(self.schemes) - set(REMOTE_SCHEMES))
        if extra:
            raise ValueError(f"schemes {extra} cannot be allowed remotely (only {', '.join(REMOTE_SCHEMES)}): "
                             "files and devices come only from the configuration file")

    def check(self, url: object) -> ParsedURL:
        """The parsed URL when the policy allows it, else PolicyError with the reason."""
        parsed = parse_remote_url(url, self.schemes)
        if parsed.address is not None:
            self._check_address(parsed.address, listed=self._listed_address(parsed.address))
            if self.hosts is not None and not self._listed_address(parsed.address):
                raise PolicyError(f"host {parsed.host} is not among the allowed hosts")
            return parsed
        listed_name = self._listed_name(parsed.host)
        addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in self.resolver(parsed.host)] \
            if self.resolve else []
        if self.resolve and not addresses:
            raise PolicyError(f"host {parsed.host} does not resolve")
        for address in addresses:
            self._check_address(address, listed=listed_name or self._listed_address(address), name=parsed.host)
        if self.hosts is not None and not listed_name:
            if not addresses or not all(self._listed_address(a) for a in addresses):
                raise PolicyError(f"host {parsed.host} is not among the allowed hosts")
        return parsed

    def _listed_name(self, host: str) -> bool:
        for entry in self.hosts or ():
            entry = entry.lower()
            if entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
                return True
        return False

    def _listed_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for entry in self.hosts or ():
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address.version == network.version and address in network:
                return True
        return False

    @staticmethod
    def _check_address(address, listed: bool, name: str | None = None) -> None:
        where = f"host {name} resolves to {address}, which" if name else f"address {address}"
        for candidate in _embedded(address):
            if any(candidate.version == n.version and candidate in n for n in _DENIED_NETS):
                raise PolicyError(f"{where} is link-local, metadata, multicast or unspecified: always denied")
            if any(candidate.version == n.version and candidate in n for n in _LOOPBACK_NETS) and not listed:
                raise PolicyError(f"{where} is loopback: allowed only when listed in source_policy.hosts")


def _embedded(address) -> list:
    """The address and every IPv4 address an IPv6 spelling of it carries (mapped, compatible, 6to4,
    NAT64, Teredo), so ``::ffff:169.254.169.254`` is judged as 169.254.169.254."""
    out = [address]
    if address.version == 6:
        for v4 in (address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]):
            if v4 is not None:
                out.append(v4)
        packed = address.packed
        if address in _NAT64 or packed[:12] == bytes(12):  # NAT64 or IPv4-compatible (::a.b.c.d)
            out.append(ipaddress.IPv4Address(packed[12:]))
    return out


def parse_remote_url(url: object, schemes: Sequence[str] = REMOTE_SCHEMES) -> ParsedURL:
    """Parse ``url`` in the one strict form the policy accepts (see the module docstring)."""
    if not isinstance(url, str):
        raise PolicyError(f"the URL must be a string, got {type(url).__name__}")
    if len(url) > MAX_URL_CHARS:
        raise PolicyError(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in url):
        raise PolicyError("the URL contains whitespace, control or non-ASCII characters")
    if "\\" in url or "#" in url:
        raise PolicyError("the URL contains a backslash or a fragment ('#')")
    match = _SCHEME.match(url)
    if not match:
        raise PolicyError("not a scheme://host URL (local files and devices come only from the configuration "
                          "file; FFmpeg protocols such as concat: or subfile: are never opened)")
    scheme = match.group(1)
    if scheme != scheme.lower():
        raise PolicyError(f"scheme {scheme!r} must be written in lower case")
    if scheme not in schemes:
        raise PolicyError(f"scheme {scheme!r} is not allowed (allowed: {', '.join(schemes)})")
    rest = url[match.end():]
    end = min((p for p in (rest.find("/"), rest.find("?")) if p != -1), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        if "@" in userinfo or not _USERINFO.fullmatch(userinfo):
            raise PolicyError("credentials must be written user:password@host (one '@', RFC 3986 characters)")
        if any(not _PCT.match(userinfo, i) for i, ch in enumerate(userinfo) if ch == "%"):
            raise PolicyError("a '%' in the credentials must start a percent-escape")
    host, port = _split_port(hostport)
    address = _parse_host(host)
    _check_query(tail)
    try:
        kind = source_kind(url)
    except SourceURLError as e:
        raise PolicyError(str(e)) from None
    if kind not in REMOTE_KINDS:
        raise PolicyError(f"a {kind} source comes only from the configuration file")
    return ParsedURL(scheme, kind, host.strip("[]").lower(), port, address)


def _split_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise PolicyError("an IPv6 host needs its closing ']'")
        host, after = hostport[:close + 1], hostport[close + 1:]
    else:
        host, colon, port_text = hostport.partition(":")
        after = colon + port_text
    if not after:
        return host, None
    if not after.startswith(":") or not after[1:].isdigit() or len(after) > 6 or not 0 < int(after[1:]) < 65536:
        raise PolicyError("the port must be a number from 1 to 65535")
    return host, int(after[1:])


def _parse_host(host: str):
    """The IP address of a literal host, or None for a valid DNS name; PolicyError otherwise."""
    if not host:
        raise PolicyError("the URL has no host")
    if "%" in host:
        raise PolicyError("percent-encoded hosts and IPv6 zone ids are refused")
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise PolicyError("the bracketed host is not an IPv6 address") from None
    lower = host.lower()
    labels = lower.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        if not _DOTTED_QUAD.fullmatch(lower):
            raise PolicyError(f"host {host!r} ends in a number but is not a dotted-quad IPv4 address "
                              "(integer, octal, hex and short forms are refused)")
        return ipaddress.IPv4Address(lower)
    if len(lower) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(f"host {host!r} is not a DNS name (letters, digits, '-' and '.' only, no empty labels)")
    return None


def _check_query(tail: str) -> None:
    _, question, query = tail.partition("?")
    if not question:
        return
    for part in re.split(r"[&;]", query):
        name = part.partition("=")[0]
        value = part.partition("=")[2]
        if name.startswith("-") or value.startswith("-"):
            raise PolicyError("a query parameter starting with '-' looks like a smuggled FFmpeg option")
        if name.lower() in _FFMPEG_URL_OPTIONS:
            raise PolicyError(f"query parameter {name!r} is an FFmpeg protocol option, refused")
