"""Render a Mosquitto deployment: ``mosquitto.conf``, the password file and the ACL (decisions §5).

:func:`write_broker_files` writes everything a ``mosquitto -c <dir>/mosquitto.conf`` needs into one
directory:

* ``mosquitto.conf``: global settings (``per_listener_settings false``, ``allow_anonymous false``, password
  file, ACL, persistence), then one ``listener`` block per :class:`Listener`. TLS listeners verify nothing
  from the client (``require_certificate false``: controllers authenticate with username/password) and
  accept TLS 1.2 or newer. A plain listener is rendered only for a :class:`Listener` built with
  ``insecure=True`` and is logged as a warning.
* ``passwd``: one ``user:$7$<iterations>$<salt>$<hash>`` line per account: Mosquitto 2's PBKDF2-SHA512
  format, the one ``mosquitto_passwd`` writes (checked against it), computed here so no password ever
  appears on a command line or in a plain-text file.
* ``acl``: per-user topic rules (see :func:`acl_rules` and the comment at the top of the rendered file):
  every controller may **publish only on its own topics**.
* ``tls/``: copies of the listener certificates and keys, owned by the user the broker runs as.
* ``data/`` (or ``persistence_dir``): the broker's persistence database.

Which user reads these files: Mosquitto started as root switches to the user named by ``user`` (default
``mosquitto``) at start-up and from then on reads and writes as that user: the persistence database, and
the password file and ACL again on every SIGHUP reload. So every file here must belong to the user the
broker runs as. ``run_as`` picks that user:

* ``run_as=None`` (tests, development): the broker keeps the identity of whoever starts it, i.e. the user
  running this function; the config says ``user <that user>`` so a root-started broker does not switch to
  ``mosquitto``, which could not read the 0600 files written here.
* ``run_as="mosquitto"`` (deployments: the packaged systemd unit starts the broker as root): the config
  says ``user mosquitto`` and, when this runs as root, the directory and every file are chowned to that user
  (keys and password hashes stay 0600). Not being root, only ``run_as`` = the current user is possible.

All files are rewritten atomically on every call (idempotent for the same inputs apart from fresh password
salts); send the broker SIGHUP to reload the password file and the ACL after adding an account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import pwd
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pdsno.config import MQTT_PORT_PLAIN, MQTT_PORT_TLS, Role, controller_id_matches
from pdsno.errors import ConfigError
from pdsno.security.keys import write_secret_file
from pdsno.transport import topics

__all__ = [
    "BROKER_ROLES",
    "BrokerAccount",
    "BrokerFiles",
    "BrokerRole",
    "Listener",
    "acl_rules",
    "hash_password",
    "render_acl",
    "write_broker_files",
]

logger = logging.getLogger(__name__)

BrokerRole = Literal["global", "regional", "local", "monitor"]
BROKER_ROLES: Final[tuple[str, ...]] = ("global", "regional", "local", "monitor")
"""Controller roles (:class:`pdsno.config.Role` values) plus ``monitor``: a read-only operator account."""

PBKDF2_ITERATIONS: Final = 101
"""What ``mosquitto_passwd`` 2.0 uses; the broker reads the count from each line."""
_SALT_BYTES: Final = 12
_USERNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_MIN_PASSWORD: Final = 8

Access = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One broker login. For controllers ``username`` is the controller id (its status topic is named
    after it); ``region`` is required for regional and local controllers and refused otherwise."""

    username: str
    password: str = field(repr=False)
    role: BrokerRole | Role
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket. TLS needs ``ca``, ``cert`` and ``key``; plain MQTT needs ``insecure=True``."""

    port: int = MQTT_PORT_TLS
    bind: str | None = None
    """Address to bind (``None``: every interface)."""
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @classmethod
    def tls(
        cls, *, ca: Path, cert: Path, key: Path, port: int = MQTT_PORT_TLS, bind: str | None = None
    ) -> Listener:
        return cls(port=port, bind=bind, ca=ca, cert=cert, key=key)

    @classmethod
    def plain(cls, *, insecure: bool, port: int = MQTT_PORT_PLAIN, bind: str | None = None) -> Listener:
        """Plain MQTT (passwords in clear on the wire): development only, ``insecure=True`` required."""
        return cls(port=port, bind=bind, insecure=insecure)

    @property
    def is_tls(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`write_broker_files` wrote; start the broker with ``mosquitto -c <config>``."""

    directory: Path
    config: Path
    password_file: Path
    acl_file: Path
    persistence_dir: Path
    tls_dir: Path
    user: str
    """The user the broker runs as (the ``user`` line of the config)."""


