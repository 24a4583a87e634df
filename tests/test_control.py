"""The control plane as remote configuration: source policy, signed messages, robust parsing, the
overlay's precedence over a reloaded file, and a fuzz of malformed records."""

from __future__ import annotations

import json
import random

import pytest

from xclip_stream.pipeline.control import MAX_DEPTH, ControlPlane, Overlay
from xclip_stream.pipeline.control_auth import Authenticator, AuthError, read_secret, sign
from xclip_stream.pipeline.policy import PolicyError, SourcePolicy
from xclip_stream.schemas.config import ConfigError, SourcePolicyConfig, parse_config
from xclip_stream.schemas.urls import REMOTE_KINDS, REMOTE_SCHEMES, SourceURLError, source_kind

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_800_000_000.0
PUBLIC = {"cam.example": ["93.184.216.34"], "cams.site.example": ["10.1.2.3"],
          "evil.example": ["169.254.169.254"], "v6evil.example": ["fd00:ec2::254"],
          "local.example": ["127.0.0.1"]}


def resolver(name: str) -> list[str]:
    return PUBLIC.get(name, [])


def base_config(**control):
    return parse_config({
        "model": {"path": "m"}, "labels": {"labels": ["a", "b"]}, "label_sets": {"night": {"labels": ["c"]}},
        "cameras": [{"id": "c1", "url": "/data/x.mp4", "loop": True}],
        "kafka": {"bootstrap": "127.0.0.1:9092", "control_topic": "ctl"},
        "control": {"secret_env": "XCLIP_TEST_SECRET", **control},
    })


def plane(**control) -> ControlPlane:
    config = base_config(**control)
    return ControlPlane(config, config.control, SECRET, resolver=resolver, clock=lambda: NOW)


def signed(message, ts=NOW, nonce=None, secret=SECRET) -> bytes:
    return sign(message, secret, ts=ts, nonce=nonce)


# -- source policy -----------------------------------------------------------------------------------

ALLOWED = [
    "rtsp://cam.example/live", "rtsps://cam.example:322/s", "http://cam.example/video.mjpg?fps=10",
    "https://cam.example/hls/index.m3u8?token=abc", "rtsp://admin:p%40ss@10.0.0.21:554/stream1",
    "rtsp://[2001:db8::1]:554/x", "http://93.184.216.34/",
]
REFUSED = [
    ("file:///etc/passwd", "scheme 'file'"), ("/dev/video0", "not a scheme"), ("device:///dev/video0", "scheme"),
    ("/data/x.mp4", "not a scheme"), ("concat:/a.mp4|/b.mp4", "not a scheme"),
    ("subfile,,start,0,end,0,,:/etc/passwd", "not a scheme"), ("tcp://10.0.0.1:9000?listen=1", "scheme 'tcp'"),
    ("udp://10.0.0.1:9000", "scheme 'udp'"), ("RTSP://cam.example/x", "lower case"),
    ("Http://cam.example/x", "lower case"), (" rtsp://cam.example/x", "whitespace"),
    ("rtsp://cam.example/x y", "whitespace"), ("rtsp://cam.example/\nx", "whitespace"),
    ("rtsp://a@b", "user:password"), ("rtsp://cam.example@evil.example/x", "user:password"),
    ("rtsp://u:p@x@cam.example/", "one '@'"), ("http://2852039166/", "dotted-quad"),
    ("http://0251.0376.0251.0376/", "dotted-quad"), ("http://0xa9.0xfe.0xa9.0xfe/", "dotted-quad"),
    ("http://169.254/", "dotted-quad"), ("http://169.254.169.254/latest/meta-data/", "always denied"),
    ("http://169.254.169.254.:80/", "not a DNS name"), ("http://%31%36%39.254.169.254/", "percent-encoded"),
    ("http://[fd00:ec2::254]/", "always denied"), ("http://[FD00:EC2:0:0:0:0:0:254]/", "always denied"),
    ("http://[::ffff:169.254.169.254]/", "always denied"), ("http://[::ffff:a9fe:a9fe]/", "always denied"),
    ("http://[64:ff9b::169.254.169.254]/", "always denied"), ("http://[2002:a9fe:a9fe::]/", "always denied"),
    ("http://[fe80::1%25eth0]/", "zone"), ("http://[fe80::1]/", "always denied"), ("http://[::]/", "always denied"),
    ("http://0.0.0.0/", "always denied"), ("http://127.0.0.1:8265/", "loopback"), ("http://[::1]/", "loopback"),
    ("http://evil.example/", "resolves to 169.254.169.254"), ("http://v6evil.example/", "always denied"),
    ("http://local.example/", "loopback"), ("http://nowhere.example/", "does not resolve"),
    ("rtsp://cam.example/x?listen=1", "'listen'"), ("rtsp://cam.example/x?a=1&LocalPort=5", "'LocalPort'"),
    ("rtsp://cam.example/x?-f=lavfi", "'-'"), ("rtsp://cam.example/x?i=-re", "'-'"),
    ("rtsp://cam.example/x#frag", "fragment"), ("rtsp://cam.example\\@evil/x", "backslash"),
    ("rtsp://cam.example:0/x", "port"), ("rtsp://cam.example:99999/x", "port"), ("rtsp://cam.example:8a/x", "port"),
    ("rtsp:///x", "no host"), ("rtsp://cam_1.example/x", "not a DNS name"), ("rtsp://cam.exämple/", "non-ASCII"),
    ("rtsp://[2001:db8::1/x", "closing"), ("rtsp://[nothex]/x", "not an IPv6"), ("x" * 3000, "longer"),
    (None, "must be a string"), (42, "must be a string"),
]


