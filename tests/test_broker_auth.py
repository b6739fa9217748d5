"""The broker accepts the project's credentials and refuses everything else."""

from __future__ import annotations

from tests.conftest import MqttClientFactory, RunningStack


def test_project_credentials_publish_and_deliver(
    mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    subscriber = mqtt_client()
    topic = f"kota/v1/dev/{unique_id}/telemetry"
    subscriber.subscribe(topic)
    publisher = mqtt_client()
    publisher.publish(topic, b'{"metrics": {"level_m": 1.5}}')
    messages = subscriber.wait_for(1)
    assert [m.payload for m in messages] == [b'{"metrics": {"level_m": 1.5}}']
    assert messages[0].topic == topic


def test_wrong_password_is_refused(mqtt_client: MqttClientFactory) -> None:
    client = mqtt_client(password="not-the-password", connect=False)
    reason = client.connect()
    assert reason != "Success"
    assert "authori" in reason.lower() or "password" in reason.lower()


def test_unknown_user_and_anonymous_are_refused(mqtt_client: MqttClientFactory) -> None:
    assert mqtt_client("nobody", "x", connect=False).connect() != "Success"
    assert mqtt_client("", "", connect=False).connect() != "Success"


def test_rendered_config_keeps_messages_for_an_absent_hub(running_stack: RunningStack) -> None:
    conf = (running_stack.stack.mosquitto_dir / "mosquitto.conf").read_text()
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf
    assert "mosquitto_dynamic_security.so" in conf
    queued = int(conf.split("max_queued_messages ")[1].split()[0])
    assert queued >= 10_000 * 60 * 5  # at least five minutes at 10,000 msg/s
