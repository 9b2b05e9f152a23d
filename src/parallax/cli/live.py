"""Changing and joining a live cohorts run: `parallax topology`, `parallax message`, `parallax join`.

parallax topology RUN stop finance
parallax topology RUN fork builders builders-b --at 3
parallax topology RUN merge merged builders operators
parallax topology RUN breakout pricing --prompt "Price it" --agent finance-a --agent builder-a --reads finance
parallax topology RUN rewire operators --reads builders
parallax topology RUN steer all "Cite a number for every claim"
parallax topology RUN phase challenge | wrap-up | conclude
parallax message RUN --to moderator "Please conclude by round 4"
parallax join RUN --cohort builders              # type lines; see only that cohort
parallax join RUN --cohort builders --agent claude
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import Any

import click

from parallax.cli.context import MAX_INT, FiniteFloat, run_with_store
from parallax.core.errors import AgentFailed
from parallax.core.expand import cohort_stream
from parallax.core.runstreams import RunStreams
from parallax.engine import live
from parallax.engine.cohorts import read_stream_events, transcript
from parallax.engine.follow import wait_finished
from parallax.streams.base import StreamStore
from parallax.streams.folded import record_event


def _who(by: str | None) -> str:
    return by or os.environ.get("USER") or "someone"


def _submit(ctx: click.Context, action: dict[str, Any], by: str | None, wait: float) -> None:
    run_id: str = ctx.meta["parallax.run_id"]

    async def go(store: StreamStore) -> tuple[int, str | None]:
        seq = await live.request_topology(store, run_id, action, f"user:{_who(by)}")
        outcome = await live.wait_applied(store, run_id, seq, wait) if wait > 0 else None
        return seq, outcome

    seq, outcome = run_with_store(ctx, go, create=False)
    click.echo(f"requested {action['action']} (control seq {seq})")
    if outcome is not None:
        click.echo(f"applied: {outcome}")
        if outcome.startswith("refused"):
            sys.exit(1)
    elif wait > 0:
        click.echo("not applied yet (it will be at the run's next decision, or when it resumes)")


_common = [
    click.option("--by", default=None, help="Who asks (default: $USER)."),
    click.option("--wait", type=FiniteFloat(0), default=0.0, help="Wait up to this many seconds for the outcome."),
]


def _with_common(fn: Any) -> Any:
    for decorator in reversed(_common):
        fn = decorator(fn)
    return fn


@click.group()
@click.argument("run_id")
@click.pass_context
def topology(ctx: click.Context, run_id: str) -> None:
    """Change live cohorts run RUN_ID: applied at its next decision, recorded on its control
    stream (`parallax topology RUN stop COHORT`)."""
    ctx.meta["parallax.run_id"] = run_id


@topology.command("stop")
@_with_common
@click.argument("stream")
@click.pass_context
def topo_stop(ctx: click.Context, by: str | None, wait: float, stream: str) -> None:
    """A cohort takes no more turns."""
    _submit(ctx, {"action": "stop", "stream": stream}, by, wait)


@topology.command("fork")
@_with_common
@click.argument("stream")
@click.argument("into")
@click.option("--at", type=click.IntRange(0, MAX_INT), default=None, help="Copy records below this seq (default: all).")
@click.pass_context
def topo_fork(ctx: click.Context, by: str | None, wait: float, stream: str, into: str, at: int | None) -> None:
    """Copy a cohort's stream into a new cohort with the same members."""
    action: dict[str, Any] = {"action": "fork", "stream": stream, "into": into}
    if at is not None:
        action["at"] = at
    _submit(ctx, action, by, wait)


@topology.command("merge")
@_with_common
@click.argument("into")
@click.argument("streams", nargs=-1, required=True)
@click.pass_context
def topo_merge(ctx: click.Context, by: str | None, wait: float, into: str, streams: tuple[str, ...]) -> None:
    """Fold two or more cohorts into a new one (conflicts recorded where their positions differ)."""
    _submit(ctx, {"action": "merge", "into": into, "streams": list(streams)}, by, wait)


