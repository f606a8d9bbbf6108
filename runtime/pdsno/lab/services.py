"""The daemons of the lab: one ``snmpd`` per SNMP device, one ``sshd`` per controller host.

Both run inside their host's network namespace, with configuration, keys and logs in the state
directory; nothing is read from or written to /etc or /var (snmpd's persistent files are switched off,
sshd gets a private tmpfs on /run in its own mount namespace).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.lab.errors import LabError
from pdsno.lab.system import CLEAN_PATH
from pdsno.lab.topology import LabController, LabDevice
from pdsno.security.keys import write_file_atomically, write_secret_file

SNMP_PORT = 161
SSH_PORT = 22


@functools.cache
def tool(name: str) -> str:
    """The absolute path of a system program the lab needs (sbin included, whatever PATH says)."""
    found = shutil.which(name) or shutil.which(name, path=CLEAN_PATH)
    if found is None:
        raise LabError(f"{name} is not installed (scripts/bootstrap.sh installs the lab's packages)")
    return found


# --------------------------------------------------------------------------------------------------
# snmpd


SYSTEM_GROUP = ".1.3.6.1.2.1.1"
"""What a lab device lets its write community (or v3 user with ``write``) SET: the system group."""
WRITABLE_SCALARS = ("sysName", "sysContact", "sysLocation")
"""net-snmp refuses a SET of a system object pinned in snmpd.conf (``sysLocation x``: notWritable); the
``psys...`` form gives the same start value yet leaves the object writable. sysDescr, sysObjectID and
sysServices stay pinned, so a SET of them fails with notWritable (the failure tests' read-only OID), and
so do all six on a device with ``writable: false``."""


def snmpd_conf(device: LabDevice, persist_dir: Path) -> str:
    """net-snmp agent configuration: the system group from the device, its communities or v3 user."""
    lines = [
        "# written by pdsno lab; rewritten on every start",
        f"[snmp] persistentDir {persist_dir}",
        "[snmp] noPersistentLoad yes",
        "[snmp] noPersistentSave yes",
        f"agentAddress udp:{SNMP_PORT}",
        "dontLogTCPWrappersConnects yes",
    ]
    if device.kind == "snmp":
        lines.append(f"rocommunity {device.community} default")
        if device.write_community is not None:
            lines.append(f"rwcommunity {device.write_community} default {SYSTEM_GROUP}")
    elif device.snmpv3 is not None:
        v3 = device.snmpv3
        lines.append(
            f"createUser {v3.user} {v3.auth_protocol} {v3.auth_password} {v3.priv_protocol} {v3.priv_password}"
        )
        if v3.write:
            # rwuser's view would bound reads too: the VACM form reads everything, writes the system group
            lines += [
                f"group pdsnoWriters usm {v3.user}",
                "view pdsnoAll included .1",
                f"view pdsnoSystem included {SYSTEM_GROUP}",
                'access pdsnoWriters "" usm priv exact pdsnoAll pdsnoSystem none',
            ]
        else:
            lines.append(f"rouser {v3.user} priv")
    for key in ("sysName", "sysDescr", "sysObjectID", "sysServices", "sysContact", "sysLocation"):
        value = getattr(device, key)
        if value is not None:
            pinned = key not in WRITABLE_SCALARS or not device.writable
            lines.append(f"{key if pinned else 'p' + key.lower()} {value}")
    return "\n".join(lines) + "\n"


def snmpd_command(device: LabDevice, netns: str, conf: Path, log: Path) -> list[str]:
    """``ip netns exec NS snmpd -f ...``: one PID from start to end (every step execs the next)."""
    return [tool("ip"), "netns", "exec", netns, tool("snmpd"), "-f", "-C", "-c", str(conf), "-Lf", str(log)]


def snmpd_env(persist_dir: Path) -> dict[str, str]:
    return {"PATH": CLEAN_PATH, "MIBS": "", "SNMP_PERSISTENT_DIR": str(persist_dir)}


# --------------------------------------------------------------------------------------------------
# sshd and keys


def new_ssh_key(private_path: Path, comment: str) -> str:
    """Write a fresh Ed25519 key (OpenSSH format, 0600) and ``.pub`` beside it; return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    write_secret_file(private_path, private)
    write_file_atomically(
        private_path.with_name(private_path.name + ".pub"), (line + "\n").encode(), mode=0o644, dir_mode=0o700
    )
    return line


def sshd_conf(host: LabController, host_key: Path, authorized_keys: Path) -> str:
    """Root by key only, on the management address; ``StrictModes no`` since the state dir may be in /tmp."""
    return "\n".join(
        [
            "# written by pdsno lab",
            f"ListenAddress {host.mgmt_ip}:{SSH_PORT}",
            f"HostKey {host_key}",
            "PidFile none",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            f"AuthorizedKeysFile {authorized_keys}",
            "StrictModes no",
            "X11Forwarding no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            "",
        ]
    )


_SSHD_SHELL = (
    'mount -t tmpfs -o mode=0755,size=4m pdsno-lab-run /run && mkdir -m 0755 /run/sshd && hostname "$0" '
    '&& exec "$1" -D -e -f "$2"'
)


def sshd_command(host: LabController, netns: str, conf: Path) -> list[str]:
    """sshd in the host's namespace, in its own mount and UTS namespaces (private /run, its hostname)."""
    return [
        tool("ip"),
        "netns",
        "exec",
        netns,
        tool("unshare"),
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        _SSHD_SHELL,
        host.name,
        tool("sshd"),
        str(conf),
    ]


def sshd_env() -> dict[str, str]:
    return {"PATH": CLEAN_PATH}


def proxy_command(operator_netns: str) -> str:
    """How ssh in the root namespace reaches a management address: nc run inside the operator namespace."""
    return f"{tool('ip')} netns exec {operator_netns} {tool('nc')} %h %p"