# --------------------------------------------------------------------------------------------------
# passwords


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto 2 password-file hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, line_hash: str) -> bool:
    """Whether a ``$7$<iterations>$<salt>$<hash>`` password-file hash is the hash of ``password``."""
    parts = line_hash.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return False
    expected = hash_password(password, iterations=int(parts[2]), salt=salt)
    return hmac.compare_digest(expected, line_hash)


# --------------------------------------------------------------------------------------------------
# ACL


def _check_accounts(accounts: Sequence[BrokerAccount]) -> None:
    seen: set[str] = set()
    for account in accounts:
        name = account.username
        where = f"broker account {name!r}"
        if _USERNAME_RE.fullmatch(name) is None:
            raise ConfigError(
                f"broker account name {name!r} must be 1 to 128 letters, digits, '_', '.' or '-'",
                key="username",
            )
        if name in seen:
            raise ConfigError(f"{where} is listed twice", key="username")
        seen.add(name)
        if account.role not in BROKER_ROLES:
            raise ConfigError(f"{where}: role must be one of {', '.join(BROKER_ROLES)}", key="role")
        if not isinstance(account.password, str) or len(account.password) < _MIN_PASSWORD:
            raise ConfigError(
                f"{where}: password must be at least {_MIN_PASSWORD} characters", key="password"
            )
        if account.role in ("global", "monitor"):
            if account.region is not None:
                raise ConfigError(f"{where}: a {account.role} account has no region", key="region")
        else:
            if account.region is None:
                raise ConfigError(f"{where}: a {account.role} account needs a region", key="region")
            try:
                topics.policy(account.region)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}", key="region") from None
        if account.role != "monitor":
            role = Role(account.role)
            if not controller_id_matches(name, role, account.region, allow_temp=False):
                form = "global_cntl_<n>" if role is Role.GLOBAL else f"{role}_cntl_{account.region}_<n>"
                raise ConfigError(
                    f"{where}: the user name of a {role} controller is its controller id ({form})",
                    key="username",
                )


def acl_rules(account: BrokerAccount, accounts: Sequence[BrokerAccount]) -> list[tuple[Access, str]]:
    """The ``(access, topic)`` rules of ``account``; ``accounts`` (all of them) names a region's controllers.

    Writes: every controller its own ``pdsno/status/<id>``; a local controller its own
    ``pdsno/discovery/<region>/<id>``; a regional controller ``pdsno/policy/<region>``,
    ``pdsno/events/<region>`` and the acknowledgements ``pdsno/discovery/<region>/+/ack``; the global controller ``pdsno/policy/global``, ``pdsno/events/system`` and
    ``pdsno/events/#``. Reads: the global controller everything under ``pdsno/#``; a regional controller
    its region's discovery reports, the status of the controllers of its region and of the global
    controller (its parent), and the global policy and system events it relays; a local controller the
    acknowledgements of its own reports, the global policy, its region's policy and the status of its region's regional controllers (its parent); a
    monitor account every status and every event. Status rules name controllers one by one (an MQTT topic
    level cannot be matched by prefix), so the ACL is re-rendered and reloaded when a controller is added.
    """
    own_status = topics.status(account.username)
    rules: list[tuple[Access, str]] = []
    if account.role == "global":
        rules += [
            ("write", own_status),
            ("write", topics.policy_global()),
            ("write", topics.events_system()),
            ("write", f"{topics.PREFIX}/events/#"),
            ("read", f"{topics.PREFIX}/#"),
        ]
    elif account.role == "regional":
        assert account.region is not None
        region = account.region
        rules += [
            ("write", own_status),
            ("write", topics.policy(region)),
            ("write", topics.events(region)),
            ("write", topics.discovery_ack_filter(region)),
            ("read", topics.discovery_filter(region)),
            ("read", topics.policy_global()),
            ("read", topics.events_system()),
        ]
        rules += [
            ("read", topics.status(other.username))
            for other in sorted(accounts, key=lambda a: a.username)
            if other.role == "global" or (other.role in ("regional", "local") and other.region == region)
        ]
    elif account.role == "local":
        assert account.region is not None
        region = account.region
        rules += [
            ("write", own_status),
            ("write", topics.discovery(region, account.username)),
            ("read", topics.discovery_ack(region, account.username)),
            ("read", topics.policy_global()),
            ("read", topics.policy(region)),
        ]
        rules += [
            ("read", topics.status(other.username))
            for other in sorted(accounts, key=lambda a: a.username)
            if other.role == "regional" and other.region == region
        ]
    else:  # monitor
        rules += [
            ("read", topics.status_filter()),
            ("read", f"{topics.PREFIX}/events/#"),
        ]
    return rules


