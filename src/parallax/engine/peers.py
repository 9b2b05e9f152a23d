"""Tasks that know what their peers are touching while they work, not only at merge time.

While a task's agent runs, its worker (`PeerWatch`) every `INTERVAL_S`:
- publishes the files the task has changed so far (`task.progress` on the task board, read from
  its worktree with the hardened host-side git), so every peer's board knows them;
- writes `.shared/peers.md` and `.shared/peers.json` in the task's worktree: the other running
  tasks, their prompts, write sets and changed files (for tools that re-read files);
- writes `.shared/inbox.md`: the messages sent to this task on the run's inbox stream
  (`runs/<run>/inbox/<task>`), e.g. by a peer that needs a file in this task's write set
  (`parallax message RUN --to TASK "..."`, or the MCP tool `task_message`).

The same view starts the agent's prompt (`prompt_section`). None of it is a guarantee: the write
set check at the end stays the guarantee; this is how agents avoid needing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parallax.core.errors import StreamError
from parallax.core.events import INBOX_MESSAGE
from parallax.core.runstreams import RunStreams
from parallax.core.tasks import TASK_PROGRESS, TaskBoard, TaskSpec
from parallax.streams.base import StreamStore
from parallax.streams.folded import record_event
from parallax.workspaces import git

INTERVAL_S = 1.0
PROMPT_CHARS = 400  # of a peer's prompt, in the view


def peers_of(board: TaskBoard, me: str) -> list[dict[str, Any]]:
    """The tasks other than `me` that hold a claim now: what they do and what they touch."""
    out = []
    for spec in board.spec.tasks:
        state = board.tasks.get(spec.id)
        if spec.id == me or state is None or state.status not in ("claimed", "running"):
            continue
        prompt = (spec.prompt or "").strip()
        out.append(
            {
                "task": spec.id,
                "status": state.status,
                "prompt": prompt if len(prompt) <= PROMPT_CHARS else prompt[: PROMPT_CHARS - 1] + "…",
                "writes": list(spec.writes),
                "changed": list(state.changed_so_far),
            }
        )
    return out


def markdown(peers: Sequence[dict[str, Any]], run_id: str, me: str) -> str:
    if not peers:
        return "# Peers\n\nNo other task is running now.\n"
    lines = [
        "# Peers",
        "",
        "Other tasks running now. Do not edit files in their write sets; if you need one changed, "
        f'ask its task: `parallax message {run_id} --to TASK "..."` (you are {me}).',
        "",
    ]
    for peer in peers:
        lines += [
            f"## {peer['task']} ({peer['status']})",
            "",
            f"- writes: {', '.join(peer['writes'])}",
            f"- changed so far: {', '.join(peer['changed']) or 'nothing yet'}",
            f"- task: {peer['prompt']}",
            "",
        ]
    return "\n".join(lines)


def prompt_section(board: TaskBoard, run_id: str, me: str) -> str:
    """The peers, as a section to append to a task's prompt at start ("" when alone)."""
    peers = peers_of(board, me)
    if not peers:
        return ""
    return "\n\n" + markdown(peers, run_id, me).replace("# Peers", "## Tasks running beside you", 1)


def _write(path: Path, text: str) -> None:
    """Replace a file in `.shared/` (read-only for the agent: its own changes are never read back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.write_text(text)
    temp.chmod(0o444)
    temp.replace(path)


class PeerWatch:
    """Keeps a running task's view of its peers current, and its peers' view of it."""

    def __init__(
        self,
        client: Any,  # engine/taskboard.TaskClient (its board, report, sync)
        claim: Any,
        task: TaskSpec,
        checkout: git.Checkout,
        base: str,
        store: StreamStore,
    ) -> None:
        self.client = client
        self.claim = claim
        self.task = task
        self.checkout = checkout
        self.base = base
        self.store = store
        self.run_id: str = client.run_id
        self.shared = checkout.work_tree / git.PRIVATE
        self.published: tuple[str, ...] | None = None

    async def once(self) -> None:
        with contextlib.suppress(git.GitError, OSError):
            changed = tuple(await git.changed_paths(self.checkout, self.base))
            if changed != self.published and await self.client.report(TASK_PROGRESS, self.claim, changed=list(changed)):
                self.published = changed
        with contextlib.suppress(StreamError, OSError):
            await self.client.sync()
        board: TaskBoard = self.client.board
        peers = peers_of(board, self.task.id)
        with contextlib.suppress(OSError):
            _write(self.shared / "peers.json", json.dumps({"run": self.run_id, "you": self.task.id, "peers": peers}))
            _write(self.shared / "peers.md", markdown(peers, self.run_id, self.task.id))
            _write(self.shared / "inbox.md", await self._inbox())

    async def _inbox(self) -> str:
        try:
            records = await self.store.read_all(RunStreams(self.run_id).inbox(self.task.id))
        except StreamError:
            records = []
        lines = ["# Inbox", ""]
        for record in records:
            event = record_event(record)
            if event is None or event.type != INBOX_MESSAGE:
                continue
            lines.append(f"- from {event.data.get('from', '?')}: {event.data.get('text', '')}")
        if len(lines) == 2:
            lines.append("No messages.")
        return "\n".join(lines) + "\n"

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(INTERVAL_S)  # the view's refresh period, not a synchronisation
