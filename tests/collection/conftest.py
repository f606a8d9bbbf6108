"""A real controller tree for the collection's tests, and the collection installed from its tarball.

A GC, the RC of zone-a (admitted by the GC) and one of its LCs (admitted by the RC) run as ``pdsno
controller run`` over TLS on 127.0.0.1 with a real Mosquitto broker. Their NIBs are seeded with devices
through the same merge their discovery intake uses; the GC also knows a regional controller for zone-b
that cannot be asked. The GC's operators are made with ``pdsno operator add``, one per role. Modules and the inventory
plugin are run by the real ``ansible``/``ansible-playbook``/``ansible-inventory`` from a copy of the
collection built with ``ansible-galaxy collection build`` and installed offline into a fresh path.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pdsno.cli.common import identity_signer
from pdsno.config import load_config
from pdsno.controller.nib_setup import open_configured_nib
from pdsno.inventory.merge import merge_reported
from pdsno.nib.models import Controller, ControllerRole, Device, DeviceType
from pdsno.security.pki import create_ca, issue_certificate
from tests.runtime.mosquitto_server import MosquittoBroker
from tests.runtime.ports import free_port
from tests.runtime.test_fabric import Deployment, Node

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GC, RC, LC = "global_cntl_1", "regional_cntl_zone-a_1", "local_cntl_zone-a_1"
# A regional controller the GC believes in but which holds no message key: asking it fails at once.
GHOST_RC = "regional_cntl_zone-b_1"
SCANNED = "127.0.6.0/30"
ROLES = ("viewer", "operator", "approver", "admin")

# (hostname, region, vendor, type, local controller). Addresses are on loopback, so that whatever a
# change makes a local controller do to a device stays on this machine.
SEEDED = [
    ("edge-1", "zone-a", "Cisco", DeviceType.ROUTER, LC),
    ("edge-2", "zone-a", "Cisco", DeviceType.ROUTER, LC),
    ("access-1", "zone-a", "Juniper", DeviceType.SWITCH, "local_cntl_zone-a_2"),
    ("core-b", "zone-b", "Juniper", DeviceType.ROUTER, "local_cntl_zone-b_1"),
    ("srv-b", "zone-b", None, DeviceType.SERVER, "local_cntl_zone-b_1"),
]


def seeded_devices() -> list[Device]:
    return [
        Device(
            mac_address=f"02:00:00:00:05:{n:02x}",
            ip_address=f"127.0.5.{n + 10}",
            addresses=[f"127.0.5.{n + 10}"],
            hostname=hostname,
            vendor=vendor,
            device_type=device_type,
            region=region,
            local_controller=lc,
            snmp_info={"snmp_reachable": True, "sys_name": f"{hostname}.lab"},
        )
        for n, (hostname, region, vendor, device_type, lc) in enumerate(SEEDED)
    ]


@dataclass
class RunningGC:
    """The GC of a running GC -> RC -> LC tree (zone-a), with one operator token per role."""

    tree: Deployment
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        return self.tree.nodes[GC]

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def ca(self) -> Path:
        return self.tree.ca

    def env(self, role: str = "viewer") -> dict[str, str]:
        """The connection options as the modules' environment fallbacks read them."""
        return {"PDSNO_URL": self.url, "PDSNO_TOKEN": self.tokens[role], "PDSNO_CA_PATH": str(self.ca)}

    def http(self, role: str = "viewer") -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=self.tree.tls,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=10,
        )

    def routes(self) -> dict[str, Any]:
        """The GC's OpenAPI ``paths``: every route it serves, with its parameters."""
        with self.http() as client:
            paths: dict[str, Any] = client.get("/openapi.json").json()["paths"]
        return paths


