"""pysnmp's v3arch engine: SNMPv3 USM users, and what the change executor speaks v2c with as well.

Its per-target set-up is expensive (importing pysnmp and building an engine cost ~0.25 s), so discovery
uses it only for hosts where no community worked: v3-only agents are few.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import Any

from pdsno.snmp.credentials import SnmpV3Credential


def hlapi() -> Any:
    """pysnmp's v3arch asyncio API, imported on first use (pysnmp ships no type information)."""
    return importlib.import_module("pysnmp.hlapi.v3arch.asyncio")


def new_engine() -> Any:
    return hlapi().SnmpEngine()


def usm_user(credential: SnmpV3Credential) -> Any:
    """The pysnmp auth data of one USM user."""
    auth = hlapi()

    auth_map = {
        "md5": auth.usmHMACMD5AuthProtocol,
        "sha": auth.usmHMACSHAAuthProtocol,
        "sha224": auth.usmHMAC128SHA224AuthProtocol,
        "sha256": auth.usmHMAC192SHA256AuthProtocol,
        "sha384": auth.usmHMAC256SHA384AuthProtocol,
        "sha512": auth.usmHMAC384SHA512AuthProtocol,
    }
    priv_map = {
        "des": auth.usmDESPrivProtocol,
        "3des": auth.usm3DESEDEPrivProtocol,
        "aes": auth.usmAesCfb128Protocol,
        "aes192": auth.usmAesBlumenthalCfb192Protocol,
        "aes256": auth.usmAesBlumenthalCfb256Protocol,
        "aes192c": auth.usmAesCfb192Protocol,
        "aes256c": auth.usmAesCfb256Protocol,
        "none": auth.usmNoPrivProtocol,
    }
    priv = credential.priv_protocol
    return auth.UsmUserData(
        credential.user,
        authKey=credential.auth_key,
        privKey=None if priv == "none" else credential.priv_key,
        authProtocol=auth_map[credential.auth_protocol],
        privProtocol=priv_map[priv],
    )


def timed_out(error_indication: Any) -> bool:
    """Whether pysnmp's errorIndication says no answer came (rather than a refusal)."""
    errind = importlib.import_module("pysnmp.proto.errind")
    return isinstance(error_indication, errind.RequestTimedOut)


class V3Client:
    """One pysnmp engine, built off the event loop on first use, and the UDP targets it sends to."""

    def __init__(self, *, port: int, timeout: float, retries: int) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self._engine: Any = None
        self._ready: asyncio.Task[Any] | None = None

    def warm_up(self) -> None:
        """Start building the engine now, so that it is there when the first host needs it."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(asyncio.to_thread(new_engine))

    async def engine(self) -> Any:
        self.warm_up()
        assert self._ready is not None
        if self._engine is None:
            self._engine = await self._ready
        return self._engine

    async def target(self, ip: str) -> Any:
        """pysnmp's UDP target for ``ip``, with this client's port, timeout and retries."""
        return await hlapi().UdpTransportTarget.create(
            (ip, self.port), timeout=self.timeout, retries=self.retries
        )

    async def close(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ready
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.close_dispatcher()
            self._engine = None
