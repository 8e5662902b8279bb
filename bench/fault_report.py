"""The fault run's figures: what was done, what was injected, what was found; as Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine

RESULTS = Path(__file__).parent.parent / "docs" / "reliability.md"


@dataclass
class FaultReport:
    command: str
    customers: int = 0
    on_test_clocks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    driver_errors: dict[str, int] = field(default_factory=dict)
    events: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    api: dict[str, int] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)
    outages: dict[str, float] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    syncs: int = 0
    stream: dict[str, int] = field(default_factory=dict)
    stream_problems: list[str] = field(default_factory=list)
    mismatches_after_poller: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    samples: int = 0
    wrongful: int = 0
    wrongful_max_s: float = 0.0
    wrongful_worst: str = ""
    wrongful_over_bound: list[str] = field(default_factory=list)
    wrongful_longest: list[str] = field(default_factory=list)
    silent: int = 0
    silent_longest: list[str] = field(default_factory=list)
    grant_bound_s: float = 0.0
    late: int = 0
    late_max_s: float = 0.0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.stream_problems or self.wrongful_over_bound or self.exits)

    def markdown(self) -> str:
        d = self.deliveries
        lines = [
            f"- result: **{'pass' if self.ok else 'FAIL'}** — mismatches {len(self.mismatches)}, "
            f"stream problems {len(self.stream_problems)}, wrongful grants over the bound "
            f"{len(self.wrongful_over_bound)}",
            f"- customers: {self.customers} ({self.on_test_clocks} on test clocks, "
            f"{self.customers - self.on_test_clocks} on the wall clock)",
            f"- events emitted by the fake: {self.events}; webhook attempts {d.get('attempts', 0)} "
            f"({d.get('first', 0)} first deliveries)",
            f"- accepted into the ledger: {_pairs(self.ledger)}; syncs started: {self.syncs}",
            f"- stream: {_pairs(self.stream)}",
            "",
            "| fault injected | count |",
            "|---|---|",
            f"| webhook duplicated, same id | {d.get('duplicate_same_id', 0)} |",
            f"| webhook duplicated, new id | {d.get('duplicate_new_id', 0)} |",
            f"| webhook dropped (never delivered) | {d.get('dropped', 0)} |",
            f"| webhook delayed and shuffled (every delivery) | {d.get('first', 0)} |",
            f"| webhook attempt failed (non-2xx or no answer), retried by the fake | {d.get('failed', 0)} |",
            f"| API 429 | {self.api.get('429', 0)} |",
            f"| API 500 | {self.api.get('500', 0)} |",
            f"| API answer slowed (every GET, {self.settings.get('api_latency_ms', '?')} ms) | "
            f"{self.api.get('slowed', 0)} |",
            f"| worker SIGKILLed (then restarted) | {self.processes.get('kills', 0)} |",
            f"| process exited on its own (restarted by the supervisor) | "
            f"{self.processes.get('unexpected_exits', 0)} |",
            f"| Redis restarted | 1 (down {self.outages.get('redis_down_s', 0):.1f} s) |",
            f"| Postgres restarted | 1 (down {self.outages.get('postgres_down_s', 0):.1f} s) |",
            f"| Redis lost: SIGKILLed, restarted empty (queue, timers, dedupe keys, leases, limiter gone) | "
            f"1 (down {self.outages.get('redis_lost_down_s', 0):.1f} s) |",
            "",
            f"- mismatches with the truth after the Events API poller: {len(self.mismatches_after_poller)}; "
            f"after `entitled resync --all`: **{len(self.mismatches)}**",
            f"- stream problems (gaps, conflicting versions, last message differs, unpublished): "
            f"**{len(self.stream_problems)}**",
            f"- wrongful grants ({self.samples} samples, 1 s apart): {self.wrongful} intervals, longest "
            f"{self.wrongful_max_s:.1f} s{(' (' + self.wrongful_worst + ')') if self.wrongful_worst else ''}; "
            f"bound {self.grant_bound_s:.0f} s; over the bound: **{len(self.wrongful_over_bound)}**",
            f"- longest wrongful grants: {'; '.join(self.wrongful_longest) or 'none'}",
            f"- silent wrongful grants (every event of the change lost, and dated before the poller's reach: "
            f"test clocks frozen behind; not bounded, ended by a later event, the sweep or resync): "
            f"{self.silent}{': ' + '; '.join(self.silent_longest) if self.silent_longest else ''}",
            f"- late grants (the truth granted, the view not yet): {self.late} intervals, longest {self.late_max_s:.1f} s",
            f"- Redis loss: every disagreement open at it or begun within 10 s of it closed "
            f"**{self.loss.get('convergence_s', 0):.1f} s** after it, with no manual step; among them "
            f"{self.loss.get('wrongful', 0):.0f} wrongful grants, longest **{self.loss.get('wrongful_max_s', 0):.1f} s**, "
            f"and {self.loss.get('late', 0):.0f} late grants, longest {self.loss.get('late_max_s', 0):.1f} s",
            f"- lifecycles: {_pairs(self.kinds)}",
            f"- actions: {_pairs(self.actions)}",
            f"- driver errors: {_pairs(self.driver_errors) or 'none'}",
            f"- settings: {_pairs(self.settings)}",
            f"- run time: {self.seconds:.0f} s ({_pairs({k: round(v) for k, v in self.phases.items()})})",
        ]
        for title, items in (("mismatches after the poller", self.mismatches_after_poller),
                             ("mismatches", self.mismatches), ("stream problems", self.stream_problems),
                             ("wrongful grants over the bound", self.wrongful_over_bound),
                             ("processes that exited on their own", self.exits)):
            if items:
                lines.append(f"- {title} (first 10): " + "; ".join(items[:10]))
        return "\n".join(lines)


def _pairs(values: dict[str, int] | dict[str, float] | dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


HEADER = """# Reliability: the fault run

Each section below is appended by the command it names (`python -m bench.faults`, see the top
of `bench/faults.py` for what the run does and how to read these figures).
"""


def append(report: FaultReport, title: str) -> None:
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as f:
        f.write(f"\n## {title} — {stamp}\n\n- machine: {machine()}\n- command: `{report.command}`\n"
                f"{report.markdown()}\n")
