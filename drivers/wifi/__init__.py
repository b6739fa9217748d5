"""Public WiFi access points over SNMP (MikroTik, UniFi, any IF-MIB agent), and their traps."""

from __future__ import annotations

from drivers.framework import AreaMetric, DeviceTypeSpec, DriverFamily
from drivers.snmp.client import family_closer
from drivers.snmp.trap_receiver import trap_stream_factory
from drivers.wifi.access_point import (
    DEVICE_VENDORS,
    AccessPointConfig,
    check_device,
    create_access_point,
)
from drivers.wifi.metrics import WIFI_METRICS

PROTOCOL = "snmp"
POLLED = ("up", "uptime_s", "clients", "rx_bps", "tx_bps", "reboots")
DESCRIPTIONS = {
    "mikrotik_ap": "MikroTik RouterOS AP (mtxrWlApClientCount)",
    "unifi_ap": "Ubiquiti UniFi AP (unifiVapNumStations summed over VAPs)",
    "generic_snmp_ap": "Any AP with IF-MIB and the system group (no client count)",
}

FAMILY = DriverFamily(
    name="wifi",
    description="Public WiFi hotspots polled over SNMP",
    protocols=(PROTOCOL,),
    metrics=WIFI_METRICS,
    config_model=AccessPointConfig,
    models=tuple(DEVICE_VENDORS),
    device_types=tuple(
        DeviceTypeSpec(
            name=name,
            protocol=PROTOCOL,
            expected_interval_s=120.0,
            metrics=tuple(m.key for m in WIFI_METRICS)
            if name != "generic_snmp_ap"
            else tuple(m.key for m in WIFI_METRICS if m.key != "clients"),
            description=DESCRIPTIONS[name],
        )
        for name in DEVICE_VENDORS
    ),
    # Traps: one receiver for the family's devices that set trap_port (events).
    # The agent closes the family's shared SNMP engine once it stops (its timer task).
    close=family_closer("wifi"),
    create_stream=trap_stream_factory("wifi", [m.key for m in WIFI_METRICS]),
    create_poller=create_access_point,
    check=check_device,
    # The board's clients, throughput and reboots by kecamatan (2,300 APs in Semarang).
    area_metrics=(
        AreaMetric(key="clients", aggregate="sum"),
        AreaMetric(key="rx_bps", aggregate="sum"),
        AreaMetric(key="tx_bps", aggregate="sum"),
        AreaMetric(key="reboots", aggregate="increase"),
    ),
)
