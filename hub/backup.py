"""``kotahub backup DIR`` and ``kotahub restore DIR``: one state folder's data and identities.

A backup holds what a city cannot get back otherwise:

- the InfluxDB database, as a portable backup taken over the stack's RPC port
  (``influxd backup -portable -host 127.0.0.1:<stack.influx_rpc_port>``);
- the registry database: SQLite through its online backup API (a consistent copy while
  the hub and the API keep writing); PostgreSQL is its operator's (``pg_dump`` advice);
- the broker's dynamic-security file (every device's identity and ACL) and the
  generated credentials, which belong together: the registry's devices log in with the
  identities in the one, the hub and registry with the password in the other;
- the broker's TLS folder (``<state>/mosquitto/tls/``: the local CA's certificate and
  key, the server's), with each file's mode: field gateways trust that CA, so a restored
  hub must present a certificate it signed. Operator-provided files elsewhere
  (``stack.tls_cert_file``) are the operator's to keep.

Secrets stay private: the folder is 0700 and every file holding a secret or a password
hash is 0600, in the backup and after a restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hub.influxql import InfluxQL, InfluxQueryError
from hub.local_stack import CREDENTIALS_FILE, LocalStack, StackError, find_binary, port_in_use
from hub.service_probes import probe_services
from hub.settings import Settings

MANIFEST = "manifest.json"
INFLUX_DIR = "influxdb"
REGISTRY_FILE = "registry.sqlite3"
DYNSEC_FILE = "dynamic-security.json"
TLS_DIR = "mosquitto-tls"
FORMAT_VERSION = 1
INFLUXD_TIMEOUT_S = 600.0
# What `kotahub stack up` itself writes into a new database (hub.influx_rollups.RP_CONFIG,
# which policy the boards read): not data that a restore would lose.
STACK_MEASUREMENTS = frozenset({"rp_config"})
# What a backup folder holds; --force replaces only these, never other files.
BACKUP_ENTRIES = (MANIFEST, INFLUX_DIR, REGISTRY_FILE, DYNSEC_FILE, CREDENTIALS_FILE, TLS_DIR)

Progress = Callable[[str], None]
_LABELS = {"mosquitto": "Mosquitto server", "influxdb": "InfluxDB server"}


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why and what to do."""


@dataclass(slots=True)
class Summary:
    """What a backup or restore did: one row per part, and advice for what it did not."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # part, what, detail
    advice: list[str] = field(default_factory=list)

    def add(self, part: str, what: str, detail: str = "") -> None:
        """Record one part's outcome."""
        self.rows.append((part, what, detail))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(count: int) -> str:
    """Bytes as a short human figure (1.2 MB)."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _copy_private(source: Path, target: Path) -> None:
    """Copy a secret-holding file; the copy is 0600 from its first byte."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(target, 0o600)  # an existing file keeps its mode through O_TRUNC


