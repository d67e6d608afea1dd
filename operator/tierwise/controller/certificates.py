"""X.509 for the admission webhook: a CA, serving certificates, rotation, the caBundle.

The operator owns its webhook certificate unless one is given (``--webhook-cert-dir``, e.g.
a cert-manager Secret mounted as a volume). Self-signed mode keeps a CA and a serving
certificate in a directory; ``renew_if_due`` re-issues the serving certificate when two
thirds of its life have passed (and the CA likewise), and swaps both files in one rename,
so the webhook server, which re-reads them when they change, never sees a mismatched pair.

ECDSA P-256 keys: generation is instant and every API server version accepts them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Tolerate small clock differences between the host and whatever checks the certificate.
BACKDATE = dt.timedelta(minutes=5)
DEFAULT_VALIDITY = dt.timedelta(days=30)
# A certificate is renewed once this share of its validity has passed.
RENEW_AT = 2 / 3
# The CA outlives the serving certificates it signs, so rotating those never changes the
# caBundle; it is renewed on the same two-thirds rule.
CA_LIFETIME_FACTOR = 10
# caBundle entries kept when CAs are merged (several replicas, CA rotations).
MAX_BUNDLE_CAS = 4


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and key on disk."""

    cert: Path
    key: Path


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    # A common name has at most 64 characters (RFC 5280); Service DNS names are often longer.
    # TLS clients match the subjectAltNames, so a shortened CN changes nothing they check.
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
    return x509.Name(attributes)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """A CA that signs serving (and, for the local control plane, client) certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, paths: KeyPair):
        self._key = key
        self._cert = cert
        self.paths = paths

    @classmethod
    def create(
        cls,
        directory: Path,
        common_name: str = "tierwise-local-ca",
        validity: dt.timedelta = DEFAULT_VALIDITY,
    ) -> CertificateAuthority:
        key = new_key()
        now = _now()
        subject = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + validity)
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
            cert=write_file(
                directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644
            ),
            key=write_file(directory / "ca.key", key_pem(key)),
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

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_hosts: Sequence[str] = (),
        client: bool = True,
        validity: dt.timedelta = DEFAULT_VALIDITY,
    ) -> KeyPair:
        """Sign a leaf certificate; ``server_hosts`` (DNS names or IPs) make it a server cert."""
        key = new_key()
        now = _now()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + validity, self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if server_hosts:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(subject_alt_names(server_hosts), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        # Key first: a reader that sees the new certificate also finds its key.
        key_path = write_file(directory / f"{stem}.key", key_pem(key))
        cert_path = write_file(
            directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644
        )
        return KeyPair(cert=cert_path, key=key_path)


def subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def due_for_renewal(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    """True once ``RENEW_AT`` of the certificate's validity has passed."""
    now = now or _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AT


def renewal_time(cert: x509.Certificate) -> dt.datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


class SelfSignedCertificates:
    """The operator's own CA and serving certificate, in ``directory``, rotated in place.

    Layout: ``directory/current`` is a symlink to a generation directory holding ``ca.crt``,
    ``ca.key``, ``tls.crt`` and ``tls.key``. Renewal writes a new generation and replaces
    the symlink in one rename, so ``cert``, ``key`` and ``ca`` (paths through the symlink)
    always name a matching set.
    """

    def __init__(
        self, directory: Path, hosts: Sequence[str], validity: dt.timedelta = DEFAULT_VALIDITY
    ) -> None:
        if not hosts:
            raise ValueError("a serving certificate needs at least one host name or IP")
        self.directory = Path(directory)
        self.hosts = list(dict.fromkeys(hosts))
        self.validity = validity
        self._generation = 0

    @property
    def current(self) -> Path:
        return self.directory / "current"

    @property
    def cert(self) -> Path:
        return self.current / "tls.crt"

    @property
    def key(self) -> Path:
        return self.current / "tls.key"

    @property
    def ca(self) -> Path:
        return self.current / "ca.crt"

    def ensure(self) -> None:
        """Create the CA and serving certificate unless a usable set is already there."""
        if not self.current.exists():
            self._write_generation(ca=None)

    def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        """Re-issue what is due (the CA and, with it, the serving certificate; or the serving
        certificate alone). Returns whether anything changed."""
        self.ensure()
        ca = CertificateAuthority.load(self.current)
        if due_for_renewal(ca.certificate, now):
            self._write_generation(ca=None)
            return True
        if due_for_renewal(load_certificate(self.cert), now):
            self._write_generation(ca=ca)
            return True
        return False

    def next_renewal(self) -> dt.datetime:
        self.ensure()
        return min(
            renewal_time(load_certificate(self.ca)), renewal_time(load_certificate(self.cert))
        )

    def _write_generation(self, ca: CertificateAuthority | None) -> None:
        self._generation += 1
        stamp = f"gen-{os.getpid()}-{self._generation}-{_now().strftime('%Y%m%d%H%M%S%f')}"
        target = self.directory / stamp
        target.mkdir(parents=True)
        if ca is None:
            ca = CertificateAuthority.create(
                target, "tierwise-webhook-ca", self.validity * CA_LIFETIME_FACTOR
            )
        else:
            shutil.copy2(ca.paths.cert, target / "ca.crt")
            shutil.copy2(ca.paths.key, target / "ca.key")
        ca.issue(
            target,
            "tls",
            self.hosts[0],
            server_hosts=self.hosts,
            client=False,
            validity=self.validity,
        )
        previous = self.current.resolve() if self.current.exists() else None
        link = self.directory / f".{stamp}.link"
        link.symlink_to(stamp)
        os.replace(link, self.current)
        if previous is not None and previous != target:
            shutil.rmtree(previous, ignore_errors=True)


def merge_ca_bundle(
    existing: bytes, ours: bytes, now: dt.datetime | None = None, keep: int = MAX_BUNDLE_CAS
) -> bytes:
    """A caBundle trusting ``ours`` and the still-valid CAs of ``existing``.

    Each replica of a self-signed operator has its own CA, and a rotated CA must stay
    trusted until the serving certificates it signed are gone: so the bundle is a union,
    newest first, without expired entries or duplicates, at most ``keep`` CAs.
    """
    now = now or _now()
    ours_certs = x509.load_pem_x509_certificates(ours)
    try:
        others = x509.load_pem_x509_certificates(existing) if existing.strip() else []
    except ValueError:
        others = []  # an unreadable bundle is replaced, not kept
    seen: set[bytes] = set()
    merged = []
    for cert in [*ours_certs, *sorted(others, key=lambda c: c.not_valid_before_utc, reverse=True)]:
        fingerprint = cert.fingerprint(hashes.SHA256())
        if fingerprint in seen or cert.not_valid_after_utc <= now:
            continue
        seen.add(fingerprint)
        merged.append(cert)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in merged[:keep])
