"""docs/settings.md is generated from the settings models, so it cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from gatekeeper.settings import Settings
from gatekeeper.settings_doc import PAGE, main, render
from gatekeeper.settings_env import env_name, settings_of

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_page_is_what_the_models_say() -> None:
    """If this fails, a setting changed: run `python -m gatekeeper.settings_doc --write` and commit the page."""
    assert PAGE == ROOT / "docs" / "settings.md"
    assert PAGE.read_text(encoding="utf-8") == render(), "run: python -m gatekeeper.settings_doc --write"
    assert main(["--check"]) == 0


def test_every_setting_has_a_row_with_its_variable() -> None:
    page = render()
    for path, _ in settings_of(Settings):
        assert f"| `{'.'.join(path)}` | `{env_name(path)}`" in page, path


def test_the_generator_reads_comments_of_the_models_and_the_shipped_file() -> None:
    page = render()
    # beside the field in gatekeeper/settings.py
    assert "| `cache.facts_memo_entries` |" in page and "Lookup answers held in process" in page
    # the shipped config/gatekeeper.toml, for a field with no comment of its own
    assert "per Lookup request" in page


def test_the_readme_links_the_page() -> None:
    configuration = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "(docs/settings.md)" in configuration
