"""Helpers the demo tests share (a test module imports from here, never from another test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from hub.demo.fleet_city import sample_document


async def eventually(
    what: str, check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.25
) -> None:
    """Wait until ``check()`` holds (generous: the machine is shared)."""
    start = time.monotonic()
    deadline = start + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(every_s)
    print(f"{what}: {time.monotonic() - start:.1f} s")


def tugu_fleet(unique_id: str) -> dict[str, Any]:
    """The sample's Tugu area alone, its ids prefixed with ``unique_id`` (a fleet document)."""
    document = sample_document()
    keep = [d for d in document["devices"] if d["kecamatan"] == "Tugu"]
    for entry in keep:
        entry["id"] = f"{unique_id}-{entry['id']}"
        if entry.get("parent"):
            entry["parent"] = f"{unique_id}-{entry['parent']}"
    document["devices"] = keep
    document["areas"] = [a for a in document["areas"] if a["kecamatan"] == "Tugu"]
    document["areas"][0]["gateway"]["id"] = f"{unique_id}-gw-tugu"
    document["areas"][0]["gateway"]["site"] = None
    document["sites"] = [
        s for s in document["sites"] if s["kecamatan"] == "Tugu" and "pompa" in s["id"]
    ]
    return document
