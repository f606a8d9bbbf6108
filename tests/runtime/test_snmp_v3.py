"""The SNMPv3 client (:mod:`pdsno.snmp.v3`, :class:`~pdsno.snmp.V3Session`): USM users as pysnmp takes
them, pysnmp's answers as :mod:`pdsno.snmp.errors`, and a session against the net-snmp agent of a one-device
probe lab (:mod:`tests.runtime.probe_lab`, prefix ``pdsnot-``), run inside the lab's scanner namespace.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from pysnmp.proto import errind
from pysnmp.proto.api import v2c

from pdsno.snmp import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SnmpAuthFailure,
    SnmpPduError,
    SnmpTimeout,
    SnmpV3Credential,
    V3Client,
    V3Session,
    hlapi,
    timed_out,
    usm_user,
)
from tests.runtime import probe_lab
from tests.runtime.probe_lab import V3_USER, ProbeLab

V3_DEVICE = "198.19.250.23"


def test_every_protocol_name_is_a_pysnmp_protocol() -> None:
    hl = hlapi()
    known = {value for name, value in vars(hl).items() if name.startswith("usm")}
    for auth in AUTH_PROTOCOLS:
        for priv in PRIV_PROTOCOLS:
            user = usm_user(SnmpV3Credential("ops", "authpass1", "privpass1", auth, priv))
            assert user.authentication_protocol in known
            if priv == "none":
                assert user.security_level == "authNoPriv"
            else:
                assert user.security_level == "authPriv"
                assert user.privacy_protocol in known
    user = usm_user(SnmpV3Credential("ops", "authpass1", "privpass1"))
    assert user.authentication_protocol == hl.usmHMACSHAAuthProtocol
    assert user.privacy_protocol == hl.usmAesCfb128Protocol


def _answer(indication: Any = None, status: int = 0, index: int = 0) -> tuple[Any, ...]:
    """What pysnmp's get_cmd returns: (errorIndication, errorStatus, errorIndex, varbinds)."""
    return (
        indication,
        v2c.Integer(status),
        v2c.Integer(index),
        [(v2c.ObjectIdentifier("1.3.6.1.2.1.1.5.0"), v2c.OctetString(b"r1"))],
    )


def test_pysnmp_answers_become_plain_values_or_snmp_errors() -> None:
    session = V3Session(None, None, SnmpV3Credential("ops", "authpass1", "privpass1"))
    assert session._varbinds(_answer()) == [((1, 3, 6, 1, 2, 1, 1, 5, 0), b"r1")]
    assert timed_out(errind.RequestTimedOut())
    assert not timed_out(errind.UnknownUserName())
    with pytest.raises(SnmpTimeout):
        session._varbinds(_answer(errind.RequestTimedOut()))
    with pytest.raises(SnmpAuthFailure):
        session._varbinds(_answer(errind.UnknownUserName()))
    with pytest.raises(SnmpPduError) as caught:
        session._varbinds(_answer(status=5, index=1))
    assert caught.value.status == 5


async def test_a_client_closes_whether_or_not_it_built_its_engine() -> None:
    unused = V3Client(port=161, timeout=1.0, retries=0)
    await unused.close()
    client = V3Client(port=161, timeout=1.0, retries=0)
    engine = await client.engine()
    assert await client.engine() is engine  # one engine per client
    await client.close()
    warming = V3Client(port=161, timeout=1.0, retries=0)
    warming.warm_up()
    await warming.close()  # while the engine may still be being built


# ------------------------------------------------------------------------------------------- the lab

SESSION = textwrap.dedent(
    """
    import asyncio, json, sys
    from pdsno.snmp import SnmpFailure, SnmpV3Credential, V3Client, V3Session

    async def main(ip, port, credential):
        client = V3Client(port=int(port), timeout=0.5, retries=0)
        client.warm_up()
        try:
            session = await V3Session.open(client, ip, SnmpV3Credential.parse(credential))
            try:
                name = await session.get([(1, 3, 6, 1, 2, 1, 1, 5, 0)])
                rows = await session.bulk([(1, 3, 6, 1, 2, 1, 1, 5)], [(1, 3, 6, 1, 2, 1, 2, 2, 1, 2)], 2)
            except SnmpFailure as exc:
                return {"failure": exc.kind}
            return {"name": name[0][1].decode(), "rows": len(rows), "requests": session.requests}
        finally:
            await client.close()

    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
    """
)


@pytest.fixture(scope="module")
def lab() -> Iterator[ProbeLab]:
    reason = probe_lab.unavailable()
    if reason:
        pytest.skip(reason)
    (v3,) = [d for d in probe_lab.default_devices() if d.addresses == [V3_DEVICE]]
    with probe_lab.probe_lab([v3]) as lab:
        yield lab


def session(lab: ProbeLab, credential: str, port: int = 161) -> dict[str, Any]:
    proc = lab.exec_in_scanner(sys.executable, "-c", SESSION, V3_DEVICE, str(port), credential, timeout=30)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_lab_v3_session_gets_and_walks(lab: ProbeLab) -> None:
    result = session(lab, f"{V3_USER.user}:{V3_USER.auth_key}:{V3_USER.priv_key}")
    assert result == {"name": "lab-v3", "rows": 3, "requests": 2}  # sysName, then two ifDescr rows


def test_lab_v3_refusals_and_silence(lab: ProbeLab) -> None:
    assert session(lab, f"{V3_USER.user}:wrong-auth-pass:{V3_USER.priv_key}") == {"failure": "auth-failed"}
    assert session(lab, f"nobody:{V3_USER.auth_key}:{V3_USER.priv_key}") == {"failure": "auth-failed"}
    credential = f"{V3_USER.user}:{V3_USER.auth_key}:{V3_USER.priv_key}"
    assert session(lab, credential, port=1161) == {"failure": "timeout"}  # no agent on that port
