"""ATCS traffic signal controllers: NTCIP 1202 over SNMP (v1, v2c, v3), and their traps."""

from __future__ import annotations

from drivers.atcs.metrics import ATCS_METRICS
from drivers.atcs.ntcip_controller import NtcipControllerConfig, create_controller
from drivers.framework import DeviceTypeSpec, DriverFamily
from drivers.snmp.trap_receiver import trap_stream_factory

PROTOCOL = "ntcip_1202"
CONTROLLER_METRICS = tuple(m.key for m in ATCS_METRICS if not m.key.startswith("trap"))

FAMILY = DriverFamily(
    name="atcs",
    description="Traffic signal controllers on the ATCS network (NTCIP 1202 over SNMP)",
    protocols=(PROTOCOL,),
    metrics=ATCS_METRICS,
    config_model=NtcipControllerConfig,
    models=("ntcip_1202_controller",),
    device_types=(
        DeviceTypeSpec(
            name="ntcip_1202_controller",
            protocol=PROTOCOL,
            expected_interval_s=60.0,
            metrics=tuple(m.key for m in ATCS_METRICS),
            description="NTCIP 1202 actuated signal controller (phases, alarms, detectors)",
        ),
    ),
    # Traps: one receiver for the family's devices that set trap_port (events).
    create_stream=trap_stream_factory("atcs", [m.key for m in ATCS_METRICS]),
    create_poller=create_controller,
)
