"""`entitled --version`, and the upgrade notes that must follow the version it reports."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[1]


def test_version_names_entitled_the_sdk_and_the_pinned_api_version() -> None:
    """`entitled --version` prints the installed version, the stripe SDK's version and the API
    version every request carries, and exits 0."""
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "--version"],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"entitled {version('entitled')} (stripe-python {stripe.VERSION}, "
                                   f"Stripe API version {stripe.api_version})")


def test_changelog_names_the_pinned_api_version_and_every_migration() -> None:
    """CHANGELOG.md's upgrade notes follow the code: the API version the SDK pins, and one line
    per migration file (a migration added without its note fails here)."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"`{stripe.api_version}`" in changelog
    assert f"stripe-python {stripe.VERSION}" in changelog
    for migration in sorted((ROOT / "shared" / "db" / "migrations").glob("*.sql")):
        assert f"| `{migration.name}` |" in changelog, migration.name


def test_license_is_apache_2() -> None:
    """The repository carries the license its metadata declares."""
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
