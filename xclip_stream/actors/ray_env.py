"""Where a Ray cluster started by the pipeline listens, and whether it asks for a token.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when ``ray`` is imported: unset, its gcs_server,
raylet and workers listen on every interface, and with authentication off anyone who reaches the
host can run code in the cluster. So ``actors/__init__`` calls ``set_defaults`` before any actor
module imports Ray, and ``apply`` (called by ``init_ray`` before ``ray.init``) makes the imported
Ray agree with the configuration even when something imported Ray first (a test, a notebook).
This module must not import Ray at module level.
"""

from __future__ import annotations

import logging
import os
import sys

from ..schemas.config import RayConfig

log = logging.getLogger(__name__)

CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": bind 127.0.0.1 only (Ray 2.60)
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # "token": every gRPC call needs the cluster's token
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"

DEFAULTS = {
    CLUSTER_ENV: "0",
    AUTH_MODE_ENV: "disabled",  # loopback only, so no token file is written under the home folder
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1",
}


def set_defaults() -> None:
    """Loopback, no token, no usage reporting, unless the environment already says otherwise."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def joining() -> dict[str, str]:
    """Joining a running cluster: its own settings apply (set RAY_AUTH_MODE=token and the token
    in the environment for a cluster that wants one). Returns the variables workers get too."""
    set_defaults()
    return {key: os.environ[key] for key in DEFAULTS}


def apply(config: RayConfig) -> dict[str, str]:
    """Set the environment for a local cluster as ``config`` asks, and make an already-imported Ray
    see it. Returns the (non-secret) variables that Ray workers should get too."""
    set_defaults()
    if config.listen == "loopback":
        os.environ[CLUSTER_ENV] = "0"
    else:
        os.environ[CLUSTER_ENV] = "1"
        os.environ[AUTH_MODE_ENV] = "token"
        if config.token_file:
            if not os.access(config.token_file, os.R_OK):
                raise ValueError(f"ray.token_file: cannot read {config.token_file}")
            os.environ[TOKEN_PATH_ENV] = config.token_file
        source = config.token_file or ("RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else
                                       os.environ.get(TOKEN_PATH_ENV) or "~/.ray/auth_token (made if missing)")
        log.warning("ray.listen=all: the Ray cluster listens on the network (node ip %s) with token "
                    "authentication; token from %s", config.node_ip or "auto", source)
    _sync_imported_ray(config.listen == "all")
    keys = [*DEFAULTS, *([TOKEN_PATH_ENV] if TOKEN_PATH_ENV in os.environ else [])]
    return {key: os.environ[key] for key in keys}


def _sync_imported_ray(network: bool) -> None:
    """Ray copied the environment into a module constant (and a C++ config) when it was imported;
    update both when they disagree with the environment set above. Checked against Ray 2.60."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", network) != network:
        log.warning("ray was imported before xclip_stream set %s; correcting it to listen on %s",
                    CLUSTER_ENV, "the network" if network else "loopback only")
        constants.ENABLE_RAY_CLUSTER = network
    if network and "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationMode, Config, get_authentication_mode

        if get_authentication_mode() != AuthenticationMode.TOKEN:
            Config.initialize("")  # re-read RAY_AUTH_MODE, as Ray's own token setup does
        if get_authentication_mode() != AuthenticationMode.TOKEN:
            raise RuntimeError("ray.listen=all needs token authentication, and Ray did not switch it on")


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms (how Ray's gRPC servers show them)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
