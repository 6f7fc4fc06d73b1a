"""TCP ports on this machine: is one free to bind, which one is."""
from __future__ import annotations

import socket


def port_bindable(host: str, port: int) -> bool:
    """Returns True if a socket can bind `port` now (no listener, no TIME_WAIT entries),
    as Serve's direct-ingress socket binds it: without SO_REUSEADDR."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port on `host` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_listening(host: str, port: int) -> bool:
    """Returns True if a server accepts connections on `port` (of `host`; loopback for
    0.0.0.0), as opposed to a port held only by closed connections in TIME_WAIT."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1" if host == "0.0.0.0" else host, port)) == 0
