"""Grafana boards for the situation room, built with grafana-foundation-sdk."""
