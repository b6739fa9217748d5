"""Reconnect storms: brokers that refuse in the wrong protocol, or accept and then drop.

Each broker here is the raw-socket stand-in (``mqtt_stand_in``), scripted to behave as
aedes does to an MQTT 5 CONNECT (a 3.1.1 CONNACK with return code 1) or as ejabberd does
on a ``$share`` subscription (grant it, then drop the connection). Before, the first was
taken as connected and the second reset the backoff at every CONNECT: about 6
reconnects a second for ever, logged at DEBUG only.
"""

from __future__ import annotations

import logging
import time

import pytest

from hub.ingest.mqtt_intake import IntakeOptions, MqttIntake
from tests.conftest import free_port
from tests.ingest.mqtt_stand_in import MqttStandIn, Session, grant_all

INTAKE_LOGGER = "hub.ingest.mqtt_intake"


def options(port: int, protocol: str = "3.1.1", **extra: object) -> IntakeOptions:
    """An intake of the stand-in with the hub's minimum reconnect delay."""
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": "storm",
        "username": None,
        "password": None,
        "topics": ["$share/workers/kota/v1/dev/+/telemetry"],
        "protocol": protocol,
        "connect_timeout_s": 2.0,
        "reconnect_min_s": 0.15,
        "reconnect_max_s": 30.0,
    }
    fields.update(extra)
    return IntakeOptions(**fields)  # type: ignore[arg-type]


def run_for(intake: MqttIntake, seconds: float) -> None:
    """Let the intake try for ``seconds``, then stop it."""
    intake.start()
    try:
        time.sleep(seconds)
    finally:
        intake.stop()


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """Messages at WARNING or above from the intake that contain ``text``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == INTAKE_LOGGER and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


def test_accepted_then_dropped_connections_back_off_and_say_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def grant_then_drop(session: Session, subscribe: bytes) -> bytes | None:
        suback = grant_all(session, subscribe)
        assert suback is not None
        session.send(suback)
        return None  # then close, as ejabberd does on a $share filter it does not support

    caplog.set_level(logging.DEBUG, logger=INTAKE_LOGGER)
    with MqttStandIn(on_subscribe=grant_then_drop) as broker:
        intake = MqttIntake(options(broker.port), lambda *_: None)
        run_for(intake, 3.0)
        attempts = len(broker.connect_times)
    # 0.15 s between attempts for ever gave about 18 in 3 s; backing off, 5.
    assert 2 <= attempts <= 6, attempts
    assert intake.stats.connects == attempts
    said = warnings_with(caplog, "dropped right after subscribing")
    assert len(said) == 1, said
    assert "$share" in said[0]
    assert "ingest.shared_group" in said[0]


def test_a_v311_refusal_to_a_v5_connect_is_a_refusal_named_with_the_setting_to_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def aedes_style(_session: Session, _connect: bytes) -> bytes | None:
        return b"\x20\x02\x00\x01"  # 3.1.1 CONNACK: unacceptable protocol version

    caplog.set_level(logging.DEBUG, logger=INTAKE_LOGGER)
    connects: list[int] = []
    with MqttStandIn(on_connect=aedes_style) as broker:
        intake = MqttIntake(
            options(broker.port, "5", auth_failure_min_s=5.0),
            lambda *_: None,
            on_connect=lambda generation, _present: connects.append(generation),
        )
        run_for(intake, 3.0)
        attempts = len(broker.connect_times)
    assert connects == []  # never taken as connected
    assert intake.stats.connects == 0
    assert intake.stats.refusals == {0x84: attempts}
    assert attempts == 1  # retried no sooner than auth_failure_min_s
    said = warnings_with(caplog, "unsupported protocol version")
    assert len(said) == 1, said
    assert 'ingest.mqtt_protocol = "3.1.1"' in said[0]


def test_failed_connects_are_logged_once_per_cause_not_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=INTAKE_LOGGER)
    intake = MqttIntake(options(free_port(), reconnect_max_s=0.3), lambda *_: None)
    run_for(intake, 2.0)
    assert intake.stats.connect_failures >= 4
    said = warnings_with(caplog, "127.0.0.1")
    assert len(said) == 1, said
    assert "ConnectionRefusedError" in said[0]
