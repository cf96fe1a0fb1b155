"""Ground truth: outcome files validated whole, outcomes joined to the prediction log by
request id or by entity keys + time, duplicates, late, ambiguous and unknown outcomes
counted (every outcome accounted for exactly once), live quality per version and decision,
the ReportOutcome RPC, ``parity feedback``, and the joined outcomes as a label source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.duck import connect
from framework.errors import DataError
from framework.logs import outcome_join, outcomes
from framework.logs.outcomes import OutcomeStore
from framework.loop import feedback
from tests.support.prediction_logs import MODEL, T0, toy_rows, write_log
from tests.support.workspaces import Served

KEYS = ["user_id"]


def _log(tmp_path: Path, n: int = 200, seed: int = 0) -> tuple[Path, pa.Table]:
    rows = toy_rows(np.random.default_rng(seed), n)
    return write_log(tmp_path, rows), rows


def _join(log: Path, store: OutcomeStore, **kw: Any) -> tuple[pa.Table, dict[str, int]]:
    from framework.logs.reader import open_log

    con = connect()
    try:
        open_log(log, MODEL, con=con)
        return outcome_join.match(con, outcome_join.outcomes_table(store, KEYS), KEYS, **kw)
    finally:
        con.close()


def test_outcomes_join_by_request_id_and_by_keys_and_time(tmp_path: Path) -> None:
    log, rows = _log(tmp_path)
    ids, users = rows["__request_id"].to_pylist(), rows["user_id"].to_pylist()
    times = rows["__timestamp"].to_pylist()
    store = OutcomeStore(tmp_path / "outcomes")
    store.record_many(
        [{"request_id": ids[i], "label": 1.0} for i in range(10)]  # by id
        + [{"entity_keys": {"user_id": users[i]}, "event_time": times[i] + timedelta(seconds=3),
            "label": 0.0} for i in range(10, 15)]  # by keys + time, 3 s off
        + [{"request_id": "nobody-asked", "label": 1.0}]  # unknown id
        + [{"entity_keys": {"user_id": 10_000}, "event_time": T0, "label": 1.0}]  # unknown keys
        + [{"request_id": ids[0], "entity_keys": {"user_id": users[0] + 1}, "label": 1.0}]
    )  # fmt: skip
    # (Received today, for predictions made in March: late unless the horizon is long.)
    joined, counts = _join(log, store, late_after=timedelta(days=3650))
    assert counts == {"outcomes": 18, "joined": 15, "by_request_id": 10, "by_entity_keys": 5,
                      "duplicates": 0, "ambiguous": 0, "unknown": 3, "late": 0}  # fmt: skip
    assert _join(log, store)[1]["late"] == 15
    by_id = dict(zip(joined["__request_id"].to_pylist(), joined["outcome"].to_pylist(),
                     strict=True))  # fmt: skip
    assert all(by_id[ids[i]] == 1.0 for i in range(10))
    # A key match picks the prediction for that user nearest in time (within 10 min).
    for i in range(10, 15):
        same_user = [j for j in range(len(ids)) if users[j] == users[i]]
        nearest = min(same_user, key=lambda j: abs((times[j] - times[i]).total_seconds() - 3))
        assert by_id[ids[nearest]] == 0.0
    # Outside the window: no match.
    _, strict = _join(log, store, within=timedelta(seconds=1), late_after=timedelta(days=3650))
    assert strict["by_entity_keys"] == 0 and strict["unknown"] == 3 + 5


def test_duplicates_late_and_ambiguous_outcomes_are_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    one = toy_rows(rng, 50)
    two = toy_rows(rng, 2, prefix="multi")  # one request of two rows
    two = two.set_column(0, "__request_id", pa.array(["multi"] * 2))
    two = two.set_column(1, "__row_index", pa.array([0, 1], pa.int32()))
    log = write_log(tmp_path, one, two)
    ids = one["__request_id"].to_pylist()
    store = OutcomeStore(tmp_path / "outcomes")
    t = one["__timestamp"].to_pylist()
    store.record_many(
        [
            {"request_id": ids[0], "label": 0.0, "observed_at": t[0] + timedelta(hours=1)},
            {"request_id": ids[0], "label": 1.0, "observed_at": t[0] + timedelta(hours=2)},
            {"request_id": ids[1], "label": 1.0, "observed_at": t[1] + timedelta(days=45)},
            {"request_id": "multi", "label": 1.0},  # which row?
            {
                "request_id": "multi",
                "row_index": 1,
                "label": 0.0,  # this one
                "observed_at": T0 + timedelta(hours=3),
            },
        ]
    )
    joined, counts = _join(log, store)
    assert counts["duplicates"] == 1 and counts["late"] == 1 and counts["ambiguous"] == 1
    assert counts["joined"] == 3 and counts["unknown"] == 0
    got = {(r, i): o for r, i, o in zip(joined["__request_id"].to_pylist(),
                                        joined["__row_index"].to_pylist(),
                                        joined["outcome"].to_pylist(), strict=True)}  # fmt: skip
    assert got[(ids[0], 0)] == 1.0  # the correction received later wins
    assert got[("multi", 1)] == 0.0


@settings(max_examples=30, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, 59), st.sampled_from(["id", "keys", "unknown"]),
                  st.integers(0, 1)),
        min_size=1, max_size=40,
    )
)  # fmt: skip
def test_every_outcome_is_accounted_for_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, picks: list[tuple[int, str, int]]
) -> None:
    tmp = tmp_path_factory.mktemp("complete")
    log, rows = _log(tmp, 60, seed=2)
    ids, users = rows["__request_id"].to_pylist(), rows["user_id"].to_pylist()
    times = rows["__timestamp"].to_pylist()
    store = OutcomeStore(tmp / "outcomes")
    outcomes = []
    for i, how, label in picks:
        if how == "id":
            outcomes.append({"request_id": ids[i], "label": float(label)})
        elif how == "keys":
            outcomes.append({"entity_keys": {"user_id": users[i]}, "event_time": times[i],
                             "label": float(label)})  # fmt: skip
        else:
            outcomes.append({"request_id": f"ghost-{i}", "label": float(label)})
    store.record_many(outcomes)
    joined, c = _join(log, store)
    assert c["outcomes"] == len(picks)
    assert c["joined"] + c["duplicates"] + c["ambiguous"] + c["unknown"] == len(picks)
    assert c["unknown"] == sum(how == "unknown" for _, how, _ in picks)
    pairs = list(zip(joined["__request_id"].to_pylist(), joined["__row_index"].to_pylist(),
                     strict=True))  # fmt: skip
    assert len(pairs) == len(set(pairs))  # one outcome per prediction


def test_live_quality_per_version_and_decision(tmp_path: Path) -> None:
    from framework.registry.model_registry import ARTIFACT, ModelRegistry
    from tests.support.prediction_logs import toy_manifest

    registry = ModelRegistry(tmp_path / "models")
    registry.register(MODEL, {ARTIFACT: b"x"}, toy_manifest(np.random.default_rng(0)))
    log, rows = _log(tmp_path, 400, seed=3)
    ids, scores = rows["__request_id"].to_pylist(), rows["score"].to_numpy()
    truth = (np.random.default_rng(4).random(400) < scores * 2).astype(float)
    store = OutcomeStore(tmp_path / "outcomes")
    store.record_many([{"request_id": ids[i], "label": truth[i]} for i in range(400)])
    report = feedback.feedback_report(log, tmp_path / "outcomes", registry, MODEL,
                                      data=tmp_path / "data")  # fmt: skip
    v = report.versions[0].quality
    assert v.labelled == 400 and report.counts["joined"] == 400
    from sklearn.metrics import roc_auc_score

    assert v.live is not None and v.by_decision is not None
    assert v.live["roc_auc"] == pytest.approx(roc_auc_score(truth, scores))
    decisions = rows["decision"].to_pylist()
    for d, b in v.by_decision.items():
        mask = np.array([x == d for x in decisions])
        assert b.labelled == mask.sum()
        assert b.positive_rate == pytest.approx(truth[mask].mean())
    # The label source: keys, label, both times, as a table the trainer can read.
    assert report.label_source is not None
    source = pq.read_table(report.label_source.path)
    assert source.num_rows == 400 and {"user_id", "label", "event_timestamp",
                                       "label_timestamp"} <= set(source.column_names)  # fmt: skip


# ------------------------------------------------------------------ outcome files


def test_outcome_files_in_three_formats(tmp_path: Path) -> None:
    rows = [
        {"request_id": "a", "row_index": 1, "label": 1},
        {"user_id": 7, "event_time": "2026-03-01T08:00:00Z", "label": 0,
         "observed_at": "2026-03-05T00:00:00+00:00"},
    ]  # fmt: skip
    (tmp_path / "o.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "o.csv").write_text(
        "request_id,row_index,user_id,event_time,label,observed_at\n"
        "a,1,,,1,\n,,7,2026-03-01T08:00:00Z,0,2026-03-05T00:00:00+00:00\n"
    )
    columns = ["request_id", "row_index", "user_id", "event_time", "label", "observed_at"]
    pq.write_table(pa.Table.from_pylist([{**dict.fromkeys(columns), **r} for r in rows]),
                   tmp_path / "o.parquet")  # fmt: skip
    parsed = [feedback.read_outcome_file(tmp_path / f"o.{x}", KEYS)
              for x in ("jsonl", "csv", "parquet")]  # fmt: skip
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][1]["event_time"] == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert parsed[0][0] == {"request_id": "a", "label": 1.0, "entity_keys": {}, "row_index": 1}


def test_string_keys_keep_their_text_from_every_format_and_match_as_text(
    tmp_path: Path,
) -> None:
    """A STRING key read from CSV stayed text only by luck and was then dropped by the
    int64-only outcome table: "007" and "02139" are kept as written, and stored outcomes
    carry them into the table they are matched from."""
    keys = {"postcode": "STRING"}
    (tmp_path / "o.csv").write_text(
        "postcode,event_time,label\n007,2026-03-01T08:00:00Z,1\n02139,2026-03-01T09:00:00Z,0\n"
    )
    rows = feedback.read_outcome_file(tmp_path / "o.csv", keys)
    assert [r["entity_keys"] for r in rows] == [{"postcode": "007"}, {"postcode": "02139"}]
    (tmp_path / "o.jsonl").write_text('{"postcode": 2139, "event_time": "2026-03-01", "label": 1}')
    with pytest.raises(DataError, match=r"row 1: postcode: must be text \(STRING\), got 2139"):
        feedback.read_outcome_file(tmp_path / "o.jsonl", keys)
    store = OutcomeStore(tmp_path / "outcomes")
    feedback.ingest(tmp_path / "o.csv", store, keys)
    table = outcome_join.outcomes_table(store, keys)
    assert table.column("key_postcode").to_pylist() == ["007", "02139"]
    assert table.schema.field("key_postcode").type == pa.string()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("request_id,label\na,1\nb,\n", "row 2: label: required"),
        ("request_id,label\na,yes\n", "row 1: label: must be a number"),
        ("user_id,label\n7,1\n", "row 1: give request_id, or every entity key (user_id) and "
                                  "event_time"),
        ("user_id,event_time,label\n7.5,2026-03-01,1\n", "row 1: user_id: must be an integer"),
        ("user_id,event_time,label\n7,yesterday,1\n", "row 1: event_time: not an ISO 8601"),
        ("request_id,colour,label\na,red,1\n", "unknown column 'colour'"),
        ("request_id,row_index,label\na,-1,1\n", "row_index: must be >= 0"),
    ],
)  # fmt: skip
def test_a_bad_outcome_file_is_refused_whole(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    store = OutcomeStore(tmp_path / "outcomes")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        feedback.ingest(path, store, KEYS)
    assert store.read() == []  # nothing half-applied


# ------------------------------------------------------------------ the server and the CLI


@pytest.mark.integration
def test_report_outcome_and_parity_feedback_against_a_running_server(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import grpc

    from framework.cli import main as cli
    from serving.grpc.client import PredictionClient
    from serving.stubs.parity.v1 import prediction_pb2 as pb
    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc
    from tests.support.fraud_requests import recent_rows

    rows = recent_rows(served, 6)
    with PredictionClient(served.target) as client:
        out = client.predict("fraud_model", rows, request_id="fb-1")
    assert served.running.prediction_log.flush(30)
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        # By request id and row.
        stub.ReportOutcome(pb.ReportOutcomeRequest(request_id="fb-1", row_index=0, label=1.0))
        # By entity keys + time (no request id).
        by_keys = pb.ReportOutcomeRequest(label=0.0)
        for k, v in rows[1]["entity_keys"].items():
            by_keys.entity_keys[k].int64_value = v
        by_keys.event_time.FromDatetime(served.now)
        stub.ReportOutcome(by_keys)
        with pytest.raises(grpc.RpcError) as bad:  # neither: the client's mistake, named
            stub.ReportOutcome(pb.ReportOutcomeRequest(label=1.0))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "request_id: required, unless" in bad.value.details()  # type: ignore[attr-defined]
    # A file for the other rows, by request id and row.
    path = tmp_path / "outcomes.csv"
    path.write_text("request_id,row_index,label\n" + "".join(f"fb-1,{i},0\n" for i in range(2, 6)))
    repo = served.workspace.repo
    code = cli.main(["feedback", str(path), "--repo", str(repo), "--model", "fraud_model",
                     "--request-prefix", "fb-", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stored"] == 4
    c = report["counts"]
    assert c["joined"] == 6 and c["by_entity_keys"] == 1 and c["by_request_id"] == 5
    version = next(v for v in report["versions"] if v["version"] == out[0]["model_version"])
    assert version["labelled"] == 6
    labels = pq.read_table(report["label_source"]["path"])
    assert labels.num_rows == 6 and set(labels["request_id"].to_pylist()) == {"fb-1"}
    assert {"amount", "hour_of_day", "merchant_id"} <= set(labels.column_names)


def test_a_spec_with_feedback_trains_on_the_joined_outcomes(tmp_path: Path) -> None:
    from framework.models.label_query import load_labels
    from framework.models.spec import spec_from_dict

    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    t = datetime(2026, 3, 1, tzinfo=UTC)
    pq.write_table(pa.table({"user_id": [1, 2], "is_fraud": [0, 1],
                             "ts": pa.array([t, t], pa.timestamp("us", tz="UTC"))}),
                   data / "raw" / "labels.parquet")  # fmt: skip
    source = outcomes.label_source(data, "m")
    source.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "user_id": [2, 3], "label": [0.0, 1.0],
        "event_timestamp": pa.array([t, t + timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
        "label_timestamp": pa.array([t, t], pa.timestamp("us", tz="UTC")),
        "request_id": ["a", "b"], "model_version": ["1", "1"],
    }), source)  # fmt: skip
    raw = {
        "name": "m", "feature_service": "fs",
        "labels": {"query": "SELECT * FROM read_parquet('raw/labels.parquet')",
                   "keys": ["user_id"], "column": "is_fraud", "event_timestamp": "ts"},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    }  # fmt: skip
    assert load_labels(spec_from_dict(raw), data).num_rows == 2
    raw["labels"]["feedback"] = True  # type: ignore[index]
    table = load_labels(spec_from_dict(raw), data)
    # User 2 at t is in the query already; user 3 is new.
    assert sorted(zip(table["user_id"].to_pylist(), table["is_fraud"].to_pylist(),
                      strict=True)) == [(1, 0), (2, 1), (3, 1)]  # fmt: skip
