"""Pipeline configuration: validated once, at the edge (YAML file or CLI flags), then passed down.

Unknown keys are errors (a misspelt option must not be silently ignored), and every error names
the offending path, e.g. ``cameras.1.sample_fps: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .urls import CREDENTIAL_KINDS, REMOTE_SCHEMES, has_userinfo, source_kind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """Hysteresis of one label's activity events (see pipeline.activity). The defaults open an
    incident on evidence only, three windows in a row at 0.5 or more, and end it after three below
    0.3: on the demo cameras (bench/incidents.py, 1200 windows) they opened 4 incidents, one per
    camera and all true, where the earlier defaults (0.6 / 0.4, one window on, two off) opened 54, of
    which 30 false (README, "Activity incidents")."""

    on: float = Field(0.5, ge=0, le=1)
    off: float = Field(0.3, ge=0, le=1)
    min_on_windows: int = Field(3, ge=1)
    min_off_windows: int = Field(3, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data):
        """YAML 1.1 reads the bare keys ``on``/``off`` as true/false: take them back."""
        if isinstance(data, dict):
            return {{True: "on", False: "off"}.get(k, k) if isinstance(k, bool) else k: v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _ordered(self):
        if self.off > self.on:
            raise ValueError(f"off ({self.off}) must not exceed on ({self.on})")
        return self


class LabelSet(_Strict):
    labels: list[str] = Field(min_length=1)
    thresholds: dict[str, Thresholds] = {}  # per label; others use ``default_thresholds``
    default_thresholds: Thresholds = Thresholds()

    @field_validator("labels")
    @classmethod
    def _clean(cls, labels: list[str]) -> list[str]:
        cleaned = [label.strip() for label in labels]
        if any(not label for label in cleaned):
            raise ValueError("labels must not be empty strings")
        dupes = sorted({label for label in cleaned if cleaned.count(label) > 1})
        if dupes:
            raise ValueError(f"duplicate labels: {', '.join(dupes)}")
        return cleaned

    @model_validator(mode="after")
    def _known(self):
        unknown = sorted(set(self.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds given for labels not in the set: {', '.join(unknown)}")
        return self


class StreamOptions(_Strict):
    """Sampling, windowing and backpressure of one stream (defaults apply to every camera)."""

    sample_fps: float = Field(4.0, gt=0)  # frames kept per second of stream time
    hop: int | None = Field(None, ge=1)  # frames between windows; None = the model's frame count
    max_gap_seconds: float = Field(2.0, gt=0)  # a longer gap empties the window ring
    max_pending_windows: int = Field(4, ge=1)  # in flight to the model per stream
    continue_every: int = Field(0, ge=0)  # activity "continue" event every N windows (0: none)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class CameraCredentials(_Strict):
    """The user name and password a camera asks for (RTSP or HTTP authentication). Like Kafka's, the
    password is never written here: it is read from ``password_file`` (e.g. a mounted Kubernetes
    Secret) or the environment variable ``password_env`` each time the camera connects, on the node
    whose actor opens it, and goes only into the URL handed to FFmpeg (``pipeline.credentials``)."""

    username: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
    password_file: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, pattern=_ENV_NAME)

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data):
        if isinstance(data, dict) and "password" in data:
            raise ValueError("'password' is not accepted: secrets do not belong in the configuration; "
                             "name a file (password_file) or an environment variable (password_env) instead")
        return data

    @model_validator(mode="after")
    def _one_password(self):
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_file or password_env")
        return self


class CameraConfig(_Strict):
    """A camera: rtsp://, rtsps://, http(s):// (MJPEG or HLS), udp://, rtp://, srt://, tcp://,
    rtmp(s):// (live, as clients only), a file path or file://, or a local device
    (``device:///dev/video0`` or ``/dev/video0``); other schemes are refused (``schemas.urls``)."""

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:\-]+$")
    url: str = Field(min_length=1)
    labels: str | list[str] | None = None  # a label set name, an inline list, or None for the default
    loop: bool = False  # files: start again at the end (a live camera made of a file)
    realtime: bool | None = None  # files: pace at the file's frame rate (default: same as loop)
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    options: StreamOptions | None = None  # overrides of ``defaults``
    credentials: CameraCredentials | None = None  # rtsp and http(s) cameras; the URL then has none

    @field_validator("url")
    @classmethod
    def _openable(cls, url: str) -> str:
        source_kind(url)  # refuses schemes FFmpeg must not be handed, and listening (server) modes
        return url

    @model_validator(mode="after")
    def _credentials_fit(self):
        if self.credentials is None:
            return self
        kind = source_kind(self.url)
        if kind not in CREDENTIAL_KINDS:
            raise ValueError(f"credentials apply to rtsp(s):// and http(s):// cameras, not to a {kind} source")
        if has_userinfo(self.url):
            raise ValueError("the URL already carries credentials (user info before '@') and 'credentials' "
                             "is given too: keep them in 'credentials' only")
        return self


