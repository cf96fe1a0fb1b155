"""The test-client environment (tests/support/client_env.py): made once, skip or fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import client_env


def test_an_environment_that_cannot_be_made_says_why_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nothing to install from: as without network
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("no-such-distribution-here==1.0 --hash=sha256:" + "0" * 64 + "\n")
    why = client_env._environment(requirements)
    assert isinstance(why, str) and "pip install" in why and "exited 1" in why
    assert [p.name for p in (tmp_path / "parity").iterdir()] == [
        next((tmp_path / "parity").glob("*.lock")).name
    ]


@pytest.mark.parametrize("ci", [False, True])
def test_without_its_environment_a_test_skips_or_under_ci_fails(
    ci: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_env, "IN_CI", ci)
    monkeypatch.setattr(client_env, "_environment", lambda requirements: "no network")
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="could not be made: no network"):
        client_env.client_python()
