"""Estimated performance without labels: parity against NannyML's CBPE on the same scores.

One run draws a reference of ``--reference`` scored rows with labels (a calibrated
model: labels drawn from the scores) and ``--windows`` analysis windows of
``--window`` rows each, labels withheld. The first half of the windows come from the
reference's model; in the second half the model no longer separates the classes as
well (its scores shrink toward the base rate by ``--degrade``, still calibrated), so
the realized ROC-AUC falls. Then, each in a fresh child process on the same Parquet
files:

* ``parity``  — :func:`framework.models.estimated.estimate` per window (expected
  ROC-AUC with its 95 % interval, PR-AUC, precision/recall at the threshold, decision
  mix); the verdict is ``parity monitor``'s ``estimated_quality_drop`` rule: the
  interval's top more than 0.05 under the reference ROC-AUC;
* ``nannyml`` — ``nannyml.CBPE(metrics=["roc_auc"], chunk_size=--window)``, fitted on
  the reference and estimating the analysis windows, from its own environment; the
  verdict is its own alert (the estimate outside the thresholds it derives from the
  reference chunks).

Both verdicts are compared per window with the realized ROC-AUC (labels drawn here,
never shown to either); the table gives each window's realized and estimated values,
both verdicts, and the wall time of each call (reading the Parquet file included).

    .venv/bin/python bench/performance_estimation.py --setup-nannyml   # once: its venv
    .venv/bin/python bench/performance_estimation.py                   # 1M rows, 10 windows
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NANNYML_VENV = Path.home() / ".cache" / "parity" / "nannyml-venv"
# NannyML 0.13.1 imports statsmodels without declaring it, and does not run on pandas 3.
NANNYML_PINS = ["nannyml==0.13.1", "statsmodels", "pandas<3", "pyarrow", "psutil"]
#: ``parity monitor``'s default ``quality_drop``.
QUALITY_DROP = 0.05

PARITY_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, pyarrow.parquet as pq
from framework.models.estimated import estimate
t = time.perf_counter()
table = pq.read_table(sys.argv[2], columns=["window", "score"])
window, score = table["window"].to_numpy(), table["score"].to_numpy()
out = []
for w in np.unique(window):
    e = estimate(score[window == w], seed=int(w))
    out.append({"window": int(w), "roc_auc": e.roc_auc.value, "low": e.roc_auc.low,
                "high": e.roc_auc.high, "pr_auc": e.pr_auc.value})
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "windows": out}))
"""

NANNYML_CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
import nannyml as nml
t = time.perf_counter()
reference = pd.read_parquet(sys.argv[1])
analysis = pd.read_parquet(sys.argv[2])
cbpe = nml.CBPE(y_pred_proba="score", y_pred="predicted", y_true="y", metrics=["roc_auc"],
                chunk_size=int(sys.argv[3]), problem_type="classification_binary")
cbpe.fit(reference)
result = cbpe.estimate(analysis).filter(period="analysis").to_df()
seconds = time.perf_counter() - t
flat = result.copy()
flat.columns = ["_".join(str(c) for c in col if c) for col in flat.columns]
rows = [{"value": float(r["roc_auc_value"]), "alert": bool(r["roc_auc_alert"]),
         "lower": r.get("roc_auc_lower_threshold"), "upper": r.get("roc_auc_upper_threshold")}
        for _, r in flat.iterrows()]
