"""Helpers shared by the end-to-end and CLI tests: a port that refuses connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs.

    The socket is bound but never listens, so nothing else can take the port meanwhile and a
    connection attempt is refused at once (no wait for a timeout).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def unreachable_base_url() -> Iterator[str]:
    """An OpenAI-compatible base URL with nothing behind it."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}/v1"
