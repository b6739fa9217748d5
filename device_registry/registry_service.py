"""The registry's service layer: every write checks references, is audited and bumps the
change counter, all in one transaction.

MQTT identities are created after the database rows are flushed and before the commit, so
a broker refusal rolls the write back; if the commit itself fails, the fresh identities
are revoked again. The API, the CLI and the importer all go through this class.

``RegistryService`` is assembled from one part per job: ``device_service`` (devices),
``status_service`` (device status), ``catalog_service`` (types, sites, teams) on
``service_core`` (transactions, audit, change counter); ``identity_planning`` and
``registry_rows`` hold the functions they share. Their public names are importable here.
"""

from __future__ import annotations

from device_registry.catalog_service import CatalogService, SeedAction
from device_registry.device_service import DeviceService
from device_registry.identity_planning import (
    LIVE_STATES,
    IdentityChange,
    PendingIdentities,
    credentials_public,
    identity_spec,
    plan_identity_change,
    speaks_mqtt_itself,
)
from device_registry.registry_rows import (
    DEVICE_COLUMNS,
    device_filters,
    device_public,
    device_snapshot,
    row_snapshot,
)
from device_registry.service_core import LockedRow
from device_registry.status_service import StatusService

__all__ = [
    "DEVICE_COLUMNS",
    "LIVE_STATES",
    "IdentityChange",
    "LockedRow",
    "PendingIdentities",
    "RegistryService",
    "SeedAction",
    "credentials_public",
    "device_filters",
    "device_public",
    "device_snapshot",
    "identity_spec",
    "plan_identity_change",
    "row_snapshot",
    "speaks_mqtt_itself",
]


class RegistryService(DeviceService, StatusService, CatalogService):
    """Devices, device types, sites and teams, with audit and MQTT identities."""