print(json.dumps({"seconds": seconds, "windows": rows, "version": nml.__version__}, default=float))
"""


def _count(text: str) -> int:
    text = text.lower().replace(",", "").replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def make_data(folder: Path, reference: int, windows: int, window: int, degrade: float,
              seed: int) -> dict[str, Any]:  # fmt: skip
    """The reference (with labels) and the analysis windows (labels kept apart)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)

    def scores(n: int, shrink: float) -> Any:
        p = rng.beta(0.6, 6.0, n)
        return np.clip(p.mean() + (p - p.mean()) * (1.0 - shrink), 1e-6, 1 - 1e-6)

    ref = scores(reference, 0.0)
    y_ref = (rng.random(reference) < ref).astype(np.int64)
    pq.write_table(pa.table({"score": ref, "predicted": (ref >= 0.5).astype(np.int64),
                             "y": y_ref}), folder / "reference.parquet")  # fmt: skip
    parts, realized = [], []
    for w in range(windows):
        p = scores(window, degrade if w >= windows // 2 else 0.0)
        y = (rng.random(window) < p).astype(np.int64)  # withheld: only realized uses it
        realized.append(float(roc_auc_score(y, p)))
        parts.append(pa.table({"window": np.full(window, w), "score": p,
                               "predicted": (p >= 0.5).astype(np.int64)}))  # fmt: skip
    pq.write_table(pa.concat_tables(parts), folder / "analysis.parquet")
    return {"reference_roc_auc": float(roc_auc_score(y_ref, ref)), "realized": realized}


def run_child(python: Path, code: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{python}: {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def setup_nannyml(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *NANNYML_PINS], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-nannyml", action="store_true", help="create NannyML's venv")
    parser.add_argument("--nannyml-venv", type=Path, default=NANNYML_VENV)
    parser.add_argument(
        "--reference",
        type=_count,
        default=500_000,
        help="reference rows with labels (NannyML derives its alert thresholds "
        "from the reference windows: it needs several)",
    )
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window", type=_count, default=100_000)
    parser.add_argument(
        "--degrade",
        type=float,
        default=0.6,
        help="how far the second half's scores shrink toward the base rate",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (median)")
    args = parser.parse_args()
    if args.setup_nannyml:
        setup_nannyml(args.nannyml_venv)
        return
    python = args.nannyml_venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"No NannyML environment at {args.nannyml_venv}: run --setup-nannyml.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        facts = make_data(folder, args.reference, args.windows, args.window, args.degrade,
                          args.seed)  # fmt: skip
        ours_runs, theirs_runs = [], []
        for _ in range(args.repeat):  # alternating, each in a fresh process
            ours_runs.append(run_child(Path(sys.executable), PARITY_CHILD, str(ROOT),
                                       str(folder / "analysis.parquet")))  # fmt: skip
            theirs_runs.append(run_child(python, NANNYML_CHILD, str(folder / "reference.parquet"),
                                         str(folder / "analysis.parquet"), str(args.window)))  # fmt: skip
    ours, theirs = _median_run(ours_runs), _median_run(theirs_runs)
    report(args, facts, ours, theirs)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time (the estimates are the same in every run), with all times."""
    ranked = sorted(runs, key=lambda r: r["seconds"])
    out = dict(ranked[len(ranked) // 2])
    out["all_seconds"] = [r["seconds"] for r in runs]
    return out


def report(args: argparse.Namespace, facts: dict[str, Any], ours: dict[str, Any],
           theirs: dict[str, Any]) -> None:  # fmt: skip
    hold = facts["reference_roc_auc"]
    rows = args.windows * args.window
    print(f"# Estimated ROC-AUC without labels: parity vs NannyML {theirs['version']} CBPE\n")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}"
          f", Python {platform.python_version()}; reference {args.reference:,} rows (ROC-AUC "
          f"{hold:.3f}), {args.windows} windows x {args.window:,} = {rows:,} rows, second half "
          f"degraded ({args.degrade})\n")  # fmt: skip
    print(
        "| window | realized | parity estimate [95 %] | NannyML estimate | parity alert "
        "| NannyML alert | same verdict |"
    )
    print("|---:|---:|---|---:|---|---|---|")
    same = 0
    for w, (mine, nml, real) in enumerate(
        zip(ours["windows"], theirs["windows"], facts["realized"], strict=True)
    ):
        alert = hold - mine["high"] > QUALITY_DROP
        agree = alert == nml["alert"]
        same += agree
        print(f"| {w} | {real:.3f} | {mine['roc_auc']:.3f} [{mine['low']:.3f}, "
              f"{mine['high']:.3f}] | {nml['value']:.3f} | {alert} | {nml['alert']} | "
              f"{'yes' if agree else 'NO'} |")  # fmt: skip
    errors = [abs(m["roc_auc"] - r) for m, r in zip(ours["windows"], facts["realized"],
                                                    strict=True)]  # fmt: skip
    print(f"\nsame verdict in {same} of {args.windows} windows; parity's mean |estimate - "
          f"realized| {sum(errors) / len(errors):.4f}")  # fmt: skip

    def runs(side: dict[str, Any]) -> str:
        return ", ".join(f"{s:.2f}" for s in side["all_seconds"])

    print(f"\n| system | median seconds ({rows:,} rows) | runs | ratio |\n|---|---:|---|---:|")
    print(f"| parity estimate() | {ours['seconds']:.2f} | {runs(ours)} | 1.0x |")
    print(f"| NannyML CBPE fit + estimate | {theirs['seconds']:.2f} | {runs(theirs)} | "
          f"{theirs['seconds'] / ours['seconds']:.1f}x slower |")  # fmt: skip


if __name__ == "__main__":
    main()
