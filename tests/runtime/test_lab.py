"""``pdsno lab``: real namespaces, bridges, snmpd and sshd (needs root, as CI has).

The default topology is built once for the module (prefix ``pdlt-``, so a developer's own lab with the
default ``pdsno-`` prefix is never touched); teardown always runs. Every probe of a lab address runs
inside a lab namespace, except the ones that prove the root namespace cannot reach the lab.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pdsno.cli.lab import lab_group
from pdsno.lab import Lab, LabAlreadyUp, LabError, LabNotUp, TopologyError, load_topology, services, teardown
from pdsno.lab.routes import route_metric
from pdsno.lab.state import nib_cluster_name
from pdsno.lab.system import list_netns, process_alive
from pdsno.lab.topology import SnmpV3Spec, Topology, parse_topology

PREFIX = "pdlt-"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IP_AD_ENT_ADDR = "1.3.6.1.2.1.4.20.1.1"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")


# --------------------------------------------------------------------------------------------------
# topology files (no root needed)


def test_builtin_topologies_have_the_promised_shape() -> None:
    default = load_topology("default")
    devices = default.devices()
    kinds = [d.kind for d in devices]
    assert len(devices) == 40
    assert kinds.count("snmpv3") == 1
    assert kinds.count("icmp_only") >= 3
    assert kinds.count("arp_only") >= 2
    assert any(len(d.addresses) > 1 for d in devices)
    assert len(default.zones) == 2
    assert sorted(h.role for h in default.hosts()) == ["broker", "gc", "lc", "lc", "lc", "nib", "rc", "rc"]
    assert sum(len(z.subnets) for z in default.zones) == 3
    vendors = {d.vendor for d in devices if d.sysObjectID}
    assert {"Cisco", "Juniper", "Arista", "HP", "MikroTik", "Linux"} <= vendors
    assert len({i.mac for d in devices for i in d.interfaces}) == sum(len(d.interfaces) for d in devices)

    bench = load_topology("bench-24").devices()
    assert len(bench) == 200
    assert sum(d.kind in ("snmp", "snmpv3") for d in bench) == 180
    assert [d.kind for d in bench].count("snmpv3") == 1

    sparse = load_topology("bench-16")
    assert len(sparse.devices()) == 20
    assert {d.kind for d in sparse.devices()} == {"icmp_only", "arp_only"}
    assert str(sparse.zones[0].subnets[0].cidr) == "198.18.0.0/16"


def test_derived_macs_are_stable() -> None:
    first = {d.name: d.mac for d in load_topology("default").devices()}
    again = {d.name: d.mac for d in load_topology("default").devices()}
    assert first == again
    assert first["srv-a1-web"] == "52:54:00:0a:01:16"  # given in the file
    assert first["rtr-a1"].startswith("00:1b:54:")  # the profile's OUI


def _minimal(**zone_extra: Any) -> dict[str, Any]:
    zone: dict[str, Any] = {
        "name": "z1",
        "subnets": [{"cidr": "198.18.1.0/24", "lc": "lc-1"}],
        "devices": [{"name": "d1", "ip": "198.18.1.10"}],
    }
    zone.update(zone_extra)
    return {
        "name": "t",
        "management": "198.19.255.0/24",
        "zones": [zone],
        "controllers": {"lcs": [{"name": "lc-1", "zone": "z1", "mgmt_ip": "198.19.255.31"}]},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update(colour="blue"), "colour: unknown key"),
        (
            lambda t: t["zones"][0]["devices"].append({"name": "d2", "ip": "198.18.2.1"}),
            "in no subnet of zone z1",
        ),
        (
            lambda t: t["zones"][0]["devices"].append({"name": "d2", "ip": "198.18.1.10"}),
            "already used by d1",
        ),
        (lambda t: t["zones"][0]["devices"].append({"name": "d1", "ip": "198.18.1.11"}), "used twice"),
        (
            lambda t: t["zones"][0]["devices"].append({"name": "d2", "ip": "198.18.1.255"}),
            "not a host address",
        ),
        (
            lambda t: t["zones"][0]["devices"].append({"name": "d2", "ip": "198.18.1.9", "kind": "snmpv3"}),
            "needs an snmpv3",
        ),
        (
            lambda t: t["zones"][0]["devices"].append(
                {"name": "d2", "ip": "198.18.1.9", "interfaces": [{"name": "Gi0/1"}]}
            ),
            "Linux interface name",
        ),
        (
            lambda t: t["zones"][0]["devices"].append({"name": "d2", "ip": "198.18.1.9", "profile": "nokia"}),
            "unknown profile",
        ),
        (lambda t: t["zones"][0]["subnets"].append({"cidr": "198.18.1.128/25", "lc": "lc-1"}), "overlaps"),
        (lambda t: t["zones"][0]["subnets"][0].update(lc="lc-9"), "not in controllers.lcs"),
        (lambda t: t.update(management="10.0.0.0/24"), "not inside prefix"),
        (lambda t: t.update(prefix="8.8.0.0/16", management="8.8.255.0/24"), "public block"),
        (
            lambda t: t["controllers"]["lcs"][0].update(mgmt_ip="198.19.254.1"),
            "not a host address of management",
        ),
    ],
)
def test_topology_mistakes_are_refused_with_a_reason(change: Any, message: str) -> None:
    data = _minimal()
    change(data)
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, source="t.yml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("CONFIG_INVALID: t.yml: ")


def test_each_prefix_has_its_own_nib_cluster() -> None:
    names = {prefix: nib_cluster_name(prefix) for prefix in ("pdsno-", "pdsno", "pds-w-", "pds-w", "pdsw-")}
    assert names["pdsno-"] == "pdsno_nib"
    assert len(set(names.values())) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names.values())  # no '-': systemd units
    with pytest.raises(TopologyError):
        nib_cluster_name("Bad/")


def _fake_cluster(root: Path, monkeypatch: pytest.MonkeyPatch, cluster: str, pid: int) -> tuple[Path, Path]:
    monkeypatch.setattr(teardown, "PG_CONF_ROOT", root / "etc")
    monkeypatch.setattr(teardown, "PG_DATA_ROOT", root / "lib")
    monkeypatch.setattr(teardown, "PG_LOG_DIR", root / "log")
    monkeypatch.setattr(teardown.shutil, "which", lambda *_, **__: None)  # never the machine's pg_dropcluster
    conf, data = root / "etc" / "15" / cluster, root / "lib" / "15" / cluster
    (conf / "conf.d").mkdir(parents=True)
    (conf / "conf.d" / "pdsno.conf").write_text("listen_addresses = '198.19.255.6'\n")
    (conf / "postgresql.conf").write_text(f"data_directory = '{data}'\n")
    data.mkdir(parents=True)
    (data / "postmaster.pid").write_text(f"{pid}\n{data}\n")
    (root / "log").mkdir()
    (root / "log" / f"postgresql-15-{cluster}.log").write_text("")
    return conf, data


def test_down_stops_the_labs_postmaster_by_pid_and_drops_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = subprocess.Popen(["sleep", "60"])  # stands in for the postmaster: SIGINT ends it
    try:
        conf, data = _fake_cluster(tmp_path, monkeypatch, "pdswtest_nib", server.pid)
        assert teardown.nib_cluster_versions("pdswtest_nib") == ["15"]
        assert teardown.stop_nib_cluster("pdswtest_nib", ours=[server.pid + 100000]) == []  # not the lab's
        assert server.poll() is None
        with pytest.raises(LabError, match="still runs"):
            teardown.drop_nib_cluster("pdswtest_nib")
        assert teardown.stop_nib_cluster("pdswtest_nib", ours=[server.pid]) == [server.pid]
        server.wait(timeout=5)
        assert teardown.drop_nib_cluster("pdswtest_nib") == ["15"]
        assert not conf.exists() and not data.exists()
        assert not (tmp_path / "log" / "postgresql-15-pdswtest_nib.log").exists()
        assert teardown.drop_nib_cluster("pdswtest_nib") == []  # idempotent
    finally:
        server.kill()
        server.wait()


def test_a_missing_topology_names_the_builtin_ones(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="built-in topologies: default, mini, bench-24, bench-16"):
        load_topology(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nname: y\n")
    with pytest.raises(TopologyError, match="duplicate key"):
        load_topology(bad)


# --------------------------------------------------------------------------------------------------
# the default lab, built once


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    state_dir = tmp_path_factory.mktemp("lab")
    try:
        built = Lab.up("default", state_dir, prefix=PREFIX)
        yield built
    finally:
        Lab.down(state_dir, prefix=PREFIX)


def snmpget(lab: Lab, lc: str, *args: str, timeout: float = 1.0) -> subprocess.CompletedProcess[str]:
    argv = ["snmpget", "-On", "-Oq", "-t", str(timeout), "-r", "1", *args]
    return lab.exec_in(lc, argv, check=False, timeout=15)


def ip_json(*args: str) -> str:
    """``ip -j ARGS`` in the root namespace (reads only)."""
    return subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True, timeout=10).stdout


def ping(lab: Lab, ns: str, ip: str) -> bool:
    return lab.exec_in(ns, ["ping", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def arp_scan(lab: Lab, lc: str, interface: str) -> dict[str, str]:
    done = lab.exec_in(lc, ["arp-scan", "-I", interface, "--localnet", "-q", "-x", "-r", "3"], timeout=60)
    return {line.split("\t")[0]: line.split("\t")[1] for line in done.stdout.splitlines() if "\t" in line}


def test_ground_truth_matches_the_namespaces(lab: Lab) -> None:
    truth = json.loads(lab.ground_truth_path.read_text())
    assert truth == json.loads(json.dumps(lab.ground_truth()))
    assert len(truth["devices"]) == 40
    present = set(list_netns())
    for device in truth["devices"]:
        ns = lab.netns(device["name"])
        assert ns in present
        links = json.loads(lab.exec_in(ns, ["ip", "-j", "addr", "show"]).stdout)
        by_name = {link["ifname"]: link for link in links}
        for address in device["addresses"]:
            link = by_name[address["interface"]]
            assert link["address"] == address["mac"]
            assert address["ip"] in [a["local"] for a in link["addr_info"] if a["family"] == "inet"]
        for interface in device["interfaces"]:
            assert by_name[interface["name"]]["address"] == interface["mac"]
        if device["sysObjectID"]:
            assert device["vendor"] is not None
    web = next(d for d in truth["devices"] if d["name"] == "srv-a1-web")
    assert [a["ip"] for a in web["addresses"]] == ["198.18.1.22", "198.18.1.23", "198.18.1.24"]
    assert {a["mac"] for a in web["addresses"]} == {"52:54:00:0a:01:16"}
    v3 = [d for d in truth["devices"] if d["snmp"] and d["snmp"]["version"] == "3"]
    assert [d["name"] for d in v3] == ["rtr-b1"]


def test_each_lc_sees_exactly_its_subnets_devices_by_arp(lab: Lab) -> None:
    links = [(lc.name, link) for lc in lab.hosts("lc") for link in lc.subnets]
    with ThreadPoolExecutor(len(links)) as pool:
        scans = list(pool.map(lambda item: arp_scan(lab, item[0], item[1].interface), links))
    for (lc, link), seen in zip(links, scans, strict=True):
        expected = {ip: d.mac for d in lab.devices() if d.subnet == link.cidr for ip in d.addresses}
        assert seen == expected, (lc, link.cidr)


def test_ping_and_arp_from_an_lc_host(lab: Lab) -> None:
    lc = lab.lc_for("198.18.1.0/24").name
    assert ping(lab, lc, "198.18.1.1")
    assert ping(lab, lc, "198.18.1.51")  # icmp_only
    assert ping(lab, lc, "198.18.1.24")  # third address of srv-a1-web
    camera = lab.device("cam-a1-1")  # arp_only: no echo reply, but ARP answers
    assert not ping(lab, lc, camera.addresses[0])
    neigh = json.loads(lab.exec_in(lc, ["ip", "-j", "neigh", "show", camera.addresses[0]]).stdout)
    assert neigh
    assert neigh[0]["lladdr"] == camera.mac
    done = lab.exec_in(lc, ["arping", "-c", "1", "-w", "2", "-I", "lan0", camera.addresses[0]], check=False)
    assert done.returncode == 0
    assert camera.mac in done.stdout.lower()


def test_snmp_v2c_answers_with_the_devices_identity(lab: Lab) -> None:
    for name in ("acc-sw-a1-1", "sw-a2-1", "core-sw-b1", "srv-a1-web"):
        device = lab.device(name)
        done = snmpget(lab, device.lc, "-v2c", "-c", "public", device.addresses[0], SYS_NAME, SYS_OBJECT_ID)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[0] == f'.{SYS_NAME} "{name}"'
        assert done.stdout.split("\n")[1] == f".{SYS_OBJECT_ID} .{device.sysObjectID}"
    hvac = lab.device("hvac-b1-1")
    assert (
        snmpget(lab, hvac.lc, "-v2c", "-c", "public", hvac.addresses[0], SYS_NAME, timeout=0.3).returncode
        != 0
    )
    assert snmpget(lab, hvac.lc, "-v2c", "-c", "facilities", hvac.addresses[0], SYS_NAME).returncode == 0


def test_snmp_shows_the_devices_interfaces_and_addresses(lab: Lab) -> None:
    device = lab.device("srv-a1-web")
    walk = lab.exec_in(
        device.lc, ["snmpwalk", "-v2c", "-c", "public", "-On", "-Oq", device.addresses[0], IF_DESCR]
    )
    names = [line.split(" ", 1)[1].strip('"') for line in walk.stdout.splitlines()]
    assert names == ["lo", "eth0", "eth1", "docker0"]
    walk = lab.exec_in(
        device.lc, ["snmpwalk", "-v2c", "-c", "public", "-On", "-Oq", device.addresses[0], IP_AD_ENT_ADDR]
    )
    assert {line.split()[1] for line in walk.stdout.splitlines()} == {"127.0.0.1", *device.addresses}


def v3_args(v3: SnmpV3Spec, auth_password: str | None = None) -> list[str]:
    auth = auth_password or v3.auth_password
    return [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        v3.user,
        "-a",
        "SHA",
        "-A",
        auth,
        "-x",
        "AES",
        "-X",
        v3.priv_password,
    ]


def test_the_v3_device_answers_authpriv_only(lab: Lab) -> None:
    device = lab.device("rtr-b1")
    assert device.snmpv3 is not None
    ip = device.addresses[0]
    done = snmpget(lab, device.lc, *v3_args(device.snmpv3), ip, SYS_NAME)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'.{SYS_NAME} "rtr-b1"'
    wrong = snmpget(lab, device.lc, *v3_args(device.snmpv3, "wrong-pass"), ip, SYS_NAME, timeout=0.3)
    assert wrong.returncode != 0
    v2c = snmpget(lab, device.lc, "-v2c", "-c", "public", ip, SYS_NAME, timeout=0.3)
    assert v2c.returncode != 0
    assert "Timeout" in v2c.stderr


def test_the_root_namespace_cannot_reach_the_lab(lab: Lab) -> None:
    routes = json.loads(ip_json("-4", "route", "show", "type", "blackhole"))
    assert [r["dst"] for r in routes if r.get("metric") == route_metric(PREFIX)] == [str(lab.block)]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(OSError, match="Invalid argument") as caught,
    ):
        sock.sendto(b"x", ("198.18.1.1", 9))
    assert caught.value.errno == errno.EINVAL  # a black-hole route refuses the packet at once
    # no lab address and no lab link in the root namespace
    root = json.loads(ip_json("addr", "show"))
    for link in root:
        assert not link["ifname"].startswith(PREFIX)
        for info in link.get("addr_info", []):
            if info["family"] == "inet":
                assert IPv4Address(info["local"]) not in lab.block


def test_ssh_through_the_proxy_command_reaches_an_lc_host(lab: Lab) -> None:
    argv = lab.ssh_argv("lc-a1", "hostname; ip -4 -o addr show lan0")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "lc-a1"
    assert "198.18.1.254/24" in done.stdout
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    controllers = inventory["all"]["children"]["controllers"]["children"]
    lc = controllers["local"]["hosts"]["lc-a1"]
    assert lc["ansible_host"] == "198.19.255.31"
    assert (lc["pdsno_controller_id"], lc["pdsno_region"], lc["pdsno_subnets"]) == (
        "local_cntl_zone-a_1",
        "zone-a",
        ["198.18.1.0/24"],
    )
    assert lc["pdsno_lab_snmp_communities"] == ["public"]
    lc_b1 = controllers["local"]["hosts"]["lc-b1"]
    assert lc_b1["pdsno_controller_id"] == "local_cntl_zone-b_1"
    assert "facilities" in lc_b1["pdsno_lab_snmp_communities"]
    assert [v3.split(":")[0] for v3 in lc_b1["pdsno_lab_snmp_v3"]] == ["pdsno-ro"]
    # what approved changes write with: every writable v2c agent takes SETs from `private`; rtr-b1's
    # v3 user only reads, so no LC is handed a v3 user to write with
    assert lc["pdsno_lab_snmp_write_communities"] == lc_b1["pdsno_lab_snmp_write_communities"] == ["private"]
    assert lc_b1["pdsno_lab_snmp_write_v3"] == []
    assert controllers["local"]["hosts"]["lc-a2"]["pdsno_controller_id"] == "local_cntl_zone-a_2"
    assert controllers["global"]["hosts"]["gc-1"]["pdsno_controller_id"] == "global_cntl_1"
    assert controllers["regional"]["hosts"]["rc-zone-b"]["pdsno_controller_id"] == "regional_cntl_zone-b_1"
    assert list(inventory["all"]["children"]["broker"]["hosts"]) == ["broker-1"]
    # the GC keeps its NIB on nib-1, in a PostgreSQL cluster named after the lab's prefix
    assert inventory["all"]["children"]["nib"]["hosts"]["nib-1"][
        "nib_postgresql_cluster"
    ] == nib_cluster_name(PREFIX)
    assert controllers["global"]["hosts"]["gc-1"]["controller_nib_backend"] == "postgresql"
    assert "controller_nib_backend" not in controllers["regional"]["hosts"]["rc-zone-a"]
    assert f"ip netns exec {lab.operator_netns}" in inventory["all"]["vars"]["ansible_ssh_common_args"]


def test_stop_and_start_a_device(lab: Lab) -> None:
    device = lab.device("acc-sw-a1-2")
    pid = lab.daemon_pid(device.name)
    assert pid is not None
    lab.stop_device(device.name)
    assert not process_alive(pid)
    assert not ping(lab, device.lc, device.addresses[0])
    assert (
        snmpget(lab, device.lc, "-v2c", "-c", "public", device.addresses[0], SYS_NAME, timeout=0.3).returncode
        != 0
    )
    truth = json.loads(lab.ground_truth_path.read_text())
    assert next(d for d in truth["devices"] if d["name"] == device.name)["up"] is False
    assert Lab.load(lab.state_dir).device_is_up(device.name) is False
    lab.start_device(device.name)
    assert ping(lab, device.lc, device.addresses[0])
    done = snmpget(lab, device.lc, "-v2c", "-c", "public", device.addresses[0], SYS_NAME)
    assert done.stdout.strip() == f'.{SYS_NAME} "{device.name}"'
    assert lab.device(device.name).mac == device.mac
    assert Lab.status(lab.state_dir)["state"] == "up"


def test_set_sysname_restarts_snmpd_with_the_new_name(lab: Lab) -> None:
    device = lab.device("sw-a2-3")
    lab.set_sysname(device.name, "sw-a2-3-renamed")
    done = snmpget(lab, device.lc, "-v2c", "-c", "public", device.addresses[0], SYS_NAME)
    assert done.stdout.strip() == f'.{SYS_NAME} "sw-a2-3-renamed"'
    assert lab.device(device.name).sysName == "sw-a2-3-renamed"
    lab.set_sysname(device.name, device.name)
    with pytest.raises(TopologyError, match="one line of text"):
        lab.set_sysname(device.name, 'bad"name')
    with pytest.raises(TopologyError, match="no snmpd"):
        lab.set_sysname("prn-a1-1", "printer")


def test_add_move_and_remove_a_device(lab: Lab) -> None:
    added = lab.add_device({"name": "new-sw-1", "ip": "198.18.2.77", "profile": "arista-eos"})
    assert added.zone == "zone-a"
    assert added.lc == "lc-a2"
    assert added.vendor == "Arista"
    done = snmpget(lab, "lc-a2", "-v2c", "-c", "public", "198.18.2.77", SYS_NAME)
    assert done.stdout.strip() == f'.{SYS_NAME} "new-sw-1"'
    with pytest.raises(TopologyError, match="already used by new-sw-1"):
        lab.add_device({"name": "new-sw-2", "ip": "198.18.2.77"})
    lab.set_addresses("new-sw-1", ["198.18.2.78"])
    assert ping(lab, "lc-a2", "198.18.2.78")
    assert not ping(lab, "lc-a2", "198.18.2.77")
    assert any(d["name"] == "new-sw-1" for d in json.loads(lab.ground_truth_path.read_text())["devices"])
    lab.remove_device("new-sw-1")
    assert lab.netns("lc-a2")  # the lab is still whole
    assert f"{PREFIX}d-new-sw-1" not in list_netns()
    with pytest.raises(LabNotUp):
        lab.device("new-sw-1")


def test_a_thread_can_open_sockets_inside_a_lab_namespace(lab: Lab) -> None:
    with lab.inside("lc-b1"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("198.18.11.2", 161))
        assert sock.getsockname()[0] == "198.18.11.254"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outside,
        pytest.raises(OSError, match="Invalid argument"),
    ):
        outside.connect(("198.18.11.2", 161))


def test_exec_in_refuses_namespaces_that_are_not_the_labs(lab: Lab) -> None:
    with pytest.raises(LabNotUp):
        lab.exec_in("pdsnot-scan", ["true"])
    with pytest.raises(LabError, match="exit 1"):
        lab.exec_in("lc-a1", ["false"])


def test_status_and_a_second_up(lab: Lab) -> None:
    status = Lab.status(lab.state_dir)
    assert status["state"] == "up"
    assert status["devices"]["snmpd_alive"] == status["devices"]["snmpd_expected"] == 32
    assert all(h["sshd_alive"] for h in status["hosts"].values())
    result = CliRunner().invoke(lab_group, ["status", "--state-dir", str(lab.state_dir), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["namespaces"]["missing"] == []
    with pytest.raises(LabAlreadyUp, match="already up"):
        Lab.up("default", lab.state_dir, prefix=PREFIX)
    with pytest.raises(LabAlreadyUp, match=f"namespaces with prefix {PREFIX} exist"):
        Lab.up("default", lab.state_dir / "other", prefix=PREFIX)


# --------------------------------------------------------------------------------------------------
# down, and the bench topologies (their own labs, their own prefixes)


def _small() -> Topology:
    data = _minimal(
        devices=[
            {"name": "d1", "ip": "198.18.1.10", "profile": "linux"},
            {"name": "d2", "ip": "198.18.1.11", "kind": "arp_only"},
        ]
    )
    data["controllers"]["gc"] = {"name": "gc-1", "mgmt_ip": "198.19.255.10"}
    return parse_topology(data, source="small")


def _runit_service_over_ssh(lab: Lab, host: str) -> list[int]:
    """A runsvdir started over ssh in ``host`` (detached, like a deployed one) supervising one service:
    the PIDs of runsvdir, runsv and the service once it runs."""
    base = lab.state_dir / "deploy" / host / "runit"
    (base / "sv" / "sleeper").mkdir(parents=True)
    (base / "service").mkdir()
    run = base / "sv" / "sleeper" / "run"
    run.write_text("#!/bin/sh\nexec sleep 600\n")
    run.chmod(0o755)
    (base / "service" / "sleeper").symlink_to(base / "sv" / "sleeper")
    start = (
        f"start-stop-daemon --start --background --make-pidfile --pidfile {base}/runsvdir.pid"
        f" --exec /usr/bin/runsvdir -- -P {base}/service"
    )
    subprocess.run(lab.ssh_argv(host, start), check=True, timeout=20, capture_output=True)
    deadline = time.monotonic() + 20
    status = ""
    while time.monotonic() < deadline and not status.startswith("run:"):
        status = subprocess.run(["sv", "status", str(run.parent)], capture_output=True, text=True).stdout
        time.sleep(0.2)
    assert status.startswith("run:"), status
    service = int((run.parent / "supervise" / "pid").read_text())  # runsv writes its child's PID there
    return [int((base / "runsvdir.pid").read_text()), _parent(service), service]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@needs_root
def test_down_leaves_nothing_behind_even_without_state(tmp_path: Path) -> None:
    prefix = "pdlu-"
    lab = Lab.up(_small(), tmp_path / "lab", prefix=prefix)
    try:
        pids = [p for p in (lab.daemon_pid("d1"), lab.daemon_pid("gc-1"), lab.daemon_pid("lc-1")) if p]
        assert len(pids) == 3
        pids += _runit_service_over_ssh(lab, "gc-1")  # as the pdsno_service role runs a deployed service
        assert len(pids) == 6
        assert all(process_alive(p) for p in pids)
        (lab.state_dir / "state.json").unlink()  # as after a crash
        assert Lab.status(lab.state_dir, prefix=prefix)["state"] == "leftovers"
    finally:
        report = Lab.down(lab.state_dir, prefix=prefix)
    assert report["namespaces"] == 6
    assert report["routes"] == 1
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]
    assert not any(process_alive(p) for p in pids)
    routes = json.loads(ip_json("route", "show", "type", "blackhole"))
    assert all(r.get("metric") != route_metric(prefix) for r in routes)
    assert not [link for link in json.loads(ip_json("link", "show")) if link["ifname"].startswith(prefix)]
    assert not lab.state_dir.exists()
    assert Lab.down(lab.state_dir, prefix=prefix)["namespaces"] == 0  # idempotent
    assert Lab.status(lab.state_dir, prefix=prefix)["state"] == "down"


@needs_root
def test_a_failed_up_cleans_up_after_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "pdlf-"
    monkeypatch.setattr(services, "sshd_conf", lambda *_: "NoSuchSshdOption yes\n")
    with pytest.raises(LabError, match=r"sshd of (gc-1|lc-1) exited at start: .*NoSuchSshdOption"):
        Lab.up(_small(), tmp_path / "lab", prefix=prefix)
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]
    assert not (tmp_path / "lab" / "state.json").exists()
    with pytest.raises(LabNotUp):
        Lab.load(tmp_path / "lab")


@needs_root
def test_bench_24_lab_up_time(
    tmp_path: Path, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = "pdlb-"
    started = time.monotonic()
    lab = Lab.up("bench-24", tmp_path / "lab", prefix=prefix)
    up_seconds = time.monotonic() - started
    try:
        status = Lab.status(lab.state_dir)
        assert status["state"] == "up"
        assert status["devices"]["snmpd_alive"] == 180
        seen = arp_scan(lab, "lc-bench", "lan0")
        assert len(seen) == 200
        assert seen == {d.addresses[0]: d.mac for d in lab.devices()}
    finally:
        started = time.monotonic()
        Lab.down(lab.state_dir)
        down_seconds = time.monotonic() - started
    record_property("bench24_up_seconds", round(up_seconds, 2))
    record_property("bench24_down_seconds", round(down_seconds, 2))
    with capsys.disabled():
        print(f"\nbench-24: lab up {up_seconds:.2f} s (200 devices, 180 snmpd), down {down_seconds:.2f} s")
    assert up_seconds < 60


@needs_root
def test_bench_16_sparse_lab(tmp_path: Path) -> None:
    lab = Lab.up("bench-16", tmp_path / "lab", prefix="pdls-")
    try:
        hosts = lab.devices()
        assert len(hosts) == 20
        assert ping(lab, "lc-bench", lab.device("host-16").addresses[0])
        assert not ping(lab, "lc-bench", lab.device("quiet-04").addresses[0])
        assert lab.host("lc-bench").subnets[0].ip == "198.18.255.254"
    finally:
        Lab.down(lab.state_dir)
