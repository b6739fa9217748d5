"""The broker's TLS listener, on the real Mosquitto that ``LocalStack`` starts.

A message goes from an agent's publisher (gateway identity) through the broker to the
hub (its own identity) and into InfluxDB, every hop over TLS, with identities made by the
registry's dynamic-security client over TLS. A client that trusts another CA, or that
reaches the broker by a name the certificate does not carry, is refused with a clear
error. From another network namespace (a test host on a veth pair) the TLS port answers
and the plain port does not.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_registry.directory import save_device_file
from device_registry.errors import CredentialsError
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, IdentitySpec
from hub.agent.disk_buffer import DiskBuffer
from hub.agent.mqtt_publisher import MqttPublisher, gateway_topic
from hub.ingest.ingest_service import IngestService
from hub.ingest.mqtt_intake import IntakeOptions, MqttIntake
from hub.local_ca import certificate_expiry, client_context, ensure_server_certificate
from hub.local_stack import LocalStack, mqtt_connect_check, mqtt_tls_context
from hub.settings import load_settings
from tests.agent.conftest import wait_until as async_wait_until
from tests.broker_security import SecureStack, secure_stack
from tests.conftest import free_port, make_settings
from tests.ingest.conftest import device, payload

# A /30 of the project's own test hosts: it exists only on the veth pair made here.
NETNS_SUBNET = 200
HOST_ADDRESS = f"10.{NETNS_SUBNET}.{os.getpid() % 250}.1"
PEER_ADDRESS = f"10.{NETNS_SUBNET}.{os.getpid() % 250}.2"


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """A least-privileged stack whose certificate also names the veth host address."""
    with secure_stack(tmp_path_factory, "tls", tls_names=[HOST_ADDRESS]) as stack:
        yield stack


def wait_until(check: object, timeout_s: float = 20.0, what: str = "") -> None:
    """Poll until ``check()`` is true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_reading_reaches_influxdb_over_tls_end_to_end(
    tls_stack: SecureStack, tmp_path: Path, unique_id: str
) -> None:
    gateway, gauge = f"{unique_id}-gw", f"{unique_id}-g"
    issued = tls_stack.identities(IdentitySpec(device_id=gateway, kind="gateway"))
    database = f"test_{unique_id}"
    tls_stack.influx.query(f'CREATE DATABASE "{database}"')
    devices = tmp_path / "devices.json"
    save_device_file(devices, [device(gauge, gateway_id=gateway)])
    base = tls_stack.settings
    settings = load_settings(
        None,
        state_dir=base.state_dir,  # where `stack up` left the hub's own password
        mqtt=base.mqtt.model_dump(),
        influx={"url": base.influx.url, "database": database, "retention_policy": "autogen"},
        ingest={
            "client_id": f"{unique_id}-hub",
            "devices_file": str(devices),
            "wal_dir": str(tmp_path / "wal"),
            "metrics_port": 0,
            "batch_interval_s": 0.2,
            "restore_status": False,
        },
    )
    # The password argument is the admin's: the hub must not need it (its own identity).
    hub = IngestService(settings, "not-the-admin-password")
    await asyncio.to_thread(hub.start)
    outbox = DiskBuffer(tmp_path / "outbox.sqlite3", max_messages=100)
    publisher = MqttPublisher(
        gateway_id=gateway,
        host=base.mqtt.host,
        port=tls_stack.tls_port,
        username=gateway,
        password=issued[gateway].password,
        outbox=outbox,
        tls=mqtt_tls_context(base),
    )
    task = asyncio.create_task(publisher.run())
    try:
        ts = time.time_ns() // 1_000_000 - 2000
        publisher.enqueue(
            gateway_topic(gateway, gauge, "telemetry"), payload({"level_m": 2.5}, ts=ts).encode()
        )

        def rows() -> list[dict[str, object]]:
            return tls_stack.influx.rows("SELECT * FROM flood", database=database)

        await async_wait_until(lambda: bool(rows()), 20)
        assert [(r["device_id"], r["level_m"], r["time"]) for r in rows()] == [(gauge, 2.5, ts)]
        assert hub._intake is not None
        assert hub._intake.options.tls is not None
        assert hub._intake.options.username == "kotahub-hub"
        assert hub._intake.options.port == tls_stack.tls_port
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        outbox.close()
        await asyncio.to_thread(hub.stop)
        tls_stack.influx.query(f'DROP DATABASE "{database}"')