_ACL_HEADER: Final = """\
# PDSNO Mosquitto ACL, rendered by pdsno.transport.broker: edit the accounts and re-render, not this file.
#
# Users are controller ids (plus read-only monitor accounts). Nothing is allowed unless a rule below says
# so; anonymous clients are refused by mosquitto.conf. A controller may publish ONLY on its own topics:
#
#   every controller       write pdsno/status/<its id>               heartbeats; also its last will "offline"
#   local controller       write pdsno/discovery/<region>/<its id>   discovery reports (C4)
#                          read  pdsno/discovery/<region>/<its id>/ack   its reports acknowledged
#                                pdsno/policy/global, pdsno/policy/<region>,
#                                pdsno/status/<each regional controller of the region>   (its parent)
#   regional controller    write pdsno/policy/<region>, pdsno/events/<region>,
#                                pdsno/discovery/<region>/+/ack   (reports stored)
#                          read  pdsno/discovery/<region>/+, pdsno/status/<each controller of the region>,
#                                pdsno/status/<the global controller>, pdsno/policy/global,
#                                pdsno/events/system
#   global controller      write pdsno/policy/global, pdsno/events/system, pdsno/events/#
#                          read  pdsno/#
#   monitor                read  pdsno/status/+, pdsno/events/#
#
# A refused QoS 1 publish gets PUBACK reason 0x87 (Not authorized) under MQTT v5; the publisher logs and
# audits it (MQTT_PUBLISH_REFUSED) and drops the message. A subscription is never refused: Mosquitto 2.0
# answers SUBACK "Granted QoS" (0x00/0x01, not 0x87) also for a filter the user may not read, and then
# delivers only the messages this ACL lets the user read.
# Reload after a change: kill -HUP <broker pid>.
"""


def render_acl(accounts: Sequence[BrokerAccount]) -> str:
    """The text of the ACL file for ``accounts``."""
    _check_accounts(accounts)
    lines = [_ACL_HEADER]
    for account in sorted(accounts, key=lambda a: a.username):
        region = f" region={account.region}" if account.region else ""
        lines.append(f"# {account.role}{region}")
        lines.append(f"user {account.username}")
        lines.extend(f"topic {access} {topic}" for access, topic in acl_rules(account, accounts))
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# configuration


def _conf_path(path: Path) -> str:
    text = str(path)
    if any(ch.isspace() for ch in text) or "#" in text:
        raise ConfigError(f"{text!r}: Mosquitto configuration paths must not contain spaces or '#'")
    return text


def _check_listeners(listeners: Sequence[Listener]) -> None:
    if not listeners:
        raise ConfigError("a broker needs at least one listener")
    ports: set[int] = set()
    for listener in listeners:
        if not 1 <= listener.port <= 65535:
            raise ConfigError(f"listener port {listener.port} is out of range")
        if listener.port in ports:
            raise ConfigError(f"two listeners on port {listener.port}")
        ports.add(listener.port)
        tls_files = (listener.ca, listener.cert, listener.key)
        if any(f is not None for f in tls_files):
            if not all(f is not None for f in tls_files):
                raise ConfigError(f"TLS listener on port {listener.port} needs ca, cert and key")
            if listener.insecure:
                raise ConfigError(f"listener on port {listener.port}: insecure is for plain listeners only")
            for f in tls_files:
                assert f is not None
                if not f.is_file():
                    raise ConfigError(f"TLS listener on port {listener.port}: {f} does not exist")
        elif not listener.insecure:
            raise ConfigError(
                f"listener on port {listener.port} has no TLS files; plain MQTT needs insecure=True "
                "(development only)"
            )
        if listener.bind is not None and (not listener.bind or any(ch.isspace() for ch in listener.bind)):
            raise ConfigError(f"listener on port {listener.port}: bad bind address {listener.bind!r}")


def _resolve_user(run_as: str | None) -> tuple[str, pwd.struct_passwd | None]:
    """(user for the ``user`` line, passwd entry to chown to or None)."""
    me = pwd.getpwuid(os.geteuid())
    if run_as is None or run_as == me.pw_name:
        return me.pw_name, None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ConfigError(f"broker user {run_as!r} does not exist on this host") from None
    if os.geteuid() != 0:
        raise ConfigError(
            f"only root can prepare files for broker user {run_as!r}; run as root or leave run_as unset"
        )
    return run_as, entry


def _copy_secret(src: Path, dst: Path) -> None:
    write_secret_file(dst, src.read_bytes())


