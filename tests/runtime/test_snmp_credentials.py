"""SNMP credentials (:mod:`pdsno.snmp.credentials`): the ``USER:AUTHPASS:PRIVPASS`` form, its checks, and
that no secret is ever printed."""

from __future__ import annotations

import pytest

from pdsno.errors import PdsnoError
from pdsno.snmp import SnmpCredentials, SnmpV3Credential


def test_snmpv3_credential_parsing() -> None:
    cred = SnmpV3Credential.parse("ops:authpass1:privpass:with:colons")
    assert (cred.user, cred.auth_key, cred.priv_key) == ("ops", "authpass1", "privpass:with:colons")
    assert (cred.auth_protocol, cred.priv_protocol) == ("sha", "aes")
    cred = SnmpV3Credential.parse("ops:authpass1:privpass1:SHA256:aes256")
    assert (cred.auth_protocol, cred.priv_protocol) == ("sha256", "aes256")
    assert "authpass1" not in repr(cred)
    assert "pub" not in repr(SnmpCredentials(("pub",), (cred,)))
    for bad in (
        "ops:short:privpass1",
        "ops",
        ":authpass1:privpass1",
        "ops:authpass1:",
        "ops:authpass1:short",
    ):
        with pytest.raises(PdsnoError):
            SnmpV3Credential.parse(bad)
