# Copyright: PDSNO maintainers
# Apache License 2.0 (see LICENSE)
"""Set a device's SNMP system group through net-snmp's command-line tools."""

from __future__ import annotations

DOCUMENTATION = r"""
module: snmp_system
short_description: Set sysContact, sysName and sysLocation of an SNMP v2c agent
description:
  - Reads the objects with C(snmpget); sets those that differ with C(snmpset) and reads them back.
  - Check mode reads and reports what would change. The diff shows the objects before and after.
  - The community is given to the tools in a private C(snmp.conf), never on their command line.
options:
  host:
    description: The agent's address.
    type: str
    required: true
  port:
    description: The agent's UDP port.
    type: int
    default: 161
  community_file:
    description: A file of v2c write communities, one a line (C(#) comments); the first that answers is used.
    type: path
    required: true
  objects:
    description: The wanted values by name (C(sysContact), C(sysName), C(sysLocation)).
    type: dict
    required: true
  timeout:
    description: Seconds to wait for one answer.
    type: int
    default: 2
  retries:
    description: Retries of one request.
    type: int
    default: 1
requirements: [net-snmp's snmpget and snmpset (Debian package snmp)]
author: PDSNO maintainers
"""

EXAMPLES = r"""
- name: Move the device
  snmp_system:
    host: "{{ ansible_host }}"
    community_file: /var/lib/pdsno/snmp-write-communities
    objects: {sysLocation: rack 4}
"""

RETURN = r"""
before:
  description: The objects' values read before any change.
  returned: always
  type: dict
after:
  description: The values after the run (read back from the agent unless in check mode).
  returned: always
  type: dict
"""

import os  # noqa: E402 (Ansible's layout: the documentation first)
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

OIDS = {"sysContact": "1.3.6.1.2.1.1.4.0", "sysName": "1.3.6.1.2.1.1.5.0", "sysLocation": "1.3.6.1.2.1.1.6.0"}


def unquote(text):
    """A value as snmpget -Oqv prints it: strings in double quotes with backslash escapes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def communities(module, path):
    try:
        with open(path, encoding="utf-8") as lines:
            found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        module.fail_json(msg=f"community_file {path}: {exc.strerror or exc}")
    if not found:
        module.fail_json(msg=f"community_file {path} holds no community")
    return found


class Agent:
    def __init__(self, module, confdir):
        self.module = module
        self.confdir = confdir
        self.target = f"udp:{module.params['host']}:{module.params['port']}"
        self.common = ["-t", str(module.params["timeout"]), "-r", str(module.params["retries"])]

    def use(self, community):
        # snmp.conf of our own (0600 in a 0700 directory): other users of the host cannot read the
        # community from the process list.
        path = os.path.join(self.confdir, "snmp.conf")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as conf:
            conf.write(f"defVersion 2c\ndefCommunity {community}\n")

    def run(self, tool, args):
        env = {"SNMPCONFPATH": self.confdir, "MIBS": "", "MIBDIRS": ""}
        return self.module.run_command([tool, *self.common, "-Oqv", self.target, *args], environ_update=env)

    def get(self, names):
        rc, out, err = self.run(self.module.get_bin_path("snmpget", required=True), [OIDS[n] for n in names])
        if rc != 0:
            return None, (err or out).strip()
        values = out.splitlines()
        if len(values) != len(names):
            return None, f"unexpected answer: {out.strip()}"
        return dict(zip(names, (unquote(v) for v in values), strict=True)), ""

    def set(self, values):
        args = []
        for name, value in values.items():
            args += [OIDS[name], "s", value]
        rc, out, err = self.run(self.module.get_bin_path("snmpset", required=True), args)
        if rc != 0:
            self.module.fail_json(msg=f"snmpset refused: {(err or out).strip()}")


def render(values):
    return "".join(f"{name}: {values[name]}\n" for name in sorted(values))


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 161},
            "community_file": {"type": "path", "required": True},
            "objects": {"type": "dict", "required": True},
            "timeout": {"type": "int", "default": 2},
            "retries": {"type": "int", "default": 1},
        },
        supports_check_mode=True,
    )
    wanted = {str(k): str(v) for k, v in module.params["objects"].items()}
    unknown = sorted(set(wanted) - set(OIDS))
    if unknown or not wanted:
        module.fail_json(msg=f"objects: give some of {', '.join(OIDS)} (not {', '.join(unknown)})")
    names = sorted(wanted)
    confdir = tempfile.mkdtemp(prefix="pdsno-snmp-")
    try:
        agent = Agent(module, confdir)
        before, errors = None, []
        for community in communities(module, module.params["community_file"]):
            agent.use(community)
            before, error = agent.get(names)
            if before is not None:
                break
            errors.append(error)
        if before is None:
            host, tried = module.params["host"], "; ".join(errors)
            module.fail_json(msg=f"{host} did not answer snmpget with any write community: {tried}")
        changes = {n: wanted[n] for n in names if before[n] != wanted[n]}
        after = dict(before, **changes)
        if changes and not module.check_mode:
            agent.set(changes)
            after, error = agent.get(names)
            if after is None or after != dict(before, **changes):
                module.fail_json(
                    msg="the agent does not hold the new values: %s" % (error or after),
                    before=before,
                    after=after,
                )
    finally:
        shutil.rmtree(confdir, ignore_errors=True)
    module.exit_json(
        changed=bool(changes),
        before=before,
        after=after,
        diff={"before": render(before), "after": render(after)},
    )


if __name__ == "__main__":
    main()
