"""`parallax serve`: the control plane on this machine.

parallax serve                          # 127.0.0.1:8717, token from $PARALLAX_TOKEN or .parallax/server-token
parallax serve --host 0.0.0.0           # refused unless PARALLAX_TOKEN is set, and strong (16+ characters)
parallax serve --max-body 4194304       # request bodies up to 4 MiB (default 1 MiB; or $PARALLAX_MAX_BODY)
parallax serve --idle-timeout 30        # seconds a connection may idle (default 10; or $PARALLAX_IDLE_TIMEOUT)

Refusals happen before anything binds: one line, exit code 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from parallax.cli.context import CliContext, run_with_store
from parallax.core.errors import UserError
from parallax.launch import run_options
from parallax.server.guard import DEFAULT_MAX_BODY
from parallax.streams.base import StreamStore

MIN_TOKEN_LENGTH = 16  # for a token that guards a non-loopback address


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8717, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the generated token is kept (default: .parallax/server-token beside the store).")  # fmt: skip
@click.option("--max-body", default=DEFAULT_MAX_BODY, show_default=True, type=click.IntRange(1), metavar="BYTES",
              envvar="PARALLAX_MAX_BODY",
              help="The largest request body taken; a larger one is answered 413.")  # fmt: skip
@click.option("--idle-timeout", default=10, show_default=True, type=click.IntRange(1), metavar="SECONDS",
              envvar="PARALLAX_IDLE_TIMEOUT",
              help="How long a connection may wait between requests, for a request's headers, or between "
                   "two chunks of a body, before it is closed. Streams (SSE) are never cut.")  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token_file: Path | None, max_body: int, idle_timeout: int) -> None:
    """Serve the HTTP API and the live dashboard."""
    import uvicorn

    from parallax.server.app import create_app
    from parallax.server.auth import load_or_create_token
    from parallax.server.protocol import IdleTimeoutH11Protocol
    from parallax.settings import find_project_root

    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]
    token = cli.settings.server_token
    if not _loopback(host) and not token:
        raise UserError(f"refusing to listen on {host} without PARALLAX_TOKEN: set a token to serve beyond loopback")
    if not _loopback(host) and len(token) < MIN_TOKEN_LENGTH:
        raise UserError(
            f"refusing to listen on {host} with a weak PARALLAX_TOKEN ({len(token)} characters): "
            f"use at least {MIN_TOKEN_LENGTH}, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not token:
        path = token_file or (find_project_root(Path.cwd()) / ".parallax" / "server-token")
        token = load_or_create_token(path)
        click.echo(f"token in {path} (mode 0600)", err=True)
    click.echo(f"dashboard: http://{host}:{port}/?token=<token>   API: http://{host}:{port}/docs", err=True)
    app = create_app(cli.store_url, token, max_body=max_body, body_timeout_s=idle_timeout, settings=cli.settings)
    uvicorn.run(
        app, host=host, port=port, log_level="warning", http=IdleTimeoutH11Protocol, ws="none",
        timeout_keep_alive=idle_timeout, h11_max_incomplete_event_size=16 * 1024,
    )  # fmt: skip


@click.command()
@click.pass_context
def mcp(ctx: click.Context) -> None:
    """Serve Parallax to a coding agent over the Model Context Protocol (stdio):
    `claude mcp add parallax -- parallax mcp`. Runs it starts execute in this process."""
    from parallax.server.mcp_tools import serve_stdio

    settings = ctx.find_object(CliContext).settings  # type: ignore[union-attr]

    async def go(store: StreamStore) -> None:
        await serve_stdio(store, run_options(settings, workdir=Path.cwd()), settings)

    run_with_store(ctx, go)
