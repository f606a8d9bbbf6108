"""Controller configuration: one YAML file per controller, parsed into strict, typed, frozen models.

* Every section and key is declared; an unknown key or a wrong type is refused with the file, the dotted key
  and the reason (:class:`pdsno.errors.ConfigError`, code ``CONFIG_INVALID``; a missing or unreadable file is
  ``CONFIG_NOT_FOUND``).
* ``PDSNO_<SECTION>__<KEY>[__<SUBKEY>...]`` environment variables override the file
  (``PDSNO_REST__PORT=9000``, ``PDSNO_REST__TLS__INSECURE=true``); an override naming an unknown key is
  refused too, naming the variable.
* Defaults that depend on other keys (REST port by role, file locations under ``controller.data_dir``,
  MQTT port by transport) are filled in while loading, so a loaded :class:`ControllerConfig` holds the
  values the runtime will really use.
* Relative paths are taken relative to the directory of the configuration file; ``~`` is expanded.

Modules: :mod:`~pdsno.config.ids` (roles, controller ids), :mod:`~pdsno.config.schema` (sections, the
root model), :mod:`~pdsno.config.env` (environment overrides), :mod:`~pdsno.config.problems` (error
rendering), :mod:`~pdsno.config.loader` (YAML, entry points). The reference is ``docs/configuration.md``;
the commented example ships as ``pdsno/examples/controller.yml``.
"""

from pdsno.config.env import CONFIG_ENV_VAR, ENV_PREFIX
from pdsno.config.ids import Role, assigned_controller_id, controller_id_matches
from pdsno.config.loader import StrictLoader, load_config, parse_config, yaml_error
from pdsno.config.problems import dotted_key
from pdsno.config.schema import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_DATA_DIR,
    DEFAULT_REST_PORTS,
    MQTT_PORT_PLAIN,
    MQTT_PORT_TLS,
    ControllerConfig,
    ControllerSection,
    LoggingSection,
    MQTTSection,
    NIBSection,
    ParentSection,
    PolicyContent,
    RestSection,
    RetentionSection,
    SecuritySection,
    Slug,
    TLSSection,
    example_config_path,
    redact_dsn,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATA_DIR",
    "DEFAULT_REST_PORTS",
    "ENV_PREFIX",
    "MQTT_PORT_PLAIN",
    "MQTT_PORT_TLS",
    "ControllerConfig",
    "ControllerSection",
    "LoggingSection",
    "MQTTSection",
    "NIBSection",
    "ParentSection",
    "PolicyContent",
    "RestSection",
    "RetentionSection",
    "Role",
    "SecuritySection",
    "Slug",
    "StrictLoader",
    "TLSSection",
    "assigned_controller_id",
    "controller_id_matches",
    "dotted_key",
    "example_config_path",
    "load_config",
    "parse_config",
    "redact_dsn",
    "yaml_error",
]
