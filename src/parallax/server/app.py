"""`parallax serve`: the control plane's HTTP API (FastAPI; OpenAPI at /openapi.json) and the
live dashboard at /.

Runs execute in the server process. Every endpoint but /health (and the static pages) needs a
bearer token (the admin token, or a run-scoped one for that run's endpoints and streams); SSE
endpoints also accept `?token=` because browsers' EventSource cannot set headers. The token is
checked, and the body capped, before a body is read (parallax.server.guard). Patterns and targets
are compiled in a worker thread, never on the event loop, so a slow one stalls no other request.
Streams tail over Server-Sent Events, one event per record with `id: <seq>`, resumable with
`Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from parallax.core import events as ev
from parallax.core.errors import ParallaxError, RunNotFound, StreamNotFound, UserError
from parallax.core.plan import Plan
from parallax.core.runstreams import RunStreams
from parallax.core.state import TERMINAL_RUN, describe
from parallax.engine import api, live, registry
from parallax.engine.control import control_stream
from parallax.engine.follow import Followed, follow_run
from parallax.engine.heartbeat import pulse
from parallax.engine.integration import decide_review, task_diff, verify_output
from parallax.engine.runner import Runner
from parallax.launch import load_plan, run_options
from parallax.report import build_report
from parallax.server.auth import Principal, Tokens
from parallax.server.guard import DEFAULT_MAX_BODY, PRINCIPAL, STATIC, Guard
from parallax.server.scheduler import Schedule, Scheduler
from parallax.settings import Settings
from parallax.streams.base import ReadLimit, Record, SeqNum, StreamStore
from parallax.streams.url import open_store


class RunRequest(BaseModel):
    pattern: str | None = Field(default=None, description="A YAML pattern, as text")
    target: str | None = Field(default=None, description="Or a target the server can load (file.yaml, file.py:attr)")
    inputs: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class ForkRequest(BaseModel):
    at: int = Field(ge=1)
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class TokenRequest(BaseModel):
    ttl_s: float = Field(default=3600, gt=0, le=7 * 24 * 3600)


class Decision(BaseModel):
    step: str
    approved: bool = True
    note: str = ""
    by: str = "api"


class ReviewRequest(BaseModel):
    approve: bool
    note: str = ""
    by: str = "api"


class Message(BaseModel):
    to: str
    text: str
    by: str = "api"


class Metrics:
    def __init__(self) -> None:
        self.requests = 0
        self.sse_clients = 0
        self.sse_events = 0
        self.runs_started = 0


class LiveCursor:
    """Where a client of `/runs/{id}/live` stands: the last control seq it has, and per agent
    stream (numbered in the order the control log starts their steps, which is the same on
    every read) the last seq it has. Written `c` or `c.i:s.i:s...` (`-` for nothing yet), small
    enough for an event id, parsed back from `Last-Event-ID`."""

    def __init__(self, control: int = -1, agents: dict[int, int] | None = None) -> None:
        self.control = control
        self.agents: dict[int, int] = dict(agents or {})
        self.streams: dict[str, int] = {}  # step -> the number of its agent stream, in start order

    @classmethod
    def parse(cls, text: str) -> LiveCursor:
        try:
            head, *rest = text.split(".") if text else ["-"]
            control = -1 if head == "-" else int(head)
            agents = {int(i): int(s) for i, s in (part.split(":") for part in rest)}
        except ValueError:
            return cls()  # not ours: everything
        return cls(control, agents)

    def advance(self, item: Followed) -> bool:
        """Whether the client lacks `item`; if so, it has it from now on."""
        seq = item.record.seq_num
        if item.kind == "control":
            if item.event.type == ev.STEP_STARTED and item.event.step:  # as follow_run starts its tail
                self.streams.setdefault(item.event.step, len(self.streams))
            if seq <= self.control:
                return False
            self.control = seq
            return True
        number = self.streams.setdefault(item.stream.rsplit("/", 1)[-1], len(self.streams))
        if seq <= self.agents.get(number, -1):
            return False
        self.agents[number] = seq
        return True

    def __str__(self) -> str:
        head = "-" if self.control < 0 else str(self.control)
        return ".".join([head, *(f"{i}:{s}" for i, s in sorted(self.agents.items()))])


def _record_json(record: Record) -> dict[str, Any]:
    headers = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in record.headers}
    try:
        body: Any = json.loads(record.body) if record.body else None
    except ValueError:
        body = {"base64": base64.b64encode(record.body).decode()}
    return {"seq": record.seq_num, "timestamp": record.timestamp, "headers": headers, "body": body}


class RegisterRequest(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    capabilities: list[str] = Field(min_length=1)
    agent: dict[str, Any] = Field(description="the agent spec to run it with (kind, model, preset, command, ...)")
    ttl_s: float = Field(default=60, gt=0, le=86400)
    meta: dict[str, Any] = Field(default_factory=dict)


class ScheduleRequest(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
    cron: str = Field(description="5 fields, or 6 with seconds first")
    pattern: str | None = None
    target: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    missed: Literal["skip", "once"] = "skip"


async def compile_off_loop(
    settings: Settings, pattern: str | None, target: str | None, file: str, inputs: dict[str, Any],
    registered: list[dict[str, Any]] | None = None,
) -> Plan:  # fmt: skip
    """A YAML pattern (text) or a target (file.yaml, file.py:attr) compiled in a worker thread,
    with the settings applied (the one launch path): parsing, imports and a target's plan
    function never run on the event loop."""
    return await asyncio.to_thread(
        load_plan, settings, target=target if pattern is None else None, pattern=pattern, inputs=inputs,
        source=file, registry=registered,
    )  # fmt: skip


def create_app(
    store_url: str,
    admin_token: str,
    schedule_interval_s: float = 0.5,
    max_body: int = DEFAULT_MAX_BODY,
    body_timeout_s: float = 10.0,
    settings: Settings | None = None,
) -> FastAPI:
    """The app; `max_body` caps request bodies (bytes), `body_timeout_s` the wait between two
    chunks of one (see parallax.server.guard)."""
    settings = settings or Settings()  # parallax.toml / PARALLAX_*: budget, concurrency, hooks of every run
    tokens = Tokens(admin_token)
    metrics = Metrics()
    running: dict[str, asyncio.Task[Any]] = {}
    state: dict[str, StreamStore] = {}
    schedulers: dict[str, Scheduler] = {}

    async def start_scheduled(schedule: Schedule, run_id: str) -> str:
        pattern = schedule.pattern or None
        plan = await compile_off_loop(settings, pattern, schedule.target, f"<schedule {schedule.id}>", schedule.inputs)
        with contextlib.suppress(UserError):  # created before a crash: run (resume) it
            await api.create_run(store(), plan, run_id=run_id, source=f"schedule {schedule.id}")
        start(run_id)
        return run_id

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["store"] = open_store(store_url)
        schedulers["main"] = Scheduler(state["store"], start_scheduled)
        ticker = asyncio.create_task(schedulers["main"].loop(schedule_interval_s))
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            await state["store"].close()

    app = FastAPI(title="Parallax control plane", version="1", lifespan=lifespan)
    app.add_middleware(Guard, tokens=tokens, max_body=max_body, body_timeout_s=body_timeout_s)

    def store() -> StreamStore:
        return state["store"]

    def repository() -> Path:
        """The repository task graphs work in: the runs' workdir, else where the server started."""
        return run_options(settings).workdir or Path.cwd()

    def principal(request: Request) -> Principal:
        """The token's principal, as the guard checked it (header, or `?token=` on SSE only)."""
        metrics.requests += 1
        who = request.scope.get(PRINCIPAL)
        if not isinstance(who, Principal):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        return who

    def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.admin:
            raise HTTPException(403, "this needs the admin token")
        return who

    def for_run(run_id: str, who: Principal) -> None:
        if not who.may_access_run(run_id):
            raise HTTPException(403, f"this token is not for run {run_id}")

    @app.exception_handler(ParallaxError)
    async def parallax_error(request: Request, error: ParallaxError) -> PlainTextResponse:
        status = (
            404 if isinstance(error, RunNotFound | StreamNotFound) else 400 if isinstance(error, UserError) else 409
        )
        return PlainTextResponse(str(error), status_code=status)

    def start(run_id: str) -> None:
        async def go() -> None:
            try:
                await Runner(store(), run_id, run_options(settings)).run()
            finally:
                running.pop(run_id, None)

        metrics.runs_started += 1
        running[run_id] = asyncio.create_task(go(), name=f"run:{run_id}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "running": len(running)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text(who: Principal = Depends(admin)) -> str:
        lines = [
            "# TYPE parallax_http_requests_total counter", f"parallax_http_requests_total {metrics.requests}",
            "# TYPE parallax_runs_started_total counter", f"parallax_runs_started_total {metrics.runs_started}",
            "# TYPE parallax_runs_running gauge", f"parallax_runs_running {len(running)}",
            "# TYPE parallax_sse_clients gauge", f"parallax_sse_clients {metrics.sse_clients}",
            "# TYPE parallax_sse_events_total counter", f"parallax_sse_events_total {metrics.sse_events}",
        ]  # fmt: skip
        return "\n".join(lines) + "\n"

    @app.post("/runs", status_code=201)
    async def create(body: RunRequest, who: Principal = Depends(admin)) -> dict[str, str]:
        if (body.pattern is None) == (body.target is None):
            raise HTTPException(422, "give exactly one of `pattern` (YAML text) or `target`")
        snapshot = registry.live_snapshot(await registry.load_registry(store())) if body.pattern else None
        plan = await compile_off_loop(settings, body.pattern or None, body.target, "<request>", body.inputs, snapshot)
        run_id = await api.create_run(store(), plan, run_id=body.run_id, source=body.target or "api")
        start(run_id)
        return {"run_id": run_id}

    @app.get("/runs")
    async def runs(who: Principal = Depends(admin)) -> list[dict[str, Any]]:
        out = []
        for summary in await api.list_runs(store(), fold_unfinished=True):
            row = dict(summary.__dict__)
            if row["status"] == "stalled" and summary.run_id in running:
                row["status"] = "running"  # this server runs it: a late beat is not a lost coordinator
            out.append(row)
        return out

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        for_run(run_id, who)
        view = describe(await api.load_run(store(), run_id))
        view["live"] = run_id in running
        view["stalled"] = False
        if view["status"] not in TERMINAL_RUN and run_id not in running:
            last = await pulse(store(), run_id)
            view["stalled"] = last is not None and last.stalled()  # unfinished, its coordinator gone
        return view

    @app.get("/runs/{run_id}/report")
    async def get_report(run_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        """What the run found, for a person (parallax.report): synthesis, final positions,
        divergence, merged fields, conflicts, failures, cost."""
        for_run(run_id, who)
        return build_report(await api.load_run(store(), run_id)).as_dict()

    @app.get("/runs/{run_id}/tasks/{task_id}/diff")
    async def get_task_diff(run_id: str, task_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        """What a task changed (as `parallax diff`), and its last verify output."""
        for_run(run_id, who)
        task, text = await task_diff(store(), run_id, task_id, repository())
        verify = await verify_output(store(), run_id, task_id)
        return {"run_id": run_id, "task": task_id, "status": task.status, "diff": text, "verify": verify}

    @app.post("/runs/{run_id}/tasks/{task_id}/review")
    async def review_task(
        run_id: str, task_id: str, body: ReviewRequest, who: Principal = Depends(principal)
    ) -> dict[str, str]:
        """The review queue (as `parallax review`): approve merges the task into the integration
        branch, reject sends it back to its agent with the note."""
        for_run(run_id, who)
        outcome = await decide_review(
            store(), run_id, repository(), task_id, approve=body.approve, note=body.note, by=body.by
        )
        return {"run_id": run_id, "task": task_id, "outcome": outcome}

    @app.post("/runs/{run_id}/cancel")
    async def cancel(run_id: str, who: Principal = Depends(principal)) -> dict[str, str]:
        for_run(run_id, who)
        await api.request_cancel(store(), run_id, "cancelled over the API")
        return {"run_id": run_id, "status": "cancel requested"}

    @app.post("/runs/{run_id}/resume")
    async def resume(run_id: str, who: Principal = Depends(admin)) -> dict[str, str]:
        state_ = await api.load_run(store(), run_id)
        if state_.finished:
            raise HTTPException(409, f"run {run_id} already finished ({state_.status})")
        if run_id not in running:
            start(run_id)
        return {"run_id": run_id, "status": "running"}

    @app.post("/runs/{run_id}/fork", status_code=201)
    async def fork(run_id: str, body: ForkRequest, who: Principal = Depends(admin)) -> dict[str, str]:
        new_id = await api.fork_run(store(), run_id, body.at, new_run_id=body.run_id)
        start(new_id)
        return {"run_id": new_id}

    @app.post("/runs/{run_id}/tokens", status_code=201)
    async def issue(run_id: str, body: TokenRequest, who: Principal = Depends(admin)) -> dict[str, Any]:
        await api.load_run(store(), run_id)
        token, expiry = tokens.issue(run_id, body.ttl_s)
        return {"token": token, "run_id": run_id, "expires_at": expiry}

    @app.post("/runs/{run_id}/approve")
    async def approve(run_id: str, body: Decision, who: Principal = Depends(principal)) -> dict[str, str]:
        for_run(run_id, who)
        await api.decide_gate(store(), run_id, body.step, approved=body.approved, by=body.by, note=body.note)
        return {"run_id": run_id, "step": body.step, "decision": "approved" if body.approved else "rejected"}

    @app.post("/runs/{run_id}/topology")
    async def topology(run_id: str, action: dict[str, Any], who: Principal = Depends(principal)) -> dict[str, Any]:
        for_run(run_id, who)
        seq = await live.request_topology(store(), run_id, action, "api")
        return {"run_id": run_id, "seq": seq}

    @app.post("/runs/{run_id}/messages")
    async def message(run_id: str, body: Message, who: Principal = Depends(principal)) -> dict[str, Any]:
        for_run(run_id, who)
        seq = await live.send_message(store(), run_id, body.to, body.text, body.by)
        return {"run_id": run_id, "seq": seq}

    @app.get("/streams")
    async def streams(prefix: str = "", limit: int = 1000, who: Principal = Depends(principal)) -> list[dict[str, Any]]:
        if not who.admin and (who.run is None or not prefix.startswith(RunStreams(who.run).prefix)):
            raise HTTPException(403, f"this token may list {RunStreams(who.run or '?').prefix} only")
        infos = await store().list(prefix, limit=min(max(limit, 1), 1000))
        return [{"name": i.name, "created_at": i.created_at} for i in infos]

    @app.get("/streams/{name:path}/records")
    async def records(
        name: str, start: int = 0, limit: int = 1000, who: Principal = Depends(principal)
    ) -> list[dict[str, Any]]:
        if not who.may_access_stream(name):
            raise HTTPException(403, f"this token may not read {name}")
        batch = await store().read(name, SeqNum(max(start, 0)), limit=ReadLimit(count=min(max(limit, 1), 1000)))
        return [_record_json(r) for r in batch.records]

    async def sse(name: str, start: int, request: Request) -> AsyncIterator[bytes]:
        metrics.sse_clients += 1
        try:
            yield b"retry: 1000\n\n"
            async for record in store().tail(name, start, missing_ok=True):
                if await request.is_disconnected():
                    return
                data = json.dumps(_record_json(record), separators=(",", ":"))
                metrics.sse_events += 1
                yield f"id: {record.seq_num}\nevent: record\ndata: {data}\n\n".encode()
        finally:
            metrics.sse_clients -= 1

    def resume_from(request: Request, start: int) -> int:
        last = request.headers.get("last-event-id")
        return int(last) + 1 if last and last.isdigit() else start

    @app.get("/streams/{name:path}/events")
    async def stream_events(name: str, request: Request, start: int = 0, who: Principal = Depends(principal)) -> Any:
        if not who.may_access_stream(name):
            raise HTTPException(403, f"this token may not read {name}")
        return StreamingResponse(sse(name, resume_from(request, start), request), media_type="text/event-stream")

    @app.get("/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request, start: int = 0, who: Principal = Depends(principal)) -> Any:
        for_run(run_id, who)
        stream = control_stream(run_id)
        return StreamingResponse(sse(stream, resume_from(request, start), request), media_type="text/event-stream")

    @app.get("/runs/{run_id}/live")
    async def run_live(run_id: str, request: Request, who: Principal = Depends(principal)) -> Any:
        """Everything of a run as it happens, for the dashboard: control events and every agent
        stream's records, multiplexed (`event: control` / `event: agent`). Each event's id is a
        cursor (`LiveCursor`): a client that reconnects with `Last-Event-ID` gets what it has not
        seen, each record once."""
        for_run(run_id, who)
        await api.load_run(store(), run_id)
        cursor = LiveCursor.parse(request.headers.get("last-event-id", ""))
        return StreamingResponse(_multiplex(run_id, request, cursor), media_type="text/event-stream")

    async def _multiplex(run_id: str, request: Request, cursor: LiveCursor) -> AsyncIterator[bytes]:
        """The run's control records and, as steps start, their agents' records (follow_run),
        with keep-alives while nothing happens; until the client leaves. What `cursor` says the
        client has is read again (to find the agent streams) but not sent."""
        queue: asyncio.Queue[Followed | None] = asyncio.Queue(maxsize=10_000)

        async def pump() -> None:
            try:
                async for item in follow_run(store(), run_id, until_finished=False):
                    await queue.put(item)
            finally:
                await queue.put(None)

        pumping = asyncio.create_task(pump())
        metrics.sse_clients += 1
        try:
            yield b"retry: 1000\n\n"
            while not await request.is_disconnected():
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    return
                if not cursor.advance(item):
                    continue  # the client has it
                payload = {"stream": item.stream, **_record_json(item.record)}
                metrics.sse_events += 1
                data = json.dumps(payload, separators=(",", ":"))
                yield f"id: {cursor}\nevent: {item.kind}\ndata: {data}\n\n".encode()
        finally:
            metrics.sse_clients -= 1
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)

    @app.post("/registry/agents", status_code=201)
    async def register_agent(body: RegisterRequest, who: Principal = Depends(admin)) -> dict[str, str]:
        await registry.register(store(), body.id, body.capabilities, body.agent, body.ttl_s, body.meta)
        return {"id": body.id}

    @app.post("/registry/agents/{agent_id}/heartbeat")
    async def agent_heartbeat(agent_id: str, who: Principal = Depends(admin)) -> dict[str, str]:
        await registry.heartbeat(store(), agent_id)
        return {"id": agent_id}

    @app.delete("/registry/agents/{agent_id}")
    async def deregister_agent(agent_id: str, who: Principal = Depends(admin)) -> dict[str, str]:
        await registry.deregister(store(), agent_id)
        return {"id": agent_id, "status": "deregistered"}

    @app.get("/registry/agents")
    async def registered(all: bool = False, who: Principal = Depends(admin)) -> list[dict[str, Any]]:
        import time as clock

        now = int(clock.time() * 1000)
        return [
            {"id": r.id, "capabilities": r.capabilities, "agent": r.agent, "ttl_s": r.ttl_s, "live": r.live(now),
             "last_seen_ms": r.last_seen_ms, "meta": r.meta}
            for r in sorted((await registry.load_registry(store())).values(), key=lambda r: r.id)
            if all or r.live(now)
        ]  # fmt: skip

    @app.post("/schedules", status_code=201)
    async def create_schedule(body: ScheduleRequest, who: Principal = Depends(admin)) -> dict[str, str]:
        if (body.pattern is None) == (body.target is None):
            raise HTTPException(422, "give exactly one of `pattern` (YAML text) or `target`")
        if body.pattern is not None:  # refuse a bad pattern now
            await compile_off_loop(settings, body.pattern, None, f"<schedule {body.id}>", body.inputs)
        run = {"pattern": body.pattern, "target": body.target, "inputs": body.inputs}
        await schedulers["main"].create(body.id, body.cron, body.missed, **run)
        return {"id": body.id}

    @app.get("/schedules")
    async def list_schedules(who: Principal = Depends(admin)) -> dict[str, Any]:
        scheduler = schedulers["main"]
        await scheduler.sync()
        items = [
            {"id": s.id, "cron": s.cron, "missed": s.missed, "last_due_ms": s.last_due_ms, "runs": s.runs,
             "next_due_ms": s.next_due(s.last_due_ms or s.created_ms)}
            for s in scheduler.schedules.values()
        ]  # fmt: skip
        return {"schedules": items, "last_error": scheduler.last_error}

    @app.delete("/schedules/{schedule_id}")
    async def delete_schedule(schedule_id: str, who: Principal = Depends(admin)) -> dict[str, str]:
        await schedulers["main"].delete(schedule_id)
        return {"id": schedule_id, "status": "deleted"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> str:
        return resources.files("parallax.server").joinpath("dashboard.html").read_text()

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        """The dashboard's scripts and styles (served from the package: it works offline)."""
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        text = resources.files("parallax.server").joinpath("static", name).read_text()
        return Response(text, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return app
