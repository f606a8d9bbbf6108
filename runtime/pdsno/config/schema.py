"""The configuration's schema: one strict, frozen pydantic model per section and the root
:class:`ControllerConfig`, with the defaults that depend on other keys filled in while validating."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pdsno.changes.classify import DEFAULT_RULES, ImmutableRule, Rule
from pdsno.changes.executors import ExecutorSettings
from pdsno.config.ids import SLUG_RE, Role, controller_id_matches, id_form, is_temp_id
from pdsno.errors import ConfigError
from pdsno.nib.models import Sensitivity

DEFAULT_CONFIG_PATH: Final = Path("/etc/pdsno/controller.yml")
DEFAULT_DATA_DIR: Final = Path("/var/lib/pdsno")
MQTT_PORT_PLAIN: Final = 1883
MQTT_PORT_TLS: Final = 8883


DEFAULT_REST_PORTS: Final[Mapping[Role, int]] = {Role.GLOBAL: 8001, Role.REGIONAL: 8002, Role.LOCAL: 8100}
"""REST port when ``rest.port`` is not set (decisions C13: dev defaults GC 8001, RC 8002+, LC 8100+)."""


# --------------------------------------------------------------------------------------------------
# reusable field types


class _Problems(ValueError):
    """Several problems found by one validator, each with a key relative to the model that raised it."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in self.problems))


def _not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value)) if value.is_absolute() else value


ConfigPath = Annotated[Path, BeforeValidator(_not_blank), AfterValidator(_resolve_path)]
"""A filesystem path; ``~`` expanded, relative paths taken relative to the configuration file's directory."""


# MQTT topics put regions beside these words (pdsno/policy/global, pdsno/events/system).
RESERVED_REGIONS = frozenset({"global", "system"})


def _check_slug(value: str) -> str:
    if SLUG_RE.fullmatch(value) is None:
        raise ValueError(
            "must be 1 to 63 characters, letters, digits, '_' or '-', starting with a letter or a digit"
        )
    if value.lower() in RESERVED_REGIONS:
        raise ValueError(f"{value!r} is reserved (MQTT topics use it); choose another region name")
    return value


Slug = Annotated[str, AfterValidator(_check_slug)]


def _check_host(value: str) -> str:
    if not value or any(ch.isspace() for ch in value) or "/" in value:
        raise ValueError("must be a host name or an IP address (no scheme, path or spaces)")
    return value