class FrameLimits(_Strict):
    """What one frame message may make the decoder do. Sizes are checked on every header the image
    declares and again on what was decoded; a resize of an accepted frame to the model's S x S input
    allocates at most ``max_aspect`` * S * S * 3 bytes."""

    max_pixels: int = Field(4096 * 4096, ge=1, le=2**31 - 1)  # width * height
    max_aspect: float = Field(16.0, ge=1, le=64)  # long side / short side
    max_message_bytes: int = Field(8 * 2**20, ge=1024)  # a larger record value is refused unread
    dead_letter_max_bytes: int = Field(512 * 2**10, ge=1024)  # a dead letter's value is cut to this


class MemberScaling(_Strict):
    """Frames members that follow the group's lag (records not yet committed, over the topic's
    partitions), measured by the driver every ``interval_s``. One member is added when the lag stays
    above ``lag_per_member`` x members for ``up_after_s``; one is removed when it stays below
    ``lag_per_member`` for ``down_after_s``. Never more than ``max_members`` nor the partition count,
    never fewer than the topic's ``members``. After each change both waits start again."""

    max_members: int = Field(ge=1)
    lag_per_member: int = Field(1000, ge=1)  # records
    up_after_s: float = Field(30.0, gt=0)
    down_after_s: float = Field(300.0, gt=0)
    interval_s: float = Field(10.0, gt=0)


class KafkaFrames(_Strict):
    """A Kafka topic of encoded frames (JPEG or PNG, one per message, key = camera id, headers
    camera_id, capture_time_ms, seq), read by ``members`` consumers of one group; with ``scale``,
    ``members`` is the least and the count follows the group's lag (``MemberScaling``).

    Each camera seen on the topic costs a window ring and event state, so a member keeps at most
    ``max_cameras`` of them; one idle for ``camera_idle_s`` makes room (its incidents are ended), and a
    new camera with no room is dead-lettered (``camera_limit``). ``allowed_cameras`` (shell patterns,
    e.g. ``lobby-*``) refuses every other camera id (``camera_not_allowed``)."""

    topic: str = Field(min_length=1)
    group_id: str = "xclip-stream"
    members: int = Field(1, ge=1)
    labels: str | list[str] | None = None
    options: StreamOptions | None = None
    limits: FrameLimits = FrameLimits()
    max_cameras: int = Field(256, ge=1)
    camera_idle_s: float = Field(300.0, gt=0)
    allowed_cameras: list[str] | None = Field(None, min_length=1)
    scale: MemberScaling | None = None  # None: always ``members``

    @model_validator(mode="after")
    def _scale_above_members(self):
        if self.scale and self.scale.max_members < self.members:
            raise ValueError(f"scale.max_members ({self.scale.max_members}) is below members ({self.members}), "
                             "the least number of members")
        return self


