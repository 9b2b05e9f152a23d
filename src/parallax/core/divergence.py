"""How far the cohorts' conclusions differ: a lexical measure, pure and deterministic.

Each conclusion becomes a set of content words (lower-cased, stop words and one- or two-letter
tokens dropped); two conclusions' similarity is the Jaccard index of their sets, and the run's
divergence is 1 minus the mean similarity over every pair. 0 means the cohorts said the same
thing in the same words; 1 means they share no content word at all. Lexical on purpose: cheap,
explainable, and needs no model; a semantic measure can sit beside it later.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_STOP = frozenset(
    """
the and for are but not you all any can had her was one our out has have his how its may
new now own see two way who did get let put say she too use that this with from they will
would there their what about which when make like than then them these some into more
most such only other also been being were does each just over very should could because
while where both after before under again further once here those through during above
below between same so no nor of to in on at by or an as be is it if we do up
    """.split()  # noqa: SIM905
)


def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def divergence(conclusions: Mapping[str, str]) -> dict[str, Any]:
    """`{"measure", "divergence", "similarity": {"a|b": s}, "cohorts": [...]}`; with fewer than
    two cohorts there is nothing to compare and divergence is None."""
    words = {name: content_words(text) for name, text in sorted(conclusions.items())}
    pairs = {f"{a}|{b}": round(jaccard(words[a], words[b]), 4) for a, b in itertools.combinations(words, 2)}
    value = round(1.0 - sum(pairs.values()) / len(pairs), 4) if pairs else None
    return {"measure": "jaccard-content-words", "divergence": value, "similarity": pairs, "cohorts": list(words)}
