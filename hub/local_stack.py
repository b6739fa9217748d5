"""The local stack: a Mosquitto broker and an InfluxDB 1.x under one state folder.

``kotahub stack up`` renders the project's ``mosquitto/`` configuration and an InfluxDB
config into the state folder, starts both on loopback ports, waits until each answers,
and records what it started (PID and process start time) so that ``down`` stops only
those processes, never a namesake that took over a recycled PID.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from device_registry.errors import CredentialsError
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient
from drivers.contract import DEADLETTER_TOPIC, SUBSCRIPTION_FILTERS, hub_probe_topic
from hub.influx_rollups import RollupError, ensure_rollups
from hub.influxql import InfluxQL, InfluxQueryError
from hub.local_ca import (
    LocalCaError,
    TlsFiles,
    client_context,
    default_server_names,
    ensure_server_certificate,
)
from hub.settings import ConfigError, Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_TEMPLATE = PROJECT_ROOT / "mosquitto" / "mosquitto.conf.in"
CREDENTIALS_FILE = "credentials.toml"
# Mosquitto 2.0's own `mosquitto_ctrl dynsec init` uses PBKDF2-SHA512 with 101 rounds;
# the broker reads the count from the file, so a stronger one costs only connect time.
DYNSEC_ITERATIONS = 10_000
_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")
_PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/*/mosquitto_dynamic_security.so",
)

PartName = Literal["mosquitto", "influxdb"]
PartState = Literal["running", "stopped", "not responding"]


class StackError(Exception):
    """The local stack cannot be started, checked or stopped; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartStatus:
    """What ``kotahub stack status`` reports for one part."""

    name: PartName
    state: PartState
    port: int
    pid: int | None = None
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    """What the stack remembers of a process it started."""

    pid: int
    create_time: float
    version: str

    def process(self) -> psutil.Process | None:
        """The live process, or None once it has gone (or its PID was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc


def find_binary(name: str, *, package: str, what: str, setting: str) -> str:
    """Path of an executable, or a StackError naming the Debian package to install."""
    if os.sep in name:
        if os.access(name, os.X_OK):
            return name
        raise StackError(f"{what} not found at {name}: fix the setting {setting}")
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_BIN_DIRS))
    if found is None:
        raise StackError(
            f"{what} ({name}) is not installed: install the Debian package '{package}' "
            f"(sudo apt-get install {package}) or set {setting} to its path"
        )
    return found


def find_dynsec_plugin(configured: Path | None) -> Path:
    """Path of Mosquitto's dynamic-security plugin."""
    if configured is not None:
        if configured.is_file():
            return configured
        raise StackError(f"stack.dynsec_plugin: {configured} does not exist")
    for pattern in _PLUGIN_GLOBS:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/"))):
            return candidate
    raise StackError(
        "Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found: "
        "install the Debian package 'mosquitto' (2.0 or later) or set stack.dynsec_plugin"
    )


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def dynsec_password_entry(password: str) -> dict[str, object]:
    """Password, salt and iterations in the format of Mosquitto's dynamic-security file."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": DYNSEC_ITERATIONS,
    }


def _acl(acltype: str, topic: str) -> dict[str, object]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


HUB_ROLE = "kotahub-hub"
ADMIN_ROLE = "kotahub-admin"
ADMIN_FULL_ROLE = "kotahub-admin-full"


def hub_acls() -> list[dict[str, object]]:
    """The hub's rights: read the contract's topics (also shared), write dead-letter and probe.

    The probe is the hub's own check that a ``$share`` subscription delivers; it needs
    both directions on ``kota/v1/hub/probe/#`` and nothing else of the hub's namespace.
    """
    probe = hub_probe_topic("#")
    filters = [*SUBSCRIPTION_FILTERS, probe]
    # Mosquitto checks a shared subscription against its full "$share/<group>/..." filter.
    filters += [f"$share/+/{topic}" for topic in filters]
    acls = [_acl("publishClientSend", DEADLETTER_TOPIC), _acl("publishClientSend", probe)]
    acls += [_acl("subscribePattern", topic) for topic in filters]
    acls += [_acl("unsubscribePattern", topic) for topic in filters]
    return acls


def admin_acls() -> list[dict[str, object]]:
    """The admin's rights: the dynamic-security control topic and its replies, nothing else."""
    control = "$CONTROL/dynamic-security/#"
    return [
        _acl("publishClientSend", control),
        _acl("publishClientReceive", control),
        _acl("subscribePattern", control),
        _acl("unsubscribePattern", control),
    ]


