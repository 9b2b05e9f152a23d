"""What every CLI command shares: the store URL, and how errors become one line and an exit code.

Exit codes: 0 success; 1 the operation failed (a stream refused, a run failed); 2 the command
was used wrongly (bad arguments, bad input, bad URL); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import click

from parallax.core.errors import ParallaxError, UserError
from parallax.settings import Settings
from parallax.streams.base import StreamStore
from parallax.streams.url import open_store

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass
class CliContext:
    store_url: str
    settings: Settings


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_for(error: ParallaxError) -> int:
    return EXIT_USAGE if isinstance(error, UserError) else EXIT_FAILURE


def run_with_store(ctx: click.Context, action: Callable[[StreamStore], Awaitable[T]]) -> T:
    """Open the store, run `action` on it, close it; turn Parallax errors into one line."""
    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]

    async def main() -> T:
        store = open_store(cli.store_url)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ParallaxError as e:
        fail(str(e), exit_code_for(e))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
