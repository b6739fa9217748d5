"""Kotahub hub package."""
