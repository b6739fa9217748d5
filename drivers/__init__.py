"""Kotahub drivers package."""
