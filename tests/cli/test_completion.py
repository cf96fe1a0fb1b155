"""``parity completion``: the script shtab makes from the parser, run by a real shell."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest

from framework.cli.main import build_parser

PARITY = [sys.executable, "-m", "framework.cli"]


def _commands(parser: argparse.ArgumentParser, *path: str) -> set[str]:
    """The subcommand names the parser accepts after ``path``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if not path:
                return set(action.choices)
            return _commands(action.choices[path[0]], *path[1:])
    return set()


def _complete(script: str, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words`` (the word being typed)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not on PATH")
    driver = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        'COMP_LINE="${COMP_WORDS[*]}"\n'
        "COMP_POINT=${#COMP_LINE}\n"
        "_shtab_parity\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(
        [bash, "--norc", "--noprofile"], input=driver, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash_script() -> str:
    done = subprocess.run(
        [*PARITY, "completion", "bash"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_completes_the_commands_starting_with_what_was_typed(bash_script: str) -> None:
    expected = {c for c in _commands(build_parser()) if c.startswith("mo")}
    assert expected  # the parser has such commands (models, monitor), else the test says nothing
    offered = _complete(bash_script, ["parity", "mo"])
    assert sorted(offered) == sorted(expected)


def test_bash_completes_a_subcommand_of_a_command(bash_script: str) -> None:
    expected = {c for c in _commands(build_parser(), "models") if c.startswith("pro")}
    assert _complete(bash_script, ["parity", "models", "pro"]) == sorted(expected)


def test_bash_completes_a_commands_options(bash_script: str) -> None:
    offered = _complete(bash_script, ["parity", "completion", "--h"])
    assert offered == ["--help"]
    assert sorted(_complete(bash_script, ["parity", "completion", "''"])) == [
        "bash",
        "tcsh",
        "zsh",
    ]


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_every_shell_gets_a_script_naming_the_commands(shell: str) -> None:
    done = subprocess.run(
        [*PARITY, "completion", shell], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "parity" in done.stdout and "monitor" in done.stdout


def test_an_unknown_shell_is_refused_in_one_line() -> None:
    done = subprocess.run(
        [*PARITY, "completion", "fish"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "invalid choice" in done.stderr
