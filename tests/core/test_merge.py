from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parallax.core.conflicts import Conflict
from parallax.core.merge import flatten, merge_contributions, resolve_path
from parallax.core.plan import MergeSpec, RuleSpec


def test_agreeing_fields_fill_the_document_and_differing_ones_conflict() -> None:
    outcome = merge_contributions(
        {
            "backend": {"database": "postgres", "rate_limit": 10, "endpoints": ["/a"]},
            "devops": {"database": "Postgres ", "rate_limit": 60},
        },
        {},
        MergeSpec(),
        target_fields=["database", "rate_limit", "backend", "devops"],
    )
    assert outcome.document["database"] == "postgres"  # trimmed, case-insensitive agreement
    assert "rate_limit" not in outcome.document  # never averaged, never picked
    [conflict] = outcome.conflicts
    assert conflict.kind == "disagreement"
    assert conflict.path == "rate_limit"
    assert conflict.values == {"backend": 10, "devops": 60}
    assert outcome.document["backend"]["endpoints"] == ["/a"]


def test_nested_fields_are_compared_by_path() -> None:
    outcome = merge_contributions(
        {"a": {"auth": {"method": "jwt", "ttl": 60}}, "b": {"auth": {"method": "session", "ttl": 60}}},
        {},
        MergeSpec(),
    )
    assert [c.path for c in outcome.conflicts] == ["auth.method"]


def test_ignored_fields_may_differ() -> None:
    outcome = merge_contributions(
        {"a": {"notes": "x", "confidence": 0.2}, "b": {"notes": "y", "confidence": 0.9}},
        {},
        MergeSpec(ignore=("notes",)),
    )
    assert outcome.conflicts == []


def test_failed_inputs_are_gaps() -> None:
    outcome = merge_contributions({"a": {"x": 1}}, {"b": "timed out after 5s"}, MergeSpec(sections={"b": "bee"}))
    [gap] = outcome.conflicts
    assert gap.kind == "gap"
    assert gap.path == "bee"
    assert "timed out" in gap.message


def test_every_and_disjoint_rules() -> None:
    spec = MergeSpec(
        rules=(
            RuleSpec.model_validate(
                {"name": "authz", "kind": "every", "each": "backend.eps[*].path", "in": "security.rules[*].ep"}
            ),
            RuleSpec(name="client", kind="disjoint", left="frontend.storage[*]", right="security.sensitive[*]"),
        )
    )
    contributions = {
        "backend": {"eps": [{"path": "/a"}, {"path": "/b"}, {"path": "/b"}]},
        "security": {"rules": [{"ep": "/a"}], "sensitive": ["Email"]},
        "frontend": {"storage": ["email", "theme"]},
    }
    outcome = merge_contributions(contributions, {}, spec)
    by_rule = {c.rule: c for c in outcome.conflicts}
    assert by_rule["authz"].values == {"offending": ["/b"]}
    assert by_rule["authz"].agents == ("backend", "security")
    assert by_rule["client"].values == {"offending": ["email"]}


def test_a_rule_over_a_missing_section_says_it_could_not_be_checked() -> None:
    spec = MergeSpec(rules=(RuleSpec(name="client", kind="disjoint", left="frontend.s[*]", right="security.t[*]"),))
    outcome = merge_contributions({"security": {"t": ["x"]}}, {"frontend": "failed (boom)"}, spec)
    kinds = sorted((c.kind, c.message) for c in outcome.conflicts)
    assert kinds[1] == ("rule", "cannot be checked: frontend contributed nothing")


def test_python_rules() -> None:
    def no_empty_titles(doc: Mapping[str, Any]) -> list[Conflict]:
        return [Conflict(kind="rule", path="title", message="empty")] if not doc["a"]["title"] else []

    spec = MergeSpec(rules=(RuleSpec(name="titles", kind="python", ref="x:y"),))
    outcome = merge_contributions({"a": {"title": ""}}, {}, spec, python_rules={"titles": no_empty_titles}, step="m")
    [conflict] = outcome.conflicts
    assert (conflict.rule, conflict.step) == ("titles", "m")


def test_paths() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": 2}, {"d": 3}]}}
    assert resolve_path(doc, "a.b[*].c") == ([1, 2], True)
    assert resolve_path(doc, "x.y") == ([], False)
    assert flatten({"a": {"b": 1, "c": [1]}, "d": None}) == {"a.b": 1, "a.c": [1]}


def test_majority_vote_keeps_the_dissent() -> None:
    from parallax.core.merge import count_votes

    outcome = count_votes(
        {"a": {"answer": "42"}, "b": {"answer": " 42"}, "c": {"answer": "41"}, "d": {"other": 1}},
        {},
        {"e": "timed out"},
        "answer",
        weighted=False,
        step="vote",
    )
    assert outcome.document["winner"] == "42"
    assert outcome.document["agreement"] == round(2 / 3, 4)
    kinds = sorted(c.kind for c in outcome.conflicts)
    assert kinds == ["disagreement", "gap"]
    split = next(c for c in outcome.conflicts if c.kind == "disagreement")
    assert split.values == {"a": "42", "b": " 42", "c": "41"}


def test_weighted_vote_can_overturn_the_majority_and_ties_have_no_winner() -> None:
    from parallax.core.merge import count_votes

    votes = {"a": {"x": "yes"}, "b": {"x": "yes"}, "c": {"x": "no"}}
    weighted = count_votes(votes, {"a": 0.2, "b": 0.2, "c": 0.9}, {}, "x", weighted=True)
    assert weighted.document["winner"] == "no"
    tie = count_votes({"a": {"x": 1}, "b": {"x": 2}}, {}, {}, "x", weighted=False)
    assert tie.document["winner"] is None
    assert "a tie" in tie.conflicts[0].message
    unanimous = count_votes({"a": {"x": 1}, "b": {"x": 1}}, {}, {}, "x", weighted=False)
    assert (unanimous.document["agreement"], unanimous.conflicts) == (1.0, [])