def test_a_client_trusting_another_ca_is_refused_with_a_clear_error(
    tls_stack: SecureStack, tmp_path: Path, unique_id: str
) -> None:
    other = ensure_server_certificate(tmp_path / "other-ca", ["localhost", "127.0.0.1"])
    wrong = client_context(other.ca_file)
    mq = tls_stack.settings.mqtt
    ok, reason = mqtt_connect_check(
        mq.host, tls_stack.tls_port, mq.username, tls_stack.admin_password, 5.0, tls=wrong
    )
    assert not ok
    assert "TLS handshake failed" in reason
    assert "certificate verify failed" in reason

    # The registry's broker administration says which CA file did not fit.
    admin = BrokerAdmin(
        host=mq.host,
        port=tls_stack.tls_port,
        username=mq.username,
        password=tls_stack.admin_password,
        ca_file=other.ca_file,
    )
    with pytest.raises(
        CredentialsError,
        match=r"TLS to the MQTT broker .* failed \(is .*ca\.crt the CA that signed",
    ):
        DynamicSecurityClient(admin).execute([{"command": "listClients"}])

    # The hub's intake keeps retrying and names the cause.
    intake = MqttIntake(
        IntakeOptions(
            host=mq.host,
            port=tls_stack.tls_port,
            client_id=f"{unique_id}-hub",
            username="kotahub-hub",
            password=tls_stack.hub_password,
            topics=["kota/v1/dev/+/telemetry"],
            tls=wrong,
        ),
        lambda *_args: None,
    )
    intake.start()
    try:
        wait_until(lambda: "certificate was refused" in intake.stats.last_error, what="refusal")
        assert "mqtt.ca_file" in intake.stats.last_error
        assert not intake.connected
    finally:
        intake.stop()


def test_the_broker_certificate_must_name_the_host(tls_stack: SecureStack) -> None:
    # 127.0.0.2 reaches the same listener (bound to 0.0.0.0) but is not in the certificate.
    mq = tls_stack.settings.mqtt
    ok, reason = mqtt_connect_check(
        "127.0.0.2",
        tls_stack.tls_port,
        mq.username,
        tls_stack.admin_password,
        5.0,
        tls=client_context(tls_stack.ca_file),
    )
    assert not ok
    assert "mismatch" in reason or "doesn't match" in reason


