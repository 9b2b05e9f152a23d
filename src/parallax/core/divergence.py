"""How far the cohorts' conclusions differ, measured so that the figure means something.

Two measures, both pure and deterministic (no model):

* **stance**, preferred: a `Contribution` may carry a short `stance` ("yes", "no", "postgres"...).
  Stances are normalised (case, punctuation, a light stem and a few synonyms, yes/no/depends
  families: "yes, with caveats" is "yes", "not yet" is "no") and two cohorts' similarity is the
  overlap of their members' stance distributions (1: all said the same, 0: nothing in common).
  Used for a pair when both cohorts gave comparable stances.
* **claim-polarity**, the fallback on the conclusions' text: each conclusion is read as a lead
  claim (its first clause) that points towards acting (+1) or away from it (-1: negations such as
  "not", "avoid", "hold off", "too risky"; status-quo verbs such as "keep", "stay", "remain"),
  plus its content terms (lightly stemmed), each signed by whether the clause it stands in says
  it for or against. Whether the lead claims point the same way decides agreement; the signed
  overlap of the terms grades the figure. "Adopt X" and "do not adopt X" share every word and
  land near 0; two paraphrases of "not now" in different words land above the threshold.

Two conclusions agree when their similarity is at least `AGREE_AT`. On the 64 labelled pairs
shipped with the tests (`tests/core/data/divergence_pairs.json`) the run's measure is right on
0.94 of them, the text measure alone on 0.92 (0.86 on the held-out third); the old measure,
Jaccard over content words (kept, and reported beside the others), reaches 0.50 at its best
threshold: paraphrases share few words and contradictions share most. `bench/divergence.py`
prints the figures. Known blind spot of the text measure: two conclusions that both recommend
acting, on different options ("use Postgres" / "use ClickHouse"), with neither speaking against
the other's choice, read as agreeing; stances settle those. A cohort with several members is
compared member by member (the mean over every pair across the two cohorts).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AGREE_AT = 0.5
"""Similarity at or above which two conclusions count as agreeing (fixed here, not fitted)."""

LEAD_WEIGHT = 1.5
"""How much the direction of the lead claims counts against the signed term overlap (weight 1)."""

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


def jaccard_similarity(a: str, b: str) -> float:
    """The old lexical measure: Jaccard index of the two texts' content words."""
    return jaccard(content_words(a), content_words(b))


# --- the text measure -------------------------------------------------------------------------

