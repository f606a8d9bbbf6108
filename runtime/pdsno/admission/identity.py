"""A controller's admitted identity, kept in ``<data_dir>/identity.json`` (0600) across restarts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from pdsno.admission.credentials import Certificate, DelegationCredential
from pdsno.errors import ConfigError
from pdsno.nib.models import ControllerRole
from pdsno.security.keys import write_secret_file

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
