"""StepCache.cached: the one way a step uses the cache (look up, else compute, store, record)."""

from __future__ import annotations

import json

from spatialfuse.workflow._steps_cache import StepCache


def _json_step(cache: StepCache, calls: list[int]):
    def compute():
        calls.append(1)
        return {"value": len(calls)}

    return cache.cached(
        "demo",
        "k",
        ".json",
        compute=compute,
        load=lambda path: json.loads(path.read_text(encoding="utf-8")),
        save=lambda value, tmp: tmp.write_text(json.dumps(value), encoding="utf-8"),
    )


def test_cached_computes_once_then_reuses(tmp_path):
    calls: list[int] = []
    first = StepCache(tmp_path / ".cache")
    assert _json_step(first, calls) == ({"value": 1}, False)
    assert first.computed == ["demo"] and first.reused == []
    again = StepCache(tmp_path / ".cache")
    assert _json_step(again, calls) == ({"value": 1}, True)
    assert again.reused == ["demo"] and again.computed == [] and len(calls) == 1


def test_cached_recomputes_a_damaged_entry_and_a_disabled_cache(tmp_path):
    calls: list[int] = []
    _json_step(StepCache(tmp_path / ".cache"), calls)
    StepCache(tmp_path / ".cache").path("demo", "k", ".json").write_text("{}", encoding="utf-8")
    damaged = StepCache(tmp_path / ".cache")
    assert _json_step(damaged, calls) == ({"value": 2}, False)
    assert damaged.damaged == ["demo"] and damaged.computed == ["demo"]
    assert _json_step(StepCache(tmp_path / ".cache", enabled=False), calls)[1] is False
    assert len(calls) == 3
