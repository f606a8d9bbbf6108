"""SNMP credentials (:mod:`pdsno.snmp.credentials`): the ``USER:AUTHPASS:PRIVPASS`` form, its checks, and
that no secret is ever printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdsno.errors import ConfigError, PdsnoError
from pdsno.snmp import SnmpCredentials, SnmpV3Credential, read_secret_lines


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


def test_secret_lines_skip_blanks_and_comments_and_name_the_key(tmp_path: Path) -> None:
    secrets = tmp_path / "communities"
    secrets.write_text(
        "# lab communities\n  public  \n\n    # indented comment\nops-write\n", encoding="utf-8"
    )
    assert read_secret_lines(secrets, "discovery.snmp_communities_file") == ["public", "ops-write"]
    with pytest.raises(ConfigError, match=r"discovery\.snmp_v3_file .*missing: No such file"):
        read_secret_lines(tmp_path / "missing", "discovery.snmp_v3_file")
    secrets.write_bytes(b"public\n\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        read_secret_lines(secrets, "changes.snmp_write_communities_file")
    assert "public" not in str(caught.value)
