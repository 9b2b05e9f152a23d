"""What every CLI command shares: the store URL, and how errors become one line and an exit code.

Exit codes: 0 success; 1 the operation failed (a stream refused, a run failed); 2 the command
was used wrongly (bad arguments, bad input, bad URL); 130 interrupted.

Numbers from the command line are bounded where they are parsed: integers that name a sequence
number, a timestamp or a count fit in 63 bits (`MAX_INT`, what every store holds), and floats
are finite (`FiniteFloat`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from parallax.core.errors import ParallaxError, UserError

if TYPE_CHECKING:
    from parallax.settings import Settings
    from parallax.streams.base import StreamStore

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_INT = 2**63 - 1  # SQLite's INTEGER; S2's u64 sequence numbers hold it too


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number!r} is not a finite number", param, ctx)
        return float(number)


@dataclass
class CliContext:
    store_url: str
    settings: Settings


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_for(error: ParallaxError) -> int:
    return EXIT_USAGE if isinstance(error, UserError) else EXIT_FAILURE


def run_with_store(ctx: click.Context, action: Callable[[StreamStore], Awaitable[T]], *, create: bool = True) -> T:
    """Open the store, run `action` on it, close it; turn Parallax errors into one line.
    `create=False` for commands that only read or act on what must already be there: a store
    whose directory does not exist is then an error (exit 2) instead of a new empty one."""
    import asyncio
    import signal

    from parallax.streams.url import open_store  # lazily: `parallax --help` opens no store

    cli: CliContext = ctx.find_object(CliContext)  # type: ignore[assignment]
    received: list[int] = []

    def stop(signum: int, task: asyncio.Task[Any]) -> None:
        received.append(signum)
        task.cancel()

    async def main() -> T:
        # SIGTERM and SIGHUP stop the command the way Ctrl-C does: the running work is cancelled,
        # so agents' process groups are killed and their claims released (or left to expire),
        # and the run stays resumable; the process then exits 128 + the signal's number.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop, signum, task)
        store = open_store(cli.store_url, create=create)
        try:
            return await action(store)
        finally:
            await store.close()
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(main())
    except ParallaxError as e:
        fail(str(e), exit_code_for(e))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except asyncio.CancelledError:
        if not received:
            raise
        click.echo(f"stopped by {signal.Signals(received[0]).name}", err=True)
        sys.exit(128 + received[0])
    except BrokenPipeError:
        sys.exit(0)
