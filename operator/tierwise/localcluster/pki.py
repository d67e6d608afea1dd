"""Certificates for the local control plane: one CA, serving and client certificates.

Kubernetes authenticates a client certificate signed by ``--client-ca-file`` as the user in
its Common Name with the groups in its Organization fields, so minting a certificate is how
tests get an identity of their choosing (``system:masters`` for the admin, anything else for
least-privilege checks). ECDSA P-256 keys keep generation instant.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test run or demo, short enough not to look like a real CA.
VALIDITY = dt.timedelta(days=30)
# Tolerate small clock differences between the host and whatever checks the certificate.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and key on disk."""

    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class CertificateAuthority:
    """A throw-away CA that signs every certificate of one local control plane."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, paths: KeyPair):
        self._key = key
        self._cert = cert
        self.paths = paths

    @classmethod
    def create(
        cls, directory: Path, common_name: str = "tierwise-local-ca"
    ) -> CertificateAuthority:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        subject = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        paths = KeyPair(
            cert=_write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644),
            key=_write(directory / "ca.key", _key_pem(key)),
        )
        return cls(key, cert, paths)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        paths = KeyPair(cert=directory / "ca.crt", key=directory / "ca.key")
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{paths.key} is not an EC private key")
        return cls(key, cert, paths)

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_hosts: Sequence[str] = (),
        client: bool = True,
    ) -> KeyPair:
        """Sign a leaf certificate; ``server_hosts`` (DNS names or IPs) make it a server cert."""
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if server_hosts:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(_subject_alt_names(server_hosts), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(
            cert=_write(
                directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644
            ),
            key=_write(directory / f"{stem}.key", _key_pem(key)),
        )


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def write_signing_key(directory: Path, stem: str = "sa") -> KeyPair:
    """The service-account token signing key (private) and verification key (public)."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(
        cert=_write(directory / f"{stem}.pub", public, 0o644),
        key=_write(directory / f"{stem}.key", _key_pem(key)),
    )
