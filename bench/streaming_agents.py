"""The agents of bench/streaming.py, importable by name (`streaming_agents:stream_chunks`) so that
the plan references them the way a user's plan references its agents."""

from __future__ import annotations

from parallax.agents.base import AgentContext

CHUNK_CHARS = 24


def pieces(chunks: int) -> list[str]:
    """The streamed answer, in `chunks` pieces of CHUNK_CHARS characters (the scripted model's
    default chunk size, so an llm agent on it streams the same pieces)."""
    return [f"<{i:05d}> streamed text. "[:CHUNK_CHARS].ljust(CHUNK_CHARS) for i in range(chunks)]


async def stream_chunks(ctx: AgentContext) -> dict[str, int]:
    """A python agent that streams its answer: one `ctx.emit` per piece."""
    chunks = int(ctx.input["input"]["chunks"])
    for piece in pieces(chunks):
        ctx.emit(piece)
    return {"chunks": chunks}
