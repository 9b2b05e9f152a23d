"""OpenTelemetry traces: a span for the run, each step, each agent call (following the GenAI
semantic conventions for model calls: `gen_ai.operation.name`, `gen_ai.request.model`,
`gen_ai.usage.input_tokens` / `output_tokens`, plus `parallax.cost_usd`), each tool call,
merge, claim and topology change. Every span carries `parallax.stream` and `parallax.seq`: the
stream and position of the record it corresponds to, so a trace links back to the log.

Off by default. With the `otel` extra installed, the standard variables turn it on:
`OTEL_TRACES_EXPORTER` (`otlp`, `console`) or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, with `OTEL_SERVICE_NAME` and the rest read by the SDK
itself; `OTEL_SDK_DISABLED=true` turns it off. A program that embeds Parallax and configures
its own tracer provider gets Parallax's spans in its traces without any of this.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from parallax import __version__

_provider: Any = None  # a provider set by the program (tests: an in-memory exporter)
_tracers: tuple[Any, Any] | None = None  # (provider, its tracer) last used


def set_tracer_provider(provider: Any) -> None:
    """Use `provider` for Parallax's spans (instead of the global one)."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    """The tracer to use, or None when tracing is off. Tracing is off unless a provider was
    set here or installed globally (which needs `opentelemetry.trace` imported: Parallax never
    imports it for a run that does not trace, so a span costs one dict lookup then)."""
    global _tracers
    provider = _provider
    if provider is None:
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
    if _tracers is None or _tracers[0] is not provider:
        _tracers = (provider, provider.get_tracer("parallax", __version__))
    return _tracers[1]


def enabled() -> bool:
    return _tracer() is not None


class _NoSpan(AbstractContextManager["_NoSpan"]):
    """What a span is when tracing is off: one shared object that records nothing."""

    def set_attribute(self, key: str, value: Any) -> None: ...

    def set_attributes(self, attributes: Mapping[str, Any]) -> None: ...

    def record_exception(self, exception: BaseException) -> None: ...

    def set_status(self, status: Any, description: str | None = None) -> None: ...

    def end(self) -> None: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(name: str, attributes: Mapping[str, Any] | None = None, *, parent: Any = None) -> AbstractContextManager[Any]:
    """A span around a block (`with span(...) as current:`; a shared no-op when tracing is
    off). `parent`: a context from `current_context()` to attach to instead of the current one."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    manager: AbstractContextManager[Any] = tracer.start_as_current_span(
        name, context=parent, attributes=clean, record_exception=True
    )
    return manager


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A span ended by the caller (`.end()`): for work that starts and ends in different places,
    such as a tool call seen as two stream events."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    return tracer.start_span(name, attributes=clean)


def current_context() -> Any:
    if _tracer() is None:
        return None
    from opentelemetry import context as otel_context

    return otel_context.get_current()


def gen_ai_attributes(model: str | None, usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """GenAI semantic-convention attributes of one model call (`provider:model` names)."""
    provider, _, name = (model or "").partition(":")
    usage = usage or {}
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider or None,
        "gen_ai.request.model": name or model,
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "parallax.cost_usd": usage.get("cost_usd"),
    }


def configure_from_env(environ: Mapping[str, str]) -> bool:
    """Install an SDK tracer provider when the OTEL_* variables ask for traces; True if so."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not exporter_name and endpoint:
        exporter_name = "otlp"
    if exporter_name in ("", "none"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        return False  # the `otel` extra is not installed: tracing stays off
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            return False
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    else:
        return False
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "parallax")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    return True
