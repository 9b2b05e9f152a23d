"""The one place Parallax reads its configuration: files, then the environment.

Layers, later winning: built-in defaults; the user's `parallax.toml`
(`$XDG_CONFIG_HOME/parallax/parallax.toml`, default `~/.config/parallax/parallax.toml`); the
project's `parallax.toml` (at the project root); `PARALLAX_*` variables; command-line flags.
Every value remembers where it came from (`parallax config show`); errors name the file, line
and key, or the variable.

A file is read within bounds and refused whole, with one located error, when it is not UTF-8,
nests arrays or inline tables deeper than `MAX_DEPTH` (the TOML parser recurses), or holds a
string with a NUL, a number that is not finite, or an integer past 64 bits.

    store = "sqlite:.parallax/parallax.db"      # any store URL
    model = "anthropic:claude-sonnet-4-5"       # for llm agents that leave it open
    [budget]  max_tokens = 2_000_000, max_cost_usd = 25.0   (for plans that set none)
    [limits]  concurrency = 8
    [presets.mytool]  like = "claude", argv = ["mytool", "-p", "{prompt}"], model_flag = [...]
    [hooks]   on_step_complete / on_task_complete / on_merge / on_conflict / on_finish = "cmd" or [argv],
              timeout_s = 30
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parallax.core.errors import UserError

PROJECT_MARKERS = ("parallax.toml", ".parallax", ".git")
DEFAULT_STORE_RELATIVE = Path(".parallax") / "parallax.db"
MAX_DEPTH = 64  # nested arrays and inline tables in a parallax.toml
_INT_MAX = 2**63 - 1


def find_project_root(start: Path | None = None) -> Path:
    """The nearest ancestor of `start` (default: the working directory) holding a
    `parallax.toml`, a `.parallax/` folder or a `.git`; `start` itself when none does."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return here


# A provider key in the environment, and the model Parallax uses by default when it finds one.
PROVIDER_DEFAULTS = (
    ("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-5"),
    ("OPENAI_API_KEY", "openai:gpt-4.1-mini"),
    ("GOOGLE_API_KEY", "google-gla:gemini-2.5-flash"),
)


HOOK_EVENTS = ("on_step_complete", "on_task_complete", "on_merge", "on_conflict", "on_finish")


@dataclass(frozen=True)
class BudgetConfig:
    max_tokens: int | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class LimitsConfig:
    concurrency: int | None = None


@dataclass(frozen=True)
class PresetConfig:
    argv: list[str]
    like: str = "claude"  # the built-in preset whose output parser this one uses
    model_flag: list[str] = field(default_factory=list)
    default_model: str | None = None
    own_paths: list[str] = field(default_factory=list)  # the tool's own files: never committed


@dataclass(frozen=True)
class HooksConfig:
    on_step_complete: str | list[str] | None = None
    on_task_complete: str | list[str] | None = None
    on_merge: str | list[str] | None = None
    on_conflict: str | list[str] | None = None
    on_finish: str | list[str] | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ConfigFile:
    store: str | None = None
    model: str | None = None
    budget: BudgetConfig = BudgetConfig()
    limits: LimitsConfig = LimitsConfig()
    presets: Mapping[str, PresetConfig] = field(default_factory=dict)
    hooks: HooksConfig = HooksConfig()


