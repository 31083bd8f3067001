"""Who may use the server's control APIs (model load/unload, shared memory, trace, logging).

``towerserve serve`` binds to loopback by default: only this machine reaches any API. When it
binds another address the control APIs must be key-protected: tritonserver checks a request
header (:data:`CONTROL_HEADER`) against the key on these protocols (:data:`RESTRICTED`),
through ``--grpc-restricted-protocol`` and ``--http-restricted-api``; inference, health,
metadata, model config and statistics stay open. ``towerserve publish`` and ``rollback`` send
the header (client/publish.py).
"""

from __future__ import annotations

import ipaddress
import os
import re

__all__ = [
    "CONTROL_HEADER",
    "CONTROL_KEY_ENV",
    "GRPC_CONTROL_HEADER",
    "MIN_KEY_CHARS",
    "RESTRICTED",
    "ControlKeyError",
    "is_loopback",
    "resolve_control_key",
    "restricted_args",
]

#: Request header that carries the control key on HTTP (gRPC metadata keys are lower case).
CONTROL_HEADER = "towerserve-control-key"
#: The same header on gRPC: tritonserver 2.51 expects the restricted-protocol key there with
#: this prefix (its error message says so; seen on the server here).
GRPC_CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_HEADER}"
#: Environment variable read when no key is passed.
CONTROL_KEY_ENV = "TOWERSERVE_CONTROL_KEY"
#: Protocols (gRPC) and APIs (HTTP) that need the key: the ones that change what the server
#: runs or where it writes.
RESTRICTED = ("model-repository", "shared-memory", "trace", "logging")
#: Shortest key accepted: 16 characters.
MIN_KEY_CHARS = 16
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/-]+$")


class ControlKeyError(ValueError):
    """A missing or unusable control key, or a non-loopback bind without one."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1,
    ``localhost``)."""
    name = host.strip().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def resolve_control_key(host: str, key: str | None) -> str | None:
    """The key the server must check: ``key``, else ``$TOWERSERVE_CONTROL_KEY``, else ``None``.

    Raises :class:`ControlKeyError` when ``host`` is not loopback and there is no key, or the
    key is shorter than :data:`MIN_KEY_CHARS` or holds characters other than letters, digits
    and ``._~+/-`` (it travels in a header and on the server's command line).
    """
    key = key if key is not None else os.environ.get(CONTROL_KEY_ENV) or None
    if key is None:
        if not is_loopback(host):
            raise ControlKeyError(
                f"--host {host} is reachable from other machines: the model control API needs "
                f"a key (--control-key or ${CONTROL_KEY_ENV}, at least {MIN_KEY_CHARS} "
                "characters), or bind 127.0.0.1"
            )
        return None
    if len(key) < MIN_KEY_CHARS or not _KEY_CHARS.match(key):
        raise ControlKeyError(
            f"the control key must be at least {MIN_KEY_CHARS} characters of letters, digits "
            "and ._~+/- (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    return key


def restricted_args(key: str | None) -> list[str]:
    """The tritonserver flags that put :data:`RESTRICTED` behind ``key`` (none for ``None``)."""
    if key is None:
        return []
    spec = f"{','.join(RESTRICTED)}:{CONTROL_HEADER}={key}"
    return [f"--grpc-restricted-protocol={spec}", f"--http-restricted-api={spec}"]
