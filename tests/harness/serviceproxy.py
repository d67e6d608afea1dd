"""A kube-proxy stand-in for the local control plane: the API server's Service traffic.

The control plane's egress selector sends the API server's connections to Services (a
webhook registered with ``service: {name, namespace, port}``) as ``CONNECT <clusterIP>:<port>``
over a Unix socket. Nothing routes ClusterIPs on this host, so :class:`ServiceProxy` answers
those requests: a ``resolve`` callback (the pod runner's) names the pod address behind the
Service, and the proxy splices the two connections. It dials only what ``resolve`` returns
(pods the runner runs, on loopback addresses); anything else gets a 503.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], "tuple[str, int] | None"]
_HEADER_LIMIT = 8192
_CONNECT_TIMEOUT = 5.0


class ServiceProxy:
    """HTTP CONNECT on a Unix socket; one thread per tunnel direction."""

    def __init__(self, path: Path, resolve: Resolver) -> None:
        self.path = path
        self._resolve = resolve
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> ServiceProxy:
        if self._server is not None:
            return self
        self.path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        server.settimeout(0.5)
        self._server = server
        self._thread = threading.Thread(target=self._accept_loop, name="service-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            target = _read_connect(client)
            backend = self._backend(target) if target else None
            if backend is None:
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                client.close()
                return
            upstream = socket.create_connection(backend, timeout=_CONNECT_TIMEOUT)
            upstream.settimeout(None)
            client.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        except OSError as err:
            log.info("service proxy: %s", err)
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def _backend(self, target: tuple[str, int]) -> tuple[str, int] | None:
        try:
            backend = self._resolve(*target)
        except Exception as err:  # the API may be briefly unavailable
            log.warning("service proxy: resolving %s:%s failed: %s", *target, err)
            return None
        if backend is None:
            log.info("service proxy: no ready pod behind %s:%s", *target)
        return backend


def _read_connect(client: socket.socket) -> tuple[str, int] | None:
    """``CONNECT host:port HTTP/1.1`` and headers -> (host, port)."""
    client.settimeout(_CONNECT_TIMEOUT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(1024)
        if not chunk or len(data) > _HEADER_LIMIT:
            return None
        data += chunk
    parts = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0] != "CONNECT":
        return None
    host, _, port = parts[1].rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
