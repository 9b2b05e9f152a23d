"""What a run found, for a person: the synthesis, each cohort's final position, the divergence,
the merged fields with their conflicts, failures and cost. One structure (`build_report`), three
renderings: the terminal at the end of `parallax run` and in `parallax inspect`
(`terminal_lines`), Markdown for `-o report.md` (`markdown`), and JSON (`Report.as_dict`).

Pure: it reads a folded `RunState` and imports neither the engine nor a terminal library.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from parallax.core.state import RunState

_ROUND = re.compile(r"\.(\d+)$")
MAX_VALUE_CHARS = 600  # a field's value is cut here in the terminal (Markdown keeps it whole)


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs
    items: list[str] = field(default_factory=list)  # bullets
    fields: list[tuple[str, str]] = field(default_factory=list)  # label: value
    groups: list[Section] = field(default_factory=list)  # sub-sections (a cohort, a field group)


@dataclass
class Report:
    run_id: str
    status: str
    headline: str  # one line: status, steps, conflicts, tokens, cost
    sections: list[Section]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(state: RunState) -> Report:
    steps = state.steps.values()
    done = sum(1 for s in steps if s.status == "succeeded")
    usage = state.usage
    headline = (
        f"run {state.run_id} {state.status}: {done}/{len(state.steps)} steps, "
        f"{len(state.conflicts)} conflict{'s' if len(state.conflicts) != 1 else ''}, "
        f"{usage.total_tokens:,} tokens, ${usage.cost_usd:.4f}"
    )
    sections: list[Section] = []
    synthesis = state.steps.get("synthesis")
    if synthesis is not None and synthesis.output is not None:
        sections.append(_synthesis(synthesis.output))
    cohorts = _cohorts(state)
    if cohorts is not None:
        sections.append(cohorts)
    if state.divergence and state.divergence.get("divergence") is not None:
        sections.append(_divergence(state.divergence))
    if not sections and state.result is not None:
        sections.append(_result(state.result))
    if state.conflicts:
        sections.append(Section("Conflicts", items=[c.describe() for c in state.conflicts]))
    failed = [s for s in steps if s.status == "failed"]
    if failed:
        sections.append(Section("Failed steps", items=[f"{s.id}: {s.error or 'failed'}" for s in failed]))
    if usage.total_tokens or usage.cost_usd:
        sections.append(
            Section(
                "Cost",
                fields=[
                    ("tokens", f"{usage.input_tokens:,} in, {usage.output_tokens:,} out"),
                    ("cost", f"${usage.cost_usd:.4f}"),
                    ("model calls", f"{usage.requests:,}"),
                ],
            )
        )
    return Report(state.run_id, state.status, headline, sections)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return "; ".join(_text(v) for v in value) or "(none)"
    return json.dumps(value, ensure_ascii=False)


def _synthesis(output: Any) -> Section:
    if not isinstance(output, dict):
        return Section("Synthesis", text=[_text(output)])
    confidence = output.get("confidence")
    title = "Synthesis" + (f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else "")
    section = Section(title, text=[str(output["summary"])] if output.get("summary") else [])
    for key, label in (("agreements", "Where the cohorts agree"), ("disagreements", "Where they disagree")):
        values = output.get(key)
        if isinstance(values, list) and values:
            section.groups.append(Section(label, items=[_text(v) for v in values]))
    if output.get("recommendation"):
        section.groups.append(Section("Recommendation", text=[str(output["recommendation"])]))
    known = {"summary", "agreements", "disagreements", "recommendation", "confidence"}
    section.fields = [(k, _text(v)) for k, v in output.items() if k not in known]
    return section


def _cohorts(state: RunState) -> Section | None:
    """Each cohort member's last turn that has an output."""
    if state.plan is None:
        return None
    last: dict[str, dict[str, tuple[int, Any, float | None]]] = {}
    for spec in state.plan.steps:
        if not spec.cohort:
            continue
        step = state.steps.get(spec.id)
        if step is None or step.output is None:
            continue
        match = _ROUND.search(spec.id)
        number = int(match.group(1)) if match else 0
        member = spec.agent_name
        known = last.setdefault(spec.cohort, {}).get(member)
        if known is None or number >= known[0]:
            last[spec.cohort][member] = (number, step.output, step.confidence)
    if not last:
        return None
    rounds = max(n for members in last.values() for n, _, _ in members.values())
    section = Section(f"Each cohort's final position (round {rounds})")
    for cohort, members in last.items():
        group = Section(cohort)
        for member, (_, output, confidence) in sorted(members.items()):
            position = output.get("position") if isinstance(output, dict) else output
            shown = f" (confidence {confidence:.2f})" if confidence is not None else ""
            group.items.append(f"{member}{shown}: {_text(position)}")
        section.groups.append(group)
    return section


