"""Secrets the configuration names but never holds: a file (a mounted Kubernetes Secret, say) or an
environment variable, read when it is used, in the process that uses it (Kafka clients, cameras).

Reading at use means a rotated Secret file is picked up by the next client or the next camera
connection, and that specs passed to actors carry file and variable names only. Errors name the
setting, the file or the variable, never the value.

A camera's password goes only into the URL handed to FFmpeg (``camera_url``): the configuration, the
actor's spec, its health, events and logs keep the URL without it.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from ..schemas.config import CameraCredentials


class SecretUnavailable(ValueError):
    """A configured secret that cannot be read; the message names the setting and where it looked."""


def read_secret(file: str | None, env: str | None, setting: str) -> str | None:
    """The secret in ``file`` (trailing newline dropped) or environment variable ``env``; None if
    neither is set. ``setting`` names it in errors (e.g. ``kafka.security.password`` gives
    ``kafka.security.password_file: cannot read ...``)."""
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError as e:
            raise SecretUnavailable(f"{setting}_file: cannot read {file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise SecretUnavailable(f"{setting}_file: {file} is not UTF-8 text") from None
        if not value:
            raise SecretUnavailable(f"{setting}_file: {file} is empty")
        return value
    if env:
        value = os.environ.get(env)
        if not value:
            raise SecretUnavailable(f"{setting}_env: environment variable {env} is not set (or empty) in this process")
        return value
    return None


def camera_url(url: str, credentials: CameraCredentials | None, camera_id: str) -> str:
    """``url`` (validated: rtsp or http(s), no user info of its own) with the camera's user name and
    password, read now, percent-encoded into its user info (FFmpeg decodes them for RTSP and HTTP
    authentication). Without credentials, ``url`` itself."""
    if credentials is None:
        return url
    password = read_secret(credentials.password_file, credentials.password_env,
                           f"camera {camera_id!r} credentials.password")
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(credentials.username, safe='')}:{quote(password, safe='')}@{rest}"