class _Invalid(Exception):
    """A value a setting may not hold: where (the keys leading to it) and why."""

    def __init__(self, location: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


# What each setting may hold. Checked by hand rather than with pydantic so that every command
# reads its settings without importing pydantic (about 50 ms of start-up).
def _positive_int(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be a whole number"
    return None if value > 0 else "must be greater than 0"


def _positive_number(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "must be a number"
    return None if value > 0 else "must be greater than 0"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _words(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(word, str) for word in value)
    return None if ok else "must be a list of strings"


def _command(value: Any) -> str | None:
    if isinstance(value, str) or _words(value) is None:
        return None
    return "must be a command: a string (run by the shell) or a list of strings (an argv)"


_SECTIONS: dict[str, dict[str, Any]] = {
    "budget": {"max_tokens": _positive_int, "max_cost_usd": _positive_number},
    "limits": {"concurrency": _positive_int},
    "hooks": {**dict.fromkeys(HOOK_EVENTS, _command), "timeout_s": _positive_number},
}
_PRESET_KEYS: dict[str, Any] = {
    "like": _text,
    "argv": _words,
    "model_flag": _words,
    "default_model": _text,
    "own_paths": _words,
}
_TOP_KEYS: dict[str, Any] = {"store": _text, "model": _text}


def _checked(table: Any, rules: Mapping[str, Any], location: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _Invalid(location, "must be a table")
    for key, value in table.items():
        rule = rules.get(key)
        if rule is None:
            known = ", ".join(rules)
            raise _Invalid((*location, key), f"unknown key (known here: {known})")
        problem = rule(value)
        if problem:
            raise _Invalid((*location, key), problem)
    return table


def _config_from(raw: Mapping[str, Any]) -> ConfigFile:
    """The file's tables as settings, or `_Invalid` at the first key that is wrong."""
    known = {**_TOP_KEYS, **dict.fromkeys((*_SECTIONS, "presets"))}
    for key, value in raw.items():
        if key not in known:
            raise _Invalid((key,), f"unknown key (known: {', '.join(known)})")
        rule = _TOP_KEYS.get(key)
        problem = rule(value) if rule else None
        if problem:
            raise _Invalid((key,), problem)
    presets: dict[str, PresetConfig] = {}
    given = raw.get("presets", {})
    if not isinstance(given, dict):
        raise _Invalid(("presets",), "must be a table of presets")
    for name, table in given.items():
        _checked(table, _PRESET_KEYS, ("presets", name))
        if "argv" not in table:
            raise _Invalid(("presets", name, "argv"), "is required (the program and its arguments)")
        presets[name] = PresetConfig(**table)
    sections = {name: _checked(raw.get(name, {}), rules, (name,)) for name, rules in _SECTIONS.items()}
    return ConfigFile(
        store=raw.get("store"),
        model=raw.get("model"),
        budget=BudgetConfig(**sections["budget"]),
        limits=LimitsConfig(**sections["limits"]),
        presets=presets,
        hooks=HooksConfig(**sections["hooks"]),
    )


# PARALLAX_* variables and the key each overrides.
ENV_KEYS = {
    "PARALLAX_STORE": "store",
    "PARALLAX_MODEL": "model",
    "PARALLAX_MAX_TOKENS": "budget.max_tokens",
    "PARALLAX_MAX_COST_USD": "budget.max_cost_usd",
    "PARALLAX_CONCURRENCY": "limits.concurrency",
    **{f"PARALLAX_HOOK_{name.upper()}": f"hooks.{name}" for name in HOOK_EVENTS},
}


def user_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "parallax" / "parallax.toml"


def _line_of(text: str, location: tuple[Any, ...]) -> int | None:
    """The line a key is written on (best effort: the last key of the location, after its table)."""
    key = str(location[-1]) if location else ""
    table_line = 0
    if len(location) > 1:
        header = re.compile(rf"^\s*\[\s*{re.escape('.'.join(str(p) for p in location[:-1]))}\s*\]")
        for number, line in enumerate(text.splitlines(), 1):
            if header.match(line):
                table_line = number
                break
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        if number > table_line and pattern.match(line):
            return number
    own_table = re.compile(rf"^\s*\[+\s*{re.escape('.'.join(str(p) for p in location))}\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        if own_table.match(line):
            return number
    return table_line or None


def _too_deep(text: str) -> int | None:
    """The line where arrays and inline tables first nest deeper than MAX_DEPTH (strings and
    comments skipped), or None. Checked before parsing, since the parser recurses."""
    depth, line, i, end = 0, 1, 0, len(text)
    while i < end:
        char = text[i]
        if char == "\n":
            line += 1
        elif char == "#":
            while i + 1 < end and text[i + 1] != "\n":
                i += 1
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote)
            while i < end and not text.startswith(quote, i):
                if text[i] == "\\" and char == '"':
                    i += 1
                elif text[i] == "\n":
                    if len(quote) == 1:
                        break  # an unterminated string: the parser says so
                    line += 1
                i += 1
            i += len(quote) - 1
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif char in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _value_problem(value: Any) -> str | None:
    if isinstance(value, str) and "\x00" in value:
        return "a NUL character in a string"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT_MAX - 1 <= value <= _INT_MAX:
        return "an integer out of range (at most 64 bits)"
    return None


def _check_values(raw: dict[str, Any], text: str, path: Path) -> None:
    """Refuse what no setting may hold, at the key that holds it."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), raw)]
    while stack:
        location, value = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if "\x00" in key:
                    raise UserError(f"{path}: {'.'.join(location) or '(top level)'}: a NUL character in a key")
            stack.extend(((*location, str(k)), v) for k, v in value.items())
            continue
        if isinstance(value, list):
            stack.extend((location, v) for v in value)
            continue
        problem = _value_problem(value)
        if problem:
            line = _line_of(text, location)
            raise UserError(f"{path}:{line or 1}: {'.'.join(location)}: {problem}")


def read_config_file(path: Path) -> tuple[ConfigFile, dict[str, Any], dict[str, str]]:
    """A config file, validated; the keys it sets, as written; and where each was written
    (`file:line`)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the configuration: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        row, column = before.count(b"\n") + 1, e.start - before.rfind(b"\n")
        raise UserError(f"{path}:{row}:{column}: not UTF-8 (byte {data[e.start]:#04x}); TOML is UTF-8 text") from None
    deep = _too_deep(text)
    if deep is not None:
        raise UserError(f"{path}:{deep}: arrays or inline tables nest deeper than {MAX_DEPTH} levels")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: {e}") from None
    except RecursionError:  # what the scan above missed
        raise UserError(f"{path}: arrays or inline tables nest too deeply") from None
    _check_values(raw, text, path)
    try:
        config = _config_from(raw)
    except _Invalid as e:
        line = _line_of(text, e.location)
        where = f"{path}:{line}" if line else str(path)
        raise UserError(f"{where}: {'.'.join(e.location)}: {e.message}") from None
    origins: dict[str, str] = {}

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        for key, item in value.items():
            location = (*prefix, key)
            if isinstance(item, dict) and location[0] != "presets":
                walk(location, item)
            else:
                line = _line_of(text, location)
                origins[".".join(location)] = f"{path}:{line}" if line else str(path)

    walk((), raw)
    return config, raw, origins


@dataclass(frozen=True)
class Settings:
    store_url: str | None = None  # store / PARALLAX_STORE
    model: str | None = None  # model / PARALLAX_MODEL
    provider_keys: tuple[str, ...] = ()  # names of the provider key variables that are set
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    concurrency: int | None = None
    presets: Mapping[str, PresetConfig] = field(default_factory=dict)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    origins: Mapping[str, str] = field(default_factory=dict)  # key -> where its value came from
    server_token: str = field(default="", repr=False)  # PARALLAX_TOKEN, stripped ("" when unset)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The environment alone (no files)."""
        return cls.load(environ=environ, files=False)

    @classmethod
    def load(cls, cwd: Path | None = None, environ: Mapping[str, str] | None = None, *, files: bool = True) -> Settings:
        """Defaults, the user's file, the project's file, then PARALLAX_* variables."""
        env = os.environ if environ is None else environ
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        presets: dict[str, PresetConfig] = {}
        hooks: dict[str, Any] = {}
        paths = [user_config_path(env), find_project_root(cwd) / "parallax.toml"] if files else []
        for path in paths:
            if not path.is_file():
                continue
            config, data, where = read_config_file(path)
            for key in ("store", "model"):
                if key in data:
                    merged[key] = data[key]
            store = data.get("store")
            if isinstance(store, str) and store.startswith("sqlite:") and not store.startswith("sqlite://"):
                try:
                    resolved = (path.parent / store.removeprefix("sqlite:")).resolve()  # file-relative
                except (OSError, RuntimeError) as e:
                    raise UserError(f"{where.get('store', path)}: store: cannot resolve {store!r}: {e}") from None
                merged["store"] = f"sqlite://{resolved}"
            for section in ("budget", "limits"):
                for key, value in data.get(section, {}).items():
                    merged[f"{section}.{key}"] = value
            for name, preset in config.presets.items():
                presets[name] = preset
            hooks.update(data.get("hooks", {}))
            origins.update(where)
        for variable, key in ENV_KEYS.items():
            value = env.get(variable)
            if not value:
                continue
            try:
                if key in ("budget.max_tokens", "limits.concurrency"):
                    merged[key] = int(value)
                elif key == "budget.max_cost_usd":
                    merged[key] = float(value)
                elif key.startswith("hooks."):
                    hooks[key.removeprefix("hooks.")] = value
                else:
                    merged[key] = value
            except ValueError:
                raise UserError(f"{variable}={value!r} is not a number") from None
            if _value_problem(merged.get(key)):
                raise UserError(f"{variable}={value!r}: {_value_problem(merged.get(key))}")
            origins[key] = variable
        try:
            hook_config = HooksConfig(**_checked(hooks, _SECTIONS["hooks"], ("hooks",)))
            _checked(
                {k.split(".")[1]: merged[k] for k in merged if k.startswith("budget.")},
                _SECTIONS["budget"],
                ("budget",),
            )
            _checked(
                {k.split(".")[1]: merged[k] for k in merged if k.startswith("limits.")},
                _SECTIONS["limits"],
                ("limits",),
            )
        except _Invalid as e:
            source = origins.get(".".join(e.location), "configuration")
            raise UserError(f"{source}: {'.'.join(e.location)}: {e.message}") from None
        budget = BudgetConfig(
            max_tokens=merged.get("budget.max_tokens"), max_cost_usd=merged.get("budget.max_cost_usd")
        )
        limits = LimitsConfig(concurrency=merged.get("limits.concurrency"))
        return cls(
            store_url=merged.get("store") or None,
            model=merged.get("model") or None,
            provider_keys=tuple(name for name, _ in PROVIDER_DEFAULTS if env.get(name)),
            max_tokens=budget.max_tokens,
            max_cost_usd=budget.max_cost_usd,
            concurrency=limits.concurrency,
            presets=presets,
            hooks=hook_config,
            origins=origins,
            server_token=env.get("PARALLAX_TOKEN", "").strip(),
        )

    def effective(self, cwd: Path | None = None) -> list[tuple[str, Any, str]]:
        """(key, value, where it came from) for every setting, for `parallax config show`."""
        store = self.default_store_url(cwd)
        model, why = self.default_model()
        rows: list[tuple[str, Any, str]] = [
            ("store", store, self.origins.get("store", "default (project root)")),
            ("model", model, self.origins.get("model", why if model else "default (offline: " + why + ")")),
            ("budget.max_tokens", self.max_tokens, self.origins.get("budget.max_tokens", "default (none)")),
            ("budget.max_cost_usd", self.max_cost_usd, self.origins.get("budget.max_cost_usd", "default (none)")),
            ("limits.concurrency", self.concurrency, self.origins.get("limits.concurrency", "default (the plan's)")),
        ]
        for name, preset in sorted(self.presets.items()):
            rows.append((f"presets.{name}", asdict(preset), self.origins.get(f"presets.{name}", "")))
        for name in (*HOOK_EVENTS, "timeout_s"):
            value = getattr(self.hooks, name)
            rows.append((f"hooks.{name}", value, self.origins.get(f"hooks.{name}", "default")))
        return rows

    def default_model(self) -> tuple[str | None, str]:
        """The model to use when a plan leaves it open, and why: PARALLAX_MODEL, else the
        default model of the first provider whose key is set, else None (offline)."""
        if self.model:
            return self.model, self.origins.get("model", "PARALLAX_MODEL")
        for name, model in PROVIDER_DEFAULTS:
            if name in self.provider_keys:
                return model, name
        return None, "no PARALLAX_MODEL and no provider key (ANTHROPIC_API_KEY, OPENAI_API_KEY, GOOGLE_API_KEY)"

    def default_store_url(self, cwd: Path | None = None) -> str:
        """`store` (PARALLAX_STORE or a parallax.toml), else `.parallax/parallax.db` under the project root."""
        if self.store_url:
            return self.store_url
        return f"sqlite://{find_project_root(cwd) / DEFAULT_STORE_RELATIVE}"