def _divergence(data: dict[str, Any]) -> Section:
    value = data["divergence"]
    measure = data.get("measure", "")
    agreement = data.get("agreement")
    if isinstance(agreement, dict) and agreement:
        agreeing = sum(1 for v in agreement.values() if v)
        reading = f"{agreeing} of {len(agreement)} pairs of cohorts agree"
    else:  # recorded before the measure said which pairs agree
        reading = "the cohorts largely agree" if value < 0.34 else "partly apart" if value < 0.67 else "far apart"
    section = Section("Divergence", text=[f"{value:.2f} on 0 (same) to 1 (opposed): {reading}. Measure: {measure}."])
    pairs = data.get("similarity") or {}
    agree = agreement if isinstance(agreement, dict) else {}
    section.fields = [
        (
            pair.replace("|", " / "),
            f"similarity {float(s):.2f}" + _agrees(agree.get(pair)),
        )
        for pair, s in sorted(pairs.items())
    ]
    return section


def _agrees(flag: Any) -> str:
    return ", agree" if flag is True else ", apart" if flag is False else ""


def _result(result: Any) -> Section:
    """A run's result as fields (a merged document, a dict of outputs) or text."""
    if isinstance(result, dict) and "document" in result and isinstance(result["document"], dict):
        result = result["document"]
    section = Section("Result")
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, dict):
                section.groups.append(Section(str(key), fields=[(str(k), _text(v)) for k, v in value.items()]))
            else:
                section.fields.append((str(key), _text(value)))
    else:
        section.text.append(_text(result))
    return section


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def terminal_lines(report: Report, width_limit: int = MAX_VALUE_CHARS) -> list[tuple[str, str]]:
    """(line, style) pairs: style is "" or one of heading, subheading, ok, bad."""
    style = "ok" if report.status == "succeeded" else "bad" if report.status in ("failed", "cancelled") else ""
    lines: list[tuple[str, str]] = [(report.headline, style)]

    def emit(section: Section, depth: int) -> None:
        pad = "  " * depth
        lines.append(("", ""))
        lines.append((f"{pad}{section.title}", "heading" if depth == 0 else "subheading"))
        for paragraph in section.text:
            lines.append((f"{pad}  {_cut(paragraph, width_limit)}", ""))
        for item in section.items:
            lines.append((f"{pad}  • {_cut(item, width_limit)}", ""))
        for label, value in section.fields:
            lines.append((f"{pad}  {label}: {_cut(value, width_limit)}", ""))
        for group in section.groups:
            emit(group, depth + 1)

    for section in report.sections:
        emit(section, 0)
    return lines


def markdown(report: Report) -> str:
    out = [f"# {report.run_id}", "", f"**{report.headline}**", ""]

    def emit(section: Section, depth: int) -> None:
        out.append(f"{'#' * min(depth + 2, 6)} {section.title}")
        out.append("")
        for paragraph in section.text:
            out.extend([paragraph, ""])
        if section.items:
            out.extend(f"- {item}" for item in section.items)
            out.append("")
        if section.fields:
            out.extend(f"- **{label}**: {value}" for label, value in section.fields)
            out.append("")
        for group in section.groups:
            emit(group, depth + 1)

    for section in report.sections:
        emit(section, 0)
    return "\n".join(out).rstrip() + "\n"