def test_keys_are_private_and_reused_and_renewed_before_expiry(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = ensure_server_certificate(folder, ["localhost", "127.0.0.1"])
    for key in (folder / "ca.key", first.key_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert_bytes, ca_bytes = first.cert_file.read_bytes(), first.ca_file.read_bytes()
    # A second start reuses both.
    ensure_server_certificate(folder, ["localhost", "127.0.0.1"])
    assert first.cert_file.read_bytes() == cert_bytes
    # A key whose mode was loosened (a copy, a backup tool) is tightened again.
    os.chmod(first.key_file, 0o644)
    ensure_server_certificate(folder, ["localhost", "127.0.0.1"])
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    # Within the renewal window (here: the whole lifetime) a new certificate is issued
    # by the same CA, so agents keep their ca.crt.
    import datetime as dt

    expiry = certificate_expiry(first.cert_file)
    ensure_server_certificate(folder, ["localhost"], renew_before=dt.timedelta(days=400))
    assert first.cert_file.read_bytes() != cert_bytes
    assert certificate_expiry(first.cert_file) >= expiry
    assert first.ca_file.read_bytes() == ca_bytes
    # A new name (the hub's LAN address) gets a certificate that carries it.
    ensure_server_certificate(folder, ["localhost", "192.0.2.7"])
    context = client_context(first.ca_file)
    assert context.check_hostname


def test_stack_up_reuses_the_certificate_and_refuses_a_plain_listener_off_loopback(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    state = tmp_path_factory.mktemp("tls-reuse") / ".kotahub"
    settings = load_settings(
        None,
        state_dir=state,
        mqtt={"host": "0.0.0.0", "port": free_port()},
        influx={"url": f"http://127.0.0.1:{free_port()}"},
        stack={"influx_rpc_port": free_port()},
    )
    from hub.local_stack import StackError

    with pytest.raises(StackError, match=r"mqtt.host 0.0.0.0: the plain .* loopback only"):
        LocalStack(settings).up()

    settings = make_settings(state)
    stack = LocalStack(settings)
    stack.up()
    try:
        cert = state / "mosquitto" / "tls" / "server.crt"
        first = cert.read_bytes()
        assert stat.S_IMODE((state / "mosquitto" / "tls" / "server.key").stat().st_mode) == 0o600
        conf = (state / "mosquitto" / "mosquitto.conf").read_text()
        assert f"listener {settings.mqtt.port} 127.0.0.1\n" in conf
        assert f"listener {settings.mqtt.resolved_tls_port} 0.0.0.0\n" in conf
    finally:
        stack.down()
    stack.up()
    try:
        assert cert.read_bytes() == first
    finally:
        stack.down()


# -- another host: a network namespace on a veth pair -----------------------------------
def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture
def test_host() -> Iterator[str]:
    """A network namespace reached over a veth pair (10.200.x.0/30); removed afterwards."""
    tag = secrets.token_hex(3)
    namespace, host_end, peer_end = f"kh-{tag}", f"khv{tag}a", f"khv{tag}b"
    try:
        _ip("netns", "add", namespace)
    except (RuntimeError, OSError) as err:
        pytest.fail(
            f"cannot create a network namespace ({err}): this test needs root (CAP_NET_ADMIN) "
            "and iproute2 to show that the plain port is unreachable from another host"
        )
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", peer_end)
        _ip("link", "set", peer_end, "netns", namespace)
        _ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", namespace, "addr", "add", f"{PEER_ADDRESS}/30", "dev", peer_end)
        _ip("-n", namespace, "link", "set", peer_end, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
    except RuntimeError as err:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        pytest.fail(f"cannot set up the veth pair for the test host: {err}")
    try:
        yield namespace
    finally:
        # Deleting the namespace deletes its veth end, and with it the host's.
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


_PROBE = textwrap.dedent(
    """
    import json, socket, sys
    from pathlib import Path
    from hub.local_ca import client_context
    from hub.local_stack import mqtt_connect_check
    host, plain, tls, user, password, ca = sys.argv[1:7]
    result = {}
    try:
        socket.create_connection((host, int(plain)), timeout=3).close()
        result["plain"] = "open"
    except OSError as err:
        result["plain"] = type(err).__name__
    ok, reason = mqtt_connect_check(
        host, int(tls), user, password, 5.0, tls=client_context(Path(ca))
    )
    result["tls"] = [ok, reason]
    print(json.dumps(result))
    """
)


def test_from_another_host_the_tls_port_answers_and_the_plain_port_does_not(
    tls_stack: SecureStack, test_host: str
) -> None:
    import json

    mq = tls_stack.settings.mqtt
    done = subprocess.run(
        [
            "ip", "netns", "exec", test_host, sys.executable, "-c", _PROBE,
            HOST_ADDRESS, str(mq.port), str(tls_stack.tls_port),
            mq.hub_username, tls_stack.hub_password, str(tls_stack.ca_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The MQTT login over TLS (CA and host name verified) works from the other host...
    assert result["tls"] == [True, "Success"]
    # ...while the plain listener, bound to loopback, is not there at all.
    assert result["plain"] == "ConnectionRefusedError"
