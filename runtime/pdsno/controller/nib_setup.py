"""Opening a controller's NIB as its configuration says, and recording the first start."""

from __future__ import annotations

from pdsno.audit.chain import EventSigner
from pdsno.config import ControllerConfig, redact_dsn
from pdsno.nib.connect import open_nib
from pdsno.nib.models import EventDraft
from pdsno.nib.sql import SqlNIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64


def nib_location(config: ControllerConfig) -> str:
    nib = config.nib
    return (
        f"sqlite {nib.sqlite_path}" if nib.backend == "sqlite" else f"postgresql {redact_dsn(nib.dsn or '')}"
    )


async def open_configured_nib(
    config: ControllerConfig,
    *,
    signer: EventSigner | None = None,
    create: bool = False,
    migrate: bool = False,
) -> SqlNIBStore:
    nib = config.nib
    return await open_nib(
        nib.backend,
        path=nib.sqlite_path if nib.backend == "sqlite" else None,
        dsn=nib.dsn,
        signer=signer,
        pool_size=nib.pool_size,
        busy_timeout_ms=nib.busy_timeout_ms,
        create=create,
        migrate=migrate,
    )


async def record_first_start(store: SqlNIBStore, config: ControllerConfig, signer: Ed25519Signer) -> bool:
    """Write ``NIB_INITIALISED`` if the log is empty; True if it did (idempotent otherwise)."""
    if (await store.audit_head()).seq:
        return False
    await store.append_events(
        [
            EventDraft(
                event_type="NIB_INITIALISED",
                actor=signer.signer_id,
                subject=signer.signer_id,
                action="nib init",
                payload={
                    "backend": store.backend,
                    "schema_version": await store.schema_version(),
                    "role": config.controller.role.value,
                    "region": config.controller.region,
                    "public_key": public_key_b64(signer.private_key),
                },
            )
        ]
    )
    return True
