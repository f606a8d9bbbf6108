"""Entry point of the ``pdsno`` console script.

User mistakes (a bad config, a missing NIB, a refused write) end in one line on stderr naming the
reason code and a non-zero exit; only a bug in pdsno itself prints a traceback.
"""

from __future__ import annotations

import sys

import click

from pdsno import __version__
from pdsno.cli.audit import audit_group
from pdsno.cli.controller import controller_group, operator_group, token_group
from pdsno.cli.nib import nib_group
from pdsno.cli.pki import pki_group
from pdsno.errors import ConfigError, PdsnoError

EXIT_ERROR = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="pdsno")
def cli() -> None:
    """PDSNO: a hierarchy of network controllers that discover devices and carry
    configuration changes through tiered approvals."""


@cli.command("version")
def version() -> None:
    """Print the pdsno version."""
    click.echo(__version__)


for group in (nib_group, audit_group, controller_group, token_group, operator_group, pki_group):
    cli.add_command(group)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"pdsno: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except PdsnoError as exc:
        click.echo(f"pdsno: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