async def _seed(
    node: Node, *, owner_field: str, devices: list[Device], ghost_rc_url: str | None = None
) -> None:
    """Put devices into a running controller's NIB the way its discovery intake would (WAL allows it)."""
    config = load_config(node.config)
    signer, _ = identity_signer(config)
    store = await open_configured_nib(config, signer=signer)
    try:
        owners = sorted({str(getattr(d, owner_field)) for d in devices})
        for owner in owners:
            mine = [d for d in devices if str(getattr(d, owner_field)) == owner]
            await merge_reported(store, actor=node.name, reporter=owner, owner_field=owner_field,
                                 owner_value=owner, new_or_updated=mine, inactive_ids=[])  # fmt: skip
        if ghost_rc_url is not None:
            ghost = Controller(controller_id=GHOST_RC, role=ControllerRole.REGIONAL, region="zone-b",
                               parent_id=GC, rest_url=ghost_rc_url)  # fmt: skip
            (await store.register_controller(ghost)).unwrap()
    finally:
        await store.close()


def _controller_config(tree: Deployment, name: str, role: str, parent: str | None, cert: Any) -> Path:
    data_dir = tree.root / name
    data_dir.mkdir()
    password_file = data_dir / "mqtt.password"
    password_file.write_text(tree.broker.account(name).password)
    password_file.chmod(0o600)
    port = free_port()
    controller: dict[str, Any] = {"id": name, "role": role, "data_dir": str(data_dir)}
    if parent is not None:
        controller.update(region="zone-a", parent={"id": parent, "url": tree.nodes[parent].url})
    config = {
        "controller": controller,
        "rest": {"host": "127.0.0.1", "port": port,
                 "tls": {"cert": str(cert.cert), "key": str(cert.key), "ca": str(tree.ca)}},
        "mqtt": {"host": "127.0.0.1", "port": tree.broker.port, "username": name,
                 "password_file": str(password_file), "tls": {"ca": str(tree.broker.ca)}},
        "admission": {"bootstrap_file": str(tree.root / f"{name}.bootstrap.json")} if parent else {},
        "logging": {"level": "INFO"},
    }  # fmt: skip
    if role == "local":
        # Something to scan, so that a discovery request gets its report; only SNMP, on loopback
        # addresses where nothing answers.
        config["discovery"] = {"subnets": [SCANNED], "protocols": ["snmp"], "interval_s": 3600}
        # Write credentials, so that a change is planned and run for real (and finds no device answering).
        communities = data_dir / "write-communities"
        communities.write_text("private\n")
        communities.chmod(0o600)
        config["changes"] = {"snmp_write_communities_file": str(communities), "snmp_timeout_s": 0.5}
    path = tree.root / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    tree.nodes[name] = Node(name, path, data_dir, port, tree.root / f"{name}.log")
    return path


@pytest.fixture(scope="session")
def gc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGC]:
    root = tmp_path_factory.mktemp("tree")
    pki = root / "pki"
    ca = create_ca(pki)
    broker = MosquittoBroker(root / "mqtt")
    tree = Deployment(root, ca.cert, broker)
    running = RunningGC(tree)
    devices = seeded_devices()
    zone_a = [d for d in devices if d.region == "zone-a"]
    try:
        for name, role, parent in ((GC, "global", None), (RC, "regional", GC), (LC, "local", RC)):
            cert = issue_certificate(ca, pki, name, ["127.0.0.1", "localhost"])
            config = _controller_config(tree, name, role, parent, cert)
            if parent is not None:
                tree.cli("token", "issue", "--config", str(tree.nodes[parent].config), "--type", role,
                         "--region", "zone-a", "--output", str(root / f"{name}.bootstrap.json"))  # fmt: skip
            tree.nodes[name].start()
            tree.wait_healthy(tree.nodes[name])
            if name == GC:
                for role_name in ROLES:
                    out = tree.cli("operator", "add", "--config", str(config), "--name", f"{role_name}-1",
                                   "--role", role_name).stdout  # fmt: skip
                    running.tokens[role_name] = out.strip().splitlines()[-1]
                # A second operator, who is not an approver.
                out = tree.cli("operator", "add", "--config", str(config), "--name", "operator-2",
                               "--role", "operator").stdout  # fmt: skip
                running.tokens["operator-2"] = out.strip().splitlines()[-1]
        asyncio.run(_seed(tree.nodes[GC], owner_field="region", devices=devices,
                          ghost_rc_url=f"https://127.0.0.1:{free_port()}"))  # fmt: skip
        asyncio.run(_seed(tree.nodes[RC], owner_field="local_controller", devices=zone_a))
        asyncio.run(_seed(tree.nodes[LC], owner_field="local_controller",
                          devices=[d for d in zone_a if d.local_controller == LC]))  # fmt: skip
        yield running
    finally:
        for node in reversed(tree.nodes.values()):
            if node.process is not None:
                node.stop()
        broker.close()


