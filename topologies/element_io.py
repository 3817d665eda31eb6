"""The plumbing of a packet element (:mod:`topologies.delay_element`,
:mod:`topologies.cell_element`): a NetfilterQueue it serves, and, since it lives in another
network namespace than its orchestrator, control lines on its standard input answered with
JSON lines on standard output."""
from __future__ import annotations

import json
import os
import select
import socket
import sys
from typing import Callable


class ControlLines:
    """Complete lines arriving on file descriptor ``fd`` (the orchestrator's pipe), read without
    blocking past what is there; a partial line waits for its end."""

    def __init__(self, fd: int):
        self.fd = fd
        self._pending = b""

    def read(self) -> list[str] | None:
        """The complete lines readable now (decoded, stripped), or None when the pipe has closed
        (the orchestrator is gone: the element exits)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines]


class ElementIO:
    """NetfilterQueue ``queue_num`` bound to ``on_packet`` (at most ``max_len`` packets held by
    the kernel) and the control lines on standard input, served by one ``select``."""

    def __init__(self, queue_num: int, on_packet: Callable, max_len: int):
        from netfilterqueue import NetfilterQueue

        self.nfq = NetfilterQueue()
        self.nfq.bind(queue_num, on_packet, max_len=max_len)
        self._nl = socket.fromfd(self.nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        self._nl.setblocking(False)
        self._stdin = sys.stdin.fileno()
        self._control = ControlLines(self._stdin)

    def ready(self) -> None:
        """Tell the orchestrator the queue is bound (its start-up handshake)."""
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    def wait(self, timeout_s: float) -> list[str] | None:
        """Wait up to ``timeout_s`` s; hand arrived packets to ``on_packet``; return the control
        lines that came (maybe none), or None when standard input closed."""
        readable, _, _ = select.select([self._nl, self._stdin], [], [], max(0.0, timeout_s))
        if self._nl in readable:
            self.nfq.run(block=False)
        return self._control.read() if self._stdin in readable else []

    def close(self) -> None:
        """Unbind the queue."""
        self.nfq.unbind()


def answer(obj: dict) -> None:
    """Write ``obj`` as one JSON line on standard output and flush it (a ``stats`` reply)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
