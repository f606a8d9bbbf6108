"""The deployment CA: one ECDSA P-256 certificate authority per deployment, and the TLS certificates it issues.

Used for the Mosquitto broker's TLS listener and for the controllers' REST endpoints (decisions §5: "TLS on
REST and MQTT in every deployment made by deploy.yml, a deployment CA created by the playbook").

* ECDSA P-256 with SHA-256 signatures: accepted by Mosquitto (OpenSSL 3), Python's :mod:`ssl`, curl and
  every TLS stack in use; Ed25519 certificates are still refused by several TLS clients.
* Files: ``<dir>/ca.crt`` + ``<dir>/ca.key`` for the CA, ``<dir>/<name>.crt`` + ``<dir>/<name>.key`` for an
  issued certificate. Private keys are PKCS#8 PEM, unencrypted, mode 0600 from the first byte on;
  certificates are 0644.
* Both operations are idempotent: an existing CA is kept; an existing certificate is kept when it was signed
  by this CA, names the same host set, matches its key and is not close to expiry. Anything else is reissued.
* Issued certificates carry subjectAltNames for every host (DNS names and IP addresses), the extended key
  usages serverAuth **and** clientAuth (one certificate serves a controller as TLS server and as client),
  subject/authority key identifiers, and a validity capped at the CA's own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pdsno.errors import PdsnoError, ReasonCode
from pdsno.security.keys import write_file_atomically, write_secret_file

__all__ = [
    "CA_CERT_NAME",
    "CA_KEY_NAME",
    "CAFiles",
    "CertFiles",
    "PkiError",
    "create_ca",
    "issue_certificate",
    "load_ca",
]

CA_CERT_NAME: Final = "ca.crt"
CA_KEY_NAME: Final = "ca.key"

_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""Certificates start this long in the past, so a host whose clock lags a little accepts them at once."""
_RENEW_BEFORE: Final = dt.timedelta(days=30)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DNS_LABEL_RE: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class PkiError(PdsnoError):
    """The CA or a certificate could not be created, loaded or checked (bad input, unreadable file)."""

    code = ReasonCode.CONFIG_INVALID


@dataclass(frozen=True, slots=True)
class CAFiles:
    """Where the deployment CA lives; ``created`` says whether this call generated it."""

    cert: Path
    key: Path
    created: bool = False


@dataclass(frozen=True, slots=True)
class CertFiles:
    """An issued certificate, its key and the CA certificate that verifies it."""

    cert: Path
    key: Path
    ca: Path
    created: bool = False


# --------------------------------------------------------------------------------------------------
# helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_public_file(path: Path, data: bytes) -> None:
    """A certificate: public, 0644."""
    write_file_atomically(path, data, mode=0o644, dir_mode=0o755)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} {path} does not exist", code=ReasonCode.NOT_FOUND, path=str(path)) from None
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}", path=str(path)) from None


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError:
        raise PkiError(f"{what} {path} is not a PEM certificate", path=str(path)) from None