@pytest.fixture(scope="session")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ansible-galaxy collection build`` + offline install into a fresh path; returns that path."""
    work = tmp_path_factory.mktemp("galaxy")
    env = clean_ansible_env(work / "collections")
    build = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"), str(REPO_ROOT)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (work / "dist").glob("pdsno-net-*.tar.gz")
    install = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(work / "collections"), str(tarball)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert (work / "collections" / "ansible_collections" / "pdsno" / "net" / "MANIFEST.json").is_file()
    return work / "collections"


def clean_ansible_env(collections: Path, **extra: str) -> dict[str, str]:
    """An environment in which Ansible sees only ``collections`` (not the repository's own copy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PDSNO_"))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


@dataclass
class Call:
    """One module call: ``pdsno.net.<name>`` with ``args``, as an operator of ``role``."""

    name: str
    args: dict[str, Any]
    role: str = "viewer"
    check: bool = False
    diff: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Ansible:
    """The real Ansible commands against the installed collection, from a directory without ansible.cfg."""

    collections: Path
    workdir: Path
    gc: RunningGC

    def modules(self, *calls: Call) -> list[dict[str, Any]]:
        """Run the calls in order as the tasks of one play (one ``ansible-playbook`` start for all); returns
        each one's registered result, ``failed`` and ``diff`` included. A failed call does not stop the
        ones after it. Each call's token reaches its module through the environment (PDSNO_TOKEN), with the
        call's own ``env`` on top."""
        out = self.workdir / f"results-{time.monotonic_ns()}"
        out.mkdir()
        tasks: list[dict[str, Any]] = []
        for n, call in enumerate(calls):
            tasks += [
                {"name": f"{n}: pdsno.net.{call.name}", f"pdsno.net.{call.name}": call.args, "register": f"r{n}",
                 "ignore_errors": True, "check_mode": call.check, "diff": call.diff,
                 "environment": {"PDSNO_TOKEN": self.gc.tokens[call.role], **call.env}},
                {"name": f"{n}: keep the result", "check_mode": False, "diff": False,
                 "ansible.builtin.copy": {"content": f"{{{{ r{n} | to_json }}}}", "dest": str(out / f"{n}.json")}},
            ]  # fmt: skip
        playbook = out / "play.yml"
        playbook.write_text(
            json.dumps([{"name": "calls", "hosts": "localhost", "gather_facts": False, "tasks": tasks}])
        )
        done = self.run("ansible-playbook", str(playbook), "-i", "localhost,", "-c", "local")
        results = []
        for n in range(len(calls)):
            kept = out / f"{n}.json"
            assert kept.is_file(), f"no result from call {n}:\n{done.stdout}\n{done.stderr}"
            result: dict[str, Any] = json.loads(kept.read_text())
            result.setdefault("failed", False)
            results.append(result)
        return results

    def module(self, name: str, args: dict[str, Any], **options: Any) -> dict[str, Any]:
        return self.modules(Call(name, args, **options))[0]

    def run(self, *argv: str, role: str = "viewer", **extra: str) -> subprocess.CompletedProcess[str]:
        env = clean_ansible_env(self.collections, **{**self.gc.env(role), **extra})
        return subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], cwd=self.workdir, env=env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def ansible(gc: RunningGC, installed_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    return Ansible(installed_collection, tmp_path_factory.mktemp("ansible"), gc)
