"""``python -m pdsno.discovery [OPTIONS]``: the ``pdsno discover`` command without loading the rest of the
CLI (the controller, REST and MQTT stacks), for the shortest start-up where discovery runs alone."""

from __future__ import annotations

import sys

import click

from pdsno.cli.discover import discover
from pdsno.errors import PdsnoError


def main() -> None:
    try:
        discover.main(prog_name="pdsno discover", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PdsnoError as exc:
        click.echo(f"pdsno: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
