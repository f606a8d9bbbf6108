"""Device discovery for local controllers (reference-design §3): ARP, ICMP and SNMP probes streaming
into each other, consolidated into one :class:`~pdsno.nib.models.Device` per MAC address.

Entry point: :func:`pdsno.discovery.scanner.scan`; the ``pdsno discover`` command wraps it.
"""

from pdsno.discovery.probes.base import SCAN_PROTOCOL_FAILED, Observation, Probe, ProbeStats, TargetStream
from pdsno.discovery.scanner import ProbeFailure, ScanProgress, ScanResult, ScanTimeouts, scan
from pdsno.snmp import SnmpCredentials, SnmpV3Credential

__all__ = [
    "SCAN_PROTOCOL_FAILED",
    "Observation",
    "Probe",
    "ProbeFailure",
    "ProbeStats",
    "ScanProgress",
    "ScanResult",
    "ScanTimeouts",
    "SnmpCredentials",
    "SnmpV3Credential",
    "TargetStream",
    "scan",
]