class KafkaSecurity(_Strict):
    """How every Kafka client of the pipeline connects: TLS (``ssl``), SASL, or both.

    Secrets never live in the configuration: a password or key password is named by a file or an
    environment variable and read when a client is made (in whichever process makes it)."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ca_file: str | None = None  # PEM CA bundle the broker's certificate must chain to; None: system CAs
    cert_file: str | None = None  # PEM client certificate (mutual TLS)
    key_file: str | None = None  # its private key (PEM), when not inside cert_file
    key_password_file: str | None = None
    key_password_env: str | None = None
    check_hostname: bool = True  # the broker certificate must name the bootstrap host
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = Field(None, min_length=1)
    password_file: str | None = None
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data):
        if isinstance(data, dict):
            for key in ("password", "key_password", "sasl_plain_password", "ssl_password"):
                if key in data:
                    raise ValueError(f"'{key}' is not accepted: secrets do not belong in the configuration; "
                                     f"name a file ({key.removeprefix('sasl_plain_').removeprefix('ssl_')}_file) "
                                     f"or an environment variable (..._env) instead")
        return data

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self):
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        if self.key_password_file and self.key_password_env:
            raise ValueError("give key_password_file or key_password_env, not both")
        if self.sasl:
            missing = [name for name, value in (("sasl_mechanism", self.sasl_mechanism), ("username", self.username),
                                                ("password_file or password_env",
                                                 self.password_file or self.password_env)) if not value]
            if missing:
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}")
        else:
            given = [name for name in ("sasl_mechanism", "username", "password_file", "password_env")
                     if getattr(self, name)]
            if given:
                raise ValueError(f"{', '.join(given)} given but protocol {self.protocol} does not use SASL "
                                 "(use SASL_PLAINTEXT or SASL_SSL)")
        tls_fields = [name for name in ("ca_file", "cert_file", "key_file", "key_password_file", "key_password_env")
                      if getattr(self, name)]
        if tls_fields and not self.tls:
            raise ValueError(f"{', '.join(tls_fields)} given but protocol {self.protocol} does not use TLS "
                             "(use SSL or SASL_SSL)")
        if (self.key_file or self.key_password_file or self.key_password_env) and not self.cert_file:
            raise ValueError("a client key needs its certificate: set cert_file")
        return self


class KafkaConfig(_Strict):
    bootstrap: str = Field(min_length=1, pattern=r"^[^\s,]+:\d+(,[^\s,]+:\d+)*$")
    security: KafkaSecurity = KafkaSecurity()
    connect_timeout_s: float = Field(15.0, gt=0, le=300)  # startup check: broker reachable and credentials accepted
    events_topic: str = "xclip.events"
    dead_letter_topic: str = "xclip.deadletter"
    control_topic: str | None = None
    frames: list[KafkaFrames] = []
    session_timeout_ms: int = Field(10000, ge=1000)


class SourcePolicyConfig(_Strict):
    """Which camera URLs the control topic may add (see pipeline.policy). Files and devices never:
    they come only from this file."""

    # Literal[a tuple] is Literal[*the tuple]: the schemes' one table is schemas.urls.
    schemes: list[Literal[REMOTE_SCHEMES]] = Field(list(REMOTE_SCHEMES), min_length=1)  # type: ignore[valid-type]
    hosts: list[str] | None = None  # names ("cam1.site", "*.cams.site") and CIDRs; None: any not denied
    resolve: bool = True  # resolve names: refuse one that points at a denied (e.g. metadata) address

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str] | None) -> list[str] | None:
        import ipaddress
        import re

        for host in hosts or []:
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError:
                if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                    raise ValueError(f"{host!r} is neither a host name, a '*.suffix' nor a CIDR") from None
        return hosts


class ControlConfig(_Strict):
    """The control topic is remote configuration: its messages are HMAC-signed with a shared secret
    (read from ``secret_file`` or the environment variable ``secret_env``, never written here), at
    most ``max_age_s`` old, and the cameras they add follow ``source_policy``. Accepted changes are
    kept in ``state_topic`` (default: the control topic's name + ".state") under ``instance``."""

    secret_file: str | None = None
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_age_s: float = Field(600.0, gt=0, le=7 * 86400)  # also how long a pipeline may be down without losing changes
    max_message_bytes: int = Field(65536, ge=1024, le=1 << 20)
    state_topic: str | None = Field(None, min_length=1)
    instance: str = Field("xclip-stream", min_length=1, max_length=200)  # one per pipeline sharing the topic
    source_policy: SourcePolicyConfig = SourcePolicyConfig()

    @model_validator(mode="after")
    def _one_secret(self):
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret_file or secret_env (the HMAC secret of control messages)")
        return self


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class ServeConfig(_Strict):
    """The model deployment. ``num_gpus=None`` takes one GPU per replica when the cluster has one."""

    replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float | None = Field(None, ge=0)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int = Field(32, ge=1)
    torch_threads: int | None = Field(None, ge=1)  # intra-op threads per replica; None: Ray's (num_cpus, >= 1)
    max_labels: int = Field(1000, ge=1)  # labels per set; a bigger set is refused at start-up and per window
    request_timeout_s: float = Field(60.0, gt=0)  # one window's call to a replica; then it is retried
    stall_timeout_s: float = Field(120.0, gt=0)  # a replica with work but no batch done for this long is unhealthy
    # False: the model application is deployed by someone else (a RayService's serveConfigV2, see k8s/)
    # and the pipeline only calls it; replicas, autoscaling and resources above are then not used.
    deploy: bool = True


class ModelConfig(_Strict):
    path: str = Field(min_length=1)  # checkpoint folder, or "demo"
    device: str | None = None  # None: cuda when the replica has a GPU, else cpu
    # auto: bf16 where the device runs it natively (GPUs from Ampere on, CPUs with AVX512-BF16 or AMX),
    # fp16 on older GPUs, float32 on other CPUs; int8 (CPUs only): int8 weights in the Linear layers;
    # float8 (GPUs with FP8 tensor cores: Ada, Hopper): e4m3 GEMMs in the video side's Linear layers
    precision: Literal["auto", "float32", "bfloat16", "float16", "int8", "float8"] = "auto"
    compile: bool | None = None  # torch.compile the video encoder (fused kernels); None: on a GPU
    cuda_graphs: bool = True  # on a GPU, replay the video encoder from CUDA graphs, one per batch bucket


class ServeAppArgs(_Strict):
    """``args`` of the model application when a RayService deploys it (serveConfigV2, k8s/): the model
    and how a replica batches. Replicas, autoscaling and resources belong to the config's
    ``deployments`` entry (Serve's own options), so they are refused here rather than silently lost."""

    model: ModelConfig
    serve: ServeConfig = ServeConfig()

    @model_validator(mode="after")
    def _batching_only(self):
        scaling = sorted({"replicas", "autoscaling", "num_cpus", "num_gpus", "max_ongoing_requests", "deploy"}
                         & self.serve.model_fields_set)
        if scaling:
            raise ValueError(f"serve.{', serve.'.join(scaling)}: set replicas, autoscaling_config, "
                             "ray_actor_options and max_ongoing_requests in the application's deployments entry")
        return self


class RayConfig(_Strict):
    """Where a Ray cluster this pipeline starts listens. ``loopback`` (the default): only this host
    can reach it. ``all``: other hosts can join, so token authentication is switched on; the token is
    read from ``token_file``, else Ray's own RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token
    (generated there if missing). Joining an existing cluster (--ray-address) starts no listener."""

    listen: Literal["loopback", "all"] = "loopback"
    node_ip: str | None = None  # the address other nodes reach this one at (listen: all)
    token_file: str | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.listen == "loopback" and (self.node_ip or self.token_file):
            raise ValueError("node_ip and token_file apply to listen: all only")
        return self


# Cameras per actor on one machine. Sharing holds as many streams with a third of the memory, but
# it adds latency at light load and jitter to live frames' times (README, camera density), so by
# default each camera keeps its own process.
AUTO_CAMERAS_PER_PROCESS = 1


class PlacementConfig(_Strict):
    """Where Ray puts the camera actors and Kafka frames members (not the model's replicas: Serve's).
    ``resources``: custom resources each of them asks for, e.g. ``{xclip_stream: 1}``, so they go only
    to nodes offering that resource (on Kubernetes, the stream worker group's slots, and an actor
    that finds no free slot makes Ray's autoscaler add a pod). ``spread``: Ray's SPREAD strategy,
    across the nodes that fit. The defaults leave placement to Ray, as on one machine.
    ``cameras_per_process``: how many cameras share one camera actor (a process: one Ray worker and
    one Serve handle for all, each camera its own decode thread); a shared actor asks for
    ``resources`` once per camera it can hold. ``auto``: one when ``resources`` are set (each camera
    takes a slot, so stream nodes scale with cameras and a lost process loses one camera), else
    ``AUTO_CAMERAS_PER_PROCESS``."""

    resources: dict[str, float] = {}
    spread: bool = False
    cameras_per_process: int | Literal["auto"] = "auto"

    @field_validator("cameras_per_process")
    @classmethod
    def _per_process(cls, n: int | str) -> int | str:
        if n != "auto" and not 1 <= n <= 64:
            raise ValueError(f"{n} is not a count in [1, 64] (or auto)")
        return n

    def camera_capacity(self) -> int:
        if self.cameras_per_process != "auto":
            return self.cameras_per_process
        return 1 if self.resources else AUTO_CAMERAS_PER_PROCESS

    @field_validator("resources")
    @classmethod
    def _custom(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if not name or name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:"):
                raise ValueError(f"{name!r} is not a custom resource name (CPU, GPU, memory and node: are Ray's)")
            if not 0 < amount <= 1000:
                raise ValueError(f"{name}: {amount} is not an amount in (0, 1000]")
        return resources


class HttpConfig(_Strict):
    """The pipeline's own HTTP server (in the driver): ``/healthz``, ``/readyz`` and ``/metrics``.
    Off unless this section is given; it listens on loopback unless ``host`` says otherwise (in a
    pod, ``0.0.0.0`` for the kubelet's probes and Prometheus). ``port: 0`` takes a free port (logged)."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8090, ge=0, le=65535)
    stale_after_s: float = Field(30.0, gt=0, le=3600)  # /healthz fails when the driver's loop stalls this long


class PipelineConfig(_Strict):
    model: ModelConfig
    ray: RayConfig = RayConfig()
    placement: PlacementConfig = PlacementConfig()
    serve: ServeConfig = ServeConfig()
    kafka: KafkaConfig | None = None  # None: events go to standard output as JSON lines
    defaults: StreamOptions = StreamOptions()
    label_sets: dict[str, LabelSet] = {}
    labels: LabelSet | None = None  # the default label set of cameras that name none
    cameras: list[CameraConfig] = []
    max_windows: int | None = Field(None, ge=1)  # each camera stops after this many windows
    control: ControlConfig | None = None  # required with kafka.control_topic
    http: HttpConfig | None = None  # None: no HTTP server

    @model_validator(mode="after")
    def _consistent(self):
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate camera ids: {', '.join(dupes)}")
        if not self.cameras and not (self.kafka and self.kafka.frames):
            raise ValueError("no sources: give at least one camera or a kafka.frames topic")
        if self.kafka and self.kafka.control_topic and self.control is None:
            raise ValueError("kafka.control_topic needs a 'control' section with secret_file or secret_env: "
                             "control messages are remote configuration and must be signed")
        for where, labels in self._label_refs():
            if labels is None and self.labels is None:
                raise ValueError(f"{where} has no labels and there is no top-level 'labels' default")
            if isinstance(labels, str) and labels not in self.label_sets:
                known = ", ".join(sorted(self.label_sets)) or "none defined"
                raise ValueError(f"{where} names label set {labels!r}, which is not defined ({known})")
            if isinstance(labels, list):
                LabelSet(labels=labels)  # same checks as a named set
        return self

    def _label_refs(self):
        for c in self.cameras:
            yield f"camera {c.id!r}", c.labels
        for f in self.kafka.frames if self.kafka else []:
            yield f"kafka frames topic {f.topic!r}", f.labels

    def label_set(self, ref: str | list[str] | None) -> LabelSet:
        """Resolve a camera's ``labels`` reference to a label set."""
        if ref is None:
            assert self.labels is not None  # checked by validation
            return self.labels
        if isinstance(ref, str):
            return self.label_sets[ref]
        return LabelSet(labels=ref, default_thresholds=(self.labels or LabelSet(labels=["_"])).default_thresholds)

    def stream_options(self, options: StreamOptions | None) -> StreamOptions:
        """A camera's options: its overrides on top of ``defaults``."""
        if options is None:
            return self.defaults
        return self.defaults.model_copy(update=options.model_dump(exclude_unset=True))


class ConfigError(ValueError):
    """A configuration that cannot be used; the message lists every problem with its path."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s)):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "configuration") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML configuration file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping, got {type(data).__name__}")
    return parse_config(data, str(path))