@topology.command("breakout")
@_with_common
@click.argument("name")
@click.option("--prompt", required=True)
@click.option("--agent", "agents", multiple=True, required=True, help="A member (an agent of the pattern).")
@click.option("--reads", multiple=True, help="A cohort the breakout may read.")
@click.pass_context
def topo_breakout(
    ctx: click.Context,
    by: str | None,
    wait: float,
    name: str,
    prompt: str,
    agents: tuple[str, ...],
    reads: tuple[str, ...],
) -> None:
    """Open a breakout room: its own stream, members, prompt, and what it may read."""
    action = {"action": "breakout", "name": name, "prompt": prompt, "agents": list(agents), "reads": list(reads)}
    _submit(ctx, action, by, wait)


@topology.command("rewire")
@_with_common
@click.argument("cohort")
@click.option("--reads", multiple=True, help="Another cohort it may read (none: isolated again).")
@click.pass_context
def topo_rewire(ctx: click.Context, by: str | None, wait: float, cohort: str, reads: tuple[str, ...]) -> None:
    """Change which other cohorts a cohort may read."""
    _submit(ctx, {"action": "rewire", "cohort": cohort, "reads": list(reads)}, by, wait)


@topology.command("steer")
@_with_common
@click.argument("to")
@click.argument("text")
@click.pass_context
def topo_steer(ctx: click.Context, by: str | None, wait: float, to: str, text: str) -> None:
    """Say something to a cohort (or `all`) in its next round's prompt."""
    _submit(ctx, {"action": "steer", "to": to, "text": text}, by, wait)


@topology.command("phase")
@_with_common
@click.argument("phase", required=False)
@click.pass_context
def topo_phase(ctx: click.Context, by: str | None, wait: float, phase: str | None) -> None:
    """Move to the next phase, or the named one."""
    _submit(ctx, {"action": "start_phase", "phase": phase}, by, wait)


@topology.command("wrap-up")
@_with_common
@click.pass_context
def topo_wrap_up(ctx: click.Context, by: str | None, wait: float) -> None:
    """One more round, then the synthesis."""
    _submit(ctx, {"action": "wrap_up"}, by, wait)


@topology.command("conclude")
@_with_common
@click.pass_context
def topo_conclude(ctx: click.Context, by: str | None, wait: float) -> None:
    """Write the synthesis at the next decision."""
    _submit(ctx, {"action": "conclude"}, by, wait)


@click.command()
@click.argument("run_id")
@click.option("--to", "target", required=True, help="A cohort, an agent, or `moderator`.")
@click.argument("text")
@click.option("--by", default=None, help="Who writes (default: $USER).")
@click.pass_context
def message(ctx: click.Context, run_id: str, target: str, text: str, by: str | None) -> None:
    """Send TEXT to a cohort, an agent or the moderator of a live run (their inbox stream)."""

    async def go(store: StreamStore) -> int:
        return await live.send_message(store, run_id, target, text, f"user:{_who(by)}")

    seq = run_with_store(ctx, go, create=False)
    click.echo(f"sent to {target} (runs/{run_id}/inbox/{target} seq {seq})")


@click.command()
@click.argument("run_id")
@click.option("--cohort", required=True, help="The cohort to join: you see its stream only.")
@click.option("--as", "name", default=None, help="Your name on the stream (default: $USER).")
@click.option("--agent", "preset", default=None, help="Attach an external agent (a cli preset) instead of typing.")
@click.option("--model", default=None, help="The external agent's model.")
@click.option(
    "--max-turns",
    type=click.IntRange(1, MAX_INT),
    default=10,
    show_default=True,
    help="External agent: at most this many replies.",
)
@click.option("--env", "granted", multiple=True, help="External agent: an environment variable it may see (by name).")
@click.pass_context
def join(
    ctx: click.Context,
    run_id: str,
    cohort: str,
    name: str | None,
    preset: str | None,
    model: str | None,
    max_turns: int,
    granted: tuple[str, ...],
) -> None:
    """Take part in one cohort of a live run: its messages stream here, your lines go to it.
    Ends when the run finishes or your input closes. With --agent, an external agent process
    answers each new batch of messages instead."""

    async def go(store: StreamStore) -> None:
        await live.check_cohort(store, run_id, cohort)
        if preset is not None:
            await _agent_loop(store, run_id, cohort, preset, model, max_turns, granted)
        else:
            await _human_loop(store, run_id, cohort, f"human:{_who(name)}")

    run_with_store(ctx, go, create=False)


