"""Discovery probes: one module per protocol, each implementing :class:`~.base.Probe`."""

from pdsno.discovery.probes.arp import ArpProbe
from pdsno.discovery.probes.base import Observation, ObservationSink, Probe, ProbeStats, TargetStream
from pdsno.discovery.probes.icmp import IcmpProbe
from pdsno.discovery.probes.snmp import SnmpProbe

__all__ = [
    "ArpProbe",
    "IcmpProbe",
    "Observation",
    "ObservationSink",
    "Probe",
    "ProbeStats",
    "SnmpProbe",
    "TargetStream",
]