Host = Annotated[str, AfterValidator(_check_host)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# sections


class ParentSection(_Section):
    """Where this controller's parent (the GC for a regional controller, the RC for a local one) listens."""

    id: str | None = None
    url: str

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a malformed port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http:// or https:// URL with a host, e.g. https://gc.example.net:8443"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (controllers authenticate with keys, not passwords)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or a fragment")
        return value.rstrip("/")


class ControllerSection(_Section):
    """Who this controller is and where it sits in the hierarchy."""

    id: str
    role: Annotated[Role, BeforeValidator(_lower)]
    region: Slug | None = None
    parent: ParentSection | None = None
    data_dir: ConfigPath = DEFAULT_DATA_DIR

    @property
    def is_temporary(self) -> bool:
        """True while the controller still uses its pre-admission ``temp-<uuid>`` id."""
        return is_temp_id(self.id)

    @model_validator(mode="after")
    def _check_hierarchy(self) -> ControllerSection:
        problems: list[tuple[str, str]] = []
        role = self.role
        if role is Role.GLOBAL:
            if self.region is not None:
                problems.append(("region", "must not be set for a global controller (it spans all regions)"))
            if self.parent is not None:
                problems.append(("parent", "must not be set for a global controller (it is the root)"))
        else:
            if self.region is None:
                problems.append(("region", f"is required for a {role} controller"))
            if self.parent is None:
                what = "the global controller" if role is Role.REGIONAL else "the regional controller"
                problems.append(("parent", f"is required for a {role} controller: the URL of {what}"))
            elif self.parent.id is not None and self.region is not None:
                parent_role = Role.GLOBAL if role is Role.REGIONAL else Role.REGIONAL
                if not controller_id_matches(self.parent.id, parent_role, self.region, allow_temp=False):
                    problems.append(
                        (
                            "parent.id",
                            f"{self.parent.id!r} is not a {parent_role} controller id of the form "
                            f"{id_form(parent_role, self.region)}",
                        )
                    )
        if (role is Role.GLOBAL or self.region is not None) and not controller_id_matches(
            self.id, role, self.region
        ):
            problems.append(
                (
                    "id",
                    f"{self.id!r} is not a valid {role} controller id: expected "
                    f"{id_form(role, self.region)} or, before admission, temp-<uuid4>",
                )
            )
        if problems:
            raise _Problems(problems)
        return self


class NIBSection(_Section):
    """The Network Information Base store."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: ConfigPath | None = None
    dsn: str | None = None
    pool_size: int = Field(default=4, ge=1, le=64)
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a URL starting with postgresql:// or postgres://")
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> NIBSection:
        if self.backend == "postgresql" and self.dsn is None:
            raise _Problems([("dsn", "is required when backend is postgresql")])
        if self.backend == "sqlite" and self.path is None:
            raise _Problems([("path", "is required when backend is sqlite")])
        return self

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file; raises :class:`ConfigError` if the backend is not SQLite."""
        if self.backend != "sqlite" or self.path is None:
            raise ConfigError(f"nib.backend is {self.backend}, there is no SQLite file")
        return self.path


class TLSSection(_Section):
    """TLS files for one transport. Plain transport only with ``insecure: true`` (development only)."""

    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    ca: ConfigPath | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _check_pair(self) -> TLSSection:
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise _Problems([(missing, "cert and key must be set together")])
        return self


class RestSection(_Section):
    """The controller's REST endpoint (East/West API, and the northbound API on the GC)."""

    host: Host = "127.0.0.1"
    port: Port
    tls: TLSSection = Field(default_factory=TLSSection)

    @model_validator(mode="after")
    def _check_tls(self) -> RestSection:
        if not self.tls.insecure:
            missing = [name for name in ("cert", "key", "ca") if getattr(self.tls, name) is None]
            if missing:
                raise _Problems(
                    [(f"tls.{name}", "is required unless tls.insecure is true") for name in missing]
                )
        return self

    @property
    def scheme(self) -> str:
        return "http" if self.tls.insecure else "https"


class MQTTSection(_Section):
    """The MQTT broker this controller connects to (policy, events, discovery reports, heartbeats)."""

    host: Host = "127.0.0.1"
    port: Port
    username: str | None = None
    password_file: ConfigPath | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    heartbeat_interval_s: int = Field(default=10, ge=1, le=3600)
    outbox_dir: ConfigPath
    tls: TLSSection = Field(default_factory=TLSSection)

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out to connect without a user name)")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> MQTTSection:
        problems: list[tuple[str, str]] = []
        if self.password_file is not None and self.username is None:
            problems.append(("username", "is required when password_file is set"))
        if not self.tls.insecure and self.tls.ca is None:
            problems.append(("tls.ca", "is required unless tls.insecure is true"))
        if problems:
            raise _Problems(problems)
        return self