async def _print_cohort(store: StreamStore, stream: str) -> None:
    async for record in store.tail(stream, 0, missing_ok=True):
        event = record_event(record)
        if event is not None:
            click.echo(transcript([event]))


async def _human_loop(store: StreamStore, run_id: str, cohort: str, who: str) -> None:
    stream = cohort_stream(run_id, cohort)
    click.echo(f"joined {cohort} of {run_id} as {who}; type a line to post it, Ctrl-D to leave", err=True)
    loop = asyncio.get_running_loop()

    async def typing() -> None:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            if line.strip():
                await live.post_to_cohort(store, run_id, cohort, line.rstrip("\n"), who)

    printer = asyncio.create_task(_print_cohort(store, stream))
    typist = asyncio.create_task(typing())
    finished = asyncio.create_task(wait_finished(store, run_id))
    try:
        await asyncio.wait({typist, finished}, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.2)  # let the printer show what just arrived
    finally:
        for task in (printer, finished):
            task.cancel()
        await asyncio.gather(printer, finished, return_exceptions=True)
        if not typist.done():
            typist.cancel()  # the executor thread stays blocked on stdin until the process exits


async def _agent_loop(
    store: StreamStore, run_id: str, cohort: str, preset: str, model: str | None, turns: int, granted: tuple[str, ...]
) -> None:
    """An external agent in a cohort: after each new batch of its members' messages, the agent
    reads the cohort's transcript and posts one reply."""
    from parallax.agents.base import AgentContext, AgentLog, BudgetView
    from parallax.agents.cli import CliAgent
    from parallax.agents.process import agent_environment
    from parallax.core.grants import Grants
    from parallax.core.plan import AgentSpec

    stream = cohort_stream(run_id, cohort)
    who = f"agent:{preset}"
    name = f"external-{preset}-{secrets.token_hex(2)}"
    settings: dict[str, Any] = {"model": model} if model else {}
    agent = CliAgent(AgentSpec(kind="cli", preset=preset, settings=settings))
    own = RunStreams(run_id).agent(name)
    seen = 0
    finished = asyncio.create_task(wait_finished(store, run_id))
    try:
        for turn in range(1, turns + 1):
            while True:  # wait for something new from someone else
                events = await read_stream_events(store, stream)
                fresh = [e for e in events[seen:] if e.data.get("from") != who]
                if fresh:
                    break
                if finished.done():
                    return
                waiter = asyncio.create_task(store.wait_for_tail(stream, len(events)))
                await asyncio.wait({waiter, finished}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            await asyncio.sleep(0.3)  # let the rest of the round land
            events = await read_stream_events(store, stream)
            seen = len(events)
            prompt = (
                f"You take part in cohort {cohort!r}. The discussion so far:\n{transcript(events)}\n\n"
                "Reply with your position and reasoning, in a few sentences."
            )
            log = AgentLog(store, own, name, name)
            ctx = AgentContext(
                run_id=run_id,
                step_id=name,
                agent=name,
                attempt=turn,
                input={"cohort": cohort},
                prompt=prompt,
                output_type=None,
                grants=Grants(agent=name, write=(own,), read=(stream,)),
                store=store,
                log=log,
                budget=BudgetView(),
                deadline=None,
                cancelled=asyncio.Event(),
                env=agent_environment(granted),
            )
            try:
                result = await agent.run(ctx)
            except AgentFailed as e:
                click.echo(f"{preset} failed: {e}", err=True)
                await log.flush()
                continue
            await log.flush()
            text = result.output if isinstance(result.output, str) else str(result.output)
            await live.post_to_cohort(store, run_id, cohort, text, who)
            click.echo(f"[{who}] {text}")
            seen += 1
    finally:
        finished.cancel()
        await asyncio.gather(finished, return_exceptions=True)
