"""SNMP credentials: v2c communities and SNMPv3 USM users, and the ``USER:AUTHPASS:PRIVPASS`` form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pdsno.errors import ConfigError, PdsnoError, ReasonCode

AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("des", "3des", "aes", "aes192", "aes256", "aes192c", "aes256c", "none")


@dataclass(frozen=True)
class SnmpV3Credential:
    """One USM user; keys are pass phrases (at least 8 characters, as RFC 3414 and net-snmp require)."""

    user: str
    auth_key: str = field(repr=False)
    priv_key: str | None = field(default=None, repr=False)
    auth_protocol: str = "sha"
    priv_protocol: str = "aes"

    def __post_init__(self) -> None:
        if not self.user:
            raise PdsnoError("SNMPv3 credential without a user name", code=ReasonCode.INVALID_REQUEST)
        if self.auth_protocol not in AUTH_PROTOCOLS:
            raise PdsnoError(
                f"SNMPv3 auth protocol {self.auth_protocol!r} is not one of {', '.join(AUTH_PROTOCOLS)}",
                code=ReasonCode.INVALID_REQUEST,
            )
        if self.priv_protocol not in PRIV_PROTOCOLS:
            raise PdsnoError(
                f"SNMPv3 privacy protocol {self.priv_protocol!r} is not one of {', '.join(PRIV_PROTOCOLS)}",
                code=ReasonCode.INVALID_REQUEST,
            )
        keys = [self.auth_key] + ([self.priv_key] if self.priv_protocol != "none" else [])
        if any(key is None or len(key) < 8 for key in keys):
            raise PdsnoError(
                f"SNMPv3 user {self.user!r}: pass phrases must have at least 8 characters",
                code=ReasonCode.INVALID_REQUEST,
            )

    @classmethod
    def parse(cls, text: str) -> SnmpV3Credential:
        """``USER:AUTHPASS:PRIVPASS`` (SHA + AES-128), optionally ``...:AUTHPROTO:PRIVPROTO``.

        A trailing pair is taken as protocols only when both are known protocol names; PRIVPROTO ``none``
        (with an empty PRIVPASS) is an authNoPriv user.
        """
        parts = text.split(":")
        auth_p, priv_p = "sha", "aes"
        if len(parts) >= 5 and parts[-2].lower() in AUTH_PROTOCOLS and parts[-1].lower() in PRIV_PROTOCOLS:
            auth_p, priv_p = parts[-2].lower(), parts[-1].lower()
            parts = parts[:-2]
        if len(parts) < 3:
            raise PdsnoError(
                "SNMPv3 credentials are USER:AUTHPASS:PRIVPASS[:AUTHPROTO:PRIVPROTO]",
                code=ReasonCode.INVALID_REQUEST,
            )
        user, auth, priv = parts[0], parts[1], ":".join(parts[2:])
        return cls(user, auth, priv or None, auth_p, priv_p)


@dataclass(frozen=True)
class SnmpCredentials:
    communities: tuple[str, ...] = ()
    v3: tuple[SnmpV3Credential, ...] = ()

    def __repr__(self) -> str:  # never print secrets
        return f"SnmpCredentials(communities=<{len(self.communities)}>, v3={[c.user for c in self.v3]})"

    @property
    def empty(self) -> bool:
        return not self.communities and not self.v3


def read_secret_lines(path: Path, what: str) -> list[str]:
    """The credentials in a secrets file, one a line (a community, or ``USER:AUTHPASS:PRIVPASS``).

    Blank lines and lines starting with ``#`` (after indentation) are skipped; surrounding blanks are
    stripped. ``what`` names the configuration key in the error (:class:`ConfigError`) when the file cannot
    be read; the error never holds the file's content.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]
