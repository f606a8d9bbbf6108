"""Pytest plugin: real Mosquitto brokers on 127.0.0.1 with TLS, a password file, the PDSNO ACL and persistence.

Register it from ``tests/conftest.py``::

    pytest_plugins = ["tests.runtime.postgres_server", "tests.runtime.mosquitto_server"]

Fixtures (function-scoped: every test gets a fresh broker, sessions and retained messages do not leak):

* ``mosquitto_broker``: a running :class:`MosquittoBroker` with the :data:`DEFAULT_ACCOUNTS`.
* ``mosquitto_factory``: ``mosquitto_factory(accounts=..., run_as=...)`` makes more (or differently
  configured) brokers; all are stopped at teardown.

Classes (for module-scoped deployments that bring their own PKI and accounts):

* :class:`MosquittoServer` ``(directory, *, ca, cert, key, accounts, run_as=None)``: rendered at
  construction, started by :meth:`~MosquittoServer.start`; stop it yourself (``stop()``/``close()``).
* :class:`MosquittoBroker` ``(basedir, accounts=DEFAULT_ACCOUNTS)``: the same with its own throwaway CA,
  started at construction (what the fixtures use).

A broker is the real ``mosquitto -c <dir>/mosquitto.conf`` rendered by
:func:`pdsno.transport.broker.write_broker_files`: a TLS listener on a free port of 127.0.0.1 with a server
certificate from a throwaway deployment CA (:mod:`pdsno.security.pki`) for ``127.0.0.1`` and ``localhost``,
``allow_anonymous false``, one account per controller and persistence on. ``stop()`` sends SIGTERM (the
broker saves its database), ``kill()`` SIGKILL (a crash), ``start()`` brings it back on the same port with
the same database, ``reload()`` sends SIGHUP (re-reads password file and ACL after :meth:`add_account`).

Only brokers started here are ever signalled, by the PID of the process this module spawned. They are
stopped at fixture teardown and, as a backstop, at interpreter exit.

:func:`read_with_mosquitto_sub` reads messages with the real ``mosquitto_sub`` CLI, the way an operator (or
the integration test) reads heartbeats.
"""

from __future__ import annotations

import atexit
import binascii
import contextlib
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from pdsno.security.pki import create_ca, issue_certificate
from pdsno.transport.broker import BrokerAccount, BrokerFiles, Listener, write_broker_files
from tests.runtime.ports import free_port

HOST = "127.0.0.1"
MOSQUITTO_SUB_TIMEOUT_EXIT = 27
"""``mosquitto_sub -W`` exit status when the time ran out before ``-C`` messages arrived."""

DEFAULT_ACCOUNTS: tuple[tuple[str, str, str | None], ...] = (
    ("global_cntl_1", "global", None),
    ("regional_cntl_zone-a_1", "regional", "zone-a"),
    ("local_cntl_zone-a_1", "local", "zone-a"),
    ("local_cntl_zone-a_2", "local", "zone-a"),
    ("regional_cntl_zone-b_1", "regional", "zone-b"),
    ("local_cntl_zone-b_1", "local", "zone-b"),
    ("monitor", "monitor", None),
)
"""(username, role, region) of the accounts every default broker has; passwords are random per broker."""

_LIVE: set[MosquittoServer] = set()


class MosquittoError(RuntimeError):
    """The broker could not be set up or driven."""


def _find_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise MosquittoError(
            f"{name} not found; run scripts/bootstrap.sh (apt packages mosquitto, mosquitto-clients)"
        )
    return found


def _account(spec: BrokerAccount | tuple[str, str, str | None]) -> BrokerAccount:
    if isinstance(spec, BrokerAccount):
        return spec
    username, role, region = spec
    return BrokerAccount(username, secrets.token_urlsafe(18), role, region)  # type: ignore[arg-type]


