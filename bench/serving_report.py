"""The serving benchmark's report: the results table, the issue's targets and the footer.

Input: one dict per measured cell (system, configuration, online store, in flight,
percentiles, req/s, CPU), as ``bench/serving.py`` records them; output: Markdown
lines. The targets are ratios within one run (the echo server and ``feast serve``
measured beside parity on the same machine at the same time), except the p99 at 64 in
flight, which is compared with the last published table (:data:`TODAY_P99_64`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: The anchors as measured on 2026-11-21 (sequential, single client), another machine state.
ANCHORS = {
    "feast serve": (1.03, 1.98),
    "MLServer V2": (2.08, 7.62),
    "in-process floor": (1.0, None),
}
#: "Today's table": ``ours Predict`` p99 at 64 in flight, per configuration, from the run
#: of 2026-12-02 19:37-19:48 UTC in docs/benchmarks.md (SQLite online store; 612.79 and
#: 394.63 ms there). The target is a lower p99 than these. That table's one two-process
#: configuration was 2 x 32 threads; 2 x 8 (the shipped thread count) is held to it too.
TODAY_P99_64 = {
    "1 proc × 8 threads": 613.0,
    "2 proc × 32 threads": 395.0,
    "2 proc × 8 threads": 395.0,
}
NO_STORE = "—"  # the online column of systems that read no online store


@dataclass(frozen=True)
class RunFacts:
    """What the header and footer say about the run besides the results."""

    model: str
    feature_service: str
    features: int
    rows: int
    now: str  # the servers' clock
    anchor_versions: dict[str, dict[str, str]] | None  # None: no anchor was measured


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, configuration, online store, in flight): the median of each
    number over the repeats, errors and outcomes summed."""
    cells: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["system"], r["config"], r["online"], r["inflight"]), []).append(r)
    out = []
    for group in cells.values():
        row = dict(group[0], repeats=len(group))
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "rps", "server_cpu_ms",
                    "client_cpu_ms", "other_cpu_share"):  # fmt: skip
            row[key] = statistics.median(r[key] for r in group)
        row["errors"] = sum(r["errors"] for r in group)
        row["waited_s"] = sum(r["waited_s"] for r in group)
        row["outcomes"] = dict(sum((Counter(r["outcomes"]) for r in group), Counter()))
        out.append(row)
    return out


