"""Shared SNMP support for the SNMP families (atcs, wifi): targets, one engine, typed values.

A library package without ``FAMILY``: family discovery skips it.
"""

from __future__ import annotations

from drivers.snmp.client import SnmpClient, SnmpError, client_for_family
from drivers.snmp.target import SnmpTargetConfig
from drivers.snmp.values import UNSUPPORTED, SnmpValue, Unsupported, WrongTypeError

__all__ = [
    "UNSUPPORTED",
    "SnmpClient",
    "SnmpError",
    "SnmpTargetConfig",
    "SnmpValue",
    "Unsupported",
    "WrongTypeError",
    "client_for_family",
]
