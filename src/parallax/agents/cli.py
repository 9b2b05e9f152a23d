"""`cli` agents: coding-agent CLIs run non-interactively, from a preset or a command template.

Each preset follows the tool's documented non-interactive mode (checked against the real
programs' `--help` and their output with no credentials, 2026-11):

    claude    claude -p --output-format stream-json --verbose --permission-mode acceptEdits [--model M] -- PROMPT
    codex     codex exec --json -s workspace-write --skip-git-repo-check [-m M] -- PROMPT
    gemini    gemini --approval-mode yolo --skip-trust -o stream-json --prompt=PROMPT [-m M]
    aider     aider --yes-always --no-pretty --no-stream ... --message=PROMPT --model M
    opencode  opencode run --format json --auto [-m provider/model] -- PROMPT

Options come first and the prompt where no option parser can read it as an option: after `--`,
or glued to its flag; a prompt may start with "-" (a YAML block that opens with a markdown
bullet). The agent's `model:` (or `settings.model`) goes to the preset's model flag; a model on
a cli agent that has none (a `command` template, a configured preset without `model_flag`) is a
located error when the pattern is compiled.

Standard input is closed (codex would otherwise read it into the prompt). Every stdout line is
streamed to the agent's stream; the final answer is taken from each tool's own result event,
and errors are read from the output, not from the exit code alone (aider exits 0 when it
cannot authenticate; claude reports `is_error` in its result). The whole process group is
killed at the step's timeout, or at `settings.timeout_s` (default 1800 s): several of these
tools retry a dead network for a long time.

A template (`command`) is any shell command with `{{prompt}}` and `{{input...}}` references,
filled in one pass and quoted once (or an argv list, run without a shell); its stdout is the
answer.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from parallax.agents.base import Agent, AgentContext, AgentResult
from parallax.agents.command import command_argv, parse_output, template_context
from parallax.agents.process import run_process, tail_text
from parallax.core import events as ev
from parallax.core.errors import AgentFailed, PlanError, UserError
from parallax.core.plan import AgentSpec
from parallax.settings import PresetConfig

DEFAULT_TIMEOUT_S = 1800.0


@dataclass
class Transcript:
    """What a CLI said, as it is parsed line by line."""

    chunks: list[str] = field(default_factory=list[str])
    final: str | None = None
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict[str, Any])
    capturing: bool = False  # a plain-text tool's error message continues on the next lines


LineParser = Callable[[str, Transcript, AgentContext], None]


def _json_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_claude(line: str, out: Transcript, ctx: AgentContext) -> None:
    event = _json_line(line)
    if event is None:
        return
    kind = event.get("type")
    if kind == "assistant":
        for part in event.get("message", {}).get("content", []) or []:
            if isinstance(part, dict) and part.get("type") == "text":
                out.chunks.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "tool_use":
                ctx.log(ev.AGENT_TOOL_CALL, {"tool": part.get("name"), "args": part.get("input")})
    elif kind == "result":
        text = str(event.get("result", ""))
        if event.get("is_error"):
            out.error = text or str(event.get("subtype", "error"))
        else:
            out.final = text
        usage = event.get("usage") or {}
        out.usage = {
            "requests": int(event.get("num_turns", 1) or 1),
            "input_tokens": int(usage.get("input_tokens", 0) or 0),
            "output_tokens": int(usage.get("output_tokens", 0) or 0),
            "cost_usd": float(event.get("total_cost_usd", 0.0) or 0.0),
        }


def parse_codex(line: str, out: Transcript, ctx: AgentContext) -> None:
    event = _json_line(line)
    if event is None:
        return
    kind = event.get("type")
    raw_item = event.get("item")
    item: dict[str, Any] = raw_item if isinstance(raw_item, dict) else {}
    if kind == "item.completed" and item.get("type") == "agent_message":
        out.final = str(item.get("text", ""))
        out.chunks.append(out.final)
    elif kind == "item.completed" and item.get("type") in ("command_execution", "file_change", "mcp_tool_call"):
        ctx.log(ev.AGENT_TOOL_CALL, {"tool": item.get("type"), "args": {k: v for k, v in item.items() if k != "type"}})
    elif kind == "turn.completed":  # its counts are the whole turn's (every request in it)
        usage = event.get("usage") or {}
        out.usage = {
            "requests": int(out.usage.get("requests", 0)) + 1,
            "input_tokens": int(out.usage.get("input_tokens", 0)) + int(usage.get("input_tokens", 0) or 0),
            "output_tokens": int(out.usage.get("output_tokens", 0)) + int(usage.get("output_tokens", 0) or 0),
        }
    elif kind == "item.completed" and item.get("type") == "error":  # a warning codex goes on after
        ctx.log(ev.AGENT_LOG, {"warning": str(item.get("message", ""))})
    elif kind == "turn.failed":
        out.error = str((event.get("error") or {}).get("message", "turn failed"))
    elif kind == "error":  # a stream error codex reports before giving up
        out.error = str(event.get("message") or "codex reported an error")


def parse_gemini(line: str, out: Transcript, ctx: AgentContext) -> None:
    event = _json_line(line)
    if event is None:
        return
    kind = event.get("type")
    if kind == "message" and event.get("role") == "assistant":
        out.chunks.append(str(event.get("content", "")))
        out.final = "".join(out.chunks)
    elif kind == "tool_use":
        ctx.log(ev.AGENT_TOOL_CALL, {"tool": event.get("tool_name"), "args": event.get("parameters")})
    elif kind == "result":
        stats = event.get("stats") or {}
        out.usage = {
            "requests": int(stats.get("tool_calls", 0) or 0) + 1,
            "input_tokens": int(stats.get("input_tokens", 0) or 0),
            "output_tokens": int(stats.get("output_tokens", 0) or 0),
        }
        if event.get("status") == "error":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            out.error = str(message or "gemini reported an error")
    elif kind == "error":
        out.error = str(event.get("message") or event.get("error") or "gemini reported an error")


def parse_opencode(line: str, out: Transcript, ctx: AgentContext) -> None:
    event = _json_line(line)
    if event is None:
        return
    kind = event.get("type")
    raw_part = event.get("part")
    part: dict[str, Any] = raw_part if isinstance(raw_part, dict) else {}
    if kind == "text" and not part.get("synthetic"):  # a synthetic part is opencode's own notice
        out.final = str(part.get("text", ""))
        out.chunks.append(out.final)
    elif kind == "tool_use":
        ctx.log(ev.AGENT_TOOL_CALL, {"tool": part.get("tool"), "args": (part.get("state") or {}).get("input")})
    elif kind == "step_finish":
        tokens = part.get("tokens") or {}
        out.usage = {
            "requests": int(out.usage.get("requests", 0)) + 1,
            "input_tokens": int(out.usage.get("input_tokens", 0)) + int(tokens.get("input", 0) or 0),
            "output_tokens": int(out.usage.get("output_tokens", 0)) + int(tokens.get("output", 0) or 0),
            "cost_usd": float(out.usage.get("cost_usd", 0.0)) + float(part.get("cost", 0.0) or 0.0),
        }
    elif kind == "error":
        error = event.get("error") or {}
        data = error.get("data") or {}
        message = str(data.get("message") or error.get("name") or "opencode error")
        name, ref = error.get("name"), data.get("ref")
        out.error = " ".join(str(x) for x in (name and f"{name}:", message, ref and f"(ref {ref})") if x)


# aider prints a provider error (through litellm) and, when it will try again, "Retrying in N
# seconds..."; after its last try it says nothing more and exits 0. An error line not followed by
# a retry is the run's failure; the message is kept whole (aider wraps it over several lines).
_AIDER_ERROR = re.compile(
    r"\blitellm\.\w*(Error|Exception)\b|\bAuthenticationError\b|not able to authenticate you|"
    r"^Uncaught \w+ in |\bAPIConnectionError\b",
    re.IGNORECASE,
)
_AIDER_RETRY = re.compile(r"^Retrying in [\d.]+ seconds", re.IGNORECASE)
_MAX_ERROR_CHARS = 4000


_AIDER_TOKENS = re.compile(r"^Tokens: ([\d.]+)(k?) sent(?:, [^,]*)*?, ([\d.]+)(k?) received", re.IGNORECASE)


def _count(number: str, k: str) -> int:
    return round(float(number) * (1000 if k else 1))


def parse_text(line: str, out: Transcript, ctx: AgentContext) -> None:
    out.chunks.append(line + "\n")
    text = line.strip()
    tokens = _AIDER_TOKENS.match(text)  # aider, after each request: "Tokens: 1.2k sent, 312 received."
    if tokens is not None:
        out.usage = {
            "requests": int(out.usage.get("requests", 0)) + 1,
            "input_tokens": int(out.usage.get("input_tokens", 0)) + _count(tokens.group(1), tokens.group(2)),
            "output_tokens": int(out.usage.get("output_tokens", 0)) + _count(tokens.group(3), tokens.group(4)),
        }
    if _AIDER_RETRY.match(text):
        out.error = None  # it tries again: the error before this was not the last word
        out.capturing = False
    elif _AIDER_ERROR.search(text):
        out.error = text if out.error is None or not out.capturing else f"{out.error} {text}"
        out.capturing = True
    elif out.capturing and text and out.error is not None and len(out.error) < _MAX_ERROR_CHARS:
        out.error = f"{out.error} {text}"  # the error's message goes on over the next lines
    elif not text:
        out.capturing = False


@dataclass(frozen=True)
class Preset:
    argv: tuple[str, ...]  # "{prompt}" marks where the prompt goes
    model_flag: tuple[str, ...]  # "{model}" marks the model
    parse: LineParser
    default_model: str | None = None
    stdout_is_answer: bool = False  # plain-text tools: the whole stdout is the answer
    # The tool's own files (history, caches) it writes into the worktree: globs on the path or
    # its first component. New files matching them are not the task's changes: they are never
    # committed and do not count against the write set.
    own_paths: tuple[str, ...] = ()
    # The tool's config and login files under the user's HOME. A task's HOME is its own, so a
    # cli agent with `settings: {login: true}` gets copies of these (the user's files are never
    # written); API keys are granted by name instead (`env: [ANTHROPIC_API_KEY]`).
    home_files: tuple[str, ...] = ()


# Options first, then the prompt where no option parser can take it for an option (a prompt
# may start with "-", as a markdown list does): after "--", or glued to its flag ("--prompt=").
PRESETS: dict[str, Preset] = {
    "claude": Preset(
        (
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
            "--",
            "{prompt}",
        ),
        ("--model", "{model}"),
        parse_claude,
        home_files=(".claude.json", ".claude/.credentials.json", ".claude/settings.json"),
    ),
    "codex": Preset(
        ("codex", "exec", "--json", "-s", "workspace-write", "--skip-git-repo-check", "--", "{prompt}"),
        ("-m", "{model}"),
        parse_codex,
        home_files=(".codex/config.toml", ".codex/auth.json"),
    ),
    "gemini": Preset(
        ("gemini", "--approval-mode", "yolo", "--skip-trust", "-o", "stream-json", "--prompt={prompt}"),
        ("-m", "{model}"),
        parse_gemini,
        home_files=(
            ".gemini/settings.json",
            ".gemini/oauth_creds.json",
            ".gemini/google_accounts.json",
            ".gemini/.env",
        ),
    ),
    "aider": Preset(
        (
            "aider",
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--analytics-disable",
            "--no-gitignore",
            "--no-auto-commits",
            "--no-show-model-warnings",
            "--message={prompt}",
        ),
        ("--model", "{model}"),
        parse_text,
        default_model="sonnet",  # without --model aider waits minutes for a browser login
        stdout_is_answer=True,
        own_paths=(".aider*",),  # .aider.chat.history.md, .aider.input.history, .aider.tags.cache.v4/
        home_files=(".aider.conf.yml",),
    ),
    "opencode": Preset(
        # --print-logs: its error events say only "Unexpected server error ... ref=err_..."; the
        # cause is in its log, which then goes to stderr (ERROR lines only)
        ("opencode", "run", "--format", "json", "--auto", "--print-logs", "--log-level", "ERROR", "--", "{prompt}"),
        ("-m", "{model}"),
        parse_opencode,
        home_files=(
            ".local/share/opencode/auth.json",
            ".config/opencode/opencode.json",
            ".config/opencode/opencode.jsonc",
            ".config/opencode/config.json",
        ),
    ),
}


# The preset names patterns may use (the YAML schema's enum): the built-ins, plus those added.
PRESET_NAMES: list[str] = sorted(PRESETS)


def register_presets(configured: Mapping[str, PresetConfig]) -> None:
    """Add the presets of parallax.toml (`[presets.<name>]`): an argv with `{prompt}`, a model
    flag with `{model}`, and the built-in preset whose output parser it shares (`like`)."""
    for name, config in configured.items():
        base = PRESETS.get(config.like)
        if base is None:
            raise UserError(
                f"presets.{name}.like: unknown preset {config.like!r}; built in: {', '.join(sorted(PRESETS))}"
            )
        if not any("{prompt}" in part for part in config.argv):
            raise UserError(f'presets.{name}.argv must contain "{{prompt}}" where the prompt goes')
        PRESETS[name] = Preset(
            tuple(config.argv),
            tuple(config.model_flag),
            base.parse,
            config.default_model,
            base.stdout_is_answer,
            tuple(config.own_paths) or base.own_paths,
        )
        if name not in PRESET_NAMES:
            PRESET_NAMES.append(name)


def own_paths(spec: AgentSpec | None) -> tuple[str, ...]:
    """The paths an agent's tool writes for itself (its preset's `own_paths`)."""
    if spec is None or spec.kind != "cli" or spec.preset is None or spec.preset not in PRESETS:
        return ()
    return PRESETS[spec.preset].own_paths


_REF = re.compile(r"\(ref (\S+)\)")


def _cause(error: str, stderr: str) -> str:
    """The tool's log line about an error it reported only by reference (opencode's `ref`)."""
    match = _REF.search(error)
    if match is None:
        return ""
    line = next((line.strip() for line in stderr.splitlines() if match.group(1) in line), "")
    return f"; its log: {line[:2000]}" if line else ""


def login_files(spec: AgentSpec | None) -> tuple[str, ...]:
    """The config and login files a cli agent asked to see (`settings: {login: true}`)."""
    if spec is None or spec.kind != "cli" or spec.preset not in PRESETS or spec.settings.get("login") is not True:
        return ()
    return PRESETS[spec.preset or ""].home_files


def preset_argv(preset: Preset, prompt: str, model: str | None) -> list[str]:
    """The preset's argv with the prompt in its place (each word filled once: a prompt holding
    "{prompt}" stays text) and the model flag among the options, before a "--"."""
    argv = [part.replace("{prompt}", prompt) if "{prompt}" in part else part for part in preset.argv]
    chosen = model or preset.default_model
    if chosen:
        flag = [chosen if part == "{model}" else part for part in preset.model_flag]
        end = preset.argv.index("--") if "--" in preset.argv else len(argv)
        argv[end:end] = flag
    return argv


def extract_json(text: str) -> Any:
    """The JSON value in an answer: the whole text, a ```json fence, or the last {...} block."""
    fence = re.search(r"```(?:json)?\s*(.+?)```", text, re.DOTALL)
    candidates = [text, fence.group(1) if fence else ""]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return text


class CliAgent(Agent):
    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        if spec.preset is not None and spec.preset not in PRESETS:
            raise PlanError(f"unknown cli preset {spec.preset!r}; presets: {', '.join(sorted(PRESETS))}")

    async def run(self, ctx: AgentContext) -> AgentResult:
        spec = self.spec
        prompt = ctx.prompt if ctx.prompt is not None else ctx.input_json()
        model = spec.model or spec.settings.get("model")  # `model:` goes to the preset's model flag
        if spec.preset is not None:
            preset = PRESETS[spec.preset]
            argv = preset_argv(preset, prompt, model if isinstance(model, str) else None)
            parser = preset.parse
            stdout_is_answer = preset.stdout_is_answer
        else:
            assert spec.command is not None
            argv = command_argv(spec.command, {**template_context(ctx), "prompt": prompt})
            parser = parse_text
            stdout_is_answer = True
        ctx.log(ev.AGENT_INPUT, {"argv": [shlex.quote(a) for a in argv], "prompt": prompt})
        transcript = Transcript()

        def on_line(line: str) -> None:
            ctx.emit(line + "\n")
            parser(line, transcript, ctx)

        limit = spec.settings.get("timeout_s", DEFAULT_TIMEOUT_S)
        time_left = ctx.time_left()
        timeout = float(limit) if isinstance(limit, int | float) else DEFAULT_TIMEOUT_S
        if time_left is not None:
            timeout = min(timeout, time_left)
        try:
            result = await run_process(
                ctx.command(argv),
                stdin=None,
                env=ctx.env,
                cwd=ctx.workdir,
                timeout_s=timeout,
                on_stdout_line=on_line,
                on_stderr_line=lambda line: ctx.log(ev.AGENT_LOG, {"stderr": line}),
            )
        except FileNotFoundError as e:
            raise AgentFailed(f"{argv[0]} is not installed or not on PATH ({e})", retryable=False) from e
        if result.truncated:
            ctx.log(ev.AGENT_LOG, {"output_truncated": result.dropped})
        if transcript.error is not None:
            raise AgentFailed(
                f"{argv[0]}: {transcript.error}{_cause(transcript.error, result.stderr)}", retryable=False
            )
        if result.returncode != 0:
            detail = tail_text(result.stderr.strip() or result.stdout.strip()) or "(no output)"
            raise AgentFailed(f"{argv[0]} exited with {result.returncode}: {detail}", retryable=True)
        answer = result.stdout if stdout_is_answer else transcript.final
        if answer is None:
            raise AgentFailed(f"{argv[0]} finished without a final answer", retryable=True)
        output: Any = extract_json(answer) if ctx.output_type is not None else answer.strip()
        if ctx.output_type is None and spec.preset is None:
            output = parse_output(answer)
        return AgentResult(output, usage=transcript.usage)
