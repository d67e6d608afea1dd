"""Pure parts of harness (no control plane needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from harness import podenv
from harness.pki import CertificateAuthority
from harness.podrunner import image_entrypoint


def test_path_map_rewrites_mount_paths_only_at_path_boundaries(tmp_path: Path) -> None:
    paths = podenv.PathMap()
    paths.add("/data", tmp_path / "d")
    paths.add("/data/nested", tmp_path / "n")
    assert paths.rewrite("/data/x.json") == f"{tmp_path}/d/x.json"
    assert paths.rewrite("--in=/data/nested/y") == f"--in={tmp_path}/n/y"
    assert paths.rewrite("/database/x") == "/database/x"
    assert paths.rewrite("/srv/data/x") == "/srv/data/x"
    assert paths.host_path("/etc/x") is None


def test_env_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1"}
    assert podenv.expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_container_env_resolves_references() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}}, "spec": {}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)b"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {
                "name": "O",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}},
            },
        ],
    }
    data = {("ConfigMap", "cm"): {"x": "1"}, ("Secret", "s"): {"k": "v"}}
    env = podenv.container_env(pod, container, lambda kind, ns, name: data.get((kind, name)))
    assert env == {"CM_x": "1", "A": "a", "B": "ab", "APP": "x", "K": "v"}


def test_missing_reference_is_a_config_error() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
    container = {
        "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "no", "key": "k"}}}]
    }
    with pytest.raises(podenv.ConfigError, match='configmap "no" not found'):
        podenv.container_env(pod, container, lambda *_: None)


def test_minted_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    pair = ca.issue(tmp_path, "alice", "alice", ["team-a", "readers"])
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["team-a", "readers"]
    assert cert.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_image_entrypoints_match_the_repository_name() -> None:
    table = {"tierwise": ("tierwise",)}
    assert image_entrypoint("ghcr.io/acme/tierwise:0.1.0", table) == ("tierwise",)
    assert image_entrypoint("tierwise@sha256:abc", table) == ("tierwise",)
    assert image_entrypoint("python:3.11", table) == ()


def test_path_map_rewrites_once_even_when_a_host_path_lies_under_a_mount(tmp_path: Path) -> None:
    """The runner's own directory may be under /tmp, which a pod may also mount."""
    paths = podenv.PathMap()
    paths.add("/tmp", tmp_path / "volumes" / "tmp")
    paths.add("/var/run/secrets/kubernetes.io/serviceaccount", Path("/tmp/runner/sa"))
    token = paths.rewrite("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert token == "/tmp/runner/sa/token"
    assert paths.rewrite("--scratch=/tmp/x") == f"--scratch={tmp_path}/volumes/tmp/x"


def test_service_proxy_splices_to_the_resolved_backend_and_refuses_the_rest(
    tmp_path: Path,
) -> None:
    import socket
    import threading

    from harness.serviceproxy import ServiceProxy

    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(1)

    def echo() -> None:
        conn, _ = backend.accept()
        conn.sendall(b"echo:" + conn.recv(100))
        conn.close()

    threading.Thread(target=echo, daemon=True).start()
    routes = {("10.96.0.10", 443): backend.getsockname()}
    proxy = ServiceProxy(tmp_path / "svc.sock", lambda host, port: routes.get((host, port)))
    proxy.start()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "svc.sock"))
            client.sendall(b"CONNECT 10.96.0.10:443 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200")
            client.sendall(b"ping")
            assert client.recv(100) == b"echo:ping"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "svc.sock"))
            client.sendall(b"CONNECT 10.96.0.11:443 HTTP/1.1\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 503")
    finally:
        proxy.stop()
        backend.close()
    assert not (tmp_path / "svc.sock").exists()
