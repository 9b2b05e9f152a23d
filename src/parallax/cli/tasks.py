"""Task graphs from the command line: the board, a task's diff, the review queue, more workers,
and bringing the integrated result into your branch.

    parallax tasks RUN                 # the board: status, holder, attempt, changed files, errors
    parallax diff RUN TASK             # what TASK changed (from the commit it started at)
    parallax review RUN                # the next finished task: its diff and verify output
    parallax review RUN --approve      # merge it into parallax/RUN/integration
    parallax review RUN --reject --note "handle the empty cart"   # back to its agent, with the note
    parallax worker RUN --workers 4    # more workers for a running graph, from this process
    parallax apply RUN                 # merge parallax/RUN/integration into the current branch
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import click

from parallax.cli.context import FiniteFloat, run_with_store
from parallax.core.errors import UserError
from parallax.engine.integration import decide_review, task_diff, task_graph_of, verify_output
from parallax.engine.tasks import TaskRunOptions, run_worker
from parallax.streams.base import StreamStore
from parallax.workspaces import git
from parallax.workspaces.workspace import Workspaces


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tasks(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """The task board of RUN_ID."""

    async def go(store: StreamStore) -> list[dict[str, Any]]:
        spec, board = await task_graph_of(store, run_id)
        return [
            {
                "task": t.id,
                "status": board.tasks[t.id].status,
                "holder": board.tasks[t.id].holder,
                "attempt": board.tasks[t.id].attempt,
                "after": list(t.after),
                "writes": list(t.writes),
                "changed": list(board.tasks[t.id].changed),
                "commit": board.tasks[t.id].commit,
                "error": board.tasks[t.id].error,
                "resolution": (
                    board.tasks[t.id].resolution.as_dict() if board.tasks[t.id].resolution is not None else None
                ),
            }
            for t in spec.tasks
        ]

    rows = run_with_store(ctx, go, create=False)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        detail = row["error"] or (f"{len(row['changed'])} file(s) changed" if row["changed"] else "")
        holder = f" by {row['holder']}" if row["status"] in ("claimed", "running") else ""
        resolution = row["resolution"]
        if resolution is not None:  # its merge conflicted and the graph's resolver took it up
            detail += f"  (conflict in {', '.join(resolution.get('files') or [])}: resolver {resolution['status']})"
        click.echo(f"{row['task']:<20} {row['status']:<10} x{row['attempt']}{holder}  {detail}")


async def _task_diff(store: StreamStore, run_id: str, task_id: str, repo: Path) -> tuple[Any, str]:
    return await task_diff(store, run_id, task_id, repo)


@click.command()
@click.argument("run_id")
@click.argument("task")
@click.pass_context
def diff(ctx: click.Context, run_id: str, task: str) -> None:
    """What TASK changed, from the commit it started at (run in the repository)."""

    async def go(store: StreamStore) -> str:
        _, text = await _task_diff(store, run_id, task, Path.cwd())
        return text

    click.echo(run_with_store(ctx, go, create=False), nl=False)


@click.command()
@click.argument("run_id")
@click.option("--task", "task_id", default=None, help="Review this task (default: the next waiting one).")
@click.option("--approve", is_flag=True, help="Merge it into the integration branch.")
@click.option("--reject", is_flag=True, help="Send it back to its agent with --note.")
@click.option("--note", default="", help="What the agent should know (kept on the log).")
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.pass_context
def review(
    ctx: click.Context, run_id: str, task_id: str | None, approve: bool, reject: bool, note: str, by: str | None
) -> None:
    """The review queue: finished tasks wait here when the graph says `review: true`."""
    if approve and reject:
        raise UserError("--approve or --reject, not both")
    who = by or os.environ.get("USER") or "someone"

    async def go(store: StreamStore) -> str:
        _, board = await task_graph_of(store, run_id)
        waiting = board.awaiting_review()
        chosen = task_id or (waiting[0] if waiting else None)
        if chosen is None:
            return "nothing is waiting for review"
        if approve or reject:
            return await decide_review(store, run_id, Path.cwd(), chosen, approve=approve, note=note, by=who)
        state, text = await _task_diff(store, run_id, chosen, Path.cwd())
        verify = await _verify_output(store, run_id, chosen)
        more = f" ({len(waiting) - 1} more waiting)" if len(waiting) > 1 else ""
        return (
            f"task {chosen}: {state.status}, attempt {state.attempt}{more}\n"
            f"verify: {verify}\n\n{text}\n"
            f"parallax review {run_id} --task {chosen} --approve   |   --reject --note '...'"
        )

    click.echo(run_with_store(ctx, go, create=False))


async def _verify_output(store: StreamStore, run_id: str, task_id: str) -> str:
    return await verify_output(store, run_id, task_id)


@click.command()
@click.argument("run_id", required=False)
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True, help="With RUN_ID: task workers.")
@click.option("--sandbox", is_flag=True, help="Run every task in the sandbox.")
@click.option("--slots", type=click.IntRange(1, 1024), default=4, show_default=True, help="Agent attempts at once.")
@click.option("--run", "only_runs", multiple=True, metavar="RUN", help="Serve only this run (repeatable).")
@click.option("--no-coordinate", is_flag=True, help="Only run attempts; never take a run's coordinator role.")
@click.option(
    "--lease",
    "lease_s",
    type=FiniteFloat(0.5, 600),
    default=10.0,
    show_default=True,
    help="Coordinator lease, seconds: how soon another worker takes over a dead coordinator.",
)
@click.option(
    "--attempt-lease",
    "attempt_lease_s",
    type=FiniteFloat(0.5, 3600),
    default=15.0,
    show_default=True,
    help="As coordinator: how long a claimed attempt survives its worker going silent.",
)
@click.option("--exit-when-idle", is_flag=True, help="Stop once every run seen (or given) is closed.")
@click.option("--name", help="This worker's name on the work boards (default: host-pid-random).")
@click.pass_context
def worker(
    ctx: click.Context, run_id: str | None, workers: int, sandbox: bool, slots: int, only_runs: tuple[str, ...],
    no_coordinate: bool, lease_s: float, attempt_lease_s: float, exit_when_idle: bool, name: str | None,
) -> None:  # fmt: skip
    """Serve submitted runs (claim agent attempts, coordinate runs nobody coordinates), on any
    machine that shares the store: `parallax --store nats://host:4222 worker`.

    With RUN_ID: claim and run tasks of that run's task graph from this process (in the same
    repository), until the graph is finished."""
    import asyncio

    if run_id is None:
        from parallax.cli.context import CliContext
        from parallax.engine.worker import Worker, WorkerOptions
        from parallax.launch import configured_hooks

        settings = ctx.find_object(CliContext).settings  # type: ignore[union-attr]
        options = WorkerOptions(
            slots=slots, coordinate=not no_coordinate, lease_s=lease_s, claim_lease_s=attempt_lease_s,
            workdir=Path.cwd(), runs=only_runs, exit_when_idle=exit_when_idle,
            hooks=configured_hooks(settings), concurrency=settings.concurrency,
        )  # fmt: skip

        async def serve(store: StreamStore) -> str:
            node = Worker(store, name, options)
            click.echo(f"worker {node.name} serving {', '.join(only_runs) or 'every submitted run'}", err=True)
            stats = await node.run()
            return (
                f"ran {stats.ran} attempt(s), {stats.tasks} task(s); coordinated {len(stats.coordinated)} run(s); "
                f"fenced off {stats.fenced} time(s); lost {stats.lost} claim(s)"
            )

        click.echo(run_with_store(ctx, serve))
        return

    async def go(store: StreamStore) -> int:
        spec, _ = await task_graph_of(store, run_id)
        options = TaskRunOptions(repo=Path.cwd(), sandbox=sandbox)
        prefix = f"worker-{secrets.token_hex(3)}"
        counts = await asyncio.gather(
            *(run_worker(store, run_id, f"{prefix}-{i}", spec, options) for i in range(workers))
        )
        return sum(counts)

    ran = run_with_store(ctx, go, create=False)
    click.echo(f"ran {ran} task(s)")


@click.command()
@click.argument("run_id")
@click.pass_context
def apply(ctx: click.Context, run_id: str) -> None:
    """Merge RUN_ID's integration branch into the current branch (only when you ask)."""

    async def go(store: StreamStore) -> str:
        await task_graph_of(store, run_id)
        workspaces = await Workspaces.open(Path.cwd(), run_id)
        repo = workspaces.repo
        if not await git.ref_exists(repo, workspaces.integration_branch):
            raise UserError(f"run {run_id} has no integration branch yet")
        status = await git.git(repo, "status", "--porcelain", "--untracked-files=no")
        if status.out.strip():
            raise UserError("the working tree has uncommitted changes; commit or stash them first")
        conflict = await git.merge(repo, workspaces.integration_branch, f"parallax apply {run_id}")
        if conflict is not None:
            raise UserError(f"merging {workspaces.integration_branch} conflicts in {', '.join(conflict.files)}")
        current = (await git.git(repo, "branch", "--show-current")).out.strip()
        return f"merged {workspaces.integration_branch} into {current}"

    click.echo(run_with_store(ctx, go, create=False))
