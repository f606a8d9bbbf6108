"""Controller configuration: parsing, defaults, refusals with file/key/reason, environment overrides."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdsno.config import (
    DEFAULT_REST_PORTS,
    ControllerConfig,
    ControllerSection,
    Role,
    assigned_controller_id,
    controller_id_matches,
    example_config_path,
    load_config,
    parse_config,
    redact_dsn,
)
from pdsno.errors import ConfigError, ReasonCode

TEMP_ID = "temp-1b4e28ba-2fa1-41d2-883f-0016d3cca427"

GLOBAL = """
controller:
  id: global_cntl_1
  role: global
"""

REGIONAL = """
controller:
  id: regional_cntl_zoneA_1
  role: regional
  region: zoneA
  parent:
    url: https://gc.example.net:8001
"""

LOCAL = """
controller:
  id: local_cntl_zoneA_2
  role: local
  region: zoneA
  parent:
    id: regional_cntl_zoneA_1
    url: https://rc.example.net:8002
"""


def write(tmp_path: Path, text: str, name: str = "controller.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ControllerConfig:
    return load_config(write(tmp_path, text), environ={} if environ is None else environ)


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value


def keys(err: ConfigError) -> list[str]:
    return [problem["key"] for problem in err.details["errors"]]


def with_section(base: str, section: str) -> str:
    return textwrap.dedent(base) + textwrap.dedent(section)


# --------------------------------------------------------------------------------------------------
# the example and minimal configurations


def test_example_loads_and_is_a_regional_controller() -> None:
    config = load_config(example_config_path(), environ={})
    assert config.controller.role is Role.REGIONAL
    assert config.controller.id == "regional_cntl_zoneA_1"
    assert config.source == example_config_path().absolute()
    assert config.rest.port == 8002
    assert config.mqtt.port == 8883
    assert config.nib.path == Path("/var/lib/pdsno/nib.sqlite3")
    assert config.warnings() == []


def test_example_follows_env_switches() -> None:
    config = load_config(example_config_path(), environ={"PDSNO_MQTT__TLS__INSECURE": "true"})
    assert config.mqtt.port == 1883
    assert config.warnings() == ["mqtt.tls.insecure is true: MQTT runs without TLS (development only)"]


def test_example_lists_every_key() -> None:
    """Every key of the models appears in the example (so the example stays complete)."""
    raw = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    dumped = load_config(example_config_path(), environ={}).model_dump()

    def same_keys(model: dict[str, Any], document: dict[str, Any], where: str) -> None:
        assert set(model) == set(document), where
        for key, value in model.items():
            if isinstance(value, dict):
                same_keys(value, document[key], f"{where}.{key}")

    same_keys(dumped, raw, "(top)")


def test_example_defaults_are_the_model_defaults(tmp_path: Path) -> None:
    minimal = load(tmp_path, REGIONAL + "  data_dir: /var/lib/pdsno\n")
    example = load_config(example_config_path(), environ={})
    for section in ("nib", "rest", "mqtt", "policy", "security", "logging", "retention"):
        assert getattr(minimal, section) == getattr(example, section), section


def test_minimal_global(tmp_path: Path) -> None:
    config = load(tmp_path, GLOBAL)
    assert config.controller.role is Role.GLOBAL
    assert config.controller.region is None
    assert config.controller.parent is None
    assert config.rest.port == DEFAULT_REST_PORTS[Role.GLOBAL] == 8001
    assert config.rest.host == "127.0.0.1"
    assert config.rest.scheme == "https"
    assert config.nib.backend == "sqlite"
    assert config.nib.path == Path("/var/lib/pdsno/nib.sqlite3")
    assert config.nib.sqlite_path == config.nib.path
    assert config.security.identity_key == Path("/var/lib/pdsno/identity.key")
    assert config.rest.tls.cert == Path("/var/lib/pdsno/tls/controller.crt")
    assert config.mqtt.tls.ca == Path("/var/lib/pdsno/tls/ca.crt")
    assert config.policy.token_ttl_high_s == 300
    assert config.policy.token_ttl_low_medium_s == 600
    assert config.policy.emergency_rate_limit_per_hour == 5
    assert config.security.clock_skew_s == 300
    assert config.security.max_message_bytes == 1024 * 1024
    assert config.logging.level == "INFO"
    assert config.retention.device_purge_after_days == 365


def test_minimal_regional(tmp_path: Path) -> None:
    config = load(tmp_path, REGIONAL)
    assert config.controller.region == "zoneA"
    assert config.controller.parent is not None
    assert config.controller.parent.url == "https://gc.example.net:8001"
    assert config.rest.port == 8002


def test_minimal_local(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL)
    assert config.controller.role is Role.LOCAL
    assert config.rest.port == 8100


def test_data_dir_drives_derived_paths_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        GLOBAL
        + "  data_dir: state\n"
        + "security:\n  identity_key: ~/identity.key\n"
        + "mqtt:\n  password_file: secrets/mqtt.pw\n  username: gc\n",
    )
    state = tmp_path / "state"
    assert config.controller.data_dir == state
    assert config.nib.path == state / "nib.sqlite3"
    assert config.security.identity_key == Path("~/identity.key").expanduser()
    assert config.mqtt.password_file == tmp_path / "secrets" / "mqtt.pw"
    assert config.mqtt.outbox_dir == state / "mqtt-outbox"
    assert config.rest.tls.key == state / "tls" / "controller.key"


def test_insecure_transports_need_no_tls_files_and_are_reported(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        GLOBAL + "rest:\n  tls:\n    insecure: true\nmqtt:\n  tls:\n    insecure: true\n",
    )
    assert config.rest.tls.cert is None
    assert config.rest.scheme == "http"
    assert config.mqtt.port == 1883
    assert config.mqtt.tls.ca is None
    assert len(config.warnings()) == 2


def test_role_and_log_level_are_case_insensitive(tmp_path: Path) -> None:
    config = load(tmp_path, GLOBAL.replace("role: global", "role: GLOBAL") + "logging:\n  level: debug\n")
    assert config.controller.role is Role.GLOBAL
    assert config.logging.level == "DEBUG"


def test_empty_sections_take_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, GLOBAL + "nib:\nrest:\npolicy:\n")
    assert config.nib.backend == "sqlite"
    assert config.rest.port == 8001


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, GLOBAL)
    with pytest.raises(ValueError, match="frozen"):
        config.rest.port = 1  # type: ignore[misc]


def test_built_in_code_gets_the_same_defaults() -> None:
    config = ControllerConfig(
        controller=ControllerSection(
            id="local_cntl_z_1", role=Role.LOCAL, region="z", parent={"url": "https://rc"}
        )
    )
    assert config.rest.port == 8100
    assert config.source is None


# --------------------------------------------------------------------------------------------------
# refusals


def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "resst:\n  port: 1\n")
    path = tmp_path / "controller.yml"
    assert err.code is ReasonCode.CONFIG_INVALID
    assert err.message.startswith(f"{path}: resst: unknown key")
    assert "did you mean 'rest'" in err.message
    assert err.details["file"] == str(path)
    assert keys(err) == ["resst"]


def test_unknown_nested_key(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "rest:\n  tls:\n    insecure: true\n    certificate: /x\n")
    assert keys(err) == ["rest.tls.certificate"]
    assert "unknown key" in err.message
    assert "rest.tls.certificate" in err.message


@pytest.mark.parametrize(
    ("port", "reason"),
    [("abc", "valid integer"), ("70000", "less than or equal to 65535"), ("0", "greater than or equal to 1")],
)
def test_wrong_port_refused(tmp_path: Path, port: str, reason: str) -> None:
    err = refused(tmp_path, GLOBAL + f"rest:\n  port: {port}\n")
    assert keys(err) == ["rest.port"]
    assert reason in err.message
    assert err.message.startswith(f"{tmp_path / 'controller.yml'}: rest.port: ")


def test_wrong_type_for_a_section(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "rest: 8001\n")
    assert keys(err) == ["rest"]
    assert "must be a mapping" in err.message


def test_unquoted_number_for_a_string_gets_a_hint(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "mqtt:\n  username: 1234\n  tls: {insecure: true}\n")
    assert keys(err) == ["mqtt.username"]
    assert "quote the value" in err.message


def test_all_problems_are_listed(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "rest:\n  port: abc\n  hots: x\nlogging:\n  level: LOUD\n")
    assert set(keys(err)) == {"rest.port", "rest.hots", "logging.level"}
    assert "(and 2 more problems)" in err.message
    for problem in err.details["errors"]:
        assert problem["reason"]


def test_regional_without_region_or_parent(tmp_path: Path) -> None:
    err = refused(tmp_path, "controller:\n  id: regional_cntl_zoneA_1\n  role: regional\n")
    assert set(keys(err)) == {"controller.region", "controller.parent"}
    assert "controller.region: is required for a regional controller" in err.message


def test_global_with_region_or_parent(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "  region: zoneA\n  parent: {url: 'https://x'}\n")
    assert set(keys(err)) == {"controller.region", "controller.parent"}


def test_bad_region_slug(tmp_path: Path) -> None:
    err = refused(tmp_path, REGIONAL.replace("region: zoneA", "region: 'zone A'"))
    assert "controller.region" in keys(err)


def test_postgresql_without_dsn(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "nib:\n  backend: postgresql\n")
    assert keys(err) == ["nib.dsn"]
    assert "required when backend is postgresql" in err.message


def test_postgresql_with_dsn(tmp_path: Path) -> None:
    config = load(
        tmp_path, GLOBAL + "nib:\n  backend: postgresql\n  dsn: postgresql://pdsno:s3cret@db/pdsno\n"
    )
    assert config.nib.path is None
    assert config.nib.dsn == "postgresql://pdsno:s3cret@db/pdsno"
    with pytest.raises(ConfigError):
        _ = config.nib.sqlite_path
    printed = json.dumps(config.redacted())
    assert "s3cret" not in printed
    assert "postgresql://pdsno:***@db/pdsno" in printed


def test_dsn_must_be_a_postgres_url_and_is_not_echoed(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "nib:\n  backend: postgresql\n  dsn: 'host=db password=s3cret'\n")
    assert keys(err) == ["nib.dsn"]
    assert "s3cret" not in json.dumps(err.as_dict())


def test_tls_on_needs_complete_files(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "rest:\n  tls:\n    cert: /etc/pdsno/c.crt\n")
    assert keys(err) == ["rest.tls.key"]


def test_plain_parent_url_needs_insecure(tmp_path: Path) -> None:
    text = REGIONAL.replace("https://", "http://")
    err = refused(tmp_path, text)
    assert keys(err) == ["controller.parent.url"]
    config = load(tmp_path, text + "rest:\n  tls:\n    insecure: true\n")
    assert config.controller.parent is not None
    assert config.controller.parent.url.startswith("http://")


def test_parent_url_must_be_http(tmp_path: Path) -> None:
    err = refused(tmp_path, REGIONAL.replace("https://gc.example.net:8001", "ftp://gc"))
    assert keys(err) == ["controller.parent.url"]


def test_policy_and_retention_consistency(tmp_path: Path) -> None:
    err = refused(
        tmp_path,
        GLOBAL + "policy:\n  discovery_interval_s: 900\n" + "retention:\n  device_inactive_after_days: 400\n",
    )
    assert set(keys(err)) == {"policy.lc_report_timeout_s", "retention.device_purge_after_days"}


# --------------------------------------------------------------------------------------------------
# controller ids


@pytest.mark.parametrize(
    ("text", "good"),
    [
        (GLOBAL, True),
        (GLOBAL.replace("global_cntl_1", "global_cntl_2"), True),
        (GLOBAL.replace("global_cntl_1", TEMP_ID), True),
        (GLOBAL.replace("global_cntl_1", "global_cntl_0"), False),
        (GLOBAL.replace("global_cntl_1", "global_cntl_01"), False),
        (GLOBAL.replace("global_cntl_1", "regional_cntl_zoneA_1"), False),
        (GLOBAL.replace("global_cntl_1", "temp-not-a-uuid"), False),
        (REGIONAL, True),
        (REGIONAL.replace("regional_cntl_zoneA_1", "regional_cntl_zoneB_1"), False),
        (REGIONAL.replace("regional_cntl_zoneA_1", "local_cntl_zoneA_1"), False),
        (REGIONAL.replace("regional_cntl_zoneA_1", TEMP_ID), True),
        (LOCAL, True),
        (LOCAL.replace("local_cntl_zoneA_2", "local_cntl_zoneA"), False),
        (LOCAL.replace("local_cntl_zoneA_2", "regional_cntl_zoneA_2"), False),
    ],
)
def test_controller_id_pattern_per_role(tmp_path: Path, text: str, good: bool) -> None:
    if good:
        load(tmp_path, text)
    else:
        err = refused(tmp_path, text)
        assert keys(err) == ["controller.id"]


def test_parent_id_must_fit_the_parent_role(tmp_path: Path) -> None:
    err = refused(tmp_path, LOCAL.replace("id: regional_cntl_zoneA_1", "id: regional_cntl_zoneB_1"))
    assert keys(err) == ["controller.parent.id"]
    err = refused(tmp_path, REGIONAL.replace("  parent:\n", "  parent:\n    id: regional_cntl_zoneA_9\n"))
    assert keys(err) == ["controller.parent.id"]


def test_id_helpers() -> None:
    assert assigned_controller_id(Role.REGIONAL, "zone-a_1", 3) == "regional_cntl_zone-a_1_3"
    assert controller_id_matches("regional_cntl_zone-a_1_3", Role.REGIONAL, "zone-a_1")
    assert not controller_id_matches(TEMP_ID, Role.LOCAL, "z", allow_temp=False)
    assert controller_id_matches(TEMP_ID, Role.LOCAL, "z")
    with pytest.raises(ValueError, match="start at 1"):
        assigned_controller_id(Role.GLOBAL, None, 0)


# --------------------------------------------------------------------------------------------------
# environment overrides


def test_env_overrides_nested_values_with_types(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        REGIONAL,
        {
            "PDSNO_REST__PORT": "9000",
            "PDSNO_REST__TLS__INSECURE": "true",
            "PDSNO_MQTT__TLS__INSECURE": "yes",
            "PDSNO_NIB__BACKEND": "postgresql",
            "pdsno_ignored": "not ours",
            "PDSNO_NIB__DSN": "postgresql://db/pdsno",
            "PDSNO_CONTROLLER__PARENT__ID": "global_cntl_2",
            "PDSNO_Logging__Level": "warning",
            "PDSNO_MQTT__USERNAME": "1234",
            "PDSNO_CONFIG": "/elsewhere.yml",
            "PDSNO_API_TOKEN": "not a config key",
        },
    )
    assert config.rest.port == 9000
    assert config.rest.tls.insecure is True
    assert config.mqtt.tls.insecure is True
    assert config.mqtt.port == 1883
    assert config.nib.backend == "postgresql"
    assert config.nib.path is None
    assert config.controller.parent is not None
    assert config.controller.parent.id == "global_cntl_2"
    assert config.logging.level == "WARNING"
    assert config.mqtt.username == "1234"  # string keys keep the text as is


def test_env_can_create_a_missing_section(tmp_path: Path) -> None:
    text = "controller:\n  id: local_cntl_z_1\n  role: local\n  region: z\n"
    config = load(tmp_path, text, {"PDSNO_CONTROLLER__PARENT__URL": "https://rc.example.net"})
    assert config.controller.parent is not None
    assert config.controller.parent.url == "https://rc.example.net"


def test_env_empty_value_clears_an_optional_text_key(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL, {"PDSNO_CONTROLLER__PARENT__ID": ""})
    assert config.controller.parent is not None
    assert config.controller.parent.id is None


def test_unknown_env_override_names_the_variable(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL, {"PDSNO_REST__PROT": "9000"})
    assert err.code is ReasonCode.CONFIG_INVALID
    assert "PDSNO_REST__PROT" in err.message
    assert "did you mean 'port'" in err.message
    assert err.details["errors"] == [
        {"key": "rest.prot", "reason": err.details["errors"][0]["reason"], "env": "PDSNO_REST__PROT"}
    ]


@pytest.mark.parametrize(
    "variable",
    [
        "PDSNO_NOPE__KEY",
        "PDSNO_REST__PORT__DEEPER",
        "PDSNO_REST__TLS",
        "PDSNO_REST_PORT",
        "PDSNO_REST____PORT",
    ],
)
def test_bad_env_override_names(tmp_path: Path, variable: str) -> None:
    err = refused(tmp_path, GLOBAL, {variable: "1"})
    assert variable in err.message
    assert err.details["errors"][0]["env"] == variable


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL, {"PDSNO_REST__PORT": "http"})
    assert keys(err) == ["rest.port"]
    assert "PDSNO_REST__PORT" in err.message
    assert err.details["errors"][0]["env"] == "PDSNO_REST__PORT"


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSNO_POLICY__LOCK_TTL_S", "120")
    config = load_config(write(tmp_path, GLOBAL))
    assert config.policy.lock_ttl_s == 120


# --------------------------------------------------------------------------------------------------
# files and YAML


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yml", environ={})
    assert info.value.code is ReasonCode.CONFIG_NOT_FOUND
    assert str(tmp_path / "nope.yml") in info.value.message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert info.value.code is ReasonCode.CONFIG_NOT_FOUND


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    err = refused(tmp_path, "controller:\n  id: global_cntl_1\n  role: [global\n")
    assert err.code is ReasonCode.CONFIG_INVALID
    assert str(tmp_path / "controller.yml") in err.message
    assert "line 4" in err.message
    assert "column" in err.message
    assert err.details["errors"][0]["line"] == 4


def test_duplicate_key_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, GLOBAL + "rest:\n  port: 1\n  port: 2\n")
    assert "duplicate key 'port'" in err.message
    assert "line 7" in err.message  # GLOBAL starts with an empty line


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    config = load(tmp_path, GLOBAL + "rest:\n  tls:\n    <<: {insecure: true}\n    insecure: true\n")
    assert config.rest.tls.insecure is True


@pytest.mark.parametrize(
    ("text", "reason"), [("", "empty"), ("- a\n- b\n", "mapping"), ("just text\n", "mapping")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, reason: str) -> None:
    err = refused(tmp_path, text)
    assert reason in err.message


def test_missing_controller_section(tmp_path: Path) -> None:
    err = refused(tmp_path, "rest:\n  port: 1\n")
    assert keys(err) == ["controller"]


def test_parse_config_without_a_file() -> None:
    config = parse_config(yaml.safe_load(GLOBAL), environ={})
    assert config.controller.id == "global_cntl_1"
    with pytest.raises(ConfigError, match=r"^CONFIG_INVALID: <config>: controller.role"):
        parse_config({"controller": {"id": "x", "role": "boss"}}, environ={})


def test_redact_dsn_query_password() -> None:
    assert redact_dsn("postgres://u@h/db?password=abc&sslmode=require") == (
        "postgres://u@h/db?password=***&sslmode=require"
    )
    assert redact_dsn("postgresql://h/db") == "postgresql://h/db"


def test_redacted_round_trips(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL)
    again = parse_config(config.redacted(), environ={})
    assert again.model_dump() == config.model_dump()


@pytest.mark.parametrize("region", ["global", "System"])
def test_regions_that_clash_with_mqtt_topics_are_refused(tmp_path: Path, region: str) -> None:
    path = tmp_path / "rc.yml"
    path.write_text(
        "controller: {id: temp-0b9f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4, role: regional, "
        f"region: {region}, parent: {{url: 'https://gc.example.net:8001'}}}}\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert "controller.region" in str(refused.value) and "reserved" in str(refused.value)


def test_env_list_values_are_json(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL, {"PDSNO_DISCOVERY__SUBNETS": '["198.18.7.0/24", "198.18.8.0/25"]'})
    assert [str(net) for net in config.discovery.subnets] == ["198.18.7.0/24", "198.18.8.0/25"]


def test_env_list_value_that_is_not_json_names_the_variable(tmp_path: Path) -> None:
    err = refused(tmp_path, LOCAL, {"PDSNO_DISCOVERY__SUBNETS": "198.18.7.0/24,"})
    assert keys(err) == ["discovery.subnets"]
    assert err.details["errors"][0]["env"] == "PDSNO_DISCOVERY__SUBNETS"
    assert "not a valid value" in err.details["errors"][0]["reason"]
