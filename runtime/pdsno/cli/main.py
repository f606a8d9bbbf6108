"""Entry point of the ``pdsno`` console script.

User mistakes (a bad config, a missing NIB, a refused write) end in one line on stderr naming the
reason code and a non-zero exit; only a bug in pdsno itself prints a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from pdsno.errors import ConfigError, PdsnoError

EXIT_ERROR = 1
EXIT_USAGE = 2

# Each command's module is imported only when that command runs: `pdsno discover` must not pay for
# the web server and the MQTT stack (its start-up time is part of what the discovery benchmark sees).
COMMANDS = {
    "audit": "pdsno.cli.audit:audit_group",
    "broker": "pdsno.cli.broker:broker_group",
    "change": "pdsno.cli.change:change_group",
    "controller": "pdsno.cli.controller:controller_group",
    "discover": "pdsno.cli.discover:discover",
    "lab": "pdsno.cli.lab:lab_group",
    "nib": "pdsno.cli.nib:nib_group",
    "operator": "pdsno.cli.controller:operator_group",
    "pki": "pdsno.cli.pki:pki_group",
    "token": "pdsno.cli.controller:token_group",
}

# What `pdsno --help` lists for each, the first sentence of its docstring (a test keeps them equal): the
# list is printed without importing every command (httpx alone brings in rich and pygments).
SUMMARIES = {
    "audit": "Read and verify the append-only, hash-chained audit log.",
    "broker": "The Mosquitto broker's configuration, password file and ACL.",
    "change": "Configuration changes: propose, list, show, approve, deny, roll back.",
    "controller": "Run a controller of any tier.",
    "discover": "Discover the devices of one or more subnets (ARP, ICMP, SNMP) and print them.",
    "lab": "A network of Linux namespaces to run PDSNO against: devices that answer ARP, ICMP and SNMP, "
    "controller hosts reachable over SSH, a management network.",
    "nib": "Create, upgrade, inspect and sweep the Network Information Base.",
    "operator": "Operators of the northbound API (on the global controller).",
    "pki": "Create the deployment CA and issue TLS certificates (ECDSA P-256).",
    "token": "Bootstrap tokens for admitting new controllers.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from SUMMARIES for the lazy commands, without importing them."""
        listed: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = (
                click.Command(name, help=SUMMARIES[name])
                if name in COMMANDS and name not in self.commands
                else self.get_command(ctx, name)
            )
            if command is not None and not command.hidden:
                listed.append((name, command))
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(None, "-V", "--version", package_name="pdsno", prog_name="pdsno")
def cli() -> None:
    """PDSNO: a hierarchy of network controllers that discover devices and carry
    configuration changes through tiered approvals."""


@cli.command("version")
def version() -> None:
    """Print the pdsno version."""
    import pdsno

    click.echo(pdsno.__version__)


def invoke(command: click.Command, prog_name: str | None = None) -> None:
    """Run a click command the way every pdsno entry point does: user mistakes end in one line and
    their exit code, never a traceback."""
    try:
        command.main(prog_name=prog_name, standalone_mode=False)
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


def main() -> None:
    invoke(cli)


if __name__ == "__main__":
    main()
