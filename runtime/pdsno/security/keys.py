"""Ed25519 identity keys: generated once per controller, kept in a 0600 file, never sent anywhere."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdsno.errors import PdsnoError, ReasonCode


class KeyFileError(PdsnoError):
    code = ReasonCode.AUDIT_KEY_MISSING


def write_file_atomically(path: Path, data: bytes, *, mode: int, dir_mode: int) -> None:
    """Replace ``path`` in one step, with ``mode`` from the first byte on (whatever the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_secret_file(path: Path, data: bytes) -> None:
    """A key, token or password: readable by its owner only, never for a moment by anyone else."""
    write_file_atomically(path, data, mode=0o600, dir_mode=0o700)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"identity key {path} does not exist (run 'pdsno nib init')", path=str(path)
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read identity key {path}: {exc.strerror}", path=str(path)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM private key", path=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key", path=str(path))
    return key


def load_or_create_private_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, generating it first when absent; the flag says whether it was created."""
    if path.exists():
        return load_private_key(path), False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(path, pem)
    return key, True


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise KeyFileError("not a base64 Ed25519 public key") from None


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """Signs on behalf of one controller; what the NIB uses to seal audit events."""

    signer_id: str
    private_key: Ed25519PrivateKey

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private_key.sign(data)).decode()

    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


def verify_signature(public_key: Ed25519PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True
