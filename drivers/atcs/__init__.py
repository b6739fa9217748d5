"""ATCS traffic signal controllers: NTCIP 1202 over SNMP (v1, v2c, v3), and their traps."""

from __future__ import annotations

from drivers.atcs.metrics import ATCS_DETECTOR_METRICS, ATCS_METRICS
from drivers.atcs.ntcip_controller import NtcipControllerConfig, create_controller
from drivers.framework import DeviceTypeSpec, DriverFamily
from drivers.snmp.client import family_closer
from drivers.snmp.trap_receiver import trap_stream_factory

PROTOCOL = "ntcip_1202"
DETECTOR_PROTOCOL = "ntcip_1202_detector"  # no poll of its own: its controller reads it
DETECTOR_MEASUREMENT = "atcs_detector"
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
        DeviceTypeSpec(
            name="ntcip_1202_detector",
            protocol=DETECTOR_PROTOCOL,
            expected_interval_s=60.0,
            metrics=tuple(m.key for m in ATCS_DETECTOR_METRICS),
            description="A vehicle detector of an NTCIP 1202 controller (its parent)",
            measurement=DETECTOR_MEASUREMENT,
            metric_table=ATCS_DETECTOR_METRICS,
            influx_tag_keys=("detector",),
            read_by_parent=True,
        ),
    ),
    # Traps: one receiver for the family's devices that set trap_port (events).
    # The agent closes the family's shared SNMP engine once it stops (its timer task).
    close=family_closer("atcs"),
    create_stream=trap_stream_factory("atcs", [m.key for m in ATCS_METRICS]),
    create_poller=create_controller,
)
