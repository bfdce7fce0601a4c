"""A TCP port in front of a server that a test can cut and restore: the
network between two parts going down and coming back.

:meth:`TcpProxy.cut` closes the port and every forwarded connection (both
ends see the connection reset, and new ones are refused); :meth:`restore`
listens again on the same port. The target is a Unix socket (PostgreSQL's)
or a ``(host, port)`` on loopback (oe_web_socketio's).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from .tryton import free_port


class TcpProxy:
    """Forwards each connection to 127.0.0.1:*port* to *target*.

    :param target: a Unix socket path, or ``(host, port)``.
    """

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        #: Connections accepted since the start.
        self.accepted = 0

    def restore(self) -> None:
        """Listen (again) on :attr:`port`."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        self._start(self._accept, listener)

    def cut(self) -> None:
        """Close the port and every forwarded connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(5)

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            server = socket.socket(socket.AF_UNIX)
        else:
            server = socket.socket()
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            server.connect(self.target)
        except OSError:
            server.close()
            raise
        return server

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = self._connect_target()
            except OSError:
                client.close()
                continue
            if not isinstance(self.target, str):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
                self.accepted += 1
            self._start(self._pump, client, server)
            self._start(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
