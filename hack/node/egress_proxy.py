"""The API server's egress to the node: HTTP CONNECT on the control plane's Unix socket.

Run inside the node's network namespace by hack/node/inside.sh. The API server's egress
selector sends every connection into the cluster here (``CONNECT host:port``): to the kubelet
for logs, exec and port-forward, and to Service ClusterIPs for webhooks, which kube-proxy's
rules in this namespace then take to a pod. Only the node itself (by name or IP), pod IPs and
Service IPs are dialled; anything else gets a 503.

    python egress_proxy.py SOCKET NODE_NAME=NODE_IP CIDR...
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path

from harness.serviceproxy import ServiceProxy


def main(argv: list[str]) -> int:
    socket_path, node, *cidrs = argv
    node_name, _, node_ip = node.partition("=")
    networks = [ipaddress.ip_network(c) for c in cidrs]

    def resolve(host: str, port: int) -> tuple[str, int] | None:
        if host == node_name:
            host = node_ip
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return (host, port) if any(address in n for n in networks) else None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    proxy = ServiceProxy(Path(socket_path), resolve).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