def _copy_public(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def write_broker_files(
    directory: Path,
    *,
    listeners: Sequence[Listener],
    accounts: Sequence[BrokerAccount],
    persistence_dir: Path | None = None,
    run_as: str | None = None,
    autosave_interval_s: int = 60,
    max_queued_messages: int = 10_000,
    persistent_client_expiration: str = "14d",
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``tls/`` into ``directory`` (see the module doc).

    ``autosave_interval_s``: how often the in-memory state (sessions, queued and retained messages) is
    saved; it is always saved on a clean shutdown. ``max_queued_messages``: QoS 1 messages kept per
    offline persistent client (Mosquitto's default, 1000, is low for a regional controller that is away
    while its local controllers report). ``persistent_client_expiration`` removes sessions of MQTT 3 clients
    that never come back (MQTT 5 clients set their own session expiry).
    Raises :class:`pdsno.errors.ConfigError` for an invalid listener, account or path.
    """
    _check_listeners(listeners)
    _check_accounts(accounts)
    if not 0 <= autosave_interval_s <= 86_400:
        raise ConfigError("autosave_interval_s must be between 0 and 86400")
    if max_queued_messages < 0:
        raise ConfigError("max_queued_messages must not be negative")
    if re.fullmatch(r"[1-9][0-9]*[hdwmy]", persistent_client_expiration) is None:
        raise ConfigError("persistent_client_expiration must look like 14d (units h d w m y)")
    user, owner = _resolve_user(run_as)

    directory = Path(directory).absolute()
    persistence = (Path(persistence_dir) if persistence_dir is not None else directory / "data").absolute()
    tls_dir = directory / "tls"
    files = BrokerFiles(
        directory=directory,
        config=directory / "mosquitto.conf",
        password_file=directory / "passwd",
        acl_file=directory / "acl",
        persistence_dir=persistence,
        tls_dir=tls_dir,
        user=user,
    )
    for path in (files.config, files.password_file, files.acl_file, persistence, tls_dir):
        _conf_path(path)
    for path in (directory, persistence, tls_dir):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)

    listener_lines: list[str] = []
    for listener in listeners:
        bind = f" {listener.bind}" if listener.bind else ""
        listener_lines += ["", f"listener {listener.port}{bind}", "protocol mqtt"]
        if listener.is_tls:
            assert listener.ca is not None
            assert listener.cert is not None
            assert listener.key is not None
            stem = tls_dir / f"listener-{listener.port}"
            ca, cert, key = (
                stem.with_name(f"{stem.name}-{n}") for n in ("ca.crt", "server.crt", "server.key")
            )
            _copy_public(listener.ca, ca)
            _copy_public(listener.cert, cert)
            _copy_secret(listener.key, key)
            listener_lines += [
                f"cafile {ca}",
                f"certfile {cert}",
                f"keyfile {key}",
                "require_certificate false",
                "tls_version tlsv1.2",
            ]
        else:
            logger.warning(
                "rendering a plain (unencrypted) MQTT listener: passwords cross the network in clear",
                extra={"port": listener.port, "bind": listener.bind},
            )
            listener_lines.insert(-2, "# INSECURE: plain MQTT, development only (insecure=True)")

    conf = "\n".join(
        [
            "# PDSNO Mosquitto configuration, rendered by pdsno.transport.broker; re-render, do not edit.",
            f"# Start with: mosquitto -c {files.config}",
            "#",
            "# Authentication and access control are global (per_listener_settings false): every listener uses",
            "# the same password file and ACL, and anonymous clients are refused.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {files.password_file}",
            f"acl_file {files.acl_file}",
            "",
            "# The broker runs as this user (a root-started mosquitto switches to it at start-up); it owns the",
            "# password file, the ACL, the TLS key (all 0600) and the persistence directory.",
            f"user {user}",
            "",
            "# Sessions, queued QoS 1 messages and retained messages survive a broker restart.",
            "persistence true",
            f"persistence_location {persistence}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {autosave_interval_s}",
            f"persistent_client_expiration {persistent_client_expiration}",
            f"max_queued_messages {max_queued_messages}",
            "",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            *listener_lines,
            "",
        ]
    )
    passwd = "".join(f"{a.username}:{hash_password(a.password)}\n" for a in accounts)
    write_secret_file(files.password_file, passwd.encode())
    write_secret_file(files.acl_file, render_acl(accounts).encode())
    write_secret_file(files.config, conf.encode())

    if owner is not None:
        for path in (directory, persistence, tls_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        for path in (files.config, files.password_file, files.acl_file, *tls_dir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        for path in persistence.iterdir():
            os.chown(path, owner.pw_uid, owner.pw_gid)
    return files