class PolicyContent(_Section):
    """The policy (reference-design §6, C1, C2, C11). In a controller's configuration: the values in force
    until the first policy arrives from the GC; on the GC, the first version it distributes. Set later
    with ``PUT /api/v1/policy``."""

    discovery_interval_s: int = Field(default=300, ge=10, le=86_400)
    missed_cycles_before_inactive: int = Field(default=3, ge=1, le=100)
    lc_report_timeout_s: int = Field(default=600, ge=10, le=7 * 86_400)
    emergency_rate_limit_per_hour: int = Field(default=5, ge=1, le=60)
    freshness_window_s: int = Field(default=300, ge=1, le=86_400)
    token_ttl_low_medium_s: int = Field(default=600, ge=30, le=86_400)
    token_ttl_high_s: int = Field(default=300, ge=30, le=86_400)
    lock_ttl_s: int = Field(default=900, ge=10, le=86_400)
    max_controllers_per_region: int = Field(default=10, ge=1, le=1000)
    gc_timeout_s: int = Field(default=300, ge=1, le=86_400, description="an RC waits this long for the GC")
    emergency_ack_timeout_s: int = Field(default=600, ge=1, le=86_400)
    escalation_downtime_threshold_s: int = Field(default=300, ge=0, le=7 * 86_400)
    max_regions_per_change: int = Field(default=1, ge=1, le=1000)
    max_devices_per_minute: int = Field(default=10, ge=1, le=10_000)
    auto_approve_low: bool = Field(default=True, description="the RC approves LOW changes without a human")
    human_approval_tiers: list[Sensitivity] = Field(
        default_factory=lambda: [Sensitivity.MEDIUM, Sensitivity.HIGH]
    )
    immutable_rules: list[ImmutableRule] = Field(default_factory=list)
    classification_rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    emergency_permitted_intents: list[str] = Field(
        default_factory=lambda: ["QUARANTINE", "RATE_LIMIT", "NULL_ROUTE"]
    )

    @model_validator(mode="after")
    def _check_timeout(self) -> PolicyContent:
        if self.lc_report_timeout_s < self.discovery_interval_s:
            raise _Problems(
                [
                    (
                        "lc_report_timeout_s",
                        f"must be at least discovery_interval_s ({self.discovery_interval_s}), "
                        "otherwise every local controller is always overdue",
                    )
                ]
            )
        return self


ScanProtocol = Literal["arp", "icmp", "snmp"]
SCAN_PROTOCOLS: tuple[ScanProtocol, ...] = ("arp", "icmp", "snmp")


class DiscoverySection(_Section):
    """What a local controller scans (reference-design §3 "Targets") and with which credentials."""

    subnets: list[IPv4Network] = Field(default_factory=list, description="on-link subnets this LC scans")
    protocols: list[ScanProtocol] = Field(default_factory=lambda: list(SCAN_PROTOCOLS))
    # Credentials are secrets: they live in files (0600), one per line, tried in order.
    snmp_communities_file: ConfigPath | None = None
    snmp_v3_file: ConfigPath | None = Field(
        default=None, description="lines USER:AUTHPASS:PRIVPASS[:AUTHPROTO:PRIVPROTO]"
    )
    interval_s: int | None = Field(
        default=None, ge=10, le=86_400, description="None: policy.discovery_interval_s"
    )
    anomaly_new_device_threshold: int = Field(default=50, ge=1, le=100_000)


class ChangesSection(ExecutorSettings):
    """A local controller's change executors (reference-design §5 "LC: execute"): write credentials and
    Ansible settings. Secrets live in files of their own, mode 0600."""

    snmp_write_communities_file: ConfigPath | None = None
    snmp_v3_file: ConfigPath | None = None
    ansible_playbook_dir: ConfigPath | None = None
    ansible_inventory_vars: ConfigPath | None = None


class AdmissionSection(_Section):
    """Controller admission (reference-design §2): what a validator accepts, how a newcomer joins."""

    # Validator side (GC for regional controllers, RC for local ones).
    valid_regions: list[Slug] = Field(
        default_factory=list, description="regions regional controllers may serve; empty: any"
    )
    challenge_timeout_s: int = Field(default=30, ge=5, le=300)
    bootstrap_token_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)
    # Joining side: the file `pdsno token issue` wrote for this controller (temp id, region, token).
    bootstrap_file: ConfigPath | None = None
    retry_interval_s: int = Field(default=10, ge=1, le=3600)


