"""Kotahub firmware_tools package."""
