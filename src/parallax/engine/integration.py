"""Integrating a task graph's work: each succeeded task's branch merged into the integration
branch one at a time in dependency order, the graph's verify, the review queue (a person's
decision merges or sends back), and conflicts (recorded, or resolved by the graph's resolver
with both tasks' intent). The workers that produce the branches are in engine/tasks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallax.agents import build_agent
from parallax.agents.base import AgentContext, AgentLog, BudgetView
from parallax.agents.cli import login_files, own_paths
from parallax.agents.process import agent_environment, run_process, tail_text
from parallax.core import events as ev
from parallax.core.conflicts import Conflict
from parallax.core.errors import AgentFailed, StreamNotFound, UserError
from parallax.core.events import Event
from parallax.core.grants import Grants
from parallax.core.tasks import (
    RESOLVER_PREFIX,
    TASK_CONFLICTED,
    TASK_MERGED,
    TASK_REQUEUED,
    TASK_RESOLUTION_FAILED,
    TASK_RESOLVED,
    Resolution,
    TaskBoard,
    TaskGraphSpec,
    TaskSpec,
)
from parallax.engine.control import agent_stream, control_stream
from parallax.engine.runs import load_run
from parallax.engine.taskboard import TaskClient
from parallax.engine.tasks import TaskRunOptions, usage_record
from parallax.streams.base import AppendInput, StreamStore
from parallax.streams.folded import event_record
from parallax.workspaces import git
from parallax.workspaces.peering import remove_tree
from parallax.workspaces.sandbox import Sandbox
from parallax.workspaces.workspace import Workspaces


@dataclass(frozen=True)
class Integration:
    branch: str
    head: str
    merged: list[str]
    conflicts: list[Conflict]
    verify: dict[str, Any] | None


def graph_sandboxed(spec: TaskGraphSpec, options: TaskRunOptions) -> bool:
    """Whether any task of the graph ran sandboxed: then whatever checks their work does too."""
    return options.sandbox or any(t.sandbox for t in spec.tasks)


async def integrate(store: StreamStore, run_id: str, spec: TaskGraphSpec, options: TaskRunOptions) -> Integration:
    """Merge every succeeded task's branch into the integration branch in dependency order,
    recording each merge (`task.merged`) and each git conflict with both sides of every file (a
    conflict goes to the graph's resolver first, if it has one: its verified resolution merges in
    the task's place, or waits for review; `resolve_conflict`); one merge at a time. Then run the
    graph's verify command on the result (in the sandbox, the integration worktree
    read-only, when any task ran sandboxed: the verify runs the agents' code)."""
    client = TaskClient(store, run_id, "integrator", spec)
    await client.sync()
    workspaces = await Workspaces.open(options.repo, run_id)
    path = await workspaces.integration_worktree()
    merged: list[str] = []
    conflicts: list[Conflict] = []
    for task_id in _dependency_order(spec):
        state = client.board.tasks[task_id]
        if state.status == "merged":
            merged.append(task_id)
            continue
        if state.status != "succeeded" or not state.commit:
            continue
        resolution = state.resolution
        if resolution is not None and resolution.status == "resolved":
            # Resolved before (a resumed run): the resolution goes in the task's place, or waits
            # for a person with a review queue.
            if spec.review:
                continue
            if await _merge_resolution(client, path, task_id, resolution):
                merged.append(task_id)
                continue
        conflict = await git.merge(path, state.commit, f"parallax {run_id}: merge {task_id}")
        if conflict is not None:
            failure = resolution.error if resolution is not None and resolution.status == "failed" else None
            if spec.resolver is not None and (resolution is None or resolution.status == "resolving"):
                commit, failure = await resolve_conflict(client, workspaces, task_id, conflict, path, options)
                resolution = client.board.tasks[task_id].resolution
                if commit is not None and resolution is not None:
                    if spec.review:
                        continue  # verified, and queued for a person in the task's place
                    if await _merge_resolution(client, path, task_id, resolution):
                        merged.append(task_id)
                        continue
                    failure = "its resolution no longer merges"
            why = f"; the resolver {RESOLVER_PREFIX}{task_id} failed: {failure}" if failure else ""
            conflicts.append(
                Conflict(
                    kind="disagreement",
                    path=", ".join(conflict.files),
                    message=f"merging {task_id} into {workspaces.integration_branch}: {conflict.message}{why}",
                    agents=(task_id,),
                    values={f: {"integration": conflict.ours[f], task_id: conflict.theirs[f]} for f in conflict.files},
                    step=task_id,
                )
            )
            continue
        head = await git.head(path)
        await client.append(Event(TASK_MERGED, {"task": task_id, "commit": head}))
        merged.append(task_id)
    verify = None
    if spec.verify:
        env = agent_environment((), options.parent_env)
        argv = ["/bin/sh", "-c", spec.verify]
        if graph_sandboxed(spec, options):
            scratch = workspaces.root / "verify-home"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            env.update({"HOME": str(scratch), "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
            network = any(t.network for t in spec.tasks if t.sandbox or options.sandbox)
            sandbox = Sandbox(path.work_tree, scratch, network, options.sandbox_read_only, worktree_writable=False)
            argv = sandbox.wrap(argv, env)
        check = await run_process(argv, stdin=None, env=env, cwd=path.work_tree, timeout_s=1800)
        verify = {
            "command": spec.verify,
            "exit": check.returncode,
            "output": tail_text(check.stdout + check.stderr),
            **check.dropped,
        }
    return Integration(workspaces.integration_branch, await git.head(path), merged, conflicts, verify)


def _dependency_order(spec: TaskGraphSpec) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    pending = [t.id for t in spec.tasks]
    while pending:
        for task_id in list(pending):
            if all(d in done for d in spec.task(task_id).after):
                order.append(task_id)
                done.add(task_id)
                pending.remove(task_id)
    return order


# Conflicts and the resolver


RESOLVER_INSTRUCTIONS = """\
Merging task {task} into the integration branch conflicted: the tasks below changed the same
lines. Your working directory is the integration branch with {task}'s work merged in; git left
its conflict markers (<<<<<<<, =======, >>>>>>>: the integration branch's side first, then
{task}'s) in these files:

{files}

Resolve the conflict: edit only those files so that each does what every task meant (their
intent is below), and leave no conflict markers. Change no other file and run no git commands:
Parallax checks and commits your result.{verify}
"""

DIFF_LIMIT = 20_000  # characters of each task's diff in the resolver's prompt


def _clip(text: str) -> str:
    return text if len(text) <= DIFF_LIMIT else f"{text[:DIFF_LIMIT]}\n... ({len(text) - DIFF_LIMIT} more characters)"


def _literal_glob(path: str) -> str:
    """A write-set glob matching exactly `path` (brackets around each wildcard character)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _has_markers(path: Path) -> bool:
    if path.is_symlink():
        return False  # never followed out of the worktree; committed as the link it is
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return False  # deleted (a legitimate resolution) or not a file
    return any(line.startswith((b"<<<<<<<", b">>>>>>>")) for line in lines)


async def _resolver_prompt(
    client: TaskClient, workspaces: Workspaces, task_id: str, files: tuple[str, ...], against: list[str]
) -> str:
    """What the resolver is told: the conflicted files, and for each task on either side, what
    it was asked to do and what it changed in those files."""
    spec, board = client.spec, client.board
    verify = spec.verify or spec.task(task_id).verify
    parts = [
        RESOLVER_INSTRUCTIONS.format(
            task=task_id,
            files="\n".join(f"- {f}" for f in files),
            verify=f"\nYour result must then pass: {verify}" if verify else "",
        )
    ]
    sides = [(t, workspaces.branch(t), "already on the integration branch") for t in against]
    state = board.tasks[task_id]
    sides.append((task_id, state.commit or workspaces.branch(task_id), "being merged"))
    for other, commit, role in sides:
        base = board.tasks[other].base
        diff = await git.diff_paths(workspaces.repo, base, commit, files) if base else "(unknown)"
        prompt = spec.task(other).prompt.strip() or "(no prompt)"
        parts.append(f"## Task {other} ({role})\n\nIt was asked:\n\n{prompt}\n\nIts change to these files:\n\n"
                     f"```diff\n{_clip(diff).rstrip()}\n```\n")  # fmt: skip
    if not against:
        parts.append("The integration branch's side of these files comes from no task of this graph.\n")
    return "\n".join(parts)


async def resolve_conflict(
    client: TaskClient,
    workspaces: Workspaces,
    task_id: str,
    conflict: git.MergeConflict,
    integration: git.Checkout,
    options: TaskRunOptions,
) -> tuple[str | None, str | None]:
    """Hand a conflicted merge of `task_id` to the graph's resolver: on its own branch
    (`parallax/<run>/resolve-<task>`), from the integration head with the task's commit merged
    in and the markers left in; it may change only the conflicted files, must leave no markers,
    and must pass the graph's verify (else the task's). Recorded as `task.conflicted`, then
    `task.resolved` (the merge commit, not merged yet) or `task.resolution_failed`. Returns the
    commit or why there is none."""
    spec = client.spec
    state = client.board.tasks[task_id]
    if spec.resolver is None or not conflict.files or not state.commit:
        return None, "nothing to resolve"
    resolver = f"{RESOLVER_PREFIX}{task_id}"
    base = await git.head(integration)
    files = conflict.files
    against = [
        t for t in _dependency_order(spec)
        if t != task_id and client.board.tasks[t].status == "merged" and set(client.board.tasks[t].changed) & set(files)
    ]  # fmt: skip
    conflicted = {"task": task_id, "resolver": resolver, "files": list(files), "against": against, "base": base,
                  "branch": workspaces.branch(resolver)}  # fmt: skip
    await client.append(Event(TASK_CONFLICTED, conflicted))
    used: dict[str, Any] = {}
    try:
        commit, error, used = await _run_resolver(client, workspaces, task_id, resolver, base, files, against, options)
    except (OSError, git.GitError) as e:
        commit, error = None, f"preparing or committing the resolution failed: {e}"
    outcome = {"task": task_id, "resolver": resolver, **used}
    if commit is None:
        await client.append(Event(TASK_RESOLUTION_FAILED, {**outcome, "error": error}))
    else:
        await client.append(Event(TASK_RESOLVED, {**outcome, "commit": commit}))
    return commit, error


async def _run_resolver(
    client: TaskClient,
    workspaces: Workspaces,
    task_id: str,
    resolver: str,
    base: str,
    files: tuple[str, ...],
    against: list[str],
    options: TaskRunOptions,
) -> tuple[str | None, str | None, dict[str, Any]]:
    spec, run_id = client.spec, client.run_id
    agent_spec = spec.resolver
    assert agent_spec is not None
    task = spec.task(task_id)
    commit = client.board.tasks[task_id].commit
    assert commit is not None
    verify = spec.verify or task.verify
    sandboxed = graph_sandboxed(spec, options)
    rspec = TaskSpec(
        id=resolver,
        writes=tuple(_literal_glob(f) for f in files),
        agent=agent_spec,
        verify=verify,
        sandbox=sandboxed,
        network=any(t.network for t in spec.tasks),
        timeout_s=task.timeout_s,
        max_attempts=1,
    )
    index = len(spec.tasks) + [t.id for t in spec.tasks].index(task_id)  # its own port range
    workspace = await workspaces.prepare(rspec, index, [base])
    conflicted, marked = await git.merge_keeping_conflicts(workspace.checkout, commit)
    prompt = await _resolver_prompt(client, workspaces, task_id, files, against)
    env = workspace.environment(agent_spec.env, options.parent_env, login_files(agent_spec))
    log = AgentLog(client.store, agent_stream(run_id, resolver), resolver, resolver)
    sandbox = (
        Sandbox(workspace.path, workspace.home, network=rspec.network, read_only=options.sandbox_read_only)
        if sandboxed
        else None
    )
    task_view = {"id": resolver, "writes": list(rspec.writes), "reads": [], "verify": verify, "resolves": task_id,
                 "files": list(conflicted), "against": against}  # fmt: skip
    ctx = AgentContext(
        run_id=run_id,
        step_id=resolver,
        agent=resolver,
        attempt=1,
        input={"task": task_view},
        prompt=prompt,
        output_type=None,
        grants=Grants(agent=resolver, write=(agent_stream(run_id, resolver),), read=()),
        store=client.store,
        log=log,
        budget=BudgetView(),
        deadline=None,
        cancelled=asyncio.Event(),
        env=env,
        workdir=workspace.path,
        wrap=sandbox.wrap if sandbox is not None else None,
    )
    try:
        try:
            async with asyncio.timeout(rspec.timeout_s):
                result = await build_agent(agent_spec).run(ctx)
        except TimeoutError:
            return None, f"ran past its timeout of {rspec.timeout_s:g}s", {}
        except AgentFailed as e:
            return None, str(e), usage_record(e.usage)
        used = usage_record(result.usage)
        tools = own_paths(agent_spec)
        outside = []
        for path in await git.changed_paths(workspace.checkout, marked):
            if path in conflicted:
                continue
            if any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(path.split("/", 1)[0], g) for g in tools):
                await asyncio.to_thread(remove_tree, workspace.path / path)  # the tool's own files
                continue
            outside.append(path)
        if outside:
            return None, f"changed paths outside the conflicted files {list(conflicted)}: {', '.join(outside)}", used
        left = [f for f in conflicted if _has_markers(workspace.path / f)]
        if left:
            return None, f"left conflict markers in {', '.join(left)}", used
        await git.stage_all(workspace.checkout)
        if verify:
            argv = ["/bin/sh", "-c", verify]
            if sandbox is not None:
                argv = dataclasses.replace(sandbox, worktree_writable=False).wrap(argv, env)
            check = await run_process(argv, stdin=None, env=env, cwd=workspace.path, timeout_s=task.timeout_s or 600)
            output = tail_text(check.stdout + check.stderr)
            ctx.log(ev.AGENT_LOG, {"verify_exit": check.returncode, "verify_output": output, **check.dropped})
            if check.returncode != 0:
                return None, f"verify failed ({check.returncode}): {output.strip() or '(no output)'}", used
        message = f"parallax {run_id}/{resolver}: merge {task_id}, its conflicts resolved"
        return await git.commit_staged(workspace.checkout, message), None, used
    finally:
        with contextlib.suppress(Exception):
            await log.flush()


async def _merge_resolution(
    client: TaskClient, integration: git.Checkout, task_id: str, resolution: Resolution, **extra: Any
) -> bool:
    """Bring a task's resolution into the integration branch in the task's place (a fast
    forward when the branch has not moved since); whether it merged."""
    assert resolution.commit is not None
    if not await git.fast_forward(integration, resolution.commit):
        message = f"parallax {client.run_id}: merge {resolution.resolver}"
        if await git.merge(integration, resolution.commit, message) is not None:
            return False
    data = {"task": task_id, "commit": await git.head(integration), "resolved_by": resolution.resolver, **extra}
    await client.append(Event(TASK_MERGED, data))
    return True


async def task_graph_of(store: StreamStore, run_id: str) -> tuple[TaskGraphSpec, Any]:
    """The run's task graph and its board, folded from the log."""
    state = await load_run(store, run_id)
    assert state.plan is not None
    step = next((s for s in state.plan.steps if s.tasks is not None), None)
    if step is None or step.tasks is None:
        raise UserError(f"run {run_id} has no task graph")
    spec = TaskGraphSpec.model_validate(step.tasks)
    return spec, state.tasks or TaskBoard.of(spec)


async def decide_review(
    store: StreamStore, run_id: str, repo: Path, task_id: str, *, approve: bool, note: str, by: str
) -> str:
    """A person's decision on a finished task: approving merges it into the integration branch
    (`task.merged`); rejecting sends it back to the agent with the note (`task.requeued`).
    When the merge conflicts and the graph has a resolver, the resolver runs now and its
    verified resolution waits for review in the task's place; approving that merges it."""
    spec, board = await task_graph_of(store, run_id)
    if task_id not in board.tasks:
        raise UserError(f"run {run_id} has no task {task_id!r}")
    state = board.tasks[task_id]
    if state.status != "succeeded":
        raise UserError(f"task {task_id} is {state.status}, not waiting for review")
    if approve and state.resolving:
        raise UserError(f"task {task_id}: its conflict is being resolved, not waiting for review yet")
    if approve and (spec.resolver is not None or state.resolution is not None):
        return await _approve_with_resolver(store, run_id, repo, spec, task_id, note=note, by=by)
    stream = control_stream(run_id)

    async def append(event: Event) -> None:
        await store.append(stream, AppendInput([event_record(event)]))

    if not approve:
        await append(Event(TASK_REQUEUED, {"task": task_id, "reason": f"{by}: {note or 'rejected'}", "by": by}))
        return f"sent {task_id} back to its agent"
    workspaces = await Workspaces.open(repo, run_id)
    path = await workspaces.integration_worktree()
    assert state.commit is not None
    conflict = await git.merge(path, state.commit, f"parallax {run_id}: merge {task_id} (approved by {by})")
    if conflict is not None:
        reason = f"merging into {workspaces.integration_branch} conflicts in {', '.join(conflict.files)}"
        await append(Event(TASK_REQUEUED, {"task": task_id, "reason": reason, "by": by}))
        raise UserError(f"{reason}; sent {task_id} back to its agent")
    await append(Event(TASK_MERGED, {"task": task_id, "commit": await git.head(path), "by": by, "note": note}))
    return f"merged {task_id} into {workspaces.integration_branch}"


async def _approve_with_resolver(
    store: StreamStore, run_id: str, repo: Path, spec: TaskGraphSpec, task_id: str, *, note: str, by: str
) -> str:
    """Approving in a graph with a resolver: merge the task (or its verified resolution); a
    conflict goes to the resolver, whose resolution then waits for review in the task's place.
    A resolver that fails sends the task back to its agent, as without one."""
    client = TaskClient(store, run_id, f"reviewer-{by}", spec)
    await client.sync()
    state = client.board.tasks[task_id]
    workspaces = await Workspaces.open(repo, run_id)
    path = await workspaces.integration_worktree()
    resolution = state.resolution
    if resolution is not None and resolution.status == "resolved":
        if await _merge_resolution(client, path, task_id, resolution, by=by, note=note):
            return f"merged {task_id} into {workspaces.integration_branch}, as {resolution.resolver} resolved it"
        reason = f"its resolution ({resolution.branch}) no longer merges into {workspaces.integration_branch}"
    else:
        assert state.commit is not None
        conflict = await git.merge(path, state.commit, f"parallax {run_id}: merge {task_id} (approved by {by})")
        if conflict is None:
            data = {"task": task_id, "commit": await git.head(path), "by": by, "note": note}
            await client.append(Event(TASK_MERGED, data))
            return f"merged {task_id} into {workspaces.integration_branch}"
        reason = f"merging into {workspaces.integration_branch} conflicts in {', '.join(conflict.files)}"
        failure = resolution.error if resolution is not None else None
        if spec.resolver is not None and (resolution is None or resolution.status == "resolving"):
            commit, failure = await resolve_conflict(client, workspaces, task_id, conflict, path, TaskRunOptions(repo))
            if commit is not None:
                branch = workspaces.branch(f"{RESOLVER_PREFIX}{task_id}")
                return (
                    f"{reason}: the resolver's resolution passed its checks and waits for review on {branch}\n"
                    f"parallax review {run_id} --task {task_id}"
                )
        if failure:
            reason += f"; the resolver {RESOLVER_PREFIX}{task_id} failed: {failure}"
    await client.append(Event(TASK_REQUEUED, {"task": task_id, "reason": reason, "by": by}))
    raise UserError(f"{reason}; sent {task_id} back to its agent")


async def task_diff(store: StreamStore, run_id: str, task_id: str, repo: Path) -> tuple[Any, str]:
    """A task's state and what it changed, from the commit it started at (`parallax diff`)."""
    _, board = await task_graph_of(store, run_id)
    if task_id not in board.tasks:
        raise UserError(f"run {run_id} has no task {task_id!r}")
    state = board.tasks[task_id]
    if not state.commit or not state.base:
        raise UserError(f"task {task_id} has no commit yet ({state.status})")
    resolution = state.resolution
    if resolution is not None and resolution.status == "resolved" and resolution.base and resolution.commit:
        # What approving it brings into the integration branch: the task with its conflicts resolved.
        return state, await git.diff(await git.open_repository(repo), resolution.base, resolution.commit)
    return state, await git.diff(await git.open_repository(repo), state.base, state.commit)


async def verify_output(store: StreamStore, run_id: str, task_id: str) -> str:
    """The last verify command's exit code and output on the task's log (`parallax review`), or
    on its resolver's when a resolution stands in for it."""
    with contextlib.suppress(UserError, AssertionError, StreamNotFound):
        _, board = await task_graph_of(store, run_id)
        state = board.tasks.get(task_id)
        if state is not None and state.resolution is not None and state.resolution.status == "resolved":
            task_id = state.resolution.resolver
    try:
        records = await store.read_all(agent_stream(run_id, task_id))
    except StreamNotFound:
        return "(no log)"
    for record in reversed(records):
        data = json.loads(record.body) if record.body.startswith(b"{") else {}
        if "verify_exit" in data:
            return f"exit {data['verify_exit']}\n{data.get('verify_output', '')}"
    return "(no verify command)"