@pytest.mark.parametrize("url", ALLOWED)
def test_policy_allows_plain_remote_cameras(url):
    SourcePolicy(resolver=resolver).check(url)


@pytest.mark.parametrize("url, reason", REFUSED)
def test_policy_refuses_with_a_reason(url, reason):
    with pytest.raises(PolicyError, match=reason.replace("(", r"\(").replace("?", r"\?")):
        SourcePolicy(resolver=resolver).check(url)


def test_policy_host_allow_list_matches_names_and_cidrs_and_never_lifts_the_deny_list():
    policy = SourcePolicy(hosts=("*.site.example", "10.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16"),
                          resolver=resolver)
    policy.check("rtsp://cams.site.example/x")  # listed by suffix (and resolves into the CIDR)
    policy.check("rtsp://10.9.8.7/x")
    policy.check("http://127.0.0.1:8554/x")  # loopback: only because it is listed
    for url in ("rtsp://cam.example/x", "rtsp://192.168.1.5/x"):
        with pytest.raises(PolicyError, match="not among the allowed hosts"):
            policy.check(url)
    with pytest.raises(PolicyError, match="always denied"):
        policy.check("http://169.254.169.254/")
    with pytest.raises(ValueError, match="only from the configuration file"):
        SourcePolicy(schemes=("rtsp", "file"))
    with pytest.raises(ConfigError, match="neither a host name"):
        base_config(source_policy={"hosts": ["cam one"]})


# The policy and the configuration file read schemes from one table (schemas.urls): what the file
# refuses the control topic refuses too, and what the control topic accepts the file would open.
FFMPEG_PROTOCOLS = [
    "async", "bluray", "cache", "concat", "concatf", "crypto", "data", "fd", "ffrtmpcrypt", "ffrtmphttp", "file",
    "ftp", "gopher", "gophers", "hls", "httpproxy", "icecast", "ipfs", "ipns", "md5", "mmsh", "mmst", "pipe",
    "prompeg", "rist", "rtmpe", "rtmpt", "rtmpte", "rtmpts", "sctp", "srtp", "subfile", "tee", "tls", "udplite",
    "unix", "zmq", "crypto+http", "hls+https", "rtsp+http", "device", "udp", "rtp", "srt", "tcp", "rtmp", "rtmps",
    "rtsp", "rtsps", "http", "https", "RTSP", "Https",
]


