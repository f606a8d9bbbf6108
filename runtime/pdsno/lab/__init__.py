"""``pdsno lab``: a network of Linux namespaces with simulated devices and controller hosts.

The API the tests and the discovery code use::

    from pdsno.lab import Lab
    lab = Lab.up("default", state_dir)            # or Lab.load(state_dir) for a lab that is up
    lc = lab.lc_for("198.18.1.0/24")
    lab.exec_in(lc.name, ["ping", "-c1", "198.18.1.10"])
    lab.stop_device("acc-sw-a1-1"); lab.start_device("acc-sw-a1-1")
    Lab.down(state_dir)

See ``docs/lab.md``.
"""

from pdsno.lab.errors import LabAlreadyUp, LabError, LabNotUp, TopologyError
from pdsno.lab.lab import Lab
from pdsno.lab.state import DEFAULT_PREFIX, default_state_dir
from pdsno.lab.topology import DeviceSpec, LabController, LabDevice, Topology, load_topology

__all__ = [
    "DEFAULT_PREFIX",
    "DeviceSpec",
    "Lab",
    "LabAlreadyUp",
    "LabController",
    "LabDevice",
    "LabError",
    "LabNotUp",
    "Topology",
    "TopologyError",
    "default_state_dir",
    "load_topology",
]
