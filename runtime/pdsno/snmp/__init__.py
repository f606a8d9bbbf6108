"""SNMP as the runtime speaks it: credentials, failures, the v2c codec (plain BER) and its pipelined
transport, pysnmp's v3 engine and the sessions built on them. Discovery's probe walks tables through these sessions; the change executor
reads and sets through the v3 client's engine.

pysnmp is imported on first use only, not with this package.
"""

from pdsno.snmp.ber import Reply, RequestKind, V2cCodec
from pdsno.snmp.credentials import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SnmpCredentials,
    SnmpV3Credential,
    read_secret_lines,
)
from pdsno.snmp.errors import SnmpAuthFailure, SnmpFailure, SnmpNoAgent, SnmpPduError, SnmpTimeout
from pdsno.snmp.sessions import BulkSession, V2cSession, V3Session
from pdsno.snmp.v2c import TimeoutEstimator, V2cTransport
from pdsno.snmp.v3 import V3Client, hlapi, new_engine, timed_out, usm_user
from pdsno.snmp.values import Oid, Special, Value

__all__ = [
    "AUTH_PROTOCOLS",
    "PRIV_PROTOCOLS",
    "BulkSession",
    "Oid",
    "Reply",
    "RequestKind",
    "SnmpAuthFailure",
    "SnmpCredentials",
    "SnmpFailure",
    "SnmpNoAgent",
    "SnmpPduError",
    "SnmpTimeout",
    "SnmpV3Credential",
    "Special",
    "TimeoutEstimator",
    "V2cCodec",
    "V2cSession",
    "V2cTransport",
    "V3Client",
    "V3Session",
    "Value",
    "hlapi",
    "new_engine",
    "read_secret_lines",
    "timed_out",
    "usm_user",
]