def test_policy_and_source_kind_share_one_scheme_table():
    policy = SourcePolicy(resolver=resolver)
    accepted = []
    for scheme in FFMPEG_PROTOCOLS:
        for url in (f"{scheme}://cam.example/live", f"{scheme}:cam.example/live", f"{scheme}:/etc/passwd"):
            try:
                kind = source_kind(url)
            except SourceURLError:
                with pytest.raises(PolicyError):  # what the configuration file refuses, the policy refuses
                    policy.check(url)
                continue
            try:
                parsed = policy.check(url)
            except PolicyError:
                continue
            assert parsed.kind == kind and kind in REMOTE_KINDS, url  # the policy's kind is source_kind's
            accepted.append(scheme)
    assert sorted(set(accepted)) == sorted(REMOTE_SCHEMES) == ["http", "https", "rtsp", "rtsps"]
    assert {source_kind(f"{s}://h/x") for s in REMOTE_SCHEMES} == {"rtsp", "http"}  # live network kinds
    field = SourcePolicyConfig.model_json_schema()["properties"]["schemes"]
    assert field["items"]["enum"] == field["default"] == list(REMOTE_SCHEMES)  # the config offers the same
    for path in ("subfile,,start,0,end,9,,:/etc/passwd", "concat:/a.mp4|/b.mp4"):  # FFmpeg protocols, no '//'
        with pytest.raises(SourceURLError):
            source_kind(path)
        with pytest.raises(PolicyError, match="not a scheme"):
            policy.check(path)


def test_policy_never_accepts_a_url_the_configuration_file_would_refuse():
    """Random URLs made of plausible and hostile parts: whatever the policy accepts, source_kind opens
    as the same kind; whatever source_kind refuses, the policy refuses."""
    rng, policy, accepted = random.Random(15), SourcePolicy(resolver=resolver), 0
    schemes = ["rtsp", "rtsps", "http", "https", "tcp", "udp", "srt", "rtmp", "concat", "subfile", "file", "RTSP"]
    hosts = ["cam.example", "93.184.216.34", "[2001:db8::1]", "169.254.169.254", "evil.example", ""]
    tails = ["", "/live", "/hls/index.m3u8", "/x?listen=1", "/x?mode=listener", "?fps=5", "/a|b", "/x#f", "/%2e%2e"]
    for _ in range(2000):
        url = (rng.choice(schemes) + rng.choice(["://", "://", "://", ":", ":/", ","]) + rng.choice(["", "u:p@"])
               + rng.choice(hosts) + rng.choice(["", ":554", ":0"]) + rng.choice(tails))
        try:
            kind = source_kind(url)
        except (SourceURLError, ValueError):  # urlsplit refuses some hosts outright (ValueError)
            kind = None
        try:
            parsed = policy.check(url)
        except PolicyError:
            continue
        assert kind is not None and parsed.kind == kind and kind in REMOTE_KINDS, url
        accepted += 1
    assert accepted > 50  # the draw reaches the accepting side too


# -- authentication ----------------------------------------------------------------------------------


def test_hmac_envelope_good_unsigned_bad_stale_future_replayed():
    auth = Authenticator(SECRET, max_age_s=60, clock=lambda: NOW)
    message = {"op": "remove_camera", "id": "c1"}
    assert json.loads(auth.open(json.loads(signed(message)))) == message
    cases = [
        (json.dumps(message).encode(), "unsigned"),
        (signed(message, secret=b"another-secret-of-16+"), "bad signature"),
        (signed(message, ts=NOW - 61), "stale"),
        (signed(message, ts=NOW + 600), "future"),
    ]
    tampered = json.loads(signed(message))
    tampered["payload"] = tampered["payload"].replace("c1", "c2")
    cases.append((json.dumps(tampered).encode(), "bad signature"))
    retimed = json.loads(signed(message))
    retimed["ts_ms"] += 1000  # a fresher time on an old signature
    cases.append((json.dumps(retimed).encode(), "bad signature"))
    once = signed(message, nonce="n" * 20)
    auth.open(json.loads(once))
    cases.append((once, "replayed"))
    cases.append((signed({"op": "reset"}, nonce="n" * 20), "replayed"))  # a nonce is single-use
    for value, reason in cases:
        with pytest.raises(AuthError, match=reason):
            auth.open(json.loads(value))
    # The replay memory survives a restart through the saved state.
    later = Authenticator(SECRET, max_age_s=60, clock=lambda: NOW)
    later.restore(auth.export())
    with pytest.raises(AuthError, match="replayed"):
        later.open(json.loads(once))


