"""The wifi family's metric table."""

from __future__ import annotations

from drivers.framework import Metric

WIFI_METRICS: tuple[Metric, ...] = (
    Metric(key="up", unit="", type="bool", description="A counted interface is oper up."),
    Metric(key="uptime_s", unit="s", type="float", description="sysUpTime."),
    Metric(key="clients", unit="", type="int", description="Associated clients, all radios."),
    Metric(key="rx_bps", unit="bit/s", type="float", description="Received, counted ifaces."),
    Metric(key="tx_bps", unit="bit/s", type="float", description="Sent, counted interfaces."),
    Metric(key="reboots", unit="", type="int", description="Reboots seen since the agent began."),
    Metric(key="trap", unit="", type="str", description="Event: the trap's name."),
    Metric(key="trap_oid", unit="", type="str", description="Event: the trap's OID."),
    Metric(key="if_index", unit="", type="int", description="Event: linkUp/linkDown ifIndex."),
)
