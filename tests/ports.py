"""Free TCP ports on 127.0.0.1 for the servers that tests start."""

from __future__ import annotations

import socket

# Ports already given out in this test process. The kernel may hand a probe the
# port that the previous probe just closed, and two servers that a test starts
# one after the other must not get the same port.
_given_ports: set[int] = set()


def free_port() -> int:
    """Return a port on 127.0.0.1 that was free a moment ago and not given out before."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
