"""The CLI's tables and status lines: rich on a terminal, plain columns elsewhere, NO_COLOR, numeric IP
order, and rich kept out of the start of ``pdsno`` and ``pdsno discover``."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner

from pdsno.cli import render
from pdsno.ipsort import ip_key, sort_ips

ESCAPE = "\x1b["
# SGR parameters that set a colour (foreground or background, 8, 16, 256 or true colour).
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
BOX = set("─━│┃┌┐└┘├┤┬┴┼╭╮╯╰═║")

HEADERS = ("PROPOSAL", "STATUS", "DEVICES")
ROWS = [("p-1", "EXECUTED", 1), ("p-2", "FAILED", 12), ("p-3", None, "")]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _colour_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------- IP order


def test_addresses_sort_numerically_with_what_is_not_one_last() -> None:
    assert sort_ips(["198.18.1.11", "198.18.1.2", "198.18.1.100", "10.0.0.1"]) == [
        "10.0.0.1",
        "198.18.1.2",
        "198.18.1.11",
        "198.18.1.100",
    ]
    assert sort_ips(["zeta", "-", "2001:db8::1", "198.18.1.2/24", "198.18.1.2", "", "198.18.1.10"]) == [
        "198.18.1.2",
        "198.18.1.2/24",
        "198.18.1.10",
        "2001:db8::1",
        "",
        "-",
        "zeta",
    ]
    assert ip_key(None) == ip_key("") and ip_key(None) > ip_key("255.255.255.255")


# ----------------------------------------------------------------------------------------- tables


def test_off_a_terminal_a_table_is_plain_columns() -> None:
    out = io.StringIO()
    render.table(HEADERS, ROWS, right=(2,), file=out, title="proposals")
    text = out.getvalue()
    assert ESCAPE not in text and not BOX & set(text)
    assert text.splitlines() == [
        "proposals",
        "PROPOSAL  STATUS    DEVICES",
        "p-1       EXECUTED        1",
        "p-2       FAILED         12",
        "p-3       -               -",
    ]


def test_on_a_terminal_a_table_is_drawn_in_colour() -> None:
    out = io.StringIO()
    render.table(HEADERS, ROWS, file=out, terminal=True, width=60)
    text = out.getvalue()
    assert BOX & set(text) and COLOUR.search(text), text
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)
    assert [line.split()[:2] for line in plain.splitlines()[2:]] == [
        ["p-1", "EXECUTED"],
        ["p-2", "FAILED"],
        ["p-3", "-"],
    ]


def test_a_terminal_is_detected_from_the_stream_and_term_dumb_is_none() -> None:
    tty = _Tty()
    render.table(HEADERS, ROWS, file=tty, width=60)
    assert BOX & set(tty.getvalue())
    assert render.is_terminal(tty) and not render.is_terminal(io.StringIO()) and not render.is_terminal(None)


def test_term_dumb_gets_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    tty = _Tty()
    render.table(HEADERS, ROWS, file=tty)
    assert ESCAPE not in tty.getvalue() and tty.getvalue().startswith("PROPOSAL  STATUS")


@pytest.mark.parametrize(("value", "coloured"), [("1", False), ("anything", False), ("", True)])
def test_no_color_turns_colour_off_not_the_layout(
    monkeypatch: pytest.MonkeyPatch, value: str, coloured: bool
) -> None:
    monkeypatch.setenv("NO_COLOR", value)
    assert render.colour_off() is not coloured
    out = io.StringIO()
    render.table(HEADERS, ROWS, file=out, terminal=True, width=60)
    assert bool(COLOUR.search(out.getvalue())) is coloured
    assert BOX & set(out.getvalue())


def test_cells_are_text_not_markup() -> None:
    out = io.StringIO()
    render.table(("NAME",), [("[bold red]sw-1[/]",)], file=out, terminal=True, width=40)
    assert "[bold red]sw-1[/]" in out.getvalue()


# ---------------------------------------------------------------------------------------- status


def test_a_status_line_off_a_terminal_writes_nothing() -> None:
    out = io.StringIO()
    with render.status("waiting", file=out) as line:
        line.update("still waiting")
    with render.status("waiting", file=_Tty(), enabled=False) as line:
        line.update("--json: never shown")
    assert out.getvalue() == ""


def test_a_status_line_on_a_terminal_updates_then_goes_away() -> None:
    out = _Tty()
    with render.status("waiting for prop-1", file=out) as line:
        line.update("waiting for prop-1: PENDING [3s of 120s]")
        time.sleep(0.3)  # rich redraws about twelve times a second
    text = out.getvalue()
    assert "waiting for prop-1: PENDING [3s of 120s]" in text, text
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[2K"), text  # cursor hidden, the line erased


def test_a_polled_status_line_asks_for_its_text() -> None:
    out = _Tty()
    seen: list[float] = []
    polled = threading.Event()

    def poll(seconds: float) -> str:
        seen.append(seconds)
        polled.set()
        return f"building lab: 3/7 namespaces [{seconds:.0f}s]"

    with render.status("building lab", file=out, poll=poll, interval=0.02):
        assert polled.wait(5)
        time.sleep(0.3)
    assert seen and seen == sorted(seen)
    assert "building lab: 3/7 namespaces [0s]" in out.getvalue()


# --------------------------------------------------------------------------------- the commands


def _device(addresses: list[str], name: str | None) -> SimpleNamespace:
    return SimpleNamespace(addresses=addresses, ip_address=addresses[0] if addresses else None,
                           mac_address=f"52:54:00:00:00:{len(addresses):02x}", hostname=name, vendor=None,
                           device_type="server", protocol_caps=["arp", "icmp"])  # fmt: skip


def test_discover_lists_devices_and_their_addresses_in_numeric_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pdsno.cli.discover import _table

    result = SimpleNamespace(devices=[_device(["198.18.1.11"], "b"), _device(["198.18.1.24", "198.18.1.3"], "a"),
                                      _device(["198.18.1.2"], None)])  # fmt: skip
    _table(result)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IP(S)", "MAC", "SYSNAME", "VENDOR", "TYPE", "FOUND", "BY"]
    assert [line.split()[0] for line in lines[1:]] == ["198.18.1.2", "198.18.1.3,198.18.1.24", "198.18.1.11"]


PROPOSAL: dict[str, Any] = {
    "proposal_id": "prop-1", "status": "ROLLED_BACK", "category": "LOW", "proposed_by": "olga",
    "approved_by": None, "reason": "DEVICE_WRITE_FAILED", "target_devices": ["dev-b", "dev-a"],
    "execution_token_id": "tok-1", "token_consumed_at": "2025-01-02T03:04:05.678+00:00",
    "proposed_at": "2025-01-02T03:04:00.123+00:00",
    "device_results": {"dev-a": {"status": "failed", "error": {"code": "DEVICE_WRITE_FAILED", "message": "SET refused"}},
                       "dev-b": {"status": "rolled_back"}},
    "audit": [{"seq": 7, "timestamp": "2025-01-02T03:04:00+00:00", "event_type": "CONFIG_PROPOSED", "actor": "olga"}],
}  # fmt: skip


class _FakeApi:
    views: ClassVar[list[dict[str, Any]]] = [dict(PROPOSAL, status="PENDING"), PROPOSAL]

    def __init__(self, *args: object) -> None:
        self.polls = 0

    def call(self, method: str, path: str, **kwargs: object) -> Any:
        if path == "/proposals" and method == "GET":
            return {
                "items": [PROPOSAL, dict(PROPOSAL, proposal_id="prop-2", status="EXECUTED")],
                "next_offset": None,
            }
        if method == "POST":
            return dict(PROPOSAL, status="PENDING")
        self.polls += 1
        return self.views[min(self.polls - 1, 1)]


@pytest.fixture
def change_cli(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    from pdsno.cli import change

    monkeypatch.setattr(change, "Api", _FakeApi)
    monkeypatch.setattr(change.time, "sleep", lambda s: None)
    monkeypatch.setenv("PDSNO_URL", "https://127.0.0.1:1")
    monkeypatch.setenv("PDSNO_TOKEN", "t")
    return change.change_group


def test_change_list_and_show_stay_plain_text_in_a_pipe(change_cli: click.Group) -> None:
    runner = CliRunner()
    listed = runner.invoke(change_cli, ["list"])
    assert listed.exit_code == 0, listed.output
    assert ESCAPE not in listed.output and not BOX & set(listed.output)
    assert [line.split()[:2] for line in listed.output.splitlines()] == [
        ["PROPOSAL", "STATUS"], ["prop-1", "ROLLED_BACK"], ["prop-2", "EXECUTED"]]  # fmt: skip
    shown = runner.invoke(change_cli, ["show", "prop-1"])
    # the lines scripts (and test_changes_e2e) read
    assert "dev-a  failed" in shown.output and "error: DEVICE_WRITE_FAILED: SET refused" in shown.output
    assert "CONFIG_PROPOSED" in shown.output and ESCAPE not in shown.output
    as_json = runner.invoke(change_cli, ["list", "--json"])
    assert as_json.output.startswith("[") and ESCAPE not in as_json.output


def test_change_show_on_a_terminal_draws_tables(
    change_cli: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    shown = CliRunner().invoke(change_cli, ["show", "prop-1"])
    assert shown.exit_code == 0, shown.output
    assert BOX & set(shown.output) and ESCAPE in shown.output
    for word in ("prop-1", "PENDING", "dev-a", "SET refused", "CONFIG_PROPOSED", "2025-01-02 03:04:00"):
        assert word in shown.output


def test_change_propose_wait_prints_no_status_line_off_a_terminal(change_cli: click.Group) -> None:
    done = CliRunner().invoke(change_cli, ["propose", "--target", "dev-a", "--set", "1.3.6=x", "--wait"])
    assert done.exit_code == 1 and "prop-1 is ROLLED_BACK (DEVICE_WRITE_FAILED)" in done.output
    assert "waiting" not in done.output and ESCAPE not in done.output


def test_lab_status_lists_hosts_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    from pdsno.cli.lab import _print_status

    host = {"role": "lc", "netns": "pdsy-c-lc-a1", "mgmt_ip": "198.18.0.12", "sshd_alive": False}
    _print_status({"state": "degraded", "state_dir": "/tmp/lab", "topology": "default", "prefix": "pdsy-",
                   "block": "198.18.0.0/15", "route": True,
                   "namespaces": {"present": 3, "expected": 3, "missing": []},
                   "devices": {"total": 1, "by_kind": {"snmp": 1}, "stopped": [], "snmpd_alive": 1,
                               "snmpd_expected": 1, "snmpd_dead": []},
                   "hosts": {"lc-a1": host}})  # fmt: skip
    out = capsys.readouterr().out
    assert ESCAPE not in out
    assert "ROLE  HOST   NAMESPACE     MGMT IP      SSHD" in out
    assert "lc    lc-a1  pdsy-c-lc-a1  198.18.0.12  DEAD" in out


# ------------------------------------------------------------------------------ start-up imports

PROBE = textwrap.dedent(
    """
    import atexit, sys
    atexit.register(lambda: print("IMPORTED", *sorted(m for m in ("rich", "pygments", "httpx") if m in sys.modules)))
    sys.argv = ["pdsno", *sys.argv[1:]]
    from pdsno.cli.main import main
    main()
    """
)


@pytest.mark.parametrize("args", [["--help"], ["discover", "--help"]], ids=" ".join)
def test_help_does_not_import_rich(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert done.stdout.splitlines()[-1] == "IMPORTED", done.stdout


def test_discover_off_a_terminal_does_not_import_rich() -> None:
    """A real scan of loopback (ICMP needs root; without it the command fails, after the same imports)."""
    done = subprocess.run([sys.executable, "-c", PROBE, "discover", "--subnet", "127.0.0.0/30", "--no-snmp",
                           "--timeout", "0.5"], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr and ESCAPE not in done.stdout + done.stderr
    assert "rich" not in done.stdout.splitlines()[-1].split(), done.stdout


def test_the_help_list_says_what_each_command_says() -> None:
    from pdsno.cli.main import COMMANDS, SUMMARIES, cli

    ctx = click.Context(cli)
    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        real = cli.get_command(ctx, name)
        assert real is not None
        assert click.Command(name, help=SUMMARIES[name]).get_short_help_str(500) == real.get_short_help_str(
            500
        )


class _FakeLab:
    topology_name = "default"
    state_dir = "/tmp/pdsy-lab"
    prefix = "pdsy-"
    inventory_path = "/tmp/pdsy-lab/inventory.yml"
    ground_truth_path = "/tmp/pdsy-lab/ground_truth.json"

    def devices(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(kind="snmp", lc="lc-a1", addresses=["198.18.1.11", "198.18.1.2"]),
                SimpleNamespace(kind="icmp_only", lc="lc-b1", addresses=["198.18.2.1"])]  # fmt: skip

    def hosts(self, role: str | None = None) -> list[SimpleNamespace]:
        link = SimpleNamespace(cidr="198.18.1.0/24", interface="eth1", ip="198.18.1.254")
        every = [SimpleNamespace(role="gc", name="gc-1", mgmt_ip="198.19.255.10", subnets=[]),
                 SimpleNamespace(role="lc", name="lc-a1", mgmt_ip="198.19.255.31", subnets=[link])]  # fmt: skip
        return [h for h in every if role in (None, h.role)]

    def netns(self, name: str) -> str:
        return f"pdsy-c-{name}"


def test_lab_up_prints_its_hosts_as_a_table_and_a_ping_to_the_lowest_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pdsno.cli import lab

    monkeypatch.setattr(lab.Lab, "up", lambda *args, **kwargs: _FakeLab())
    done = CliRunner().invoke(lab.lab_group, ["up", "--prefix", "pdsy-"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert re.fullmatch(
        r"lab default up in 0\.\d s: 2 devices \(1 icmp_only, 1 snmp\), 2 controller hosts", lines[0]
    )
    assert lines[1].split() == ["ROLE", "HOST", "NAMESPACE", "MGMT", "IP", "SERVES"]
    assert lines[3].split() == [
        "lc",
        "lc-a1",
        "pdsy-c-lc-a1",
        "198.19.255.31",
        "198.18.1.0/24",
        "(eth1",
        "198.18.1.254)",
    ]
    assert lines[-1] == "try           ip netns exec pdsy-c-lc-a1 ping -c1 198.18.1.2"
    assert ESCAPE not in done.output