_CONTRACTIONS = (
    (re.compile(r"\b(can't|cannot)\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"%"), " percent "),
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty"
        )
    )
} | {w: str(10 * i) for i, w in enumerate(_words("thirty forty fifty sixty seventy eighty ninety"), start=3)}
# a few words for the same decision, mapped to one (before stemming)
_SYNONYMS = {
    "increase": "raise",
    "hike": "raise",
    "lower": "cut",
    "reduce": "cut",
    "decrease": "cut",
    "equities": "stock",
    "equity": "stock",
    "shares": "stock",
    "purchase": "buy",
    "adopt": "use",
    "choose": "use",
    "pick": "use",
    "select": "use",
}
# a clause ends here (negation does not reach past it)
_CLAUSE = re.compile(
    r"[,;:()\[\]]|\s(?:and|but|though|although|however|whereas|while|because|since|so|unless|which|who)\s"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*;\s*")
_PHRASES = (
    ("rather than", "rather_than"),
    ("instead of", "instead_of"),
    ("hold off", "hold_off"),
    ("holding off", "hold_off"),
    ("no longer", "no_longer"),
    ("not worth", "not"),
)
# negate the clause they stand in (its terms count against; its polarity flips)
_NEGATORS = frozenset(
    _words(
        "not no never nor neither none nobody nothing without against rarely hardly seldom "
        "avoid avoiding skip skipping reject rejecting oppose opposing refuse decline forgo "
        "postpone postponing delay delaying defer deferring wait waiting too overkill premature "
        "unnecessary unwise unjustified hold_off no_longer"
    )
)
# "X rather than Y": what follows counts against, but the claim itself still asserts X
_CONTRAST = frozenset(_words("rather_than instead_of instead"))
# "keep things as they are": a lead claim built on one of these points away from acting
_STATUS_QUO = frozenset(
    _words(
        "keep keeps keeping stay stays staying stick sticks sticking remain remains remaining "
        "retain retains retaining maintain maintains hold holds holding leave leaving "
        "continue continues continuing renew renews renewing preserve"
    )
)
# a status-quo word is read as the clause's verb when it leads the clause, follows one of these,
# or has a verb's third-person -s ("the holding" is not a verb; "remains" is)
_VERB_BEFORE = frozenset(_words("should must will would can could to we i you they let just simply better"))
_YES = frozenset(_words("yes yeah yep agree agreed approve support accept favour favor true y"))
_NO = frozenset(_words("no nope not never disagree reject against oppose decline false n"))
_DEPENDS = frozenset(_words("depends depend maybe conditional conditionally mixed partly partially unsure unclear"))
_POLAR = ("yes", "no", "depends")
# words that may lead a stance without changing it ("it depends", "we should not", "probably yes")
_STANCE_FILLER = frozenset(_words("it do we i should would definitely probably strongly"))
_NOT_TERMS = _NEGATORS | _CONTRAST | {"yes", "yeah", "yep"}


def stem(word: str) -> str:
    """A light, deterministic suffix stripper: enough to meet "merge" and "merging", "rates" and
    "rate", "remote" and "remotely" at one form (which need not be a word)."""
    w = _SYNONYMS.get(word, word)
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ingly", "edly", "ing", "ed", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= (4 if suffix == "ly" else 3):
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return _SYNONYMS.get(w, w)


def _normalise(text: str) -> str:
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in _CONTRACTIONS:
        t = pattern.sub(repl, t)
    for phrase, token in _PHRASES:
        t = re.sub(rf"\b{phrase}\b", token, t)
    return t


def _tokens(clause: str) -> list[str]:
    return [_NUMBERS.get(w, w).strip("'-") for w in re.findall(r"[a-z0-9_][a-z0-9_'-]*", clause)]


@dataclass(frozen=True)
class Reading:
    """What the text measure reads from one conclusion."""

    lead: int  # +1: the lead claim says act / yes; -1: don't, not yet, keep things as they are
    claim: frozenset[str]  # the terms the lead claim endorses (not negated there)
    terms: Mapping[str, float]  # stemmed content term -> signed weight (negative: said against)


def _clause(clause: str) -> tuple[int, list[tuple[str, int]]]:
    """A clause's polarity (negations and status-quo verbs, by parity) and its content terms, each
    signed: against when the clause is negated, or when it follows "rather than", "instead of"..."""
    negated, polarity, contrast = 1, 1, 1
    terms: list[tuple[str, int]] = []
    previous = ""
    for i, token in enumerate(_tokens(clause)):
        if token in _CONTRAST:
            contrast = -contrast
        elif token in _NEGATORS:
            negated, polarity = -negated, -polarity
        elif token in _STATUS_QUO and (i == 0 or previous in _VERB_BEFORE or token.endswith("s")):
            polarity = -polarity
        if len(token) > 2 and token not in _STOP and token not in _NOT_TERMS:
            terms.append((stem(token), contrast))
        previous = token
    return polarity, [(term, sign * negated) for term, sign in terms]


def read(text: str) -> Reading:
    """Read a conclusion: the polarity of its lead claim (its first clause) and its signed content
    terms (those of the first sentence counting double)."""
    sentences = [s for s in _SENTENCE.split(_normalise(text)) if s.strip()]
    lead, claim = 1, frozenset[str]()
    terms: dict[str, float] = {}
    for i, sentence in enumerate(sentences):
        clauses = [c for c in _CLAUSE.split(f" {sentence} ") if c and c.strip()]
        for j, clause in enumerate(clauses):
            polarity, signed = _clause(clause)
            if i == 0 and j == 0:
                lead, claim = polarity, frozenset(t for t, sign in signed if sign > 0)
            weight = 2.0 if i == 0 else 1.0
            for term, sign in signed:
                terms[term] = terms.get(term, 0.0) + sign * weight
    return Reading(lead=lead, claim=claim, terms=terms)


def _rejects(r: Reading, claim: frozenset[str]) -> bool:
    """Whether `r` speaks against a term the other claim endorses (and its own claim does not)."""
    return any(r.terms.get(term, 0.0) < 0 for term in claim - r.claim)


def text_similarity(a: str, b: str) -> float:
    """Similarity of two conclusions' texts in [0, 1] (the claim-polarity measure).

    The lead claims agree when they point the same way, unless both say "act" and one text speaks
    against what the other's claim endorses ("use X" / "use Y; X is not needed"). That decides the
    side of `AGREE_AT` (agreeing claims land in [0.6, 1], opposed ones in [0, 0.4]); the signed
    weighted overlap of the two texts' terms (shared with the same sign, minus shared with opposite
    signs, over everything either says) places the figure within its band.
    """
    ra, rb = read(a), read(b)
    same_way = ra.lead == rb.lead
    if same_way and ra.lead > 0 and (_rejects(rb, ra.claim) or _rejects(ra, rb.claim)):
        same_way = False
    signed = union = 0.0
    for term in ra.terms.keys() | rb.terms.keys():
        wa, wb = ra.terms.get(term, 0.0), rb.terms.get(term, 0.0)
        union += max(abs(wa), abs(wb))
        if wa and wb:
            signed += min(abs(wa), abs(wb)) * (1.0 if (wa > 0) == (wb > 0) else -1.0)
    overlap = signed / union if union else 1.0
    evidence = (LEAD_WEIGHT * (1.0 if same_way else -1.0) + overlap) / (LEAD_WEIGHT + 1.0)
    return round((1.0 + evidence) / 2.0, 4)


# --- the stance measure -----------------------------------------------------------------------


def stance_key(stance: str) -> str:
    """A stance as compared: lower case, no punctuation, stemmed; led by a yes/no/depends word, that
    word's family ("yes, with caveats" -> "yes", "not yet" -> "no", "it depends" -> "depends")."""
    words = _tokens(_normalise(stance).replace("_", " "))
    while words and words[0] in _STANCE_FILLER:
        words = words[1:]
    if not words:
        return ""
    for family, lead in (("yes", _YES), ("no", _NO), ("depends", _DEPENDS)):
        if words[0] in lead:
            return family
    return " ".join(stem(w) for w in words)


def stance_similarity(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Overlap of two cohorts' stance distributions (the sum over stances of the smaller share),
    or None when they cannot be compared: a yes/no answer and an option's name ("no" /
    "managed containers") answer different questions. Yes/no/depends stances are compared with
    each other, named options with named options."""
    ka = [k for k in (stance_key(s) for s in a) if k]
    kb = [k for k in (stance_key(s) for s in b) if k]
    for polar in (True, False):
        ca = Counter(k for k in ka if (k in _POLAR) == polar)
        cb = Counter(k for k in kb if (k in _POLAR) == polar)
        if ca and cb:
            na, nb = sum(ca.values()), sum(cb.values())
            return round(float(sum(min(ca[k] / na, cb[k] / nb) for k in ca.keys() & cb.keys())), 4)
    return None


# --- a run's divergence -----------------------------------------------------------------------

MEASURE_STANCE = "stance"
MEASURE_TEXT = "claim-polarity"
MEASURE_JACCARD = "jaccard-content-words"


def cohort_text_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Two cohorts' similarity under the text measure: the mean over every pair of their members'
    conclusions (so each member's lead claim counts, not only the first one's)."""
    a, b = [t for t in a if t.strip()] or [""], [t for t in b if t.strip()] or [""]
    return round(sum(text_similarity(x, y) for x in a for y in b) / (len(a) * len(b)), 4)


def divergence(
    conclusions: Mapping[str, str | Sequence[str]], stances: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """`{"measure", "divergence", "similarity": {"a|b": s}, "cohorts": [...], ...}`.

    `conclusions` holds each cohort's conclusion: one text, or one per member (the text measure
    then compares every member of one cohort with every member of the other); `stances` each
    cohort's members' stances, where given.

    `similarity` holds, per pair of cohorts, the figure of the preferred measure: the stance
    measure when both cohorts gave stances, the claim-polarity text measure otherwise; `measure`
    names it (`stance`, `claim-polarity`, or `stance+claim-polarity` when pairs differ) and `by`
    says which one each pair used. `divergence` is 1 minus the mean similarity. `agreement` says
    per pair whether the similarity reaches `threshold`; `measures` holds every measure's figures
    (including the old Jaccard one, for comparison). With fewer than two cohorts there is nothing
    to compare and divergence is None."""
    members = {name: [c] if isinstance(c, str) else list(c) for name, c in sorted(conclusions.items())}
    texts = {name: " ".join(m) for name, m in members.items()}
    given = {name: list(s) for name, s in (stances or {}).items() if name in texts and s}
    by_measure: dict[str, dict[str, float]] = {MEASURE_STANCE: {}, MEASURE_TEXT: {}, MEASURE_JACCARD: {}}
    similarity: dict[str, float] = {}
    by: dict[str, str] = {}
    for a, b in itertools.combinations(texts, 2):
        key = f"{a}|{b}"
        by_measure[MEASURE_TEXT][key] = cohort_text_similarity(members[a], members[b])
        by_measure[MEASURE_JACCARD][key] = round(jaccard_similarity(texts[a], texts[b]), 4)
        stance = stance_similarity(given[a], given[b]) if a in given and b in given else None
        if stance is not None:
            by_measure[MEASURE_STANCE][key] = stance
            by[key] = MEASURE_STANCE
        else:
            by[key] = MEASURE_TEXT
        similarity[key] = by_measure[by[key]][key]
    used = sorted(set(by.values()), key=[MEASURE_STANCE, MEASURE_TEXT].index)
    value = round(1.0 - sum(similarity.values()) / len(similarity), 4) if similarity else None
    return {
        "measure": "+".join(used) if used else MEASURE_TEXT,
        "divergence": value,
        "similarity": similarity,
        "cohorts": list(texts),
        "agreement": {k: s >= AGREE_AT for k, s in similarity.items()},
        "threshold": AGREE_AT,
        "by": by,
        "measures": by_measure,
    }


# --- validation on labelled pairs -------------------------------------------------------------


def pair_similarity(pair: Mapping[str, Any], measure: str) -> float:
    """One labelled pair's similarity under `measure`: `claim-polarity` (text only), `jaccard`
    (the old one), or `run` (what a run would report: stances when the pair has both, else text)."""
    a, b = str(pair["a"]), str(pair["b"])
    if measure == "jaccard":
        return jaccard_similarity(a, b)
    if measure == MEASURE_TEXT:
        return text_similarity(a, b)
    if measure == "run":
        stances = {k: [str(pair[f"stance_{k}"])] for k in ("a", "b") if pair.get(f"stance_{k}")}
        return float(divergence({"a": a, "b": b}, stances)["similarity"]["a|b"])
    raise ValueError(f"unknown measure {measure!r}")


def accuracy(pairs: Iterable[Mapping[str, Any]], measure: str = "run", threshold: float = AGREE_AT) -> dict[str, Any]:
    """How often `measure` gets labelled pairs (`a`, `b`, `label`: agree | disagree) right, a pair
    counting as agree when its similarity is at least `threshold`. Returns `accuracy`, `pairs`,
    `confusion` (`{label: {predicted: n}}`) and the ids (or indexes) of the pairs it got wrong."""
    confusion = {"agree": {"agree": 0, "disagree": 0}, "disagree": {"agree": 0, "disagree": 0}}
    wrong: list[Any] = []
    n = 0
    for i, pair in enumerate(pairs):
        predicted = "agree" if pair_similarity(pair, measure) >= threshold else "disagree"
        confusion[str(pair["label"])][predicted] += 1
        if predicted != pair["label"]:
            wrong.append(pair.get("id", i))
        n += 1
    right = confusion["agree"]["agree"] + confusion["disagree"]["disagree"]
    return {
        "measure": measure,
        "threshold": threshold,
        "accuracy": round(right / n, 4) if n else None,
        "pairs": n,
        "confusion": confusion,
        "wrong": wrong,
    }


def best_threshold(pairs: Sequence[Mapping[str, Any]], measure: str) -> dict[str, Any]:
    """The accuracy `measure` would reach with the threshold chosen after seeing the labels (an
    upper bound, used to give the old measure every chance)."""
    scores = sorted({pair_similarity(p, measure) for p in pairs} | {1.01})
    return max((accuracy(pairs, measure, t) for t in scores), key=lambda r: (r["accuracy"] or 0.0, -r["threshold"]))
