"""Running a task graph: workers claim tasks, each task runs in its own worktree, finished work
is checked against its write set, and the succeeded branches are integrated in dependency order.

Any number of workers, in this process or others (`parallax worker RUN`), claim from the same
board on the run's control stream. A worker holding a task renews its lease while the agent
runs; if the lease is lost (the worker stalled, or the task was requeued because a contract it
reads changed), the agent is cancelled and its result thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallax.agents import build_agent
from parallax.agents.base import AgentContext, AgentLog, BudgetView
from parallax.agents.cli import login_files, own_paths
from parallax.agents.process import run_process, tail_text
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, StreamError
from parallax.core.events import Event
from parallax.core.grants import Grants
from parallax.core.tasks import (
    TASK_FAILED,
    TASK_REQUEUED,
    TASK_STARTED,
    TASK_SUCCEEDED,
    TaskGraphSpec,
    TaskSpec,
    in_write_set,
    write_sets_overlap,
)
from parallax.core.template import render
from parallax.engine.control import agent_stream
from parallax.engine.peers import PeerWatch, prompt_section
from parallax.engine.taskboard import Claim, TaskClient
from parallax.streams.base import StreamStore
from parallax.workspaces import git
from parallax.workspaces.sandbox import Sandbox
from parallax.workspaces.workspace import HandoffConflict, Workspace, Workspaces


@dataclass
class TaskRunOptions:
    repo: Path
    parent_env: Mapping[str, str] | None = None
    sandbox: bool = False  # every task in the sandbox, whatever its spec says
    sandbox_read_only: tuple[Path, ...] = ()


async def run_worker(
    store: StreamStore,
    run_id: str,
    worker: str,
    spec: TaskGraphSpec,
    options: TaskRunOptions,
    inputs: Mapping[str, Any] | None = None,
) -> int:
    """Claim and run tasks until the board is finished; returns how many this worker ran."""
    client = TaskClient(store, run_id, worker, spec)
    workspaces = await Workspaces.open(options.repo, run_id)
    index = {t.id: i for i, t in enumerate(spec.tasks)}
    ran = 0
    while True:
        files = tuple(await git.tracked_files(workspaces.repo, await workspaces.integration_head()))
        claim = await client.claim(files)
        if claim is None:
            if client.board.finished:
                return ran
            await client.wait_for_change(0.5)
            continue
        ran += 1
        task = spec.task(claim.task)
        await _run_claimed(client, workspaces, task, claim, index[claim.task], options, inputs or {})


async def _run_claimed(
    client: TaskClient,
    workspaces: Workspaces,
    task: TaskSpec,
    claim: Claim,
    index: int,
    options: TaskRunOptions,
    inputs: Mapping[str, Any],
) -> None:
    """Hold the claim (heartbeats from the moment it is won: preparing a large worktree may
    take longer than a lease) while the worktree is prepared and the task runs; report the
    outcome unless the lease was lost."""
    holding = asyncio.Event()
    holding.set()
    work = asyncio.create_task(_prepare_and_do(client, workspaces, task, claim, index, options, inputs))
    beat = asyncio.create_task(_keep_lease(client, claim, work, holding))
    try:
        outcome = await work
    except asyncio.CancelledError:
        if holding.is_set():
            raise
        return  # the lease was lost: someone else has the task now
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    if outcome is None:
        return
    kind, data = outcome
    accepted = await client.report(kind, claim, **data)
    if accepted and kind == TASK_SUCCEEDED:
        await _requeue_readers(client, task, tuple(data.get("changed", ())))


async def _prepare_and_do(
    client: TaskClient,
    workspaces: Workspaces,
    task: TaskSpec,
    claim: Claim,
    index: int,
    options: TaskRunOptions,
    inputs: Mapping[str, Any],
) -> tuple[str, dict[str, Any]] | None:
    """The task's outcome to report, or None when there is nothing more to report."""
    board = client.board
    deps = [board.tasks[d].commit for d in task.after]

    # Tasks that wrote where this one writes ran before it (never at once): build on their work
    # too, so the two changes stack instead of conflicting at integration.
    # Likewise the owners of contracts it reads: it works from the current contract.
    def builds_on(other: str) -> bool:
        spec = client.spec.task(other)
        return write_sets_overlap(task.writes, spec.writes) or any(in_write_set(c, task.reads) for c in spec.contracts)

    earlier = sorted(
        (t for t in board.tasks.values() if t.id != task.id and t.id not in task.after and t.commit
         and t.status in ("succeeded", "merged") and builds_on(t.id)),
        key=lambda t: t.finished_at or 0,
    )  # fmt: skip
    deps += [t.commit for t in earlier]
    try:
        workspace = await workspaces.prepare(task, index, [c for c in deps if c])
    except HandoffConflict as e:
        return TASK_FAILED, {"error": str(e), "final": True, "files": list(e.conflict.files)}
    except (OSError, git.GitError) as e:
        # Never leave the task claimed: a failed preparation is a failed attempt (retried
        # within the task's attempts, like any other).
        return TASK_FAILED, {"error": f"preparing its worktree failed: {e}", "final": False}
    if not await client.report(TASK_STARTED, claim, base=workspace.base, branch=workspace.branch):
        return None
    return await _do_task(client, workspaces, workspace, task, claim, options, inputs)