class MosquittoServer:
    """One real Mosquitto broker rendered into ``directory`` from TLS files you give it; not started yet.

    ``MosquittoServer(dir, ca=..., cert=..., key=..., accounts=[...])`` then :meth:`start`. The TLS listener
    binds 127.0.0.1 on ``port`` (default: a free one, kept across restarts).
    """

    host = HOST

    def __init__(
        self,
        directory: Path,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        accounts: Sequence[BrokerAccount | tuple[str, str, str | None]],
        run_as: str | None = None,
        autosave_interval_s: int = 60,
        port: int | None = None,
        host: str = HOST,
        netns: str | None = None,
    ) -> None:
        self._binary = _find_binary("mosquitto")
        self._owner_pid = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._ever_started = False
        self.directory = Path(directory)
        self.ca: Path = Path(ca)
        self.cert = Path(cert)
        self.key = Path(key)
        self.run_as = run_as
        self.autosave_interval_s = autosave_interval_s
        # Inside a lab namespace the broker binds the namespace's address; the port need not be free
        # in the root namespace, but picking one there is as good as any.
        self.host = host
        self.netns = netns
        self.port = port or free_port()
        self.accounts: dict[str, BrokerAccount] = {}
        for spec in accounts:
            account = _account(spec)
            self.accounts[account.username] = account
        self.files: BrokerFiles = self._render()
        self.log_file = self.directory / "mosquitto.log"
        self.start_seconds: list[float] = []

    # -- public API ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def account(self, username: str) -> BrokerAccount:
        return self.accounts[username]

    def credentials(self, username: str) -> tuple[str, str]:
        account = self.accounts[username]
        return account.username, account.password

    def add_account(self, username: str, role: str, region: str | None = None) -> BrokerAccount:
        """Add an account (random password), re-render password file and ACL, reload a running broker."""
        account = _account((username, role, region))
        self.accounts[username] = account
        self.files = self._render()
        self.reload()
        return account

    def start(self, timeout: float = 10.0) -> None:
        """Start ``mosquitto -c`` (again: same port, same database) and wait until it accepts connections.

        On the very first start a port lost to another process is replaced by a new free one.
        """
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self._ever_started = True
                return
            except MosquittoError:
                if self._ever_started or attempt == 2 or "Address already in use" not in self.log_tail(5):
                    raise
                self.port = free_port()
                self.files = self._render()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the broker saves its persistence database), then SIGKILL after ``timeout``. Idempotent."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-read the password file and the ACL."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.stop()
        self._close_log()
        _LIVE.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    # -- internals -------------------------------------------------------------------------

    def _start_once(self, timeout: float) -> None:
        if self.running:
            raise MosquittoError("the broker is already running")
        started = time.monotonic()
        self._close_log()
        self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self._proc = subprocess.Popen(
            [*self.netns_argv(), self._binary, "-c", str(self.files.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,  # a Ctrl-C to pytest does not reach it first; we stop it ourselves
        )
        _LIVE.add(self)
        deadline = started + timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise MosquittoError(f"mosquitto exited at start-up:\n{self.log_tail()}")
            if self._listening():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise MosquittoError(
                    f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s\n{self.log_tail()}"
                )
            time.sleep(0.02)
        self.start_seconds.append(time.monotonic() - started)

    def netns_argv(self) -> list[str]:
        """The prefix that runs a command where the broker lives (nothing for the root namespace)."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _listening(self) -> bool:
        if self.netns is None:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return True
            return False
        probe = subprocess.run(
            [*self.netns_argv(), "ss", "-Hltn", f"sport = :{self.port}"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return bool(probe.stdout.strip())

    def _render(self) -> BrokerFiles:
        return write_broker_files(
            self.directory,
            listeners=[
                Listener.tls(ca=self.ca, cert=self.cert, key=self.key, port=self.port, bind=self.host)
            ],
            accounts=list(self.accounts.values()),
            run_as=self.run_as,
            autosave_interval_s=self.autosave_interval_s,
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        if os.getpid() != self._owner_pid:  # a forked child must not stop the parent's broker
            return
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(10)
        self._proc = None

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


class MosquittoBroker(MosquittoServer):
    """A :class:`MosquittoServer` with its own throwaway deployment CA and server certificate (for
    ``127.0.0.1`` and ``localhost``) under ``basedir/pki``, rendered into ``basedir/broker`` and started."""

    def __init__(
        self,
        basedir: Path,
        accounts: Sequence[BrokerAccount | tuple[str, str, str | None]] = DEFAULT_ACCOUNTS,
        *,
        run_as: str | None = None,
        autosave_interval_s: int = 60,
    ) -> None:
        self.basedir = Path(basedir)
        self.pki_dir = self.basedir / "pki"
        ca = create_ca(self.pki_dir, common_name="PDSNO test CA")
        self.server_cert = issue_certificate(ca, self.pki_dir, "broker", [HOST, "localhost"])
        super().__init__(
            self.basedir / "broker",
            ca=ca.cert,
            cert=self.server_cert.cert,
            key=self.server_cert.key,
            accounts=accounts,
            run_as=run_as,
            autosave_interval_s=autosave_interval_s,
        )
        self.start()


def _stop_all() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.close()


atexit.register(_stop_all)


def read_with_mosquitto_sub(
    broker: MosquittoServer,
    topic: str,
    count: int = 1,
    timeout: float = 10.0,
    username: str = "monitor",
    password: str | None = None,
) -> list[bytes]:
    """Subscribe with the real ``mosquitto_sub`` (TLS, verifying the broker against the deployment CA) and
    return the payloads of the first ``count`` messages, or of those that arrived within ``timeout``.

    ``password`` defaults to the broker's password for ``username``. Raises :class:`MosquittoError` if
    ``mosquitto_sub`` fails for another reason than the timeout (refused login, TLS error).
    """
    if password is None:
        password = broker.account(username).password
    wait_s = max(1, math.ceil(timeout))
    cmd = [
        *broker.netns_argv(),
        _find_binary("mosquitto_sub"),
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "--cafile",
        str(broker.ca),
        "-u",
        username,
        "-P",
        password,
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-t",
        topic,
        "-C",
        str(count),
        "-W",
        str(wait_s),
        "-F",
        "%x",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=wait_s + 10, check=False
    )
    if proc.returncode not in (0, MOSQUITTO_SUB_TIMEOUT_EXIT):
        stderr = proc.stderr.decode(errors="replace").strip()
        raise MosquittoError(f"mosquitto_sub -t {topic} failed with exit code {proc.returncode}: {stderr}")
    payloads: list[bytes] = []
    for line in proc.stdout.decode().splitlines():
        try:
            payloads.append(binascii.unhexlify(line.strip()))
        except binascii.Error:
            continue  # "Timed out" or other chatter
    return payloads


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoBroker]]:
    """Make brokers: ``mosquitto_factory(accounts=..., run_as=..., basedir=...)``; all stopped at teardown."""
    brokers: list[MosquittoBroker] = []

    def make(**kwargs: Any) -> MosquittoBroker:
        basedir = kwargs.pop("basedir", None) or tmp_path_factory.mktemp("mosquitto")
        try:
            broker = MosquittoBroker(basedir, **kwargs)
        except MosquittoError as exc:
            pytest.fail(str(exc), pytrace=False)
        brokers.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.close()


@pytest.fixture
def mosquitto_broker(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A running broker with :data:`DEFAULT_ACCOUNTS` (TLS on a free 127.0.0.1 port, ACL, persistence)."""
    return mosquitto_factory()
