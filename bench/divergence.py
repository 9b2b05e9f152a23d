"""Divergence that means something: the run's measure against the old Jaccard one, on labelled pairs.

    python bench/divergence.py [PAIRS.json]

PAIRS.json (default: the set shipped with the tests, tests/core/data/divergence_pairs.json) holds
pairs of short conclusions to the same question, each labelled agree or disagree. A measure calls
a pair "agree" when its similarity is at least the threshold fixed in parallax.core.divergence
(AGREE_AT); the old Jaccard measure is also shown at the best threshold there is for it (chosen
after seeing the labels, so an upper bound). Prints each measure's accuracy and confusion matrix,
the held-out pairs' figure (pairs not looked at while the measure was tuned), the pairs missed,
and, last:

    RESULT divergence_accuracy=A text_accuracy=T heldout_accuracy=H jaccard_accuracy=J jaccard_at_threshold=K pairs=N

A is what a run reports (stances where both sides gave one, else the text measure), T the text
measure alone, H the text measure on the held-out pairs, J the old Jaccard measure at its best
threshold (the fairest figure for it), K the old measure at AGREE_AT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from parallax.core.divergence import AGREE_AT, MEASURE_TEXT, accuracy, best_threshold, pair_similarity

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "core" / "data" / "divergence_pairs.json"


def confusion(result: dict[str, Any]) -> str:
    c = result["confusion"]
    return (
        "                 said agree  said disagree\n"
        f"    agree      {c['agree']['agree']:>12} {c['agree']['disagree']:>14}\n"
        f"    disagree   {c['disagree']['agree']:>12} {c['disagree']['disagree']:>14}"
    )


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    pairs: list[dict[str, Any]] = json.loads(path.read_text())["pairs"]
    held_out = [p for p in pairs if p.get("split") == "holdout"]
    by_id = {p.get("id", i): p for i, p in enumerate(pairs)}
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.get("kind", "?")] = kinds.get(p.get("kind", "?"), 0) + 1
    labels = {label: sum(p["label"] == label for p in pairs) for label in ("agree", "disagree")}
    print(f"{len(pairs)} pairs from {path.name}: {labels}; kinds {kinds}; {len(held_out)} held out")
    print(f"{sum(bool(p.get('stance_a') and p.get('stance_b')) for p in pairs)} pairs carry stances\n")

    run = accuracy(pairs, "run")
    text = accuracy(pairs, MEASURE_TEXT)
    held = accuracy(held_out, MEASURE_TEXT) if held_out else None
    old = accuracy(pairs, "jaccard")
    old_best = best_threshold(pairs, "jaccard")
    rows = [
        ("run measure (stance where both, else claim-polarity)", run),
        ("claim-polarity text measure alone", text),
        (f"old Jaccard at {AGREE_AT}", old),
        (f"old Jaccard at its best threshold {old_best['threshold']:.3f}", old_best),
    ]
    for name, result in rows:
        print(f"{name}: accuracy {result['accuracy']:.3f}")
        print(confusion(result))
    if held is not None:
        print(f"claim-polarity on the {held['pairs']} held-out pairs: accuracy {held['accuracy']:.3f}")
    print("\nmissed by the run measure:")
    for pid in run["wrong"]:
        p = by_id[pid]
        similarity = pair_similarity(p, "run")
        print(f"  #{pid} {p['label']} ({p.get('kind', '?')}), similarity {similarity:.2f}: {p['question']}")
    held_accuracy = held["accuracy"] if held else float("nan")
    print(
        f"RESULT divergence_accuracy={run['accuracy']:.4f} text_accuracy={text['accuracy']:.4f} "
        f"heldout_accuracy={held_accuracy:.4f} jaccard_accuracy={old_best['accuracy']:.4f} "
        f"jaccard_at_threshold={old['accuracy']:.4f} pairs={len(pairs)}"
    )


if __name__ == "__main__":
    main()
