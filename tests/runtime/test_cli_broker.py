"""``pdsno broker render``: what the Ansible mosquitto role runs. It must report changes the way a module
does (a second render of the same spec changes nothing), never write in check mode, and leave files a
real Mosquitto accepts, with the kept password lines still valid."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdsno.cli.broker import BrokerSpec, passwords_current, render
from pdsno.security.pki import create_ca, issue_certificate
from pdsno.transport.broker import BrokerAccount
from tests.runtime.ports import free_port

PDSNO = Path(sys.executable).with_name("pdsno")
GC = "global_cntl_1"
RC = "regional_cntl_zone-a_1"


def spec(tmp_path: Path, port: int) -> dict[str, Any]:
    ca = create_ca(tmp_path / "pki")
    cert = issue_certificate(ca, tmp_path / "pki", "broker", ["127.0.0.1"])
    return {
        "run_as": None,
        "listeners": [
            {
                "port": port,
                "bind": "127.0.0.1",
                "ca": str(ca.cert),
                "cert": str(cert.cert),
                "key": str(cert.key),
            }
        ],
        "accounts": [
            {"username": GC, "password": "gc-password-1", "role": "global"},
            {"username": RC, "password": "rc-password-1", "role": "regional", "region": "zone-a"},
        ],
    }


def cli(directory: Path, data: dict[str, Any], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(PDSNO), "broker", "render", "--json", "--dir", str(directory), *args],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def broker_dir(tmp_path: Path) -> Path:
    return tmp_path / "broker"


def test_check_mode_reports_without_writing(tmp_path: Path, broker_dir: Path) -> None:
    result = cli(broker_dir, spec(tmp_path, free_port()), "--check")
    assert result["changed"] and result["restart"]
    assert {"mosquitto.conf", "acl", "passwd"} <= set(result["files"])
    assert not broker_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pdsno-broker-")] == []


def test_a_second_render_changes_nothing_and_a_new_password_only_the_password_file(
    tmp_path: Path, broker_dir: Path
) -> None:
    data = spec(tmp_path, free_port())
    assert cli(broker_dir, data)["changed"]
    passwd = (broker_dir / "passwd").read_bytes()
    again = cli(broker_dir, data)
    assert (again["changed"], again["files"]) == (False, [])
    assert (broker_dir / "passwd").read_bytes() == passwd, "salted hashes are kept while they verify"
    data["accounts"][1]["password"] = "rc-password-2"
    changed = cli(broker_dir, data)
    assert (changed["files"], changed["restart"]) == (["passwd"], False)
    accounts = [
        BrokerAccount(GC, "gc-password-1", "global"),
        BrokerAccount(RC, "rc-password-2", "regional", "zone-a"),
    ]
    assert passwords_current(broker_dir / "passwd", accounts)
    data["accounts"].pop()
    assert set(cli(broker_dir, data)["files"]) == {"acl", "passwd"}


def test_a_bad_spec_is_one_line_with_the_key(tmp_path: Path, broker_dir: Path) -> None:
    done = subprocess.run(
        [str(PDSNO), "broker", "render", "--dir", str(broker_dir)],
        input=json.dumps({"listeners": [], "accounts": [{"username": GC}]}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "CONFIG_INVALID" in done.stderr and "accounts.0.password" in done.stderr


@pytest.fixture
def running_broker(tmp_path: Path, broker_dir: Path) -> Iterator[tuple[dict[str, Any], int]]:
    port = free_port()
    data = spec(tmp_path, port)
    render(broker_dir, BrokerSpec.model_validate(data))
    render(broker_dir, BrokerSpec.model_validate(data))  # the kept password lines are what is tested
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen([mosquitto, "-c", str(broker_dir / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        yield data, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def publish(data: dict[str, Any], port: int, user: str, password: str, topic: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", data["listeners"][0]["ca"],
             "-u", user, "-P", password, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", "x"],
            capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
        if "Connection refused" not in done.stderr or time.monotonic() > deadline:
            return done.returncode
        time.sleep(0.1)


def test_mosquitto_accepts_the_rendered_files(running_broker: tuple[dict[str, Any], int]) -> None:
    data, port = running_broker
    assert publish(data, port, RC, "rc-password-1", f"pdsno/status/{RC}") == 0
    assert publish(data, port, RC, "wrong-password", f"pdsno/status/{RC}") != 0
