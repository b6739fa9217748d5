"""``kotahub devices|teams|sites|registry`` commands: they work on the database directly.

The hub's CLI registers these Typer apps and installs a loader that turns ``--config``
into a ``RegistryRuntime`` (database URL, broker admin login); the registry never imports
the hub. Writes are audited as ``cli:<login>``.

The options of ``devices add|update|list|export`` are derived from the pydantic models
(``DeviceCreate``, ``DeviceUpdate``, ``DeviceQuery``), so a field added to a model is a
CLI option at once, and pydantic validates every value: the CLI has no second copy of
the rules. Exit codes: 2 for invalid input (the option or field is named), 1 when the
registry refuses (unknown id, conflict, broker or database trouble, rejected rows).

This module assembles the apps; the commands live in ``device_commands``,
``catalog_commands`` (teams, sites, types) and ``token_commands``, on the shared
``cli_options`` (model-derived options), ``cli_output`` (printing) and ``cli_runtime``
(the loader, the service and its errors). Their public names are importable from here.
"""

from __future__ import annotations

import typer

from device_registry.catalog_commands import (
    ChannelOption,
    MetricOption,
    sites_add,
    sites_app,
    sites_list,
    sites_show,
    sites_update,
    teams_add,
    teams_add_channel,
    teams_add_member,
    teams_app,
    teams_list,
    teams_remove_channel,
    teams_remove_member,
    teams_show,
    teams_update,
    types_add,
    types_app,
    types_list,
    types_seed,
    types_show,
    types_update,
)
from device_registry.cli_options import (
    BOOL_FLAGS,
    FIELD_HELP,
    OPTION_ALIASES,
    SPECIAL_FIELDS,
    ConfigOption,
    F,
    JsonOption,
    model_options,
)
from device_registry.cli_output import STATE_COLOURS, err, out
from device_registry.cli_runtime import (
    RegistryRuntime,
    RuntimeLoader,
    database_error_line,
    installed_loader,
    invalid,
    open_service,
    set_runtime_loader,
)
from device_registry.device_commands import (
    ADD_DEFAULT_STATE,
    DriverConfigOption,
    FormatOption,
    ImportFormat,
    TagOption,
    devices_add,
    devices_app,
    devices_export,
    devices_import,
    devices_list,
    devices_replace,
    devices_retire,
    devices_rotate,
    devices_show,
    devices_update,
)
from device_registry.token_commands import (
    ANY_HOST,
    LOOPBACK_HOSTS,
    role_name,
    sign_in_link,
    token_app,
    token_create,
    token_list,
    token_revoke,
)

__all__ = [
    "ADD_DEFAULT_STATE",
    "ANY_HOST",
    "BOOL_FLAGS",
    "FIELD_HELP",
    "LOOPBACK_HOSTS",
    "OPTION_ALIASES",
    "SPECIAL_FIELDS",
    "STATE_COLOURS",
    "ChannelOption",
    "ConfigOption",
    "DriverConfigOption",
    "F",
    "FormatOption",
    "ImportFormat",
    "JsonOption",
    "MetricOption",
    "RegistryRuntime",
    "RuntimeLoader",
    "TagOption",
    "database_error_line",
    "devices_add",
    "devices_app",
    "devices_export",
    "devices_import",
    "devices_list",
    "devices_replace",
    "devices_retire",
    "devices_rotate",
    "devices_show",
    "devices_update",
    "err",
    "invalid",
    "model_options",
    "out",
    "registry_app",
    "registry_serve",
    "role_name",
    "set_runtime_loader",
    "sign_in_link",
    "sites_add",
    "sites_app",
    "sites_list",
    "sites_show",
    "sites_update",
    "teams_add",
    "teams_add_channel",
    "teams_add_member",
    "teams_app",
    "teams_list",
    "teams_remove_channel",
    "teams_remove_member",
    "teams_show",
    "teams_update",
    "token_app",
    "token_create",
    "token_list",
    "token_revoke",
    "types_add",
    "types_app",
    "types_list",
    "types_seed",
    "types_show",
    "types_update",
]

registry_app = typer.Typer(
    help="The registry service, device types and API tokens.", no_args_is_help=True
)
registry_app.add_typer(token_app, name="token")
registry_app.add_typer(types_app, name="types", no_args_is_help=True)


@registry_app.command("serve")
def registry_serve(config: ConfigOption = None) -> None:
    """Serve the REST API (OpenAPI at /docs) with uvicorn."""
    import uvicorn

    from device_registry.web_api import create_app

    loader = installed_loader()
    if loader is None:
        raise RuntimeError("no runtime loader installed")
    runtime = loader(config)
    with open_service(config) as service:
        app = create_app(
            service,
            tiles=runtime.tiles,
            max_body_bytes=runtime.max_body_bytes,
            max_import_bytes=runtime.max_import_bytes,
            max_import_rows=runtime.max_import_rows,
        )
        uvicorn.run(app, host=runtime.api_host, port=runtime.api_port)