async def _keep_lease(client: TaskClient, claim: Claim, work: asyncio.Task[Any], holding: asyncio.Event) -> None:
    interval = max(0.05, client.spec.lease_s / 3)
    current: Claim | None = claim
    while current is not None:
        await asyncio.sleep(interval)
        current = await client.heartbeat(current)
    holding.clear()
    work.cancel()


async def _do_task(
    client: TaskClient,
    workspaces: Workspaces,
    workspace: Workspace,
    task: TaskSpec,
    claim: Claim,
    options: TaskRunOptions,
    inputs: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """Run the agent in the worktree, then verify, then check the write set and commit."""
    run_id = client.run_id
    env = workspace.environment(task.agent.env, options.parent_env, login_files(task.agent))
    state = client.board.tasks[task.id]
    feedback = state.feedback
    context = {
        "input": dict(inputs),
        "task": {
            "id": task.id,
            "writes": list(task.writes),
            "reads": list(task.reads),
            "verify": task.verify,
            "feedback": feedback,
        },
    }
    prompt = render(task.prompt, context) if task.prompt else None
    if feedback:  # sent back by a reviewer, or re-run because a contract changed
        prompt = f"{prompt or ''}\n\nThis task was sent back: {feedback}".strip()
    with contextlib.suppress(StreamError):
        await client.sync()
    prompt = f"{prompt or ''}{prompt_section(client.board, run_id, task.id)}" or None
    env["PARALLAX_RUN_ID"] = run_id  # for `parallax message $PARALLAX_RUN_ID --to TASK "..."`
    log = AgentLog(client.store, agent_stream(run_id, task.id), task.id, task.id)
    agent_spec = task.agent
    sandbox = (
        Sandbox(workspace.path, workspace.home, network=task.network, read_only=options.sandbox_read_only)
        if task.sandbox or options.sandbox
        else None
    )
    ctx = AgentContext(
        run_id=run_id,
        step_id=task.id,
        agent=task.id,
        attempt=claim.attempt,
        input={"input": dict(inputs), "task": context["task"]},
        prompt=prompt,
        output_type=None,
        grants=Grants(agent=task.id, write=(agent_stream(run_id, task.id),), read=()),
        store=client.store,
        log=log,
        budget=BudgetView(),
        deadline=None,
        cancelled=asyncio.Event(),
        env=env,
        workdir=workspace.path,
        wrap=sandbox.wrap if sandbox is not None else None,
    )
    # While the agent works, its peers' view (and theirs of it) is kept current: engine/peers.py.
    watch = PeerWatch(client, claim, task, workspace.checkout, workspace.base, client.store)
    await watch.once()
    watching = asyncio.create_task(watch.run())
    try:
        try:
            try:
                if task.timeout_s is not None:
                    async with asyncio.timeout(task.timeout_s):
                        result = await build_agent(agent_spec).run(ctx)
                else:
                    result = await build_agent(agent_spec).run(ctx)
            finally:  # stopped before verify and commit touch the worktree's git index
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
        except TimeoutError:
            return TASK_FAILED, {"error": f"ran past its timeout of {task.timeout_s:g}s", "final": False}
        except AgentFailed as e:
            return TASK_FAILED, {"error": str(e), "final": not e.retryable, **usage_record(e.usage)}
        used = usage_record(result.usage)  # what the agent's model calls cost, on the task's record
        if task.verify:
            # The verify runs what the agent wrote: in the task's sandbox, its worktree read-only.
            verify_argv = ["/bin/sh", "-c", task.verify]
            if sandbox is not None:
                verify_argv = dataclasses.replace(sandbox, worktree_writable=False).wrap(verify_argv, env)
            check = await run_process(
                verify_argv,
                stdin=None,
                env=env,
                cwd=workspace.path,
                timeout_s=task.timeout_s or 600,
            )
            ctx.log(
                ev.AGENT_LOG,
                {
                    "verify_exit": check.returncode,
                    "verify_output": tail_text(check.stdout + check.stderr),
                    **check.dropped,
                },
            )
            if check.returncode != 0:
                detail = tail_text((check.stdout + check.stderr).strip()) or "(no output)"
                return TASK_FAILED, {"error": f"verify failed ({check.returncode}): {detail}", "final": False, **used}
        first = (task.prompt.strip().splitlines() or [""])[0][:60]
        try:
            message = f"parallax {run_id}/{task.id}: {first}".rstrip(": ")
            finished = await workspaces.finish(workspace, task, message, own_paths(task.agent))
        except git.WorktreeTampered as e:
            return TASK_FAILED, {"error": str(e), "final": True, **used}
        if finished.outside:
            error = f"changed paths outside its write set {list(task.writes)}: {', '.join(finished.outside)}"
            return TASK_FAILED, {"error": error, "final": True, "outside": list(finished.outside), **used}
        output = (
            result.output if isinstance(result.output, str | int | float | bool | None) else json.dumps(result.output)
        )
        return TASK_SUCCEEDED, {"commit": finished.commit, "changed": list(finished.changed), "output": output, **used}
    finally:
        with contextlib.suppress(Exception):
            await log.flush()


def usage_record(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{"usage": ...}` for a task's record when the agent reported any, else nothing."""
    kept = {k: v for k, v in (usage or {}).items() if k in ("requests", "input_tokens", "output_tokens", "cost_usd")}
    return {"usage": kept} if any(kept.values()) else {}


async def _requeue_readers(client: TaskClient, owner: TaskSpec, changed: tuple[str, ...]) -> None:
    """A contract changed: tasks that read it and started from an older version run again."""
    touched = [c for c in owner.contracts if c in changed]
    if not touched:
        return
    await client.sync()
    for spec in client.spec.tasks:
        if spec.id == owner.id or owner.id in _ancestors(client.spec, spec.id):
            continue  # it starts from the owner's commit anyway
        reads = [c for c in touched if in_write_set(c, spec.reads)]
        state = client.board.tasks[spec.id]
        if reads and state.status in ("claimed", "running", "succeeded"):
            event = Event(
                TASK_REQUEUED, {"task": spec.id, "reason": f"contract {', '.join(reads)} changed by {owner.id}"}
            )
            await client.append(event)


def _ancestors(spec: TaskGraphSpec, task_id: str) -> set[str]:
    out: set[str] = set()
    stack = list(spec.task(task_id).after)
    while stack:
        current = stack.pop()
        if current not in out:
            out.add(current)
            stack.extend(spec.task(current).after)
    return out
