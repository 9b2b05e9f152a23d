"""`llm` agents, built on pydantic-ai.

Model strings are pydantic-ai's (`anthropic:claude-sonnet-4-5`, `openai:gpt-5`, `openai-chat:...`,
`google-gla:...`, `groq:...`, ...). Any OpenAI-compatible server (Ollama, vLLM, llama.cpp's
server, a gateway) is reached by `base_url` with `openai-compatible:<model>` (or `ollama:`,
`vllm:`); its key, when it needs one, comes from the environment variable named in
`settings.api_key_env`. `scripted:<file>` and `test` are the in-package offline doubles.

Typed output: the step's pydantic model. Invalid output goes back to the model with the
validation error (`settings.output_retries`, default 2), then the attempt fails with
InvalidOutput. The provider SDK's own retries are turned off (`max_retries=0`) so that every
retry is the engine's, recorded on the run's stream and honouring Retry-After.

Streaming: the answer (text, or the output tool's arguments) goes to the agent's stream as
`agent.chunk` records, each holding what the model sent since the one before (`CoalescingModel`:
at once after a pause, then at most every STREAM_GROUP_S while the model keeps sending). Joined,
they are the answer, in order; how many there are depends on how fast it came.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import Any, cast

from pydantic import BaseModel

from parallax import telemetry
from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, InvalidOutput, ProviderError
from parallax.core.plan import AgentSpec

# While a model streams, what it sent reaches the agent's stream at most this often, in one
# record (see agents/coalesce.py): pydantic-ai's own debounce, and more often than the live
# lanes redraw (8 times a second).
STREAM_GROUP_S = 0.1


def build_model(spec: AgentSpec, agent_name: str, env: dict[str, str]) -> Any:
    """The pydantic-ai Model for a spec. Raises AgentFailed(retryable=False) when it cannot be
    built (unknown model string, missing key), naming what to set."""
    from pydantic_ai.exceptions import UserError as PaiUserError
    from pydantic_ai.models import infer_model

    assert spec.model is not None
    model = spec.model
    prefix, _, name = model.partition(":")
    api_key = None
    key_env = spec.settings.get("api_key_env")
    if isinstance(key_env, str):
        api_key = env.get(key_env)
        if not api_key:
            raise AgentFailed(f"agent {agent_name!r}: set {key_env} (named by settings.api_key_env)", retryable=False)
    if prefix == "scripted":
        from parallax.agents.testing import ScriptedModel

        return ScriptedModel.from_file(name, agent_name)
    if prefix in ("openai-compatible", "ollama", "vllm", "llama-cpp") or (spec.base_url and prefix == "openai"):
        if not spec.base_url:
            raise AgentFailed(f"agent {agent_name!r}: model {model!r} needs `base_url`", retryable=False)
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider = OpenAIProvider(base_url=spec.base_url, api_key=api_key or "not-needed")
        return OpenAIChatModel(name, provider=provider)
    try:
        return infer_model(model)
    except PaiUserError as e:
        raise AgentFailed(f"agent {agent_name!r}: cannot use model {model!r}: {e}", retryable=False) from e


def usage_of(result_usage: Any) -> dict[str, Any]:
    cost = getattr(result_usage, "cost", None)
    return {
        "requests": int(getattr(result_usage, "requests", 0) or 0),
        "input_tokens": int(getattr(result_usage, "input_tokens", 0) or 0),
        "output_tokens": int(getattr(result_usage, "output_tokens", 0) or 0),
        "cost_usd": float(cost) if cost is not None else 0.0,
        "cost_known": cost is not None,
    }


def translate_error(e: BaseException, model: str) -> AgentFailed | None:
    """pydantic-ai / SDK errors as Parallax errors; None for anything else."""
    from pydantic_ai.exceptions import (
        ModelAPIError,
        ModelHTTPError,
        UnexpectedModelBehavior,
        UsageLimitExceeded,
        UserError,
    )

    retry_after = getattr(e, "retry_after", None)
    if isinstance(e, ModelHTTPError):
        return ProviderError(f"{model}: HTTP {e.status_code}: {e.body}", status=e.status_code, retry_after=retry_after)
    if isinstance(e, ModelAPIError):
        status = getattr(e, "status_code", None)
        if status is None and "rate" in type(e).__name__.lower():
            status = 429
        return ProviderError(f"{model}: {e}", status=status, retryable=True, retry_after=retry_after)
    if isinstance(e, UnexpectedModelBehavior):
        cause = f" (last error: {e.__cause__})" if e.__cause__ else ""
        return InvalidOutput(f"{model}: {e.message}{cause}")
    if isinstance(e, UsageLimitExceeded):
        return AgentFailed(f"{model}: the run's budget stopped this call: {e}", retryable=False)
    if isinstance(e, UserError):
        return AgentFailed(f"{model}: {e}", retryable=False)
    if isinstance(e, RuntimeError) and "ALLOW_MODEL_REQUESTS" in str(e):
        return AgentFailed(f"{model}: model requests are disabled here ({e})", retryable=False)
    return None


class LlmAgent(Agent):
    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        self._models: dict[str, Any] = {}  # per agent name: a scripted model keeps its place across retries

    def tools(self, ctx: AgentContext) -> list[Any]:
        """Functions the model may call (none for a plain llm agent; see `coder`)."""
        return []

    async def run(self, ctx: AgentContext) -> AgentResult:
        prompt = ctx.prompt if ctx.prompt is not None else json.dumps(ctx.input, ensure_ascii=False, default=str)
        result, _ = await self.run_turn(ctx, prompt, None)
        return result

    async def run_turn(
        self, ctx: AgentContext, prompt: str, history: list[Any] | None
    ) -> tuple[AgentResult, list[Any]]:
        """One model run (with its tool calls) from `prompt` after `history`; returns the result
        and the whole conversation so far, to continue from."""
        import pydantic_ai
        from pydantic_ai import (
            Agent as PaiAgent,
        )
        from pydantic_ai import (
            AgentStreamEvent,
            FunctionToolCallEvent,
            FunctionToolResultEvent,
            PartDeltaEvent,
            PartStartEvent,
            RunContext,
            TextPartDelta,
            ToolCallPartDelta,
        )
        from pydantic_ai.usage import RunUsage

        from parallax.agents.coalesce import CoalescingModel

        # pydantic-ai's first-run banner ("observability: off ... Logfire") is for its own users
        # at a terminal; in Parallax it would land in the middle of the live lanes.
        pydantic_ai.BANNER_ENABLED = False

        spec = self.spec
        model_name = spec.model or ""
        # Scripted answers may be keyed by step id (`critic.r2`: deterministic across resumes)
        # or by agent name (one list, answered in call order).
        key = ctx.agent
        if model_name.startswith("scripted:") and ctx.step_id != ctx.agent:
            from parallax.agents.testing import ScriptedModel

            if ctx.step_id in ScriptedModel.keys_in(model_name.removeprefix("scripted:")):
                key = ctx.step_id
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = build_model(spec, key, ctx.env)
        output_type: type[BaseModel] | type[str] = ctx.output_type or str
        output_retries = spec.settings.get("output_retries", 2)
        agent: PaiAgent[None, Any] = PaiAgent(
            CoalescingModel(model, interval_s=STREAM_GROUP_S),
            output_type=output_type,
            instructions=spec.instructions,
            retries={"output": int(output_retries) if isinstance(output_retries, int) else 2},
            tools=self.tools(ctx),
        )
        settings: dict[str, Any] = {"max_retries": 0}
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            if key in spec.settings:
                settings[key] = spec.settings[key]
        # The run's budget is checked by the engine between calls ("stops new calls when spent");
        # a call in flight finishes, and what it used is recorded even when it fails.
        usage = RunUsage()
        tool_spans: dict[str, Any] = {}  # tool call id -> its span, ended when the result comes

        async def on_events(_: RunContext[None], events: AsyncIterable[AgentStreamEvent]) -> None:
            # Each text or tool-argument delta is what the model streamed since the last one
            # (see CoalescingModel): one record on the agent's stream per group, same text.
            async for event in events:
                if isinstance(event, PartStartEvent):
                    content = getattr(event.part, "content", None)
                    if isinstance(content, str):
                        ctx.emit(content)
                    args = getattr(event.part, "args", None)
                    if isinstance(args, str):
                        ctx.emit(args)
                elif isinstance(event, PartDeltaEvent):
                    if isinstance(event.delta, TextPartDelta):
                        ctx.emit(event.delta.content_delta)
                    elif isinstance(event.delta, ToolCallPartDelta) and isinstance(event.delta.args_delta, str):
                        ctx.emit(event.delta.args_delta)
                elif isinstance(event, FunctionToolCallEvent):
                    ctx.log(ev.AGENT_TOOL_CALL, {"tool": event.part.tool_name, "args": event.part.args})
                    tool_spans[event.part.tool_call_id] = telemetry.start_span(
                        f"execute_tool {event.part.tool_name}",
                        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": event.part.tool_name,
                         "gen_ai.tool.call.id": event.part.tool_call_id, "parallax.step": ctx.step_id,
                         "parallax.stream": ctx.stream},
                    )  # fmt: skip
                elif isinstance(event, FunctionToolResultEvent):
                    content = getattr(event.part, "content", None)
                    text = content if isinstance(content, str) else json.dumps(content, default=str)
                    tool = getattr(event.part, "tool_name", None)
                    ctx.log(ev.AGENT_TOOL_RESULT, {"tool": tool, "result": text[:2000]})
                    tool_span = tool_spans.pop(getattr(event.part, "tool_call_id", ""), None)
                    if tool_span is not None:
                        tool_span.end()

        ctx.log(ev.AGENT_INPUT, {"model": model_name, "prompt": prompt, "instructions": spec.instructions})
        try:
            result = await agent.run(
                prompt,
                message_history=history,
                model_settings=cast(Any, settings),
                usage=usage,
                event_stream_handler=on_events,
            )
        except AgentFailed as e:
            e.usage = usage_of(usage)
            raise
        except Exception as e:
            translated = translate_error(e, model_name)
            if translated is None:
                raise
            translated.usage = usage_of(usage)
            raise translated from e
        output = result.output
        confidence = getattr(output, "confidence", None)
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        conf = float(confidence) if isinstance(confidence, int | float) else None
        return AgentResult(output, conf, usage_of(result.usage)), list(result.all_messages())
