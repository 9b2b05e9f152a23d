"""The names of a run's streams, in one place. Every module that names a stream of a run asks
`RunStreams(run_id)`; nothing else builds a `runs/...` string. Pure: names only, no store.

    runs/<run>/control          authoritative: plan, topology, task and agent transitions, merges
    runs/<run>/agents/<step>    one agent's private log
    runs/<run>/cohorts/<name>   what one cohort shares
    runs/<run>/inbox/<target>   messages to an agent, cohort or the moderator
    runs/<run>/synthesis        the moderator's or merge step's result
    runs/<run>/work             agent attempts offered to worker processes
    runs/<run>/hooks            what each hook did
    runs/<run>/snapshots        pointers to fold snapshots of the control stream

A plan names streams before its run has an id: `RunStreams.template()` gives names holding the
`{run}` placeholder that the engine fills in.
"""

from __future__ import annotations

from dataclasses import dataclass

# Streams that belong to no one run.
WORK_RUNS = "work/runs"  # runs any worker may coordinate
SCHEDULES = "schedules"


@dataclass(frozen=True, slots=True)
class RunStreams:
    run_id: str

    @classmethod
    def template(cls) -> RunStreams:
        """Names with the `{run}` placeholder, for plans (filled when the run starts)."""
        return cls("{run}")

    @property
    def prefix(self) -> str:
        """Every stream of the run starts with this (grants and run-scoped tokens use it)."""
        return f"runs/{self.run_id}/"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def agents(self) -> str:
        return f"{self.prefix}agents/"

    def agent(self, step: str) -> str:
        return f"{self.agents}{step}"

    @property
    def cohorts(self) -> str:
        return f"{self.prefix}cohorts/"

    def cohort(self, name: str) -> str:
        return f"{self.cohorts}{name}"

    @property
    def inboxes(self) -> str:
        return f"{self.prefix}inbox/"

    def inbox(self, target: str) -> str:
        return f"{self.inboxes}{target}"

    @property
    def synthesis(self) -> str:
        return f"{self.prefix}synthesis"

    @property
    def work(self) -> str:
        return f"{self.prefix}work"

    @property
    def hooks(self) -> str:
        return f"{self.prefix}hooks"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}snapshots"

    @property
    def heartbeat(self) -> str:
        """The coordinator's heartbeat: a record every few seconds while it runs (trimmed)."""
        return f"{self.prefix}heartbeat"