class SecuritySection(_Section):
    """Keys and message limits."""

    identity_key: ConfigPath
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    clock_skew_s: int = Field(default=300, ge=1, le=3600)


class LoggingSection(_Section):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    format: Literal["json", "text"] = "json"


class RetentionSection(_Section):
    """How long the NIB keeps things (reference-design §4 Retention). Events are never deleted."""

    device_inactive_after_days: int = Field(default=90, ge=1, le=3650)
    device_purge_after_days: int = Field(default=365, ge=1, le=36_500)
    config_proposal_retention_days: int = Field(default=180, ge=1, le=36_500)
    old_policy_retention_days: int = Field(default=30, ge=1, le=36_500)
    discovery_report_retention_days: int = Field(default=7, ge=1, le=365)
    event_archive_after_days: int = Field(default=365, ge=1, le=36_500)
    lock_sweep_interval_s: int = Field(default=60, ge=1, le=3600)

    @model_validator(mode="after")
    def _check_order(self) -> RetentionSection:
        if self.device_purge_after_days <= self.device_inactive_after_days:
            raise _Problems(
                [
                    (
                        "device_purge_after_days",
                        "must be greater than device_inactive_after_days "
                        f"({self.device_inactive_after_days})",
                    )
                ]
            )
        return self


# --------------------------------------------------------------------------------------------------
# root


def _tls_files(data_dir: Path) -> dict[str, Path]:
    return {
        "cert": data_dir / "tls" / "controller.crt",
        "key": data_dir / "tls" / "controller.key",
        "ca": data_dir / "tls" / "ca.crt",
    }


_BOOL: Final = TypeAdapter(bool)


def _truthy(value: Any) -> bool:
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return False