def report(results: list[dict[str, Any]], facts: RunFacts, checks: list[str],
           args: argparse.Namespace) -> None:  # fmt: skip
    """Print the Markdown table, the targets and where it ran."""
    repeats = f"median of {args.repeat} runs" if args.repeat > 1 else "one run"
    print(f"\nServing: {facts.model} (HistGradientBoosting pipeline + calibration, "
          f"{facts.features} features of {facts.feature_service!r}), one row per request, "
          f"{facts.rows} latest sample transactions cycled; {args.warmup:g} s warm-up + "
          f"{args.duration:g} s measured per cell, {repeats}; load generator: {args.harness}, "
          "its own process\n")  # fmt: skip
    print("| system | configuration | online | in flight | p50 ms | p95 ms | p99 ms | req/s "
          "| errors | server CPU ms/req | client CPU ms/req | other load |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        server = "—" if r["system"].startswith("in-process") else f"{r['server_cpu_ms']:.2f}"
        print(f"| {r['system']} | {r['config']} | {r['online']} | {r['inflight']} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:,.0f} | "
              f"{r['errors']} | {server} | {r['client_cpu_ms']:.2f} | "
              f"{r['other_cpu_share']:.0%} |")  # fmt: skip
    print()
    for line in targets(results):
        print(line)
    print()
    for line in footer(results, facts, checks):
        print(line)


def targets(results: list[dict[str, Any]], cores: int | None = None) -> list[str]:
    """The issue's targets, per configuration of our server and online store.

    Against the echo server (the transport's floor) in the SAME configuration: sequential
    ``Predict`` p50 ≤ 3× the echo's; at 64 in flight with workers = cores, ``Predict``
    req/s ≥ 30 % of the echo's (other configurations get the ratio without a verdict).
    Against ``feast serve`` on the same online store: sequential ``Predict`` p50 (lookup
    + model + log) below half its p50 for the lookup alone. Against today's table: p99 at
    64 in flight lower. Kept from before: 64 in flight against the two-hop setup (req/s
    ≥ 3×, p99 lower) and V2 against MLServer (req/s ≥ 1.5×). Anchors: the best of their
    configurations for each number (lowest p50 or p99, most req/s).

    The REST binding is reported without a goal (none was set): against MLServer's REST
    endpoint (sequential p50, req/s at 64 in flight) and against our own gRPC ``ModelInfer``
    in the same configuration (what JSON over HTTP/1.1 costs beside protobuf over HTTP/2).
    """
    cores = cores or os.cpu_count() or 1
    lines = [
        "| target | ours | online | measured | goal | verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    ours = [r for r in results if r["system"] == "ours Predict"]
    for config, online in dict.fromkeys((r["config"], r["online"]) for r in ours):
        row = _Row(lines, config, online)
        seq, p64 = (
            _cell(results, "ours Predict", 1, config, online),
            _cell(results, "ours Predict", 64, config, online),
        )
        echo1, echo64 = _cell(results, "echo", 1, config), _cell(results, "echo", 64, config)
        feast1 = _cells(results, "feast serve", 1, online)
        same_work = _cell(results, "in-process, compiled model", 1, online=online)
        hop = _cells(results, "two-hop", 64, online)
        if seq and echo1:
            ratio = seq["p50_ms"] / echo1["p50_ms"]
            row.verdict("sequential p50, Predict ÷ echo", f"{ratio:.2f}× ({seq['p50_ms']:.2f} "
                        f"vs {echo1['p50_ms']:.2f} ms)", "≤ 3×", ratio <= 3)  # fmt: skip
        if seq and feast1:
            best = min(r["p50_ms"] for r in feast1)
            ratio = seq["p50_ms"] / best
            row.verdict("sequential p50, Predict ÷ feast serve (lookup alone)",
                        f"{ratio:.2f}× ({seq['p50_ms']:.2f} vs {best:.2f} ms)", "< 0.5×",
                        ratio < 0.5)  # fmt: skip
        if seq and same_work:  # not a target: what gRPC, routing and the log add
            ratio = seq["p50_ms"] / same_work["p50_ms"]
            row.info("sequential p50, Predict ÷ in-process with the compiled model",
                     f"{ratio:.2f}×")  # fmt: skip
        if p64 and echo64:
            ratio = p64["rps"] / echo64["rps"]
            measured = f"{ratio:.2f}× ({p64['rps']:,.0f} vs {echo64['rps']:,.0f} req/s)"
            name = "64 in flight, Predict req/s ÷ echo"
            if p64.get("workers") == cores:
                row.verdict(f"{name} (workers = cores)", measured, "≥ 0.3×", ratio >= 0.3)
            else:
                row.info(f"{name} (workers ≠ cores: {p64.get('workers')} vs {cores})", measured)
        if p64 and config in TODAY_P99_64:
            before = TODAY_P99_64[config]
            row.verdict("64 in flight, p99 Predict vs today's table (2026-12-02)",
                        f"{p64['p99_ms']:.0f} vs {before:.0f} ms", "lower",
                        p64["p99_ms"] < before)  # fmt: skip
        if p64 and hop:
            ratio = p64["rps"] / max(r["rps"] for r in hop)
            p99 = min(r["p99_ms"] for r in hop)
            row.verdict("64 in flight, Predict req/s ÷ two-hop", f"{ratio:.2f}×", "≥ 3×",
                        ratio >= 3)  # fmt: skip
            row.verdict("64 in flight, p99 Predict vs two-hop",
                        f"{p64['p99_ms']:.0f} vs {p99:.0f} ms", "lower", p64["p99_ms"] < p99)  # fmt: skip
    mls = _cells(results, "MLServer V2", 64)
    for config in dict.fromkeys(r["config"] for r in results if r["system"] == "ours V2"):
        v2 = _cell(results, "ours V2", 64, config)
        if v2 and mls:
            ratio = v2["rps"] / max(r["rps"] for r in mls)
            _Row(lines, config, NO_STORE).verdict("64 in flight, V2 req/s ÷ MLServer",
                                                  f"{ratio:.2f}×", "≥ 1.5×", ratio >= 1.5)  # fmt: skip
    for config in dict.fromkeys(r["config"] for r in results if r["system"] == "ours REST"):
        _rest_rows(_Row(lines, config, NO_STORE), results)
    return lines


def _rest_rows(row: _Row, results: list[dict[str, Any]]) -> None:
    """REST against MLServer's REST (its best configuration) and against our gRPC V2."""
    seq, p64 = (
        _cell(results, "ours REST", 1, row.config),
        _cell(results, "ours REST", 64, row.config),
    )
    mls1, mls64 = _cells(results, "MLServer REST", 1), _cells(results, "MLServer REST", 64)
    if seq and mls1:
        best = min(r["p50_ms"] for r in mls1)
        row.info("sequential p50, REST ÷ MLServer REST",
                 f"{seq['p50_ms'] / best:.2f}× ({seq['p50_ms']:.2f} vs {best:.2f} ms)")  # fmt: skip
    if p64 and mls64:
        best = max(r["rps"] for r in mls64)
        row.info("64 in flight, REST req/s ÷ MLServer REST",
                 f"{p64['rps'] / best:.2f}× ({p64['rps']:,.0f} vs {best:,.0f} req/s)")  # fmt: skip
    grpc1, grpc64 = (
        _cell(results, "ours V2", 1, row.config),
        _cell(results, "ours V2", 64, row.config),
    )
    if seq and grpc1:
        row.info("sequential p50, REST ÷ gRPC V2 (ours)",
                 f"{seq['p50_ms'] / grpc1['p50_ms']:.2f}× ({seq['p50_ms']:.2f} vs "
                 f"{grpc1['p50_ms']:.2f} ms)")  # fmt: skip
    if p64 and grpc64:
        row.info("64 in flight, REST req/s ÷ gRPC V2 (ours)",
                 f"{p64['rps'] / grpc64['rps']:.2f}× ({p64['rps']:,.0f} vs "
                 f"{grpc64['rps']:,.0f} req/s)")  # fmt: skip


@dataclass
class _Row:
    """Appends target rows for one configuration and online store to ``lines``."""

    lines: list[str]
    config: str
    online: str

    def verdict(self, name: str, measured: str, goal: str, ok: bool) -> None:
        verdict = "PASS" if ok else "**MISS**"
        self.lines.append(f"| {name} | {self.config} | {self.online} | {measured} | {goal} | "
                          f"{verdict} |")  # fmt: skip

    def info(self, name: str, measured: str) -> None:
        self.lines.append(f"| ({name}) | {self.config} | {self.online} | {measured} | — | — |")


def _cell(results: list[dict[str, Any]], system: str, k: int, config: str | None = None,
          online: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    for r in results:
        if (r["system"] == system and r["inflight"] == k and config in (None, r["config"])
                and online in (None, r["online"])):  # fmt: skip
            return r
    return None


def _cells(results: list[dict[str, Any]], system: str, k: int, online: str | None = None
           ) -> list[dict[str, Any]]:  # fmt: skip
    return [r for r in results
            if r["system"] == system and r["inflight"] == k and online in (None, r["online"])]  # fmt: skip


def footer(results: list[dict[str, Any]], facts: RunFacts, checks: list[str]) -> list[str]:
    """Answers, anchors, date, machine and versions."""
    lines = [f"Answers: {c}" for c in dict.fromkeys(checks)]
    details = dict.fromkeys(f"{r['config']} = {r['detail']}" for r in results)
    lines.append("Configurations: " + "; ".join(details))
    waited = sum(r["waited_s"] for r in results)
    lines.append(f"Quiet: waited {waited:.0f} s in all, before cells, for other processes to "
                 "leave the CPU (--quiet-wait, --quiet-budget).")  # fmt: skip
    noisy = [r for r in results if r["other_cpu_share"] > 0.1]
    if noisy:
        lines.append(f"Noise: {len(noisy)} of {len(results)} cells ran while other processes "
                     f"took over 10 % of the machine (up to "
                     f"{max(r['other_cpu_share'] for r in noisy):.0%}); rerun when it is quiet.")  # fmt: skip
    for r in results:
        if r["system"] in ("ours Predict", "echo"):
            fallbacks = r["outcomes"].get("FALLBACK", 0)
            lines.append(f"Decisions, {r['system']} {r['inflight']} in flight ({r['config']}, "
                         f"{r['online']}): {r['outcomes']}; FALLBACK {fallbacks}")  # fmt: skip
        if r["errors"]:
            lines.append(f"Errors, {r['system']} {r['inflight']} in flight ({r['online']}): "
                         f"{r['error_kinds']}")  # fmt: skip
    for system, (p50, p99) in ANCHORS.items():
        for seq in _cells(results, system, 1):
            lines.append(f"Anchor {system} ({seq['online']}), sequential: measured on 2026-11-21 at "
                         f"{p50} ms p50" + (f" / {p99} ms p99" if p99 else "")
                         + f"; here {seq['p50_ms']:.2f} / {seq['p99_ms']:.2f} ms")  # fmt: skip
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    ours = {d: metadata.version(d) for d in
            ("feast", "scikit-learn", "grpcio", "protobuf", "numpy", "pandas", "pyarrow",
             "redis")}  # fmt: skip
    lines += [
        f"Date: {date}",
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}. "
        "Client, servers and whatever else runs share the 2 cores: 'other load' is the share "
        "of the machine's CPU taken by other processes during a cell.",
        f"Versions, ours: {_fmt_versions(ours)}; serving clock --now {facts.now}",
    ]
    if facts.anchor_versions:
        anchors = facts.anchor_versions
        lines.append(f"Versions, anchors: feast venv {_fmt_versions(anchors['feast'])}; "
                     f"mlserver venv {_fmt_versions(anchors['mlserver'])}")  # fmt: skip
    return lines


def _fmt_versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    import psutil

    return float(psutil.virtual_memory().total / 2**30)
