"""Alerting: rules on the live stream, alert state, notifications (see docs/alerting.md)."""
