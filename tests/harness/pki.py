"""Certificates for the local control plane: one CA, serving and client certificates.

Kubernetes authenticates a client certificate signed by ``--client-ca-file`` as the user in
its Common Name with the groups in its Organization fields, so minting a certificate is how
tests get an identity of their choosing (``system:masters`` for the admin, anything else for
least-privilege checks). ECDSA P-256 keys keep generation instant.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

# The CA code is the operator's own (it mints its webhook certificate with it); the harness
# reuses it for the control plane's certificates.
from tierwise.controller.certificates import (
    CertificateAuthority,
    KeyPair,
    key_pem,
    new_key,
    write_file,
)

__all__ = ["CertificateAuthority", "KeyPair", "write_signing_key"]


def write_signing_key(directory: Path, stem: str = "sa") -> KeyPair:
    """The service-account token signing key (private) and verification key (public)."""
    key = new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(
        cert=write_file(directory / f"{stem}.pub", public, 0o644),
        key=write_file(directory / f"{stem}.key", key_pem(key)),
    )
