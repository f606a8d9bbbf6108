"""``pdsno pki``: the deployment CA and the TLS certificates it issues (broker, controllers)."""

from __future__ import annotations

from pathlib import Path

import click

from pdsno.cli.output import emit_json, json_option
from pdsno.security.pki import create_ca, issue_certificate, load_ca

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory of the deployment CA (ca.crt, ca.key).",
)


@click.group("pki")
def pki_group() -> None:
    """Create the deployment CA and issue TLS certificates (ECDSA P-256)."""


@pki_group.command("init-ca")
@_dir_option
@click.option("--cn", "common_name", default="PDSNO deployment CA", show_default=True, help="CA common name.")
@click.option("--days", type=click.IntRange(1, 36500), default=3650, show_default=True, help="Validity.")
@json_option
def init_ca(directory: Path, common_name: str, days: int, as_json: bool) -> None:
    """Create the CA in DIR (ca.crt 0644, ca.key 0600), or keep the one already there (idempotent)."""
    ca = create_ca(directory, common_name=common_name, days=days)
    if as_json:
        emit_json({"cert": str(ca.cert), "key": str(ca.key), "created": ca.created})
    else:
        click.echo(f"CA {'created' if ca.created else 'kept'}: {ca.cert} (key {ca.key})")


@pki_group.command("issue")
@_dir_option
@click.option(
    "--name", required=True, help="Certificate name: the common name and the file names NAME.crt/.key."
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="DNS name or IP address for the subjectAltName; repeat for several.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write NAME.crt and NAME.key (default: the CA directory).",
)
@click.option("--days", type=click.IntRange(1, 36500), default=397, show_default=True, help="Validity.")
@json_option
def issue(
    directory: Path, name: str, hosts: tuple[str, ...], out_dir: Path | None, days: int, as_json: bool
) -> None:
    """Issue a serverAuth+clientAuth certificate for NAME, signed by the CA in DIR.

    Idempotent: a valid certificate for the same name and hosts is kept.
    """
    ca = load_ca(directory)
    cert = issue_certificate(ca, out_dir or directory, name, hosts, days=days)
    if as_json:
        emit_json({"cert": str(cert.cert), "key": str(cert.key), "ca": str(cert.ca), "created": cert.created})
    else:
        click.echo(f"certificate {'issued' if cert.created else 'kept'}: {cert.cert} (key {cert.key})")
