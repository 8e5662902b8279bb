"""Every reference a reader meets can be looked up in the repository (docs/contract.md §1).

The contract is `docs/contract.md`; code, tests and docs cite its sections as "§N". Issue numbers
of our tracker and the upstream contract file are not in the repository, so nothing may cite them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Built in pieces so that this file does not match itself.
UPSTREAM = re.compile(r"\b" + "SP" + r"EC\b")
TRACKER = re.compile(r"\b[Ii]ssues? #?\d")
SECTION = re.compile(r"docs/contract\.md §(\d+(?:\.\d+)?)")
TEXT_SUFFIXES = {".py", ".md", ".sql", ".lua", ".toml", ".yaml", ".yml", ".sh", ".json", ".html",
                 ".ts", ".js", ".txt", ".cfg", ".ini", ".j2", ".example", ""}


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [ROOT / name for name in out.stdout.splitlines()]
    return [f for f in files if f.is_file() and not f.is_symlink() and f.suffix in TEXT_SUFFIXES
            and "package-lock" not in f.name]


def contract_sections() -> set[str]:
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (ROOT / "docs/contract.md").read_text(),
                          flags=re.MULTILINE)
    return set(headings)


def offending_lines(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    return found


def test_nothing_cites_the_upstream_spec_file() -> None:
    assert offending_lines(UPSTREAM) == [], "cite docs/contract.md §N instead"


def test_nothing_cites_tracker_issues() -> None:
    assert offending_lines(TRACKER) == [], "say what the code does, or cite docs/contract.md §N"


def test_every_cited_section_exists() -> None:
    sections = contract_sections()
    assert {"4", "5.1", "12"} <= sections  # the heading pattern still reads the file
    missing = []
    for path in tracked_text_files():
        for cited in SECTION.findall(path.read_text(errors="replace")):
            if cited not in sections:
                missing.append(f"{path.relative_to(ROOT)}: §{cited}")
    assert missing == []
