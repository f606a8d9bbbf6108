"""``pdsno discover``: find the devices of one or more subnets with ARP, ICMP and SNMP, from here.

It scans from the network namespace (host) it is started in: run it on the local controller's host or
inside the right namespace (``ip netns exec NS pdsno discover ...``). Raw sockets need root or
CAP_NET_RAW; without them ARP and ICMP are reported as failed protocols and SNMP still runs.
"""

from __future__ import annotations

import time
from typing import Any

import click

from pdsno.cli import render
from pdsno.cli.output import emit_json, json_option, run
from pdsno.discovery.scanner import PROTOCOLS, ScanProgress, ScanResult, ScanTimeouts, scan
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.ipsort import ip_key, sort_ips
from pdsno.snmp import SnmpCredentials, SnmpV3Credential

DEFAULT_COMMUNITY = "public"


class _Progress:
    """Feeds the scanner's counters to a status line (shown on a terminal only), at most ten times a second."""

    def __init__(self, label: str, line: render.Status) -> None:
        self.label = label
        self.line = line
        self._last = 0.0

    def __call__(self, p: ScanProgress) -> None:
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        snmp = p.snmp_answered + p.snmp_failed
        self.line.update(
            f"scanning {self.label}: {p.responders} responders of {p.targets} addresses, "
            f"snmp {p.snmp_answered}/{snmp} [{p.elapsed:.1f}s]"
        )


def _credentials_named(credentials: SnmpCredentials) -> str:
    """The credentials tried, as the operator gave them, secrets left out."""
    names = [f"community #{n}" for n in range(1, len(credentials.communities) + 1)]
    names += [f"v3 user {v3.user}" for v3 in credentials.v3]
    return ", ".join(names) or "no credential"


def _table(result: ScanResult) -> None:
    rows = []
    for d in result.devices:
        addresses = sort_ips(d.addresses or ([d.ip_address] if d.ip_address else []))
        rows.append((addresses, d.mac_address, d.hostname, d.vendor, str(d.device_type),
                     ",".join(d.protocol_caps)))  # fmt: skip
    rows.sort(key=lambda row: ip_key(row[0][0] if row[0] else None))
    render.table(
        ("IP(S)", "MAC", "SYSNAME", "VENDOR", "TYPE", "FOUND BY"),
        [(",".join(row[0]), *row[1:]) for row in rows],
    )


def _summary(result: ScanResult) -> str:
    counts = ", ".join(f"{name} {s.responders}" for name, s in result.stats.items())
    total = sum(result.targets[k] for k in ("on_link", "off_link"))
    return (
        f"{len(result.devices)} devices in {result.duration:.2f}s "
        f"({total} addresses; responders: {counts or 'none'})"
    )


@click.command("discover")
@click.option("--subnet", "subnets", multiple=True, required=True, metavar="CIDR",
              help="IPv4 subnet to scan (repeatable; at most a /16 in total).")  # fmt: skip
@click.option("--community", "communities", multiple=True, envvar="PDSNO_SNMP_COMMUNITY", metavar="C",
              help=f"SNMPv2c community, tried in the order given (repeatable; env PDSNO_SNMP_COMMUNITY, "
              f"space-separated). Default {DEFAULT_COMMUNITY!r} when neither this nor --snmpv3 is given.")  # fmt: skip
@click.option("--snmpv3", "v3", multiple=True, envvar="PDSNO_SNMPV3", metavar="USER:AUTHPASS:PRIVPASS",
              help="SNMPv3 authPriv user (SHA + AES-128; append :AUTHPROTO:PRIVPROTO for others, e.g. "
              ":sha256:aes), tried after the communities fail (repeatable; env PDSNO_SNMPV3).")  # fmt: skip