def copy_keeping_modes(source: Path, target: Path) -> int:
    """Copy a folder of keys and certificates, each file with its own mode; return the count.

    A file is written 0600 first and given its mode after, so that no key is readable by
    others for a moment; the folders keep their modes too (the TLS folder is 0700).
    """
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    count = 0
    for path in sorted(source.iterdir()):
        if path.is_symlink():
            continue  # the local CA writes none; a link could point anywhere
        if path.is_dir():
            count += copy_keeping_modes(path, target / path.name)
            continue
        if not path.is_file():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        fd = os.open(target / path.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(path.read_bytes())
        os.chmod(target / path.name, mode)
        count += 1
    os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    return count


def _sqlite_path(settings: Settings) -> Path | None:
    """The registry's SQLite file, or None when the registry is on PostgreSQL."""
    url = settings.registry.resolved_database_url(settings.state_dir)
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///"))


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's online backup API (writers may go on)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.touch(mode=0o600)
    os.chmod(target, 0o600)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _influxd(settings: Settings, args: list[str]) -> None:
    binary = find_binary(
        settings.stack.influxd_bin,
        package="influxdb",
        what="InfluxDB server",
        setting="stack.influxd_bin",
    )
    rpc = f"127.0.0.1:{settings.stack.influx_rpc_port}"
    argv = [binary, args[0], "-portable", "-host", rpc, *args[1:]]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INFLUXD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise BackupError(f"influxd {args[0]} did not finish in {INFLUXD_TIMEOUT_S:.0f} s") from err
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise BackupError(f"influxd {args[0]} -host {rpc} failed: {tail}")


def _read_dynsec(path: Path) -> bytes:
    """The broker's file as one whole JSON document (Mosquitto may be rewriting it)."""
    for _attempt in range(20):
        data = path.read_bytes()
        with contextlib.suppress(ValueError):
            json.loads(data)
            return data
        time.sleep(0.1)
    raise BackupError(f"{path} is not valid JSON (damaged, or being rewritten): try again")


def backup(settings: Settings, target: Path, *, force: bool, progress: Progress) -> Summary:
    """Back up this state's InfluxDB database, registry, broker identities and credentials."""
    stack = LocalStack(settings)
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise BackupError(f"{target} is a file: give a folder")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise BackupError(f"{target} is not empty: give an empty folder, or --force")
        for name in BACKUP_ENTRIES:
            entry = target / name
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    influx = settings.influx
    parts = {part.name: part for part in stack.status()}
    if parts["influxdb"].state != "running":
        raise BackupError(
            f"InfluxDB is {parts['influxdb'].state} on port {influx.port}: the backup reads it "
            "over its RPC port, so start it first (`kotahub stack up`)"
        )
    summary = Summary()

    progress(f"InfluxDB: portable backup of {influx.database}")
    _influxd(settings, ["backup", "-database", influx.database, str(target / INFLUX_DIR)])
    summary.add("InfluxDB", influx.database, human_size(_size(target / INFLUX_DIR)))

    registry = _sqlite_path(settings)
    if registry is None:
        summary.add("registry", "not included", "PostgreSQL: back it up with pg_dump")
        summary.advice.append(
            "registry on PostgreSQL: pg_dump --format=custom --file=registry.pgdump "
            "<database URL>; restore with pg_restore --clean --dbname=<database URL> "
            "registry.pgdump"
        )
    elif not registry.is_file():
        summary.add("registry", "not included", f"{registry} does not exist")
    else:
        progress(f"registry: online backup of {registry}")
        _sqlite_copy(registry, target / REGISTRY_FILE)
        summary.add("registry", str(registry.name), human_size(_size(target / REGISTRY_FILE)))

    dynsec = stack.mosquitto_dir / DYNSEC_FILE
    if dynsec.is_file():
        progress("broker: dynamic-security file")
        data = _read_dynsec(dynsec)
        (target / DYNSEC_FILE).touch(mode=0o600)
        (target / DYNSEC_FILE).write_bytes(data)
        os.chmod(target / DYNSEC_FILE, 0o600)
        clients = len(json.loads(data).get("clients", []))
        summary.add("broker identities", f"{clients} client(s)", "0600")
    else:
        summary.add("broker identities", "not included", f"{dynsec} does not exist")
    tls = stack.mosquitto_dir / "tls"
    if tls.is_dir():
        progress("broker: TLS CA and keys")
        count = copy_keeping_modes(tls, target / TLS_DIR)
        summary.add("broker TLS", f"{count} file(s) of {tls}", "CA and keys, modes kept")
    else:
        summary.add("broker TLS", "not included", f"{tls} does not exist")
    credentials = stack.state_dir / CREDENTIALS_FILE
    if credentials.is_file():
        _copy_private(credentials, target / CREDENTIALS_FILE)
        summary.add("credentials", CREDENTIALS_FILE, "0600")
    else:
        summary.add("credentials", "not included", "none generated (set in the settings?)")

    manifest = {
        "format": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "influx_database": influx.database,
        "influx_version": parts["influxdb"].version,
        "registry": REGISTRY_FILE if (target / REGISTRY_FILE).exists() else None,
        "dynamic_security": DYNSEC_FILE if (target / DYNSEC_FILE).exists() else None,
        "credentials": CREDENTIALS_FILE if (target / CREDENTIALS_FILE).exists() else None,
        "broker_tls": TLS_DIR if (target / TLS_DIR).is_dir() else None,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _read_manifest(source: Path) -> dict[str, object]:
    path = source / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise BackupError(f"{source} is not a kotahub backup: no {MANIFEST}") from err
    except ValueError as err:
        raise BackupError(f"{path} is damaged: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise BackupError(f"{path}: unknown backup format {data.get('format')!r}")
    return data


def _has_devices(registry: Path) -> bool:
    try:
        connection = sqlite3.connect(f"file:{registry}?mode=ro", uri=True, timeout=5)
        try:
            return bool(connection.execute("SELECT count(*) FROM devices").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error:
        return registry.stat().st_size > 0


def restore(settings: Settings, source: Path, *, force: bool, progress: Progress) -> Summary:
    """Put a backup back into this state: broker files, registry, then InfluxDB.

    The hub and the registry API must not run (they hold the registry and the WAL open);
    Mosquitto is stopped while its identities are replaced and started again with them;
    InfluxDB is started if needed, since a portable restore goes through its RPC port.
    """
    source = source.resolve()
    manifest = _read_manifest(source)
    stack = LocalStack(settings)
    running = probe_services(settings)
    if running:
        names = ", ".join(f"{s.name} (pid {s.pid})" if s.pid else s.name for s in running)
        raise BackupError(
            f"{names} running on this state: stop it first (Ctrl-C on `kotahub run`), a "
            "restore replaces the registry and identities it holds open"
        )
    registry = _sqlite_path(settings)
    influx = settings.influx
    if not force and registry is not None and registry.is_file() and _has_devices(registry):
        raise BackupError(f"{registry} holds devices: a restore replaces them; --force to go on")
    summary = Summary()

    dynsec = stack.mosquitto_dir / DYNSEC_FILE
    if manifest.get("dynamic_security") or manifest.get("broker_tls"):
        live = [p for p in stack.status() if p.state != "stopped"]
        if live:
            # The broker keeps identities in memory and writes them back on change, and
            # reads its certificate at start: it must not run while they are replaced.
            # `down` stops both parts; `up` below starts both, InfluxDB for its restore
            # and Mosquitto with the files.
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in live)
            progress(f"stopping {names} to replace the broker's identities")
            stack.down()
            for part in live:
                summary.add(_LABELS[part.name], "stopped, then started", f"was pid {part.pid}")
    if manifest.get("broker_tls"):
        tls = stack.mosquitto_dir / "tls"
        if tls.is_dir():
            shutil.rmtree(tls)  # files of another CA must not stay beside the restored one
        count = copy_keeping_modes(source / TLS_DIR, tls)
        summary.add("broker TLS", f"{count} file(s)", "CA and keys, modes kept")
    if manifest.get("dynamic_security"):
        _copy_private(source / DYNSEC_FILE, dynsec)
        clients = len(json.loads((source / DYNSEC_FILE).read_bytes()).get("clients", []))
        summary.add("broker identities", f"{clients} client(s)", "0600")
    if manifest.get("credentials"):
        _copy_private(source / CREDENTIALS_FILE, stack.state_dir / CREDENTIALS_FILE)
        summary.add("credentials", CREDENTIALS_FILE, "0600")

    if manifest.get("registry"):
        if registry is None:
            summary.advice.append(
                "registry on PostgreSQL: the backup's SQLite file is not loaded into it; "
                "restore a pg_dump with pg_restore --clean --dbname=<database URL>"
            )
        else:
            progress(f"registry: restoring {registry}")
            for stale in (Path(f"{registry}-wal"), Path(f"{registry}-shm")):
                stale.unlink(missing_ok=True)
            _sqlite_copy(source / REGISTRY_FILE, registry)
            summary.add("registry", str(registry.name), human_size(_size(registry)))

    stopped = [p.name for p in stack.status() if p.state == "stopped"]
    if stopped:
        progress(f"starting {', '.join(stopped)}")
    try:
        stack.up()
    except StackError as err:
        raise BackupError(f"stack up failed: {err}") from err
    done = {row[0] for row in summary.rows}
    for name in stopped:
        if _LABELS[name] not in done:
            summary.add(_LABELS[name], "started", "")

    backup_db = str(manifest.get("influx_database") or influx.database)
    with InfluxQL(influx.url, timeout_s=influx.timeout_s) as client:
        try:
            if influx.database in client.first_column("SHOW DATABASES"):
                measurements = [
                    m
                    for m in client.first_column("SHOW MEASUREMENTS", database=influx.database)
                    if m not in STACK_MEASUREMENTS
                ]
                if measurements and not force:
                    raise BackupError(
                        f"InfluxDB database {influx.database} holds data "
                        f"({len(measurements)} measurement(s)): a restore replaces it; "
                        "--force to go on"
                    )
                # InfluxDB 1.x restores only into a database that does not exist.
                progress(f"InfluxDB: dropping {influx.database} to restore it")
                client.query(f'DROP DATABASE "{influx.database}"')
        except InfluxQueryError as err:
            raise BackupError(f"InfluxDB: {err}") from err
    progress(f"InfluxDB: restoring {backup_db} as {influx.database}")
    _influxd(
        settings,
        ["restore", "-db", backup_db, "-newdb", influx.database, str(source / INFLUX_DIR)],
    )
    summary.add("InfluxDB", influx.database, f"from {backup_db}")
    try:
        # Once more: what stack up prepares inside the database (its retention policy, the
        # boards' rollups) went with the dropped one, and an older backup may lack it.
        stack.up()
    except StackError as err:
        raise BackupError(f"stack up after the InfluxDB restore failed: {err}") from err
    if not port_in_use(settings.mqtt.host, settings.mqtt.port):
        raise BackupError("Mosquitto does not answer after the restore: see `kotahub stack status`")
    return summary
