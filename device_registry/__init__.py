"""Kotahub device_registry package."""
