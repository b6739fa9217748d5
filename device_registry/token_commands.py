"""``kotahub registry token``: API tokens, and a token's sign-in link and QR code for a phone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from device_registry.cli_options import ConfigOption
from device_registry.cli_output import add_row, cell_text, err, out
from device_registry.cli_runtime import RegistryRuntime, actor, installed_loader, open_service
from device_registry.schemas import ROLES, Role

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


# -- tokens and the server -----------------------------------------------------------------------
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_HOST = frozenset({"0.0.0.0", "::", ""})  # listen addresses, compared only


def sign_in_link(base_url: str, token: str) -> str:
    """The technician page's address with the token in the fragment (``.../app/#token=``).

    A fragment is never part of a request: the token reaches no request line, no proxy or
    server log and no Referer; the page reads it once and wipes it from the address bar.
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise typer.BadParameter(
            f"{base_url!r}: expected http(s)://host[:port]/", param_hint="--url"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/app"):
        path += "/app"
    return urlunsplit(
        (parts.scheme, parts.netloc, path + "/", "", "token=" + quote(token, safe=""))
    )


def _print_sign_in(token: str, url: str | None, config: Path | None) -> None:
    """The sign-in link and its QR code, for a phone's camera."""
    import io

    import segno

    console = out()
    if url is None:
        loader = installed_loader()
        runtime = (
            loader(config, with_broker=False)
            if loader is not None
            else RegistryRuntime(database_url="", broker=None)
        )
        host = runtime.api_host
        if host in LOOPBACK_HOSTS or host in ANY_HOST:
            err().print(
                f"note: the registry listens on {host or '*'}:{runtime.api_port}; a phone needs "
                "the address it reaches it by: pass --url http(s)://<that address>/",
                markup=False,
            )
        shown = "127.0.0.1" if host in ANY_HOST else host
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{runtime.api_port}/"
    link = sign_in_link(url, token)
    console.print("Sign-in link (opens the technician page signed in; keep it as secret as "
                  "the token):", markup=False)  # fmt: skip
    console.print(link, markup=False, soft_wrap=True)
    console.print("Or scan this with the phone's camera:", markup=False)
    # Half blocks: two modules a line, so a 56-character token fits an 80x24 terminal.
    drawn = io.StringIO()
    segno.make(link, error="m").terminal(out=drawn, compact=True, border=2)
    console.file.write(drawn.getvalue())


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[
        str, typer.Option(help="admin, technician, viewer, provisioner, or gateway (an agent's)")
    ],
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway", help="With --role gateway: the one gateway whose device list it reads."
        ),
    ] = None,
    team: Annotated[
        str | None,
        typer.Option(
            "--team", help="The person's field team (a team id): their Alerts tab starts at it."
        ),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Expire after 30d, 12h, 90m, 2w... (default: never)."),
    ] = None,
    qr: Annotated[
        bool,
        typer.Option(
            "--qr", help="Also print a sign-in link and its QR code for the technician page."
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The registry's address as the phone reaches it, e.g. https://registry.kota.example/"
            " (default: the API's listen address).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make an API token; its secret is printed once (with --qr: as a sign-in link and QR)."""
    from device_registry.api_tokens import create_token, parse_duration

    if role not in (*ROLES, "gateway"):
        raise typer.BadParameter(
            f"{role!r}: not one of {', '.join(ROLES)}, gateway", param_hint="--role"
        )
    if (role == "gateway") != (gateway is not None):
        raise typer.BadParameter(
            "required with --role gateway, and only there", param_hint="--gateway"
        )
    if role == "gateway" and team is not None:
        raise typer.BadParameter("a gateway token has no team", param_hint="--team")
    try:
        expires_in_s = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--expires-in") from error
    with open_service(config, broker=False) as service:
        created = create_token(
            service.database,
            name=name,
            role=role_name(role),
            actor=actor(),
            expires_in_s=expires_in_s,
            gateway_id=gateway,
            team=team,
        )
    team_note = f", team {created.team}" if created.team else ""
    out().print(
        f"token {created.id} ({created.role}{team_note}), shown once: {created.token}",
        soft_wrap=True,
    )
    if created.expires_at is not None:
        out().print(f"expires {cell_text(created.expires_at)}")
    if qr:
        _print_sign_in(created.token, url, config)


def role_name(value: str) -> Role:
    """Narrow a checked string to a Role."""
    return value  # type: ignore[return-value]


@token_app.command("list")
def token_list(config: ConfigOption = None) -> None:
    """Every token's metadata."""
    from device_registry.api_tokens import list_tokens

    with open_service(config, broker=False) as service:
        tokens = list_tokens(service.database)
    table = Table(title="API tokens")
    for column in ("id", "name", "role", "team", "created", "revoked"):
        table.add_column(column)
    for t in tokens:
        add_row(
            table,
            t.id,
            t.name,
            t.role,
            t.team,
            t.created_at,
            t.revoked_at,
        )
    out().print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, config: ConfigOption = None) -> None:
    """Revoke a token at once."""
    from device_registry.api_tokens import revoke_token

    with open_service(config, broker=False) as service:
        revoke_token(service.database, token_id, actor=actor())
    out().print(f"revoked {token_id}")
