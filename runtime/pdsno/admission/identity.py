"""A controller's admitted identity, kept in ``<data_dir>/identity.json`` (0600) across restarts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from pdsno.admission.credentials import Certificate, DelegationCredential
from pdsno.errors import ConfigError
from pdsno.nib.models import ControllerRole
from pdsno.security.keys import load_private_key, write_secret_file

IDENTITY_FILE = "identity.json"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    controller_id: str
    role: ControllerRole
    region: str | None
    parent_id: str | None
    parent_url: str | None
    admitted_at: datetime
    certificate: Certificate | None = None
    delegation: DelegationCredential | None = None
    issuer_public_key: str | None = None
    issuer_certificate: Certificate | None = None


def identity_path(data_dir: Path) -> Path:
    return data_dir / IDENTITY_FILE


def load_identity(data_dir: Path) -> Identity | None:
    path = identity_path(data_dir)
    try:
        return Identity.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: not a pdsno identity ({exc.error_count()} problems); move it away to re-admit"
        ) from None


def save_identity(data_dir: Path, identity: Identity) -> None:
    write_secret_file(identity_path(data_dir), identity.model_dump_json(indent=2).encode())


def own_audit_keys(identity_key: Path, data_dir: Path, configured_id: str) -> dict[str, Ed25519PublicKey]:
    """The keys a controller's own audit events are checked with: its key file's public key, under its
    configured id (it signs as that before admission) and its assigned id. Never from the NIB, which
    whoever could rewrite the log could rewrite too."""
    key = load_private_key(identity_key).public_key()
    identity = load_identity(data_dir)
    return dict.fromkeys({configured_id} | ({identity.controller_id} if identity else set()), key)
