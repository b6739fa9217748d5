"""A local certificate authority for the broker's TLS listener, kept in the state folder.

``kotahub stack up`` calls :func:`ensure_server_certificate`: on first start it creates a
CA (ten years) and a server certificate signed by it (one year) for the names the hub is
reached by; on later starts it reuses both, and issues a new server certificate when the
old one is within ``renew_before`` of expiry or no longer names every host asked for. A CA
near its own end is replaced too (and every agent must then be given the new ``ca.crt``).
Private keys are written mode 0600; certificates are public.

EC P-256 keys: as strong as RSA-3072 for TLS 1.2/1.3, and generated in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=397)
RENEW_BEFORE = dt.timedelta(days=30)
CA_RENEW_BEFORE = dt.timedelta(days=365)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LocalCaError(Exception):
    """A certificate or key in the state folder cannot be read or made; the message says which."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """The files the broker's TLS listener uses, and the CA that clients verify it with."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def default_server_names() -> list[str]:
    """Names a local hub is reached by: loopback, this host's name and its FQDN."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(n for n in names if n))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only; an older file's looser mode is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _split_names(names: Iterable[str]) -> tuple[list[str], list[IpAddress]]:
    dns: list[str] = []
    ips: list[IpAddress] = []
    for name in names:
        try:
            ips.append(ipaddress.ip_address(name))
        except ValueError:
            dns.append(name.lower())
    return dns, ips


def _load(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise LocalCaError(f"cannot read {cert_path} or {key_path}: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LocalCaError(f"{key_path}: not an EC key (made by another tool?)")
    return cert, key


def _fresh(cert: x509.Certificate, renew_before: dt.timedelta) -> bool:
    return cert.not_valid_after_utc - renew_before > _now()


def _new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = _split_names(names)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(ip) for ip in ips]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _names_covered(cert: x509.Certificate, names: Sequence[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    dns, ips = _split_names(names)
    return set(dns) <= have_dns and set(ips) <= have_ips


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ensure_server_certificate(
    directory: Path,
    names: Sequence[str],
    *,
    ca_name: str = "Kotahub local CA",
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> TlsFiles:
    """Create or reuse the local CA and the broker's certificate under ``directory``."""
    if not names:
        raise LocalCaError("the server certificate needs at least one host name or address")
    files = TlsFiles(
        ca_file=directory / "ca.crt",
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
    )
    ca_key_file = directory / "ca.key"
    if files.ca_file.is_file() and ca_key_file.is_file():
        ca_cert, ca_key = _load(files.ca_file, ca_key_file)
        renew_ca = not _fresh(ca_cert, CA_RENEW_BEFORE)
    else:
        renew_ca = True
    if renew_ca:
        ca_cert, ca_key = _new_ca(ca_name)
        _write_private(ca_key_file, _key_pem(ca_key))
        _write_public(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    reuse = False
    if files.cert_file.is_file() and files.key_file.is_file():
        cert, _key = _load(files.cert_file, files.key_file)
        reuse = (
            _fresh(cert, renew_before) and _names_covered(cert, names) and _signed_by(cert, ca_cert)
        )
    if not reuse:
        cert, key = _new_server(ca_cert, ca_key, list(names))
        _write_private(files.key_file, _key_pem(key))
        _write_public(files.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    # A key left readable by an earlier tool or a copy is tightened on every start.
    for private in (ca_key_file, files.key_file):
        os.chmod(private, 0o600)
    return files


def certificate_expiry(cert_file: Path) -> dt.datetime:
    """When a PEM certificate stops being valid (UTC)."""
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
    except (OSError, ValueError) as err:
        raise LocalCaError(f"cannot read certificate {cert_file}: {err}") from err


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A TLS client context that trusts ``ca_file`` only and checks the host name."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as err:
        raise LocalCaError(f"mqtt.ca_file {ca_file}: cannot load the CA: {err}") from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
