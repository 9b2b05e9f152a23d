"""Live lanes: one line per agent, following a run's streams until it finishes.

Works from any process: it only reads `runs/<run>/control` and the agent streams, so a run
started elsewhere (another terminal, the server, a worker) can be watched the same way. On a
terminal it redraws in place (rich Live); otherwise it prints one line per event.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from parallax.cli.readable import output_line, readable
from parallax.core import events as ev
from parallax.core.events import Event
from parallax.core.runstreams import RunStreams
from parallax.core.state import RunState
from parallax.engine.follow import follow_run
from parallax.streams.base import StreamStore

STATUS_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "waiting": "magenta",
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim red",
}


MAX_LANE_TEXT = 16_384  # characters of an agent's streamed text kept to read it from


def _round_of(step_id: str) -> int:
    tail = step_id.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Lane:
    step: str
    text: str = ""  # what the agent streamed so far (its first MAX_LANE_TEXT characters, then the tail)
    chunks: int = 0
    started_monotonic: float | None = None
    finished_monotonic: float | None = None
    note: str = ""


class LaneView:
    def __init__(self, store: StreamStore, run_id: str, console: Console) -> None:
        self.store = store
        self.run_id = run_id
        self.console = console
        self.state = RunState()
        self.lanes: dict[str, Lane] = {}
        self.live = console.is_terminal

    def _lane(self, step: str) -> Lane:
        lane = self.lanes.get(step)
        if lane is None:
            lane = self.lanes[step] = Lane(step)
        return lane

    def _on_agent_event(self, lane: Lane, event: Event) -> None:
        if event.type == ev.AGENT_CHUNK:
            lane.chunks += 1
            text = lane.text + str(event.data.get("text", ""))
            # A structured answer is read from its start (its fields); plain text from its end.
            lane.text = text if len(text) <= MAX_LANE_TEXT else text[: MAX_LANE_TEXT // 2] + text[-MAX_LANE_TEXT // 2 :]
        elif event.type == ev.AGENT_TOOL_CALL:
            lane.note = f"tool {event.data.get('tool')}"

    def _on_event(self, event: Event) -> None:
        self.state.apply(event)
        if event.step is None:
            if event.type == ev.RUN_FINISHED and not self.live:
                self.console.print(f"run {self.run_id} {event.data.get('status')}")
            elif event.type == ev.CIRCUIT_CHANGED:
                self.console.print(f"[magenta]circuit {event.data['provider']} {event.data['state']}[/]")
            elif event.type == ev.BUDGET_EXHAUSTED:
                self.console.print(f"[red]budget exhausted: {event.data.get('reason')}[/]")
            return
        lane = self._lane(event.step)
        now = time.monotonic()
        if event.type == ev.STEP_STARTED:
            lane.started_monotonic = lane.started_monotonic or now
            lane.finished_monotonic = None
        elif event.type in (ev.STEP_OUTPUT, ev.STEP_SKIPPED) or (
            event.type == ev.STEP_FAILED and event.data.get("final", True)
        ):
            lane.finished_monotonic = now
        elif event.type == ev.STEP_RETRY:
            lane.note = f"retry in {event.data.get('delay_s', 0):.1f}s"
        elif event.type == ev.CONFLICT_FOUND:
            lane.note = f"{sum(1 for c in self.state.conflicts if c.step == event.step)} conflict(s)"
        if not self.live:
            self._print_line(event)

    def _print_line(self, event: Event) -> None:
        step = event.step or ""
        if event.type == ev.STEP_STARTED:
            text = f"started (attempt {event.data.get('attempt', 1)})"
        elif event.type == ev.STEP_OUTPUT:
            state = self.state.steps[step]
            extra = f", confidence {state.confidence:.2f}" if state.confidence is not None else ""
            said = _cut(output_line(state.output), 160) if state.output is not None else ""
            text = f"[green]succeeded[/]{' (cached)' if state.cached else ''}{extra}" + (
                f"  {escape(said)}" if said else ""
            )
        elif event.type == ev.STEP_FAILED:
            final = event.data.get("final", True)
            text = f"[red]{'failed' if final else 'attempt failed'}[/]: {escape(str(event.data.get('error')))}"
        elif event.type == ev.STEP_SKIPPED:
            text = f"[dim]skipped: {escape(str(event.data.get('reason')))}[/]"
        elif event.type == ev.STEP_RETRY:
            text = f"retry in {event.data.get('delay_s', 0):.2f}s"
        elif event.type == ev.CONFLICT_FOUND:
            conflict = event.data["conflict"]
            text = f"[yellow]conflict[/] {conflict['kind']} at {escape(str(conflict['path']))}"
        elif event.type == ev.GATE_WAITING:
            text = f"[magenta]waiting for approval[/]: parallax approve {self.run_id} {step}"
        else:
            return
        self.console.print(f"{step:>14}  {text}", highlight=False)

    def _said(self, step_id: str) -> str:
        """The lane's text: the recorded output once there is one (replacing what streamed),
        else what is streaming, readably; a failure or skip says why."""
        step = self.state.steps[step_id]
        lane = self._lane(step_id)
        if step.status == "failed":
            return step.error or ""
        if step.status == "skipped":
            return step.skipped_reason or ""
        if step.output is not None:
            return output_line(step.output)
        if lane.note:
            return lane.note
        said = readable(lane.text)
        return said if lane.text.lstrip().startswith(("{", "[")) else said[-160:]

    def _row(self, table: Table, step_id: str, label: str, now: float) -> None:
        step = self.state.steps.get(step_id)
        if step is None:
            return
        lane = self._lane(step_id)
        elapsed = ""
        if lane.started_monotonic is not None:
            elapsed = f"{(lane.finished_monotonic or now) - lane.started_monotonic:.1f}s"
        status = step.status + (f" #{step.attempts}" if step.attempts > 1 else "")
        if step.cached:
            status += " (cache)"
        table.add_row(
            label,
            Text(status, style=STATUS_STYLE.get(step.status, "")),
            elapsed,
            str(step.usage.total_tokens or ""),
            "" if step.confidence is None else f"{step.confidence:.2f}",
            self._said(step_id),
        )

    def _table(self) -> Table:
        table = Table(expand=True, show_edge=False, pad_edge=False, box=None)
        table.add_column("agent", no_wrap=True, style="bold")
        table.add_column("status", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("tokens", justify="right", no_wrap=True)
        table.add_column("conf", justify="right", no_wrap=True)
        table.add_column("output", overflow="ellipsis", no_wrap=True, ratio=1)
        return table

    def _cohort_rows(self, table: Table, now: float) -> bool:
        """A cohorts run, grouped: each cohort's members at their latest turn, the moderator's
        latest decision, the synthesis. False when the run has no cohorts."""
        plan = self.state.plan
        if plan is None or not any(s.cohort for s in plan.steps):
            return False
        latest: dict[str, dict[str, tuple[int, str]]] = {}
        moderator: tuple[int, str] | None = None
        for spec in plan.steps:
            round_number = _round_of(spec.id)
            if spec.cohort:
                member = spec.agent_name
                known = latest.setdefault(spec.cohort, {}).get(member)
                if known is None or round_number >= known[0]:
                    latest[spec.cohort][member] = (round_number, spec.id)
            elif spec.agent_name == "moderator" and (moderator is None or round_number >= moderator[0]):
                moderator = (round_number, spec.id)
        for cohort, members in latest.items():
            table.add_row(Text(cohort, style="bold cyan"), "", "", "", "", "")
            for member, (round_number, step_id) in sorted(members.items()):
                self._row(table, step_id, f"  {member} r{round_number}", now)
        if moderator is not None:
            table.add_row(Text("moderator", style="bold cyan"), "", "", "", "", "")
            self._row(table, moderator[1], f"  round {moderator[0]}", now)
        if "synthesis" in self.state.steps:
            self._row(table, "synthesis", "synthesis", now)
        return True

    def _task_rows(self) -> Table | None:
        """A task graph: one row per task (status, holder, attempt, write set, changed files)."""
        board = self.state.tasks
        if board is None:
            return None
        table = Table(expand=True, show_edge=False, pad_edge=False, box=None, title="tasks", title_justify="left")
        for name in ("task", "status", "holder", "try", "writes", "changed", "note"):
            table.add_column(name, no_wrap=name != "note", overflow="ellipsis")
        for spec in board.spec.tasks:
            task = board.tasks.get(spec.id)
            if task is None:
                continue
            note = task.error or task.feedback or (task.commit[:10] if task.commit else "")
            table.add_row(
                spec.id,
                Text(task.status, style=STATUS_STYLE.get(task.status, "")),
                task.holder or "",
                str(task.attempt or ""),
                ", ".join(spec.writes) or "-",
                str(len(task.changed)) if task.changed else "",
                note,
            )
        return table

    def render(self) -> Group:
        now = time.monotonic()
        table = self._table()
        if not self._cohort_rows(table, now):
            order = [s.id for s in self.state.plan.steps] if self.state.plan else list(self.lanes)
            for step_id in order:
                self._row(table, step_id, step_id, now)
        title = Text(f"run {self.run_id}  {self.state.status}", style="bold")
        usage = self.state.usage
        footer = Text(
            f"{len(self.state.conflicts)} conflict(s)  {usage.total_tokens} tokens  ${usage.cost_usd:.4f}",
            style="dim",
        )
        tasks = self._task_rows()
        return Group(title, table, *([tasks] if tasks is not None else []), footer)

    async def follow(self) -> RunState:
        """Follow the run until `run.finished`; return the folded state."""
        live = Live(self.render(), console=self.console, refresh_per_second=8) if self.live else None
        try:
            if live is not None:
                live.start()
            agents = RunStreams(self.run_id).agents
            async for followed in follow_run(self.store, self.run_id):
                event = followed.event
                if followed.kind == "agent":
                    self._on_agent_event(self._lane(followed.stream.removeprefix(agents)), event)
                else:
                    self._on_event(event)
                if live is not None:
                    live.update(self.render())
        finally:
            if live is not None:
                with contextlib.suppress(Exception):
                    live.update(self.render())
                live.stop()
        return self.state
