"""Runs ``parity`` commands each in a fresh process forked from one that has already
imported Feast, scikit-learn, DuckDB and the framework.

Each command is the console script's own entry point (``framework.cli.main:main``) in a
process of its own, with its own working directory, stdout and stderr, exactly as
``parity ARGS`` would run it; only the interpreter start-up and imports (5-10 s a
command on a busy 2-core machine, most of the conformance suite's time) are paid once.

Protocol: one JSON request a line on stdin (``args``, ``cwd``, ``stdout``, ``stderr``:
file paths), one JSON answer a line on stdout (``returncode``). Start it as a script
(``python tests/support/cli_forkserver.py``); it prints ``{"ready": true}`` first.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

#: Imported before forking. A module that fails to import here (someone is editing it)
#: is simply imported again by the command, which then reports the error as parity would.
PRELOAD = (
    "pandas", "pyarrow", "pyarrow.parquet", "duckdb", "sklearn.ensemble",
    "sklearn.linear_model", "feast", "feast.feature_store", "framework.cli.main",
    "framework.features.repository", "framework.features.training_set", "framework.models.training",
    "framework.materialize.job", "framework.loop.promotion", "framework.models.batch_score",
    "framework.monitoring.summary", "framework.monitoring.skew",
)  # fmt: skip


def _child(request: dict[str, object]) -> int:
    os.chdir(str(request["cwd"]))
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process ends with the command
    args = [str(a) for a in request["args"]]  # type: ignore[attr-defined]
    sys.argv = ["parity", *args]
    try:
        from framework.cli.main import main

        return int(main(args) or 0)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def serve() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - see PRELOAD
            continue
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
