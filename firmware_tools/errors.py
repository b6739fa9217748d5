"""The one exception root of ``firmware_tools``."""

from __future__ import annotations


class FirmwareError(Exception):
    """A firmware operation was refused; the message says why in one line."""
