"""The conformance walk's machinery: the ``parity`` command run from an unrelated folder,
a ``parity serve`` process, Feast's own reference results, and value comparison.

Feast is the reference throughout: its ``get_historical_features`` for training sets,
its ``materialize`` (into a second copy of the repository) for the online store, its
``get_online_features`` for what a served request must have seen.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.support.serve_process import ServeProcess
from tests.support.shapes import Generated

PARITY = str(Path(sys.executable).parent / "parity")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------- the command line


@dataclass
class Ran:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The reason a failed command gave (its last stderr line), for failure messages."""
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"(no stderr; stdout: {self.stdout.strip()[-300:]!r})"

    def json(self) -> Any:
        return json.loads(self.stdout)

    def check(self, step: str) -> Ran:
        if self.returncode != 0:
            raise AssertionError(
                f"`parity {' '.join(self.args[:2])}` exited {self.returncode}: {self.error}"
            )
        return self


class _ForkServer:
    """``tests/support/cli_forkserver.py``, started on first use and ended at exit."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        self.count = 0

    def run(self, args: Sequence[str], cwd: Path) -> Ran:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
                    cwd=tempfile.gettempdir(), text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    env={k: v for k, v in os.environ.items() if k != "PARITY_REPO"},
                )  # fmt: skip
                assert self.proc.stdout is not None
                assert json.loads(self.proc.stdout.readline()) == {"ready": True}
                atexit.register(self.close)
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.count += 1
            out, err = cwd / f".parity-{self.count}.out", cwd / f".parity-{self.count}.err"
            request = {"args": list(args), "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline())
        return Ran(list(args), answer["returncode"], out.read_text(), err.read_text())

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            assert self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
            self.proc.stdout.close()


_FORKSERVER = _ForkServer()


def parity(*args: str, cwd: Path) -> Ran:
    """``parity ARGS`` in a process of its own whose working directory is ``cwd`` (a folder
    that is not the repository's); see ``cli_forkserver`` for why it is forked."""
    return _FORKSERVER.run(args, cwd)


def one_line_refusal(ran: Ran) -> str:
    """The single stderr line of a refusal (no traceback), or a failure saying what it was."""
    lines = [line for line in ran.stderr.strip().splitlines() if line.strip()]
    assert ran.returncode != 0
    assert len(lines) == 1 and "Traceback" not in ran.stderr, (
        f"a refusal must be one line, got {len(lines)}: {ran.stderr.strip()[-600:]}"
    )
    return lines[0]


# ----------------------------------------------------------------- parity serve


@dataclass
class Server:
    """``parity serve`` as a process (:class:`tests.support.serve_process.ServeProcess`),
    run from an unrelated folder; ``target`` once it answers health."""

    process: ServeProcess

    @classmethod
    def start(cls, repo: Path, model: str, cwd: Path) -> Server:
        """Start it and wait (polling, with a deadline) until it answers health; stopped
        again, its stderr in the error, if it never gets there."""
        env = {k: v for k, v in os.environ.items() if k != "PARITY_REPO"}
        return cls(
            ServeProcess.start(
                "--repo",
                str(repo),
                "--model",
                model,
                logs=cwd,
                name=f"serve-{model}",
                command=(PARITY,),
                cwd=cwd,
                env=env,
            )  # fmt: skip
        )

    @property
    def target(self) -> str:
        return self.process.target

    def last_error(self) -> str:
        """Its last non-empty line of stderr, else of stdout."""
        for text in (self.process.errors(), self.process.output()):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1][-500:]
        return "(no output)"

    def stop(self) -> int:
        """SIGTERM (drain, flush the prediction log) and wait; the exit code."""
        return self.process.stop()


# ----------------------------------------------------------------- Feast, the reference


def quiet() -> contextlib.ExitStack:
    """Feast's own chatter (progress bars, experimental-feature warnings) silenced: it is
    the reference here, not the code under test."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def feast_store(repo: Path) -> Any:
    from feast import FeatureStore

    with quiet():
        return FeatureStore(repo_path=str(repo))


def definitions(repo: Path) -> list[Any]:
    """The Feast objects a repository defines, imported as Feast imports them (by module
    name, the repository's folder on ``sys.path``)."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView

    objects: list[Any] = []
    for path in sorted(repo.glob("*.py")):
        if path.name.startswith(("test_", "__")):
            continue
        name = path.stem
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            with quiet():
                spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, Entity | FeatureView | OnDemandFeatureView | FeatureService):
                objects.append(value)
    return objects


def reference_copy(gen: Generated, root: Path) -> Path:
    """A second copy of the repository with state of its own, for Feast to materialise.
    Taken before anything ran in the original, so no state is copied."""
    from tests.support.shapes import write_yaml

    target = root / "reference" / gen.repo.name
    shutil.copytree(gen.repo, target, ignore=shutil.ignore_patterns("__pycache__", "models"))
    if gen.repo.name == "repo":  # a generated repository: absolute state paths, redirected
        write_yaml(target, _project(gen), root / "reference" / "feast")
    # else feast init's: its relative paths already point into the copy
    return target


def _project(gen: Generated) -> str:
    for line in (gen.repo / "feature_store.yaml").read_text().splitlines():
        if line.startswith("project:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no project in feature_store.yaml")


def feast_materialize(reference: Path) -> Any:
    """Feast's own apply and materialise of the reference copy, up to now."""
    store = feast_store(reference)
    objects = definitions(reference)
    with quiet():
        store.apply(objects)
        store.materialize(start_date=EPOCH, end_date=datetime.now(UTC))
    return store


# ----------------------------------------------------------------- comparing values


def plain(value: Any) -> Any:
    """One comparable Python value: NaN and None alike, NumPy scalars and arrays unwrapped."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC") if value.tzinfo else value.tz_localize("UTC")
    return value


def same(a: Any, b: Any) -> bool:
    a, b = plain(a), plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def differences(
    ours: Sequence[dict[str, Any]],
    theirs: Sequence[dict[str, Any]],
    columns: Sequence[str],
    what: str,
    *,
    limit: int = 3,
) -> list[str]:
    """'row i, column c: ours X, theirs Y' for every cell that differs (first ``limit``)."""
    assert len(ours) == len(theirs), f"{what}: {len(ours)} rows vs {len(theirs)}"
    out = []
    counts: dict[str, int] = {}
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for c in columns:
            if not same(a.get(c), b.get(c)):
                counts[c] = counts.get(c, 0) + 1
                if len(out) < limit:
                    out.append(f"row {i} {c}: {plain(a.get(c))!r} vs {plain(b.get(c))!r}")
    if counts:
        summary = ", ".join(f"{c} {n}/{len(ours)}" for c, n in counts.items())
        out.insert(0, f"{what} differ ({summary})")
    return out


def timestamp_ns(value: Any) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
