"""The demo's summary (worker/demo.py): a failed check fails its scenario, and `entitled run`
exits non-zero when one did (docs/contract.md, scenarios)."""

from __future__ import annotations

from worker.demo import Scene, summarise


def test_a_failed_check_fails_the_summary() -> None:
    said: list[str] = []
    scenes = [Scene(1, "Trial"), Scene(2, "Renewal", failures=["never past_due"]), Scene(3, "Upgrade")]
    assert summarise(scenes, said.append) == 1
    assert "   ✗ FAIL  2. Renewal" in said
    assert "   ✓ pass  1. Trial" in said
    assert said[-1] == "2 of 3 scenarios passed"


def test_all_passed() -> None:
    said: list[str] = []
    assert summarise([Scene(1, "Trial")], said.append) == 0
    assert said[-1] == "1 of 1 scenarios passed"