def test_secret_comes_from_a_file_or_the_environment_and_must_exist(tmp_path, monkeypatch):
    (tmp_path / "s").write_bytes(SECRET + b"\n")
    assert read_secret(str(tmp_path / "s"), None) == SECRET
    monkeypatch.setenv("XCLIP_TEST_SECRET", SECRET.decode())
    assert read_secret(None, "XCLIP_TEST_SECRET") == SECRET
    monkeypatch.setenv("XCLIP_TEST_SECRET", "short")
    with pytest.raises(AuthError, match="shorter than 16") as err:
        read_secret(None, "XCLIP_TEST_SECRET")
    assert "short" not in str(err.value).replace("shorter", "")
    with pytest.raises(AuthError, match="cannot read"):
        read_secret(str(tmp_path / "missing"), None)
    with pytest.raises(ConfigError, match="needs a 'control' section"):
        parse_config({"model": {"path": "m"}, "labels": {"labels": ["a"]}, "cameras": [{"id": "c", "url": "x"}],
                      "kafka": {"bootstrap": "h:1", "control_topic": "ctl"}})
    with pytest.raises(ConfigError, match="exactly one of secret_file or secret_env"):
        base_config(secret_file="/run/secret")


# -- handling records --------------------------------------------------------------------------------


def test_add_relabel_remove_reset_and_refusals_name_the_problem():
    p = plane()
    out = p.handle(signed({"op": "add_camera", "camera": {"id": "c2", "url": "rtsp://u:pw@cam.example/s"}}))
    assert out.applied and [c.id for c in out.config.cameras] == ["c1", "c2"]
    assert p.handle(signed({"op": "set_labels", "id": "c2", "labels": "night"})).applied
    assert p.config.label_set(p.config.cameras[1].labels).labels == ["c"]
    assert p.handle(signed({"op": "remove_camera", "id": "c1"})).applied  # a file camera may be removed
    assert [c.id for c in p.config.cameras] == ["c2"]
    refusals = {
        "no camera with id 'zz'": {"op": "remove_camera", "id": "zz"},
        "names label set 'day'": {"op": "set_labels", "id": "c2", "labels": "day"},
        "unknown op 'reboot'": {"op": "reboot"},
        "unknown fields": {"op": "remove_camera", "id": "c2", "force": True},
        "needs a string 'id'": {"op": "remove_camera", "id": 7},
        "a label set name or a list": {"op": "set_labels", "id": "c2", "labels": [1]},
        "scheme 'file'": {"op": "add_camera", "camera": {"id": "f", "url": "file:///etc/passwd"}},
        "not a scheme": {"op": "add_camera", "camera": {"id": "f", "url": "/data/x.mp4"}},
        "apply to files": {"op": "add_camera", "camera": {"id": "f", "url": "rtsp://cam.example/x", "loop": True}},
        "Extra inputs": {"op": "add_camera", "camera": {"id": "f", "url": "rtsp://cam.example/x", "format": "lavfi"}},
        "must be a JSON object": ["op"],
    }
    for reason, message in refusals.items():
        out = p.handle(signed(message))
        assert not out.applied and reason in out.reason, (reason, out.reason)
    assert [c.id for c in p.config.cameras] == ["c2"]  # nothing moved
    assert p.handle(signed({"op": "reset"})).applied  # the file's cameras come back
    assert [c.id for c in p.config.cameras] == ["c1"] and p.overlay.touches() == set()


def test_records_that_are_not_messages_are_refused_with_a_reason():
    p = plane(max_message_bytes=4096)
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    cases = {
        None: "tombstone", b"\xff\xfe{": "not UTF-8", b"{\"op\":": "not JSON", b"": "not JSON",
        deep.encode(): "deeper than", ("[" * 100_000).encode(): "over the limit",
        b"{" * 3000: "deeper than", b"[]": "unsigned", b"\"str\"": "unsigned", b"null": "unsigned",
        json.dumps({"payload": "{}", "sig": "00" * 32, "v": 1, "ts_ms": 1, "nonce": "n" * 16, "x": 1}).encode():
            "unknown",
        signed(deep): "deeper than", signed("not json"): "not JSON",
    }
    for value, reason in cases.items():
        out = p.handle(value)
        assert not out.applied and reason in out.reason, (value[:40] if value else value, out.reason)


