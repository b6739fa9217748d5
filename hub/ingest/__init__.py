"""Hub ingest: MQTT contract v1 to InfluxDB with a write-ahead log (see docs/ingest.md)."""

from hub.ingest.contract_decoder import Accepted, ContractDecoder, Reason, Rejected
from hub.ingest.device_status import DeviceStatusTracker, StatusChange
from hub.ingest.ingest_service import IngestError, IngestService

__all__ = [
    "Accepted",
    "ContractDecoder",
    "DeviceStatusTracker",
    "IngestError",
    "IngestService",
    "Reason",
    "Rejected",
    "StatusChange",
]
