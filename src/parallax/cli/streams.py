"""`parallax streams ...`: look at and write streams directly.

parallax streams ls [PREFIX]
parallax streams append NAME [--match-seq N] [--fence TOKEN] [--header k=v]   (a record per stdin line)
parallax streams read NAME [--from N | --from-time MS | --tail-offset K] [--limit N] [--json]
parallax streams tail NAME [--from N] [--json]
parallax streams check-tail NAME
parallax streams fence NAME TOKEN
parallax streams trim NAME SEQ
parallax streams fork SRC DST --at N
parallax streams create NAME | delete NAME --yes
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click

from parallax.cli.context import MAX_INT, run_with_store
from parallax.core.errors import InvalidAppend, SeqNumMismatch
from parallax.streams.base import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    AppendAck,
    AppendInput,
    AppendRecord,
    Header,
    ReadStart,
    Record,
    SeqNum,
    StreamStore,
    TailOffset,
    Timestamp,
)
from parallax.streams.semantics import validate_append


def _text(value: bytes) -> dict[str, str]:
    try:
        return {"text": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def record_json(record: Record) -> dict[str, Any]:
    """A record as one JSON object: bytes as UTF-8 text, or base64 under `*_base64` when not UTF-8."""
    out: dict[str, Any] = {"seq_num": record.seq_num, "timestamp": record.timestamp}
    headers: list[list[str]] = []
    binary_headers = False
    for name, value in record.headers:
        try:
            headers.append([name.decode("utf-8"), value.decode("utf-8")])
        except UnicodeDecodeError:
            binary_headers = True
    if binary_headers:
        out["headers_base64"] = [
            [base64.b64encode(n).decode(), base64.b64encode(v).decode()] for n, v in record.headers
        ]
    else:
        out["headers"] = headers
    body = _text(record.body)
    if "text" in body:
        out["body"] = body["text"]
    else:
        out["body_base64"] = body["base64"]
    return out


def print_record(record: Record, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record_json(record), ensure_ascii=False))
        return
    command = record.command
    if command is not None:
        detail = (
            repr(record.body.decode("utf-8", "replace"))
            if command == b"fence"
            else str(int.from_bytes(record.body, "big"))
        )
        click.echo(f"{record.seq_num}\t[{command.decode()} {detail}]")
    else:
        click.echo(f"{record.seq_num}\t{record.body.decode('utf-8', 'replace')}")


def parse_header(text: str) -> Header:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--header")
    return (name.encode(), value.encode())


def split_batches(records: list[AppendRecord]) -> list[list[AppendRecord]]:
    """Cut records into batches that each fit S2's limits (1000 records, 1 MiB)."""
    batches: list[list[AppendRecord]] = []
    current: list[AppendRecord] = []
    size = 0
    for record in records:
        metered = record.metered_bytes
        if current and (len(current) == MAX_BATCH_RECORDS or size + metered > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += metered
    if current:
        batches.append(current)
    return batches


@click.group()
def streams() -> None:
    """Read and write streams directly."""


@streams.command("ls")
@click.argument("prefix", default="")
@click.option("--start-after", default="", help="List names after this one.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, MAX_INT))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per stream.")
@click.pass_context
def ls(ctx: click.Context, prefix: str, start_after: str, limit: int, as_json: bool) -> None:
    """List streams whose names start with PREFIX."""

    async def action(store: StreamStore) -> None:
        for info in await store.list(prefix, start_after, limit):
            if as_json:
                tail = await store.check_tail(info.name)
                line = {"name": info.name, "created_at": info.created_at, "tail": tail.seq_num}
                click.echo(json.dumps(line, ensure_ascii=False))
            else:
                click.echo(info.name)

    run_with_store(ctx, action, create=False)


@streams.command()
@click.argument("name")
@click.option("--match-seq", type=click.IntRange(0, MAX_INT), help="Append only if the tail is exactly N.")
@click.option("--fence", "fencing_token", metavar="TOKEN", help="Append only if the stream is fenced with TOKEN.")
@click.option("--header", "headers", multiple=True, metavar="K=V", help="A header on every record (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the acknowledgement as JSON.")
@click.pass_context
def append(
    ctx: click.Context,
    name: str,
    match_seq: int | None,
    fencing_token: str | None,
    headers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Append one record per line of standard input.

    Input that fits one batch (1000 lines, 1 MiB) is appended atomically. Longer input is
    checked whole first, then written as consecutive batches, each conditional on the last.
    """
    parsed = tuple(parse_header(h) for h in headers)
    lines = sys.stdin.buffer.read().splitlines()
    if not lines:
        raise click.UsageError("nothing to append: standard input was empty")
    records = [AppendRecord(body=line, headers=parsed) for line in lines]
    batches = split_batches(records)
    for index, batch in enumerate(batches):
        try:
            validate_append(AppendInput(batch))
        except InvalidAppend as e:
            first_line = sum(len(b) for b in batches[:index]) + 1
            raise click.UsageError(f"{e} (batch starting at input line {first_line}); nothing was written") from e

    async def action(store: StreamStore) -> list[AppendAck]:
        acks: list[AppendAck] = []
        expected = match_seq
        for batch in batches:
            try:
                ack = await store.append(name, AppendInput(batch, expected, fencing_token))
            except SeqNumMismatch:
                if acks:
                    written = acks[-1].end.seq_num - acks[0].start.seq_num
                    click.echo(
                        f"error: another writer appended between batches; {written} of {len(records)} records "
                        f"were written (seq {acks[0].start.seq_num}..{acks[-1].end.seq_num - 1})",
                        err=True,
                    )
                raise
            acks.append(ack)
            expected = ack.end.seq_num
        return acks

    acks = run_with_store(ctx, action)
    start, end, tail = acks[0].start, acks[-1].end, acks[-1].tail
    if as_json:
        click.echo(json.dumps({"start": start.seq_num, "end": end.seq_num, "tail": tail.seq_num}))
    else:
        count = end.seq_num - start.seq_num
        click.echo(f"appended {count} record(s) at {start.seq_num}..{end.seq_num - 1}; tail {tail.seq_num}")


@streams.command()
@click.argument("name")
@click.option("--from", "from_seq", type=click.IntRange(0, MAX_INT), help="Start at this seq_num.")
@click.option("--from-time", type=click.IntRange(0, MAX_INT), metavar="MS", help="Start at this timestamp (ms).")
@click.option("--tail-offset", type=click.IntRange(0, MAX_INT), metavar="K", help="Start K records before the tail.")
@click.option("--limit", type=click.IntRange(0, MAX_INT), help="Read at most N records (default: up to the tail).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.pass_context
def read(
    ctx: click.Context,
    name: str,
    from_seq: int | None,
    from_time: int | None,
    tail_offset: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Print records from a start position up to the tail (or --limit)."""
    given = [
        opt
        for opt, value in (("--from", from_seq), ("--from-time", from_time), ("--tail-offset", tail_offset))
        if value is not None
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one start position, not {' and '.join(given)}")
    start: ReadStart
    if from_time is not None:
        start = Timestamp(from_time)
    elif tail_offset is not None:
        start = TailOffset(tail_offset)
    else:
        start = SeqNum(from_seq or 0)

    async def action(store: StreamStore) -> None:
        remaining = limit
        position: ReadStart = start
        while remaining is None or remaining > 0:
            batch = await store.read(name, position)
            records = batch.records if remaining is None else batch.records[:remaining]
            for record in records:
                print_record(record, as_json)
            if not records:
                return
            if remaining is not None:
                remaining -= len(records)
            next_seq = records[-1].seq_num + 1
            if next_seq >= batch.tail.seq_num:
                return
            position = SeqNum(next_seq)

    run_with_store(ctx, action, create=False)


@streams.command()
@click.argument("name")
@click.option(
    "--from", "from_seq", type=click.IntRange(0, MAX_INT), default=0, show_default=True, help="Start at this seq_num."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.option("--wait", is_flag=True, help="Wait for the stream to be created instead of failing.")
@click.pass_context
def tail(ctx: click.Context, name: str, from_seq: int, as_json: bool, wait: bool) -> None:
    """Print records as they are appended, from any process, until interrupted."""

    async def action(store: StreamStore) -> None:
        async for record in store.tail(name, from_seq, missing_ok=wait):
            print_record(record, as_json)
            sys.stdout.flush()

    run_with_store(ctx, action, create=wait)


@streams.command("check-tail")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def check_tail(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print the seq_num the next record will get."""

    async def action(store: StreamStore) -> None:
        position = await store.check_tail(name)
        if as_json:
            click.echo(json.dumps({"seq_num": position.seq_num, "timestamp": position.timestamp}))
        else:
            click.echo(str(position.seq_num))

    run_with_store(ctx, action, create=False)


@streams.command()
@click.argument("name")
@click.argument("token")
@click.option("--fence", "current", metavar="TOKEN", help="The current token, if the stream is fenced.")
@click.pass_context
def fence(ctx: click.Context, name: str, token: str, current: str | None) -> None:
    """Set the stream's fencing token with a command record ('' clears it)."""

    async def action(store: StreamStore) -> AppendAck:
        return await store.fence(name, token, fencing_token=current)

    ack = run_with_store(ctx, action)
    click.echo(f"fenced {name!r} with {token!r} at seq {ack.start.seq_num}")


@streams.command()
@click.argument("name")
@click.argument("seq", type=click.IntRange(0, MAX_INT))
@click.option("--fence", "current", metavar="TOKEN", help="The current token, if the stream is fenced.")
@click.pass_context
def trim(ctx: click.Context, name: str, seq: int, current: str | None) -> None:
    """Make records below SEQ unreadable, with a command record."""

    async def action(store: StreamStore) -> AppendAck:
        return await store.trim(name, seq, fencing_token=current)

    ack = run_with_store(ctx, action)
    click.echo(f"trimmed {name!r} below {min(seq, ack.tail.seq_num)} (command at seq {ack.start.seq_num})")


@streams.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--at", "at_seq", type=click.IntRange(0, MAX_INT), required=True, help="Keep SRC's records below this seq_num."
)
@click.pass_context
def fork(ctx: click.Context, src: str, dst: str, at_seq: int) -> None:
    """Create DST as a copy of SRC's records below --at."""

    async def action(store: StreamStore) -> None:
        await store.fork(src, dst, at_seq)

    run_with_store(ctx, action, create=False)
    click.echo(f"forked {src!r} at {at_seq} into {dst!r}")


@streams.command()
@click.argument("name")
@click.pass_context
def create(ctx: click.Context, name: str) -> None:
    """Create an empty stream."""

    async def action(store: StreamStore) -> None:
        await store.create(name)

    run_with_store(ctx, action)
    click.echo(f"created {name!r}")


@streams.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a stream and every record in it."""
    if not yes and not click.confirm(f"delete {name!r} and all its records?", default=False):
        raise click.UsageError("not deleted (pass --yes to skip the question)")

    async def action(store: StreamStore) -> None:
        await store.delete(name)

    run_with_store(ctx, action, create=False)
    click.echo(f"deleted {name!r}")


def _register_demo() -> None:
    from parallax.cli.streams_demo import streams_demo

    streams.add_command(streams_demo)


_register_demo()