def _load_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, what), password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{what} {path} is not an unencrypted PEM private key", path=str(path)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{what} {path} holds a {type(key).__name__}, not an ECDSA key", path=str(path))
    return key


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise PkiError(f"validity must be between 1 and 36500 days, got {days}")


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Validate and normalise ``hosts`` into subjectAltName entries (DNS names lower-cased, duplicates gone)."""
    if isinstance(hosts, str):  # a lone string would be split into characters
        hosts = [hosts]
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in hosts:
        host = raw.strip()
        if not host:
            raise PkiError("a host name must not be empty")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            key = f"ip:{address}"
            name: x509.GeneralName = x509.IPAddress(address)
        else:
            dns = host.lower().rstrip(".")
            if not dns.isascii():
                raise PkiError(f"host {host!r}: give internationalised names in their xn-- (IDNA) form")
            labels = dns.split(".")
            if len(dns) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
                raise PkiError(f"host {host!r} is neither an IP address nor a valid DNS name")
            key = f"dns:{dns}"
            name = x509.DNSName(dns)
        if key not in seen:
            seen.add(key)
            names.append(name)
    if not names:
        raise PkiError("a certificate needs at least one host (DNS name or IP address)")
    return names


def _san_keys(names: Sequence[x509.GeneralName]) -> set[str]:
    keys: set[str] = set()
    for name in names:
        if isinstance(name, x509.IPAddress):
            keys.add(f"ip:{name.value}")
        elif isinstance(name, x509.DNSName):
            keys.add(f"dns:{name.value.lower()}")
        else:
            keys.add(f"other:{name}")
    return keys


# --------------------------------------------------------------------------------------------------
# CA


def load_ca(directory: Path) -> CAFiles:
    """The CA in ``directory``, checked (certificate and key present, matching, a CA); raises :class:`PkiError`."""
    files = CAFiles(directory / CA_CERT_NAME, directory / CA_KEY_NAME)
    _load_ca_material(files)
    return files


def _load_ca_material(ca: CAFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _load_cert(ca.cert, "CA certificate")
    key = _load_key(ca.key, "CA key")
    if not _same_public_key(cert, key):
        raise PkiError(f"CA key {ca.key} does not belong to CA certificate {ca.cert}", path=str(ca.key))
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{ca.cert} is not a CA certificate", path=str(ca.cert))
    return cert, key


def create_ca(directory: Path, *, common_name: str = "PDSNO deployment CA", days: int = 3650) -> CAFiles:
    """Create the deployment CA in ``directory`` (``ca.crt``, ``ca.key``), or keep the one already there.

    An existing CA is checked and returned with ``created=False``; a directory holding only one of the two
    files is refused rather than overwritten (a lone key or certificate is somebody's CA, half-restored).
    """
    _check_days(days)
    if not common_name.strip():
        raise PkiError("the CA common name must not be empty")
    directory = Path(directory)
    files = CAFiles(directory / CA_CERT_NAME, directory / CA_KEY_NAME)
    cert_exists, key_exists = files.cert.exists(), files.key.exists()
    if cert_exists and key_exists:
        _load_ca_material(files)
        return files
    if cert_exists or key_exists:
        present, missing = (files.cert, files.key) if cert_exists else (files.key, files.cert)
        raise PkiError(
            f"{present} exists but {missing} does not; restore the missing file or remove the other one",
            path=str(missing),
        )

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a crash in between leaves a lone key, which the next run refuses loudly instead of
    # silently making a second CA that no deployed certificate chains to.
    write_secret_file(files.key, _key_pem(key))
    _write_public_file(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return CAFiles(files.cert, files.key, created=True)


# --------------------------------------------------------------------------------------------------
# issued certificates


def _reusable(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    name: str,
    wanted: set[str],
    days: int,
) -> bool:
    """True if the certificate already at ``cert_path`` is what we would issue now."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(cert, key):
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [attr.value for attr in common_names] != [name]:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if _san_keys(list(san)) != wanted:
        return False
    now = _now()
    renew_before = min(_RENEW_BEFORE, dt.timedelta(days=days) / 3)
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - renew_before > now


def issue_certificate(
    ca: CAFiles, directory: Path, name: str, hosts: Sequence[str], *, days: int = 397
) -> CertFiles:
    """Issue ``<directory>/<name>.crt`` + ``<name>.key`` for ``hosts`` (DNS names and/or IP addresses).

    Idempotent: a certificate already there, signed by ``ca``, for the same name and host set, matching its
    key and not within its renewal window (30 days, or a third of ``days`` for short-lived certificates) is
    kept (``created=False``). Otherwise a new key and certificate replace it. ``days`` is capped at the
    CA's own expiry.
    """
    _check_days(days)
    if _NAME_RE.fullmatch(name) is None or name in (".", "..") or name == CA_CERT_NAME.removesuffix(".crt"):
        raise PkiError(
            f"certificate name {name!r} must be 1 to 128 letters, digits, '_', '.' or '-' "
            "(and not 'ca', which names the CA itself)"
        )
    names = _general_names(hosts)
    ca_cert, ca_key = _load_ca_material(ca)
    directory = Path(directory)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if _reusable(cert_path, key_path, ca_cert, name, _san_keys(names), days):
        return CertFiles(cert_path, key_path, ca.cert, created=False)

    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise PkiError(f"the CA {ca.cert} has expired; create a new deployment CA", path=str(ca.cert))
    key = _new_key()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - _CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_secret_file(key_path, _key_pem(key))
    _write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertFiles(cert_path, key_path, ca.cert, created=True)
