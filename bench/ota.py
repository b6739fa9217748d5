"""OTA campaign: a 1 MiB signed image to 1,000 simulated devices through the real broker.

A private Mosquitto (``BenchStack``), a registry in SQLite whose devices each get their own
broker identity, reference devices (``DeviceSwarm``) in a few processes logged in as those
identities, and one campaign (waves 1 %, 10 %, 50 %, 100 %) run by the hub's
``CampaignRunner``: every device verifies the signature, takes the image in chunks, checks
its SHA-256, reboots and reports the version, which the registry records.

Reference, measured in the same run on the same broker: one admin client publishing the
same number of chunk-sized QoS 1 messages to one subscriber (the broker and paho ceiling
with no OTA logic, no acks per chunk, no campaign).

Last line: ``{"devices": N, "image_kib": K, "campaign_s": X, "broker_mib_per_s": Y,
"failed": F}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_stack import BenchError, BenchStack
from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.campaign_store import CAMPAIGN_FILE, CampaignSettings, CampaignStore
from firmware_tools.campaigns import BrokerLogin, CampaignRunner, RegistryFleet, create_campaign
from firmware_tools.image_manifest import ImageManifest
from firmware_tools.ota_sender import PreparedImage
from firmware_tools.reference_device import DeviceLogin, DeviceOta, DeviceSwarm
from firmware_tools.signing import load_public_key, public_pem
from firmware_tools.simulated_fleet import OTA_DEVICE_TYPE, OTA_MODEL, make_signed_image
from firmware_tools.simulated_fleet import register_ota_devices as register

MIB = 1024 * 1024


def _swarm_process(
    host: str,
    port: int,
    logins: list[tuple[str, str]],
    manifest_json: bytes,
    public_key: bytes,
    conn: Connection,
) -> None:
    """One process of devices: connect, say ready, run until told, report versions."""
    manifest = ImageManifest.model_validate_json(manifest_json)
    keys = {manifest.key_id: load_public_key(public_key, source="bench key")}
    swarm = DeviceSwarm(host, port)
    for username, password in logins:
        ota = DeviceOta(
            device_id=username,
            device_type=OTA_DEVICE_TYPE,
            model=OTA_MODEL,
            version="1.0.0",
            trusted_keys=keys,
        )
        swarm.add(ota, DeviceLogin(username=username, password=password), reboot_s=0.5)
    swarm.start()
    conn.send(("ready", swarm.wait_connected(timeout_s=300)))
    conn.recv()  # the campaign is over
    versions = {d: m.ota.version for d, m in swarm.members.items()}
    swarm.stop()
    conn.send(("versions", versions))


def reference_throughput(stack: BenchStack, messages: int, size: int) -> float:
    """MiB/s of ``messages`` QoS 1 messages of ``size`` bytes, one publisher to one subscriber."""
    topic = f"kota/v1/dev/bench-ref-{secrets.token_hex(3)}/ota/chunk"
    got = threading.Event()
    count = [0]

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= messages:
            got.set()

    clients = []
    for role in ("sub", "pub"):
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-ref-{role}-{secrets.token_hex(3)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(stack.username, stack.password)
        client.max_inflight_messages_set(200)
        client.connect(stack.mqtt_host, stack.mqtt_port)
        client.loop_start()
        clients.append(client)
    sub, pub = clients
    sub.on_message = on_message
    sub.subscribe(topic, qos=1)[1]
    time.sleep(0.5)
    payload = os.urandom(size)
    started = time.perf_counter()
    for _ in range(messages):
        pub.publish(topic, payload, qos=1)
    got.wait(300)
    elapsed = time.perf_counter() - started
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return messages * size / MIB / elapsed


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, run the campaign, and measure."""
    with BenchStack(keep_state=args.keep_state) as stack:
        s = stack.settings
        admin = DynamicSecurityClient(
            BrokerAdmin(
                host=s.mqtt.host,
                port=s.mqtt.port,
                username=s.mqtt.username,
                password=stack.password,
            )
        )
        database = open_database(f"sqlite:///{stack.root / 'registry.sqlite'}")
        service = RegistryService(database, DynsecIdentities(admin))
        ids = [f"ota-{n:05d}" for n in range(args.devices)]
        started = time.perf_counter()
        logins = register(service, ids)
        took = time.perf_counter() - started
        print(f"registered {len(logins)} devices, a broker identity each, in {took:.1f} s")
        image = make_signed_image(stack.root / "image", size=args.image_kib * 1024)
        prepared = PreparedImage.of(image.manifest, image.data, args.chunk_kib * 1024)

        ctx = mp.get_context("spawn")
        procs, conns = [], []
        pairs = sorted((d, login.password) for d, login in logins.items())
        per = -(-len(pairs) // args.processes)
        for start in range(0, len(pairs), per):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_swarm_process,
                args=(
                    s.mqtt.host,
                    s.mqtt.port,
                    pairs[start : start + per],
                    image.manifest.model_dump_json().encode(),
                    public_pem(image.public_key),
                    child,
                ),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
            conns.append(parent)
        try:
            for conn in conns:
                if not conn.poll(600):
                    raise BenchError("a device process did not connect its devices in 10 minutes")
                _what, ok = conn.recv()
                if not ok:
                    raise BenchError("not every simulated device could connect to the broker")
            print(f"{len(ids)} reference devices connected in {len(procs)} processes")

            store = CampaignStore(stack.root / CAMPAIGN_FILE)
            fleet = RegistryFleet(service)
            campaign = create_campaign(
                store,
                fleet,
                image.manifest,
                campaign_id="bench",
                settings=CampaignSettings(
                    chunk_size=args.chunk_kib * 1024,
                    devices_per_s=args.devices_per_s,
                    max_concurrent=args.max_concurrent,
                    online_timeout_s=120,
                    min_success_rate=0.99,
                    max_failure_rate=0.05,
                ),
            )
            login = BrokerLogin(
                host=s.mqtt.host,
                port=s.mqtt.port,
                username=s.mqtt.username,
                password=stack.password,
            )
            runner = CampaignRunner(store, fleet, prepared, login)
            started = time.perf_counter()
            done = runner.run(campaign.id)
            campaign_s = time.perf_counter() - started
            bytes_sent = runner.sender.bytes_sent if runner.sender is not None else 0
            counts = store.counts(campaign.id)
            versions: dict[str, str] = {}
            for conn in conns:
                conn.send("done")
            for conn in conns:
                if conn.poll(120):
                    versions.update(conn.recv()[1])
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.terminate()
        registry_ok = sum(
            service.get_device(d).firmware_version == image.manifest.version for d in ids
        )
        admin.close()
        database.close()
        ref_messages = max(64, min(args.devices * prepared.chunks, 2048))
        reference = reference_throughput(stack, ref_messages, args.chunk_kib * 1024)

    installed = counts.get("installed", 0)
    running_new = sum(v == image.manifest.version for v in versions.values())
    broker_mib_s = bytes_sent / MIB / campaign_s
    print()
    print(f"campaign {done.id}: {done.state} {done.reason or ''}")
    print(f"{'devices':<34}{args.devices:>12}")
    print(f"{'image KiB / chunk KiB':<34}{args.image_kib:>8} / {args.chunk_kib}")
    print(f"{'campaign s (4 waves)':<34}{campaign_s:>12.1f}")
    print(f"{'installed (campaign store)':<34}{installed:>12}")
    print(f"{'running the new image (devices)':<34}{running_new:>12}")
    print(f"{'firmware_version in the registry':<34}{registry_ok:>12}")
    print(f"{'chunk bytes through the broker MiB':<34}{bytes_sent / MIB:>12.1f}")
    print(f"{'OTA broker MiB/s':<34}{broker_mib_s:>12.1f}")
    print(f"{'reference: 1 pub -> 1 sub MiB/s':<34}{reference:>12.1f}")
    return {
        "devices": args.devices,
        "image_kib": args.image_kib,
        "campaign_s": round(campaign_s, 2),
        "broker_mib_per_s": round(broker_mib_s, 2),
        "failed": args.devices - min(installed, running_new, registry_ok),
    }


def main() -> None:
    """Parse the arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--image-kib", type=int, default=1024)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4, help="processes running devices")
    parser.add_argument("--devices-per-s", type=float, default=500.0)
    parser.add_argument("--max-concurrent", type=int, default=250)
    parser.add_argument("--quick", action="store_true", help="10 devices, a 64 KiB image")
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.image_kib, args.chunk_kib, args.processes = 10, 64, 8, 2
    try:
        result = run(args)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    print(json.dumps(result))


if __name__ == "__main__":
    main()
