"""The documents a newcomer reads: short where promised, generated where they can drift."""

from __future__ import annotations

import re
from pathlib import Path

from framework.cli import reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reference_is_generated_from_the_parser() -> None:
    assert reference.DOC.read_text() == reference.render(), (
        "docs/cli-reference.md is stale: run python -m framework.cli.reference"
    )


def test_the_cli_reference_names_every_command_and_serve_setting() -> None:
    from serving.grpc.settings import ServeSettings

    text = reference.render()
    for command in ("init", "demo", "train", "models promote", "serve", "monitor", "retrain"):
        assert f"### `parity {command}`" in text
    for name in ServeSettings.model_fields:
        assert f"`PARITY_SERVE_{name.upper()}`" in text


def test_the_readme_stays_short_and_links_what_it_left_out() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme):
        assert (ROOT / doc).is_file(), doc
    assert {"docs/architecture.md", "docs/cli-reference.md", "docs/guide.md"} <= set(
        re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme)
    )


def test_no_tracker_numbers_in_code_or_docs() -> None:
    """Code and docs say what and why; which ticket asked for it belongs in the history."""
    pattern = re.compile(r"\b(issues?|tickets?) #?\d+\b|[( ]#\d+\)", re.IGNORECASE)
    found = []
    for top in ("framework", "serving", "tests", "bench", "docs", "README.md"):
        paths = [ROOT / top] if top.endswith(".md") else (ROOT / top).rglob("*")
        for path in paths:
            if path.suffix not in (".py", ".md") or "stubs" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