def test_refusal_reasons_never_carry_credentials():
    p = plane()
    for url in ("rtsp://admin:hunter2@169.254.169.254/x", "rtsp://admin:hunter2@cam.example/x?listen=1",
                "http://cam.example/x?token=hunter2&-f=1", "rtsp://admin:hunter2@nowhere.example/"):
        out = p.handle(signed({"op": "add_camera", "camera": {"id": "x", "url": url}}))
        assert not out.applied and "hunter2" not in out.reason, out.reason
    out = p.handle(signed({"op": "add_camera", "camera": {"id": "x", "url": "rtsp://u:hunter2@cam.example/",
                                                          "labels": "nope"}}))
    assert not out.applied and "hunter2" not in out.reason and "nope" in out.reason
    for message in ({"op": "rtsp://admin:hunter2@h/x"}, {"op": "reset", "http://u:hunter2@h/": 1},
                    {"op": "remove_camera", "id": "http://h/?token=hunter2"}):
        out = p.handle(signed(message))  # text quoted back from the message is redacted too
        assert not out.applied and "hunter2" not in out.reason and "***" in out.reason, out.reason


def test_a_reloaded_file_keeps_the_control_topics_changes_on_top_and_says_so(caplog):
    p = plane()
    assert p.handle(signed({"op": "add_camera", "camera": {"id": "c2", "url": "rtsp://cam.example/a"}})).applied
    assert p.handle(signed({"op": "set_labels", "id": "c1", "labels": ["x", "y"]})).applied
    edited = base_config().model_dump(exclude_unset=True)
    edited["cameras"] = [{"id": "c1", "url": "/data/y.mp4", "labels": "night"}, {"id": "c3", "url": "/data/z.mp4"}]
    with caplog.at_level("WARNING"):
        config = p.reload(parse_config(edited))
    cameras = {c.id: c for c in config.cameras}
    assert set(cameras) == {"c1", "c2", "c3"}
    assert cameras["c1"].url == "/data/y.mp4" and cameras["c1"].labels == ["x", "y"]  # control's labels win
    assert "camera 'c1': the configuration file changed it" in caplog.text
    restarted = plane()  # a restart: the saved overlay goes on top of the file again
    restarted.restore(Overlay.from_json(json.loads(json.dumps(p.overlay.to_json()))))
    assert [c.id for c in restarted.config.cameras] == ["c1", "c2"]


def test_fuzz_200_malformed_records_no_crash_each_refused_with_a_reason():
    rng = random.Random(15)
    p = plane()
    good = {"op": "add_camera", "camera": {"id": "c9", "url": "rtsp://cam.example/x"}}
    good_text = json.dumps(good)
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))),
        lambda: signed(good)[: rng.randrange(1, len(signed(good)) - 1)],
        lambda: ("[" * rng.randrange(MAX_DEPTH + 1, 5000)).encode(),
        lambda: ('{"a":' * rng.randrange(MAX_DEPTH + 1, 3000)).encode(),
        lambda: json.dumps(rng.choice([None, 1, 2.5, "x", [], {}, True, {"op": None}])).encode(),
        lambda: good_text.encode(),  # unsigned
        lambda: signed(good, ts=NOW - rng.uniform(601, 1e6)),  # stale
        lambda: signed(good, secret=b"not-the-secret-%d" % rng.randrange(10**6)),
        lambda: signed({"op": rng.choice(["add_camera", "remove_camera", "set_labels", "reset", "x", 1])} | {
            rng.choice(["id", "camera", "labels", "zz"]): rng.choice([None, 1, [], {}, "c404", {"id": 5}, [1.5]])}),
        lambda: signed({"op": "add_camera", "camera": {"id": "z", "url": rng.choice([r[0] for r in REFUSED])}}),
        lambda: signed(good, nonce=rng.choice(["short", "bad nonce chars!!", "x" * 65])),
        lambda: _mutate(rng, signed(good)),
        lambda: None,
    ]
    refused = 0
    for i in range(200):
        value = makers[i % len(makers)]()
        out = p.handle(value)
        assert not out.applied, (value, out)
        assert out.reason and not out.reason.startswith("internal error"), (value, out.reason)
        refused += 1
    assert refused == 200 and [c.id for c in p.config.cameras] == ["c1"]
    assert p.handle(signed(good)).applied  # and the plane still works


def _mutate(rng: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rng.randrange(1, 4)):
        pos = rng.randrange(len(data))
        data[pos] = rng.choice(b'{}[]":,\\0aZ\xff')
    # A mutation that leaves the envelope intact and valid would be a correct message: force the sig wrong.
    envelope = data.replace(b'"sig": "', b'"sig": "x')
    return bytes(envelope)
