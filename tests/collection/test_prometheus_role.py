"""The prometheus role (issue 13) without a host to install it on: its prometheus.yml rendered by the real
``ansible-playbook`` (the role's template with its defaults, for a sample inventory), checked target by
target, and by ``promtool check config`` where Debian's prometheus is installed; deploy.yml's optional
``monitoring`` play passes ``--syntax-check``; the role's argument specs load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROLE = REPO_ROOT / "roles" / "prometheus"

INVENTORY: dict[str, Any] = {
    "all": {
        "children": {
            "monitoring": {"hosts": {"mon1.example.net": {"ansible_host": "10.0.0.20"}}},
            "broker": {"hosts": {"mqtt1.example.net": {"ansible_host": "10.0.0.5"}}},
            "controllers": {
                "children": {
                    "global": {
                        "hosts": {
                            "gc1.example.net": {
                                "ansible_host": "10.0.0.10",
                                "pdsno_controller_id": "global_cntl_1",
                            }
                        }
                    },
                    "regional": {
                        "hosts": {
                            "rc-emea1.example.net": {
                                "ansible_host": "10.0.1.10",
                                "pdsno_region": "emea",
                                "controller_rest_port": 9443,
                            }
                        }
                    },
                    "local": {
                        "hosts": {
                            "lc-paris1.example.net": {
                                "ansible_host": "fd00::2",
                                "pdsno_region": "emea",
                                "pdsno_controller_id": "local_cntl_emea_1",
                            },
                            "lc-nyc1.example.net": {
                                "ansible_host": "10.2.0.2",
                                "pdsno_region": "amer",
                                "controller_rest_host": "lc-nyc1.internal",
                            },
                        }
                    },
                }
            },
        }
    }
}


def _ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0"
    )
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        cwd=REPO_ROOT,
        env=_ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def render(tmp_path: Path, inventory: dict[str, Any], **extra_vars: Any) -> dict[str, Any]:
    """prometheus.yml as the role writes it for the first monitoring host, with the role's defaults."""
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    out = tmp_path / "prometheus.yml"
    playbook = [
        {
            "name": "Render the prometheus role's configuration",
            "hosts": "monitoring[0]",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "tasks": [
                {
                    "name": "Write prometheus.yml",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / "prometheus.yml.j2"),
                        "dest": str(out),
                        "mode": "0644",
                    },
                }
            ],
        }
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    (tmp_path / "vars.json").write_text(
        json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars})
    )
    _run(
        "ansible-playbook",
        "-i",
        str(tmp_path / "hosts.yml"),
        str(tmp_path / "render.yml"),
        "-e",
        f"@{tmp_path / 'vars.json'}",
    )
    return yaml.safe_load(out.read_text())


def _by_host(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["labels"]["inventory_host"]: group for group in job["static_configs"]}


def test_every_controller_is_scraped_over_mutual_tls(tmp_path: Path) -> None:
    config = render(tmp_path, INVENTORY)
    assert config["global"] == {"scrape_interval": "30s", "scrape_timeout": "10s"}
    [job] = config["scrape_configs"]
    assert job["job_name"] == "pdsno"
    assert job["scheme"] == "https"
    assert job["metrics_path"] == "/metrics"
    assert job["tls_config"] == {
        "ca_file": "/etc/pdsno/prometheus/certificate/ca.crt",
        "cert_file": "/etc/pdsno/prometheus/certificate/prometheus.crt",
        "key_file": "/etc/pdsno/prometheus/certificate/prometheus.key",
    }
    groups = _by_host(job)
    # every controller, nothing else (not the broker, not the monitoring host)
    assert sorted(groups) == [
        "gc1.example.net",
        "lc-nyc1.example.net",
        "lc-paris1.example.net",
        "rc-emea1.example.net",
    ]
    assert groups["gc1.example.net"] == {
        "targets": ["10.0.0.10:8443"],
        "labels": {"controller": "global_cntl_1", "inventory_host": "gc1.example.net", "tier": "global"},
    }
    assert groups["rc-emea1.example.net"] == {
        "targets": ["10.0.1.10:9443"],
        "labels": {
            "controller": "rc-emea1.example.net",
            "inventory_host": "rc-emea1.example.net",
            "tier": "regional",
            "region": "emea",
        },
    }
    assert groups["lc-paris1.example.net"]["targets"] == ["[fd00::2]:8443"]
    assert groups["lc-paris1.example.net"]["labels"]["controller"] == "local_cntl_emea_1"
    assert groups["lc-nyc1.example.net"]["targets"] == ["lc-nyc1.internal:8443"]
    assert groups["lc-nyc1.example.net"]["labels"]["region"] == "amer"
    assert groups["lc-nyc1.example.net"]["labels"]["tier"] == "local"


def test_without_a_controllers_group_the_tiers_are_scraped(tmp_path: Path) -> None:
    children = dict(INVENTORY["all"]["children"])
    children.update(children.pop("controllers")["children"])
    config = render(
        tmp_path,
        {"all": {"children": children}},
        prometheus_dir="/srv/prom",
        prometheus_scrape_interval="15s",
        prometheus_extra_scrape_configs=[
            {"job_name": "self", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}
        ],
    )
    job, extra = config["scrape_configs"]
    assert len(_by_host(job)) == 4
    assert job["tls_config"]["cert_file"] == "/srv/prom/certificate/prometheus.crt"
    assert config["global"]["scrape_interval"] == "15s"
    assert extra == {"job_name": "self", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_configuration(tmp_path: Path) -> None:
    certificate = tmp_path / "prom" / "certificate"
    render(tmp_path, INVENTORY, prometheus_dir=str(tmp_path / "prom"))
    certificate.mkdir(parents=True)
    for name in ("ca.crt", "prometheus.crt", "prometheus.key"):
        (certificate / name).write_text("")
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_yml_with_a_monitoring_group_passes_syntax_check(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(INVENTORY))
    _run("ansible-playbook", "--syntax-check", "-i", str(tmp_path / "hosts.yml"), "playbooks/deploy.yml")
    _run("ansible-playbook", "--syntax-check", "-i", "inventory/example", "playbooks/deploy.yml")


def test_argument_specs_name_every_default() -> None:
    doc = json.loads(_run("ansible-doc", "-t", "role", "-j", "pdsno.net.prometheus").stdout)
    options = doc["pdsno.net.prometheus"]["entry_points"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert sorted(defaults) == sorted(options)
