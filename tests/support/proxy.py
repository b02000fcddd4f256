"""A loopback TCP proxy that can be switched off and on: an outage without losing the server's data.

moto keeps its objects in memory, so stopping it would lose them; a real MinIO that goes
down keeps them. Putting this proxy between the platform and moto gives the realistic
case: while ``down``, new connections are refused (accepted and reset at once) and open
ones are cut; afterwards traffic flows again to the same server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.down = threading.Event()
        self.delay_s = 0.0  # added before forwarding each piece of a request: a slow store
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: connection reset by peer
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b, slow in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool = False) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data or self.down.is_set():
                    break
                if slow and self.delay_s > 0:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns -= {src, dst}

    def set_down(self, down: bool) -> None:
        """Switch the outage on (cut every open connection) or off."""
        if down:
            self.down.set()
            with self._lock:
                conns = list(self._conns)
            for s in conns:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        else:
            self.down.clear()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self.set_down(True)


@contextmanager
def tcp_proxy(target_endpoint: str) -> Iterator[TcpProxy]:
    host, port = target_endpoint.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        yield proxy
    finally:
        proxy.close()