@click.option("--no-snmp", is_flag=True, help="Only ARP and ICMP.")
@click.option("--system-only", is_flag=True,
              help="SNMP reads the system group only (sysDescr, sysObjectID, sysUpTime, sysName, "
              "sysServices: one GET per host), not the interface and address tables. Faster; a device "
              "answering on several addresses is then merged only when ARP shows one MAC.")  # fmt: skip
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(PROTOCOLS),
              help="Run only these protocols (repeatable; default all, minus snmp with --no-snmp).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(0.05, 60.0), default=None, metavar="S",
              help="Reply timeout in seconds for ARP, ICMP and each SNMP request (default 2, 2 and 1). "
              "Timeouts adapt to the RTTs measured, this is their ceiling.")  # fmt: skip
@click.option("--snmp-port", type=click.IntRange(1, 65535), default=161, show_default=True,
              help="UDP port of the SNMP agents.")  # fmt: skip
@json_option
def discover(
    subnets: tuple[str, ...],
    communities: tuple[str, ...],
    v3: tuple[str, ...],
    no_snmp: bool,
    system_only: bool,
    protocols: tuple[str, ...],
    timeout: float | None,
    snmp_port: int,
    as_json: bool,
) -> None:
    """Discover the devices of one or more subnets (ARP, ICMP, SNMP) and print them.

    Scans from wherever it runs (host or network namespace). Prints a table, or with --json the
    devices (NIB Device records) with per-protocol statistics. A protocol that fails is reported and
    the others go on; only when all fail does the command fail (DISCOVERY_CYCLE_FAILED).
    """
    wanted = list(protocols) if protocols else [p for p in PROTOCOLS if not (no_snmp and p == "snmp")]
    if no_snmp and "snmp" in wanted:
        raise PdsnoError("--no-snmp contradicts --protocol snmp", code=ReasonCode.INVALID_REQUEST)
    credentials = SnmpCredentials()
    # Credentials given, or SNMP asked for by name: its silence is then a failure, not a finding.
    explicit = bool(communities or v3 or "snmp" in protocols)
    if "snmp" in wanted:
        parsed = tuple(SnmpV3Credential.parse(text) for text in v3)
        credentials = SnmpCredentials(communities or (() if parsed else (DEFAULT_COMMUNITY,)), parsed)
    label = ", ".join(subnets)
    with render.status(f"scanning {label}", enabled=not as_json) as line:
        result = run(
            scan(
                list(subnets),
                snmp_credentials=credentials,
                protocols=wanted,
                timeouts=ScanTimeouts() if timeout is None else ScanTimeouts.uniform(timeout),
                progress=_Progress(label, line),
                snmp_port=snmp_port,
                snmp_tables=not system_only,
            )
        )
    for failure in result.failures:
        click.echo(f"pdsno: warning: {failure.code} {failure.protocol}: {failure.reason}", err=True)
    tried = _credentials_named(credentials)
    for ip, error in result.snmp_unanswered.items():
        click.echo(
            f"pdsno: warning: {ReasonCode.SNMP_NO_ANSWER} {ip}: no SNMP answer with {tried} ({error})",
            err=True,
        )
    if as_json:
        data: dict[str, Any] = result.as_dict()
        emit_json(data)
    else:
        _table(result)
        click.echo(_summary(result), err=True)
    answered = any(d.snmp_info.get("snmp_reachable") for d in result.devices if d.snmp_info)
    if explicit and result.snmp_unanswered and not answered:
        raise PdsnoError(
            f"no SNMP agent answered with {tried}: {len(result.snmp_unanswered)} host(s) tried",
            code=ReasonCode.SNMP_NO_ANSWER,
            hosts=list(result.snmp_unanswered),
        )
    if result.cycle_failed:
        raise PdsnoError(
            "every discovery protocol failed ("
            + "; ".join(f"{f.protocol}: {f.reason}" for f in result.failures)
            + ")",
            code=ReasonCode.DISCOVERY_CYCLE_FAILED,
            failures=[f.as_dict() for f in result.failures],
        )