def _fillable(value: Any) -> dict[str, Any] | None:
    """A copy of a section given as a mapping (or left out / null) to fill defaults into; None otherwise."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return None


def _fill_derived_defaults(data: dict[str, Any]) -> None:
    """Fill the defaults that depend on other keys into the raw input (in place)."""
    controller = data.get("controller")
    role: Role | None = None
    data_dir = DEFAULT_DATA_DIR
    if isinstance(controller, ControllerSection):
        role, data_dir = controller.role, controller.data_dir
    elif isinstance(controller, Mapping):
        raw_role = _lower(controller.get("role"))
        role = Role(raw_role) if raw_role in tuple(Role) else None
        raw_dir = controller.get("data_dir")
        if isinstance(raw_dir, str | Path) and str(raw_dir).strip():
            data_dir = Path(raw_dir)

    nib = _fillable(data.get("nib"))
    if nib is not None:
        if nib.get("backend", "sqlite") == "sqlite" and nib.get("path") is None:
            nib["path"] = data_dir / "nib.sqlite3"
        data["nib"] = nib

    rest = _fillable(data.get("rest"))
    if rest is not None:
        # an invalid role is reported on its own; the GC's port only keeps a second error out of the way
        if rest.get("port") is None:
            rest["port"] = DEFAULT_REST_PORTS[role if role is not None else Role.GLOBAL]
        tls = _fillable(rest.get("tls"))
        if tls is not None:
            if not _truthy(tls.get("insecure", False)):
                files = _tls_files(data_dir)
                if tls.get("cert") is None and tls.get("key") is None:
                    tls["cert"], tls["key"] = files["cert"], files["key"]
                if tls.get("ca") is None:
                    tls["ca"] = files["ca"]
            rest["tls"] = tls
        data["rest"] = rest

    mqtt = _fillable(data.get("mqtt"))
    if mqtt is not None:
        tls = _fillable(mqtt.get("tls"))
        insecure = False
        if tls is not None:
            insecure = _truthy(tls.get("insecure", False))
            if not insecure and tls.get("ca") is None:
                tls["ca"] = _tls_files(data_dir)["ca"]
            mqtt["tls"] = tls
        elif isinstance(mqtt.get("tls"), TLSSection):
            insecure = mqtt["tls"].insecure
        if mqtt.get("port") is None:
            mqtt["port"] = MQTT_PORT_PLAIN if insecure else MQTT_PORT_TLS
        if mqtt.get("outbox_dir") is None:
            mqtt["outbox_dir"] = data_dir / "mqtt-outbox"
        data["mqtt"] = mqtt

    security = _fillable(data.get("security"))
    if security is not None:
        if security.get("identity_key") is None:
            security["identity_key"] = data_dir / "identity.key"
        data["security"] = security

    for name in ("policy", "admission", "discovery", "logging", "retention"):
        section = _fillable(data.get(name))
        if section is not None:
            data[name] = section


class ControllerConfig(_Section):
    """The whole configuration of one controller (root of the YAML file)."""

    controller: ControllerSection
    nib: NIBSection = Field(default_factory=lambda: NIBSection(path=DEFAULT_DATA_DIR / "nib.sqlite3"))
    rest: RestSection = Field(
        default_factory=lambda: RestSection(
            port=DEFAULT_REST_PORTS[Role.GLOBAL], tls=TLSSection(**_tls_files(DEFAULT_DATA_DIR))
        )
    )
    mqtt: MQTTSection = Field(
        default_factory=lambda: MQTTSection(
            port=MQTT_PORT_TLS,
            outbox_dir=DEFAULT_DATA_DIR / "mqtt-outbox",
            tls=TLSSection(ca=_tls_files(DEFAULT_DATA_DIR)["ca"]),
        )
    )
    policy: PolicyContent = Field(default_factory=PolicyContent)
    admission: AdmissionSection = Field(default_factory=AdmissionSection)
    discovery: DiscoverySection = Field(default_factory=DiscoverySection)
    changes: ChangesSection = Field(default_factory=ChangesSection)
    security: SecuritySection = Field(
        default_factory=lambda: SecuritySection(identity_key=DEFAULT_DATA_DIR / "identity.key")
    )
    logging: LoggingSection = Field(default_factory=LoggingSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        _fill_derived_defaults(filled)
        return filled

    @model_validator(mode="after")
    def _check_cross_section(self) -> ControllerConfig:
        parent = self.controller.parent
        if parent is not None and parent.url.startswith("http://") and not self.rest.tls.insecure:
            raise _Problems(
                [
                    (
                        "controller.parent.url",
                        "is plain http:// but rest.tls.insecure is false; use https:// "
                        "(or set rest.tls.insecure: true for a development setup)",
                    )
                ]
            )
        return self

    @property
    def source(self) -> Path | None:
        """The file this configuration was loaded from (None if built in code)."""
        return self._source

    def warnings(self) -> list[str]:
        """Things the runtime should log as warnings at start-up (plain transports)."""
        out: list[str] = []
        if self.rest.tls.insecure:
            out.append("rest.tls.insecure is true: the REST API runs without TLS (development only)")
        if self.mqtt.tls.insecure:
            out.append("mqtt.tls.insecure is true: MQTT runs without TLS (development only)")
        return out

    def redacted(self) -> dict[str, Any]:
        """JSON-compatible dict safe to print or log: passwords in the NIB DSN are masked, paths are kept."""
        data = self.model_dump(mode="json")
        if data["nib"]["dsn"] is not None:
            data["nib"]["dsn"] = redact_dsn(data["nib"]["dsn"])
        return data


def redact_dsn(dsn: str) -> str:
    """Mask the password in a PostgreSQL URL (user info and ``password=`` query parameter)."""
    masked = re.sub(r"(?<=://)([^:/@?#]*):[^@/?#]*@", r"\1:***@", dsn)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", masked)


def example_config_path() -> Path:
    """The commented example configuration shipped with the package."""
    return Path(str(resources.files("pdsno").joinpath("examples", "controller.yml")))
