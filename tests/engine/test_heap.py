"""engine/heap.py: a large run's heap is kept out of the collector's full walks while it runs,
and given back when the last large run ends."""

from __future__ import annotations

import gc

from parallax.engine.heap import LARGE_PLAN, frozen_heap


def test_a_large_run_freezes_what_lives_and_gives_it_back() -> None:
    gc.unfreeze()
    with frozen_heap(LARGE_PLAN - 1):
        assert gc.get_freeze_count() == 0  # a small run leaves the collector alone
    with frozen_heap(LARGE_PLAN):
        at_start = gc.get_freeze_count()
        assert at_start > 0
        kept = [[i] for i in range(10_000)]  # long-lived objects made during the run
        gc.collect()  # a full collection: its survivors are frozen too
        assert gc.get_freeze_count() >= at_start + len(kept)
        with frozen_heap(LARGE_PLAN):  # a sub-run shares the freeze
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    assert all(callback.__module__ != "parallax.engine.heap" for callback in gc.callbacks)
    garbage: list[object] = []
    garbage.append(garbage)  # a cycle made after the run is collected as usual
    del garbage
    assert gc.collect() >= 1
