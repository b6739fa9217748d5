"""Fixtures of the alert tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alerts.receivers import WebhookReceiver, webhook_receiver


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A local webhook receiver (tests/alerts/receivers.py)."""
    with webhook_receiver() as receiver:
        yield receiver
