"""``pdsno controller``, ``pdsno token`` and ``pdsno operator``: run a controller and admit others."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import click

from pdsno.admission.identity import load_identity
from pdsno.admission.provisioning import ProvisioningStore
from pdsno.cli.common import config_option, identity_signer, load
from pdsno.cli.output import run
from pdsno.controller.nib_setup import open_configured_nib
from pdsno.controller.node import PROVISIONING_FILE, ControllerNode
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.log import configure_logging
from pdsno.nbi.auth import add_operator
from pdsno.nib.models import ControllerRole, Decision, EventDraft, OperatorRole
from pdsno.security.keys import Ed25519Signer, write_secret_file


@click.group("controller")
def controller_group() -> None:
    """Run a controller of any tier."""


@controller_group.command("run")
@config_option
def run_controller(config_path: Path) -> None:
    """Run the controller the configuration describes until SIGTERM or Ctrl-C.

    A regional or local controller that has no identity yet is admitted by its parent first,
    using admission.bootstrap_file; later starts reuse the identity kept in data_dir.
    """
    config = load(config_path)
    configure_logging(config.logging.level, config.logging.format, config.controller.id)
    asyncio.run(ControllerNode(config).run())


@click.group("token")
def token_group() -> None:
    """Bootstrap tokens for admitting new controllers."""


@token_group.command("issue")
@config_option
@click.option("--type", "controller_type", type=click.Choice(["regional", "local"]), required=True,
              help="regional (issued by the GC) or local (issued by the region's RC).")  # fmt: skip
@click.option("--region", required=True, help="Region the new controller will serve.")
@click.option("--ttl", "ttl_s", type=click.IntRange(60, 30 * 86_400), default=None,
              help="Lifetime in seconds (default: admission.bootstrap_token_ttl_s).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the bootstrap file here (mode 0600) instead of printing it.")  # fmt: skip
def issue_token(
    config_path: Path, controller_type: str, region: str, ttl_s: int | None, output: Path | None
) -> None:
    """Mint a single-use bootstrap token; the new controller's admission.bootstrap_file is its output."""
    config = load(config_path)
    role = ControllerRole(config.controller.role.value)
    identity = load_identity(config.controller.data_dir)
    issuer = identity.controller_id if identity else config.controller.id
    if role is ControllerRole.GLOBAL and controller_type != "regional":
        raise PdsnoError(
            "the global controller admits regional controllers only",
            code=ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED,
        )
    if role is ControllerRole.REGIONAL:
        if controller_type != "local":
            raise PdsnoError(
                "a regional controller admits local controllers only",
                code=ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED,
            )
        if identity is None or identity.delegation is None:
            raise PdsnoError(
                "this regional controller has not been admitted yet, so it holds no delegation",
                code=ReasonCode.DELEGATION_INVALID,
            )
        if region != identity.delegation.region:
            raise PdsnoError(
                f"this regional controller serves {identity.delegation.region}, not {region}",
                code=ReasonCode.REGION_NOT_SERVED_BY_THIS_RC,
            )
    if role is ControllerRole.LOCAL:
        raise PdsnoError("a local controller admits no one", code=ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED)

    ttl = timedelta(seconds=ttl_s or config.admission.bootstrap_token_ttl_s)
    ticket = ProvisioningStore(config.controller.data_dir / PROVISIONING_FILE).issue(
        region=region, controller_type=controller_type, issued_by=issuer, ttl=ttl
    )
    signer, _ = identity_signer(config)

    async def record() -> None:
        store = await open_configured_nib(config, signer=Ed25519Signer(issuer, signer.private_key))
        try:
            await store.append_events(
                [
                    EventDraft(
                        event_type="BOOTSTRAP_TOKEN_ISSUED",
                        actor=issuer,
                        subject=ticket.temp_id,
                        action="token issue",
                        decision=Decision.APPROVED,
                        payload={
                            "region": region,
                            "controller_type": controller_type,
                            "expires_at": ticket.expires_at,
                        },
                    )
                ]
            )
        finally:
            await store.close()

    run(record())
    text = json.dumps(ticket.as_dict(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_secret_file(output, text.encode())
        click.echo(
            f"bootstrap file for {ticket.temp_id} written to {output} (expires {ticket.as_dict()['expires_at']})"
        )


@click.group("operator")
def operator_group() -> None:
    """Operators of the northbound API (on the global controller)."""


@operator_group.command("add")
@config_option
@click.option("--name", required=True, help="Operator name (unique).")
@click.option("--role", type=click.Choice([r.value for r in OperatorRole]), required=True,
              help="viewer < operator < approver < admin.")  # fmt: skip
def add(config_path: Path, name: str, role: str) -> None:
    """Create an operator and print their bearer token once; only its hash is kept."""
    config = load(config_path)
    if config.controller.role.value != ControllerRole.GLOBAL.value:
        raise PdsnoError(
            "operators belong to the global controller's northbound API", code=ReasonCode.FORBIDDEN
        )
    signer, _ = identity_signer(config)

    async def go() -> str:
        store = await open_configured_nib(config, signer=signer)
        try:
            result, token = await add_operator(
                store, name=name, role=OperatorRole(role), actor=signer.signer_id
            )
        finally:
            await store.close()
        if not result.success:
            raise PdsnoError(
                f"operator {name} already exists"
                if result.error is ReasonCode.ALREADY_EXISTS
                else result.message,
                code=result.error or ReasonCode.INTERNAL_ERROR,
            )
        return token

    token = run(go())
    click.echo(f"operator {name} ({role}) added; bearer token (shown once):")
    click.echo(token)
