"""Demo test fixtures: a small fleet file cut from the sample, and a stack of the module's own.

The broker and InfluxDB faults stop and start the stack's servers, so the demo tests run
on a stack of their own, never on the session's shared one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.demo.fleet import DEFAULT_FLEET_FILE
from hub.settings import Settings
from tests.conftest import RunningStack, free_port, own_stack

SMALL_AREAS = ("Semarang Utara", "Tembalang")
PER_TYPE = 2


def small_fleet(path: Path, areas: tuple[str, ...] = SMALL_AREAS, per_type: int = PER_TYPE) -> Path:
    """The sample fleet cut to a few areas and a few devices of each type in each."""
    doc = json.loads(DEFAULT_FLEET_FILE.read_text())
    doc["areas"] = [a for a in doc["areas"] if a["kecamatan"] in areas]
    doc["sites"] = [s for s in doc["sites"] if s["kecamatan"] in areas]
    kept: list[dict[str, object]] = []
    taken: dict[tuple[str, str, str], int] = {}
    for device in doc["devices"]:
        key = (device["kecamatan"], device["family"], device["device_type"])
        # Vehicles roam the city: keep a couple, moved to the first area.
        if device["family"] == "gps":
            key = (areas[0], "gps", device["device_type"])
            device = {**device, "kecamatan": areas[0], "kelurahan": None}
        if key[0] not in areas:
            continue
        parent = device.get("parent")
        if parent:  # a child (a camera's NVR, a controller's detector) goes with its parent
            if any(k["id"] == parent for k in kept):
                kept.append(device)
            continue
        if taken.get(key, 0) >= per_type:
            continue
        if device.get("site") and not any(s["id"] == device["site"] for s in doc["sites"]):
            continue
        taken[key] = taken.get(key, 0) + 1
        kept.append(device)
    doc["devices"] = kept
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A Mosquitto + InfluxDB of this module's own (faults stop and start them)."""
    with own_stack(tmp_path_factory, "demo-stack") as stack:
        yield stack


def demo_settings(stack: RunningStack) -> Settings:
    """The stack's settings (its state folder: faults act on its servers through their PID
    records), with no /metrics port and a free API port."""
    base = stack.settings
    return base.model_copy(
        update={
            "ingest": base.ingest.model_copy(update={"metrics_port": 0}),
            "registry": base.registry.model_copy(update={"api_port": free_port()}),
        }
    )
