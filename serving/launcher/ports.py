"""Free TCP ports and the host to connect to for a server bound to an address."""

from __future__ import annotations

import contextlib
import ipaddress
import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports the OS reports free on ``host`` right now.

    All sockets are held open together so the ports differ, then closed: another process may
    still take one before the caller binds it (fine for tests; not a reservation).
    """
    if n < 1:
        raise ValueError(f"free_ports needs n >= 1, got {n}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port the OS reports free on ``host`` (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _connect_host(host: str) -> str:
    """Host to connect to for a server bound to ``host`` (wildcards become loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host