def admin_full_acls() -> list[dict[str, object]]:
    """What ``stack.admin_acl = "full"`` adds: read everything, publish under ``kota/``."""
    return [
        _acl("publishClientReceive", "$SYS/#"),
        _acl("subscribePattern", "$SYS/#"),
        _acl("publishClientSend", "kota/#"),
        _acl("publishClientReceive", "#"),
        _acl("subscribePattern", "#"),
        _acl("unsubscribePattern", "#"),
    ]


def bootstrap_dynsec(
    path: Path,
    username: str,
    password: str,
    *,
    hub_username: str | None = None,
    hub_password: str | None = None,
    admin_acl: Literal["full", "control"] = "control",
) -> None:
    """Write a dynamic-security file with the admin identity and the hub's own.

    The admin manages identities over ``$CONTROL/dynamic-security/#`` (the registry);
    with ``admin_acl="full"`` it may also read every topic and publish under ``kota/``.
    The hub reads the contract's topics and writes the dead-letter topic (``hub_acls``).
    Everyone else starts with no rights; the registry grants each device and gateway
    its own topics.
    """
    admin_roles = [{"rolename": ADMIN_ROLE}]
    if admin_acl == "full":
        admin_roles.append({"rolename": ADMIN_FULL_ROLE})
    clients: list[dict[str, object]] = [
        {
            "username": username,
            "textName": "Kotahub broker administration (registry)",
            "roles": admin_roles,
            **dynsec_password_entry(password),
        }
    ]
    if hub_username is not None and hub_password is not None:
        clients.append(
            {
                "username": hub_username,
                "textName": "Kotahub hub (ingest)",
                "roles": [{"rolename": HUB_ROLE}],
                **dynsec_password_entry(hub_password),
            }
        )
    document = {
        "clients": clients,
        "roles": [
            {"rolename": ADMIN_ROLE, "acls": admin_acls()},
            {"rolename": ADMIN_FULL_ROLE, "acls": admin_full_acls()},
            {"rolename": HUB_ROLE, "acls": hub_acls()},
        ],
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    _write_private(path, json.dumps(document, indent=2))


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (secrets and password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # The mode of os.open applies only to a new file: an existing one is tightened too.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def read_credentials(state_dir: Path, section: str = "mqtt") -> dict[str, str] | None:
    """The MQTT credentials that ``stack up`` generated, if any: admin (``mqtt``) or ``hub``."""
    path = state_dir / CREDENTIALS_FILE
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    mqtt_section = data.get(section, {})
    if not isinstance(mqtt_section, dict):
        return None
    return {str(k): str(v) for k, v in mqtt_section.items()}


def mqtt_password(settings: Settings) -> str:
    """The hub's MQTT password: from settings, else the one the local stack generated."""
    if settings.mqtt.password is not None:
        return settings.mqtt.password.get_secret_value()
    creds = read_credentials(settings.state_dir)
    if creds and creds.get("username") == settings.mqtt.username and "password" in creds:
        return creds["password"]
    raise ConfigError(
        "mqtt.password: not set, and no generated password in "
        f"{settings.state_dir / CREDENTIALS_FILE}: run `kotahub stack up` or set "
        "KOTAHUB_MQTT__PASSWORD"
    )


def hub_login(settings: Settings, fallback_password: str) -> tuple[str, str]:
    """The hub's MQTT username and password: its own identity when one is known.

    ``mqtt.hub_password``, else the password ``stack up`` generated for ``mqtt.hub_username``.
    A setup without either (a broker bootstrapped before the hub had an identity, or
    settings that name only ``mqtt.username``) logs in as ``mqtt.username`` with
    ``fallback_password``, and says so once.
    """
    mq = settings.mqtt
    if mq.hub_password is not None:
        return mq.hub_username, mq.hub_password.get_secret_value()
    creds = read_credentials(settings.state_dir, "hub")
    if creds and creds.get("username") == mq.hub_username and creds.get("password"):
        return mq.hub_username, creds["password"]
    log.warning(
        "hub logs in as %s: no password for its own identity %s (set mqtt.hub_password "
        "or run `kotahub stack up` with this state folder)",
        mq.username,
        mq.hub_username,
    )
    return mq.username, fallback_password


def tls_files(settings: Settings) -> TlsFiles:
    """Where the broker's CA, certificate and key are (operator's files or the local CA's)."""
    stack, mq = settings.stack, settings.mqtt
    local = settings.state_dir / "mosquitto" / "tls"
    if stack.tls_cert_file is not None:
        if stack.tls_key_file is None:
            raise ConfigError("stack.tls_key_file: required with stack.tls_cert_file")
        return TlsFiles(
            ca_file=mq.ca_file or local / "ca.crt",
            cert_file=stack.tls_cert_file,
            key_file=stack.tls_key_file,
        )
    return TlsFiles(
        ca_file=mq.ca_file or local / "ca.crt",
        cert_file=local / "server.crt",
        key_file=local / "server.key",
    )


def mqtt_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context trusting ``mqtt.ca_file`` (else the local CA), or None without TLS."""
    if not settings.mqtt.tls:
        return None
    try:
        return client_context(tls_files(settings).ca_file)
    except LocalCaError as err:
        raise ConfigError(str(err)) from err


def mqtt_endpoint(settings: Settings) -> tuple[str, int, ssl.SSLContext | None]:
    """Host, port and TLS context a client of the hub's broker connects with."""
    mq = settings.mqtt
    context = mqtt_tls_context(settings)
    return mq.host, (mq.resolved_tls_port if context else mq.port), context


def broker_admin(settings: Settings, password: str | None = None) -> BrokerAdmin:
    """How the registry reaches the broker as its dynamic-security administrator."""
    mq = settings.mqtt
    ca_file = tls_files(settings).ca_file if mq.tls else None
    return BrokerAdmin(
        host=mq.host,
        port=mq.resolved_tls_port if mq.tls else mq.port,
        username=mq.username,
        password=password if password is not None else mqtt_password(settings),
        timeout_s=settings.registry.dynsec_timeout_s,
        ca_file=ca_file,
    )


def agent_login(settings: Settings, gateway_id: str) -> tuple[str, str]:
    """The agent's MQTT identity: its gateway's (``agent.mqtt_username``, else the gateway id).

    The registry issues a gateway's password once, when it creates the gateway; the
    operator puts it in ``agent.mqtt_password``. Only an agent told to log in as the
    admin identity (``agent.mqtt_username = mqtt.username``) may take the admin password.
    """
    agent = settings.agent
    username = agent.mqtt_username or gateway_id
    if agent.mqtt_password is not None:
        return username, agent.mqtt_password.get_secret_value()
    if username == settings.mqtt.username:
        return username, mqtt_password(settings)
    raise ConfigError(
        f"agent.mqtt_password: not set for gateway identity {username!r}: the registry "
        "printed it when the gateway was created (`kotahub devices rotate-credentials` issues "
        "a new one); set KOTAHUB_AGENT__MQTT_PASSWORD"
    )


def mqtt_connect_check(
    host: str,
    port: int,
    username: str,
    password: str,
    timeout_s: float,
    *,
    tls: ssl.SSLContext | None = None,
    client_id: str | None = None,
) -> tuple[bool, str]:
    """Try one MQTT v5 connect (TLS when a context is given); return (accepted, reason).

    ``client_id``: for identities pinned to one (a device's or gateway's is its username).
    """
    result: dict[str, str] = {}
    done = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"kotahub-check-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        result["reason"] = str(reason)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except ssl.SSLError as err:
        return False, f"TLS handshake failed: {err}"
    except OSError as err:
        return False, f"connection failed: {err}"
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return False, "no CONNACK within timeout"
    finally:
        client.disconnect()
        client.loop_stop()
    return result.get("reason") == "Success", result.get("reason", "unknown")


class LocalStack:
    """Start, check and stop the local Mosquitto and InfluxDB of one state folder."""

    def __init__(self, settings: Settings, *, log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self._log = log or (lambda _msg: None)

    # -- paths -----------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """Where PID records live."""
        return self.state_dir / "run"

    @property
    def mosquitto_dir(self) -> Path:
        """Broker config, dynamic-security file, persistence and log."""
        return self.state_dir / "mosquitto"

    @property
    def influx_dir(self) -> Path:
        """InfluxDB config, data, WAL and log."""
        return self.state_dir / "influxdb"

    def _record_path(self, name: PartName) -> Path:
        return self.run_dir / f"{name}.json"

    def _read_record(self, name: PartName) -> _Record | None:
        path = self._record_path(name)
        try:
            data = json.loads(path.read_text())
            return _Record(
                pid=int(data["pid"]),
                create_time=float(data["create_time"]),
                version=str(data.get("version", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_record(self, name: PartName, proc: subprocess.Popen[bytes], version: str) -> None:
        create_time = psutil.Process(proc.pid).create_time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._record_path(name).write_text(
            json.dumps({"pid": proc.pid, "create_time": create_time, "version": version})
        )

    # -- public API ------------------------------------------------------------------
    def up(self) -> list[PartStatus]:
        """Start whatever is not running, wait until both answer; idempotent."""
        mosquitto_bin = find_binary(
            self.settings.stack.mosquitto_bin,
            package="mosquitto",
            what="Mosquitto broker",
            setting="stack.mosquitto_bin",
        )
        influxd_bin = find_binary(
            self.settings.stack.influxd_bin,
            package="influxdb",
            what="InfluxDB server",
            setting="stack.influxd_bin",
        )
        plugin = find_dynsec_plugin(self.settings.stack.dynsec_plugin)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        password = self._ensure_credentials()

        started: list[PartName] = []
        try:
            if self._live("mosquitto") is None:
                self._start_mosquitto(mosquitto_bin, plugin, password)
                started.append("mosquitto")
            if self._live("influxdb") is None:
                self._start_influxd(influxd_bin)
                started.append("influxdb")
            self._wait_ready(password)
            self._ensure_hub_identity(password)
            self._ensure_database()
            self._ensure_rollups()
        except BaseException:
            for name in started:
                self._stop_part(name)
            raise
        return self.status()

    def down(self) -> list[str]:
        """Stop the processes this stack started; return a line per part."""
        return [self._stop_part(name) for name in ("influxdb", "mosquitto")]

    def status(self) -> list[PartStatus]:
        """State, port, version and PID of each part."""
        return [self._status_mosquitto(), self._status_influx()]

    # -- credentials -----------------------------------------------------------------
    def _ensure_credentials(self) -> str:
        """Return the admin password, bootstrapping the dynamic-security file if needed.

        The file gets the admin identity and the hub's own (``mqtt.hub_username``); both
        passwords go to the credentials file (mode 0600) unless the settings give them.
        """
        mq = self.settings.mqtt
        username = mq.username
        dynsec_file = self.mosquitto_dir / "dynamic-security.json"
        creds = read_credentials(self.state_dir)
        if mq.password is not None:
            password = mq.password.get_secret_value()
        elif creds and creds.get("username") == username and creds.get("password"):
            password = creds["password"]
        else:
            password = secrets.token_urlsafe(24)
        hub_password = (
            mq.hub_password.get_secret_value()
            if mq.hub_password is not None
            else secrets.token_urlsafe(24)
        )
        if not dynsec_file.is_file():
            bootstrap_dynsec(
                dynsec_file,
                username,
                password,
                hub_username=mq.hub_username,
                hub_password=hub_password,
                admin_acl=self.settings.stack.admin_acl,
            )
            _write_private(
                self.state_dir / CREDENTIALS_FILE,
                "# Generated by `kotahub stack up`. Keep private.\n"
                f'[mqtt]\nusername = "{username}"\npassword = "{password}"\n'
                f'[hub]\nusername = "{mq.hub_username}"\npassword = "{hub_password}"\n',
            )
        return password

    def _ensure_hub_identity(self, password: str) -> None:
        """Give a broker bootstrapped before the hub had an identity that identity now.

        Over the control topic, so a running broker needs no restart; the password is
        added to the credentials file, after which ``hub_login`` stops falling back.
        """
        mq = self.settings.mqtt
        if read_credentials(self.state_dir, "hub"):
            return
        hub_password = (
            mq.hub_password.get_secret_value()
            if mq.hub_password is not None
            else secrets.token_urlsafe(24)
        )
        self._log(f"creating the hub's own MQTT identity {mq.hub_username}")
        admin = BrokerAdmin(host=mq.host, port=mq.port, username=mq.username, password=password)
        client = DynamicSecurityClient(admin)
        try:
            answers = client.execute(
                [
                    {"command": "deleteClient", "username": mq.hub_username},
                    {"command": "deleteRole", "rolename": HUB_ROLE},
                    {"command": "createRole", "rolename": HUB_ROLE, "acls": hub_acls()},
                    {
                        "command": "createClient",
                        "username": mq.hub_username,
                        "password": hub_password,
                        "textname": "Kotahub hub (ingest)",
                        "roles": [{"rolename": HUB_ROLE}],
                    },
                ]
            )
        except CredentialsError as err:
            raise StackError(f"cannot create the hub's MQTT identity: {err}") from err
        finally:
            client.close()
        # The two deletes may answer "not found"; the creates must not fail.
        errors = [str(a["error"]) for a in answers[2:] if a.get("error")]
        if errors:
            raise StackError(f"cannot create the hub's MQTT identity: {'; '.join(errors)}")
        path = self.state_dir / CREDENTIALS_FILE
        text = path.read_text() if path.is_file() else ""
        _write_private(
            path,
            text + f'[hub]\nusername = "{mq.hub_username}"\npassword = "{hub_password}"\n',
        )

    # -- tls -------------------------------------------------------------------------
    def _server_names(self) -> list[str]:
        """Names in the generated certificate: loopback, this host, tls_names, the bind address."""
        names = default_server_names() + list(self.settings.stack.tls_names)
        bind = self.settings.stack.tls_bind
        if bind not in ("0.0.0.0", "::", ""):
            names.append(bind)
        return list(dict.fromkeys(names))

    def _ensure_tls(self) -> TlsFiles:
        """The listener's files: the operator's, or the local CA's (made or renewed here)."""
        try:
            files = tls_files(self.settings)
        except ConfigError as err:
            raise StackError(str(err)) from err
        if self.settings.stack.tls_cert_file is not None:
            for path in (files.cert_file, files.key_file):
                if not path.is_file():
                    raise StackError(f"TLS file {path} does not exist (stack.tls_cert_file/key)")
            return files
        try:
            local = ensure_server_certificate(files.cert_file.parent, self._server_names())
        except LocalCaError as err:
            raise StackError(f"cannot prepare the broker's TLS certificate: {err}") from err
        return local

    def _tls_check_host(self) -> str:
        """Where this machine reaches its own TLS listener for the readiness check."""
        bind = self.settings.stack.tls_bind
        return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind

    # -- mosquitto -------------------------------------------------------------------
    def _start_mosquitto(self, binary: str, plugin: Path, password: str) -> None:
        mq = self.settings.mqtt
        if not _is_loopback(mq.host):
            raise StackError(
                f"mqtt.host {mq.host}: the plain (unencrypted) listener binds to loopback "
                "only; other machines use the TLS listener (stack.tls_bind, mqtt.tls_port)"
            )
        listeners = (
            ("mqtt.port", mq.port, mq.host),
            ("mqtt.tls_port", mq.resolved_tls_port, self._tls_check_host()),
        )
        for setting, port, host in listeners:
            if port_in_use(host, port):
                raise StackError(
                    f"{setting} {port} on {host} is already in use by a program this stack "
                    "did not start (a system Mosquitto service?): stop it or choose another port"
                )
        tls = self._ensure_tls()
        persistence = self.mosquitto_dir / "data"
        persistence.mkdir(parents=True, exist_ok=True)
        conf = MOSQUITTO_TEMPLATE.read_text().format(
            host=mq.host,
            port=mq.port,
            dynsec_plugin=plugin,
            dynsec_file=self.mosquitto_dir / "dynamic-security.json",
            persistence_dir=persistence,
            autosave_interval=self.settings.stack.autosave_interval_s,
            max_queued_messages=self.settings.stack.max_queued_messages,
            log_file=self.mosquitto_dir / "mosquitto.log",
            tls_port=mq.resolved_tls_port,
            tls_bind=self.settings.stack.tls_bind,
            tls_cert_file=tls.cert_file.resolve(),
            tls_key_file=tls.key_file.resolve(),
        )
        # Started as root, Mosquitto 2 drops to user `mosquitto`, which cannot write a
        # state folder owned by the operator; naming the current user keeps it (no-op
        # for non-root).
        conf += f"\nuser {getpass.getuser()}\n"
        conf_path = self.mosquitto_dir / "mosquitto.conf"
        conf_path.write_text(conf)
        version = _mosquitto_version(binary)
        self._log(
            f"starting Mosquitto {version} on {mq.host}:{mq.port} "
            f"(TLS on {self.settings.stack.tls_bind}:{mq.resolved_tls_port})"
        )
        proc = _spawn([binary, "-c", str(conf_path)], self.mosquitto_dir / "stdout.log")
        self._write_record("mosquitto", proc, version)

    def _status_mosquitto(self) -> PartStatus:
        port = self.settings.mqtt.port
        record = self._read_record("mosquitto")
        proc = record.process() if record else None
        if record is None or proc is None:
            return PartStatus(name="mosquitto", state="stopped", port=port)
        ok, reason = False, "no credentials"
        with contextlib.suppress(ConfigError):
            ok, reason = mqtt_connect_check(
                self.settings.mqtt.host,
                port,
                self.settings.mqtt.username,
                mqtt_password(self.settings),
                timeout_s=3.0,
            )
        return PartStatus(
            name="mosquitto",
            state="running" if ok else "not responding",
            port=port,
            pid=record.pid,
            version=record.version,
            detail="" if ok else reason,
        )

    # -- influxdb --------------------------------------------------------------------
    def _start_influxd(self, binary: str) -> None:
        ix = self.settings.influx
        host = _url_host(ix.url)
        if port_in_use(host, ix.port):
            raise StackError(
                f"influx.url port {ix.port} is already in use by a program this stack did not "
                "start (a system InfluxDB service?): stop it or choose another port"
            )
        rpc = self.settings.stack.influx_rpc_port
        if port_in_use("127.0.0.1", rpc):
            raise StackError(f"stack.influx_rpc_port {rpc} is already in use: choose another")
        self.influx_dir.mkdir(parents=True, exist_ok=True)
        conf_path = self.influx_dir / "influxdb.conf"
        conf_path.write_text(_influx_config(self.influx_dir, host, ix.port, rpc))
        version = _influx_version(binary)
        self._log(f"starting InfluxDB {version} on {host}:{ix.port}")
        proc = _spawn([binary, "-config", str(conf_path)], self.influx_dir / "influxd.log")
        self._write_record("influxdb", proc, version)

    def _status_influx(self) -> PartStatus:
        port = self.settings.influx.port
        record = self._read_record("influxdb")
        proc = record.process() if record else None
        if record is None or proc is None:
            return PartStatus(name="influxdb", state="stopped", port=port)
        try:
            resp = httpx.get(f"{self.settings.influx.url}/ping", timeout=3.0)
            ok = resp.status_code == 204
            version = resp.headers.get("X-Influxdb-Version", record.version)
            detail = "" if ok else f"/ping answered {resp.status_code}"
        except httpx.HTTPError as err:
            ok, version, detail = False, record.version, f"/ping failed: {err}"
        return PartStatus(
            name="influxdb",
            state="running" if ok else "not responding",
            port=port,
            pid=record.pid,
            version=version,
            detail=detail,
        )

    def _ensure_database(self) -> None:
        """Create the database with its default retention policy, once."""
        ix = self.settings.influx
        try:
            with InfluxQL(ix.url, timeout_s=ix.timeout_s) as client:
                if ix.database not in client.first_column("SHOW DATABASES"):
                    self._log(f"creating database {ix.database} (retention {ix.retention})")
                    client.query(
                        f'CREATE DATABASE "{ix.database}" WITH DURATION {ix.retention} '
                        f'REPLICATION 1 NAME "{ix.retention_policy}"'
                    )
                    return
                policies = client.first_column(f'SHOW RETENTION POLICIES ON "{ix.database}"')
                if ix.retention_policy not in policies:
                    client.query(
                        f'CREATE RETENTION POLICY "{ix.retention_policy}" ON "{ix.database}" '
                        f"DURATION {ix.retention} REPLICATION 1 DEFAULT"
                    )
        except InfluxQueryError as err:
            raise StackError(f"cannot prepare database {ix.database}: {err}") from err

    def _ensure_rollups(self) -> None:
        """Rollup policies and continuous queries for the boards (hub/influx_rollups.py)."""
        try:
            ensure_rollups(self.settings, log=self._log)
        except RollupError as err:
            raise StackError(f"cannot prepare the rollups: {err}") from err

    # -- lifecycle helpers -----------------------------------------------------------
    def _live(self, name: PartName) -> psutil.Process | None:
        record = self._read_record(name)
        proc = record.process() if record else None
        if record is not None and proc is None:
            self._record_path(name).unlink(missing_ok=True)
        return proc

    def _wait_ready(self, password: str) -> None:
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        pending: set[PartName] = {"mosquitto", "influxdb"}
        reasons: dict[PartName, str] = {}
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if self._live(name) is None:
                    raise StackError(f"{name} exited during start-up:\n{self._log_tail(name)}")
                ok, reasons[name] = self._answers(name, password)
                if ok:
                    pending.discard(name)
            if pending:
                time.sleep(0.2)
        if pending:
            details = "; ".join(f"{n}: {reasons.get(n, '')}" for n in sorted(pending))
            raise StackError(
                f"not answering after {self.settings.stack.start_timeout_s:.0f} s ({details})"
            )

    def _answers(self, name: PartName, password: str) -> tuple[bool, str]:
        if name == "mosquitto":
            mq = self.settings.mqtt
            ok, reason = mqtt_connect_check(mq.host, mq.port, mq.username, password, timeout_s=2.0)
            if not ok:
                return ok, reason
            # The TLS listener answers too, with a certificate its CA file verifies.
            try:
                context = client_context(tls_files(self.settings).ca_file)
            except (LocalCaError, ConfigError) as err:
                return False, f"TLS: {err}"
            ok, reason = mqtt_connect_check(
                self._tls_check_host(),
                mq.resolved_tls_port,
                mq.username,
                password,
                timeout_s=2.0,
                tls=context,
            )
            return ok, reason if ok else f"TLS listener: {reason}"
        try:
            resp = httpx.get(f"{self.settings.influx.url}/ping", timeout=2.0)
        except httpx.HTTPError as err:
            return False, str(err)
        return resp.status_code == 204, f"/ping answered {resp.status_code}"

    def _log_tail(self, name: PartName, lines: int = 15) -> str:
        files = {
            "mosquitto": [self.mosquitto_dir / "mosquitto.log", self.mosquitto_dir / "stdout.log"],
            "influxdb": [self.influx_dir / "influxd.log"],
        }[name]
        out: list[str] = []
        for path in files:
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out) or "(no log output)"

    def _stop_part(self, name: PartName) -> str:
        record = self._read_record(name)
        proc = record.process() if record else None
        if record is None:
            return f"{name}: not started by this stack"
        if proc is None:
            self._record_path(name).unlink(missing_ok=True)
            return f"{name}: was not running (stale record removed)"
        # SIGTERM lets Mosquitto save its persistence database and InfluxDB close its WAL.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.settings.stack.stop_timeout_s)
            how = "stopped"
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            how = "killed after not stopping in time"
        self._record_path(name).unlink(missing_ok=True)
        return f"{name}: {how} (pid {record.pid})"


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server detached from our terminal and session, output to a log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _mosquitto_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "-h"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1] if "version" in first else "unknown"


def _influx_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    parts = out.split()
    return parts[1].lstrip("v") if len(parts) > 1 else "unknown"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "127.0.0.1"


def _influx_config(base: Path, host: str, port: int, rpc_port: int) -> str:
    return f"""# Rendered by `kotahub stack up`.
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{base}/meta"

[data]
  dir = "{base}/data"
  wal-dir = "{base}/wal"
  query-log-enabled = false
  index-version = "tsi1"

[monitor]
  store-enabled = false

[http]
  bind-address = "{host}:{port}"
  log-enabled = false
  max-body-size = 0

[logging]
  level = "warn"

[subscriber]
  enabled = false
"""
