"""Acceptance: the built tarball, installed offline into a fresh path, runs a playbook against a real GC."""

from __future__ import annotations

from pathlib import Path

from tests.collection.conftest import SEEDED, Ansible

PLAYBOOK = """
- name: Read the NIB with the installed collection
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Every device of zone-a
      pdsno.net.nib_info:
        region: zone-a
      register: zone_a

    - name: Controllers, with the connection given as options
      pdsno.net.nib_info:
        url: "{{ lookup('ansible.builtin.env', 'PDSNO_URL') }}"
        token: "{{ lookup('ansible.builtin.env', 'PDSNO_TOKEN') }}"
        ca_path: "{{ lookup('ansible.builtin.env', 'PDSNO_CA_PATH') }}"
        gather: [controllers]
      register: tree

    - name: The seeded devices and zone-a's regional controller are there
      ansible.builtin.assert:
        that:
          - zone_a.devices | map(attribute='hostname') | sort == expected
          - zone_a is not changed
          - "'regional_cntl_zone-a_1' in tree.controllers | map(attribute='controller_id')"
      vars:
        expected: {expected}
"""


def test_a_playbook_runs_nib_info_from_the_installed_copy(ansible: Ansible) -> None:
    listed = ansible.run("ansible-galaxy", "collection", "list", "pdsno.net")
    assert listed.returncode == 0, listed.stderr
    assert str(ansible.collections) in listed.stdout and "0.1.0" in listed.stdout
    installed = ansible.collections / "ansible_collections" / "pdsno" / "net"
    assert not installed.is_symlink() and (installed / "plugins" / "modules" / "nib_info.py").is_file()

    expected = sorted(h for h, region, *_ in SEEDED if region == "zone-a")
    playbook = ansible.workdir / "read-nib.yml"
    playbook.write_text(PLAYBOOK.replace("{expected}", repr(expected)))
    done = ansible.run("ansible-playbook", str(playbook), "-i", "localhost,", "-c", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok=3" in done.stdout and "failed=0" in done.stdout and "changed=0" in done.stdout


def test_the_installed_copy_holds_only_the_collection(installed_collection: Path) -> None:
    root = installed_collection / "ansible_collections" / "pdsno" / "net"
    shipped = {p.relative_to(root).parts[0] for p in root.iterdir()}
    assert {"plugins", "meta", "MANIFEST.json", "FILES.json"} <= shipped
    assert not shipped & {"runtime", "build", "scripts", "bench", ".venv"}
    assert not (root / "tests" / "collection").exists() and not (root / "tests" / "runtime").exists()
