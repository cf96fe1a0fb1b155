"""The data plane without a transport, the way MLServer tests its ``DataPlane``: the
predictor (:mod:`serving.dataplane.predictor`) built as the gRPC server builds it, on a
trained workspace whose online store is the real SQLite file, called with plain Python
types. No gRPC or protobuf here: what the transport adds is tested in test_serving.py.

Promised: a prediction equals the batch score of the same entities at the same moment
(:func:`framework.models.batch_score.score_entities`) and the pipeline's own score of
the features it served; an unknown model is not found; bad input is ``InvalidInput``
naming the field; an unreachable online store gives the version's fallback, while a
value parity cannot take is ``InternalError`` — never a fallback.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from framework.models.batch_score import score_entities
from framework.models.estimator import feature_frame, score
from framework.registry.model_registry import NotFoundError
from serving.dataplane.errors import InternalError, InvalidInput
from serving.dataplane.predictor import ACCEPT, FALLBACK, REVIEW, PredictInput, Predictor, RowInput
from serving.dataplane.routing import VALIDATE
from tests.support.fraud_requests import recent_rows
from tests.support.online_values import stored_as, stored_as_text
from tests.support.workspaces import Champion

pytestmark = pytest.mark.integration
MODEL = "fraud_model"


class Plane:
    """The predictor over the champion workspace, and what it reported through its hooks."""

    def __init__(self, champion: Champion, **options: Any) -> None:
        self.champion = champion
        self.fallbacks: Counter[str] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.logged: list[pa.Table] = []
        self.predictor = Predictor(
            champion.registry,
            champion.store,
            max_rows=500,
            log=lambda model, rows: self.logged.append(rows.to_table()),
            clock=options.pop("clock", champion.now.timestamp),
            on_fallback=lambda ref, cause: self.fallbacks.update([cause]),
            on_error=lambda model, stage: self.errors.update([(model, stage)]),
            feature_timeout=0.5,
            **options,
        )
        refs, failed = self.predictor.warm_up([f"{MODEL}@champion"])
        assert failed == {} and [str(r) for r in refs] == [f"{MODEL}:1"]

    def predict(self, rows: list[dict[str, Any]], **options: Any) -> list[Any]:
        request = PredictInput(
            model_name=options.pop("model_name", MODEL),
            rows=[RowInput(r["entity_keys"], r["request_data"]) for r in rows],
            **options,
        )
        return self.predictor.predict(request)


@pytest.fixture(scope="module")
def plane(champion: Champion) -> Iterator[Plane]:
    plane = Plane(champion)
    try:
        yield plane
    finally:
        plane.predictor.close()


@pytest.fixture(scope="module")
def rows(champion: Champion) -> list[dict[str, Any]]:
    return recent_rows(champion.workspace, 30)


# ------------------------------------------------------------------ the same numbers


def test_a_prediction_equals_the_batch_score_of_the_same_entities_at_that_moment(
    plane: Plane, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = plane.predict(rows, request_id="same-numbers")
    assert [p.row_index for p in out] == list(range(len(rows)))
    assert {p.decision for p in out} <= {ACCEPT, VALIDATE, REVIEW}  # features fresh: no fallback
    entities = tmp_path / "entities.parquet"
    pd.DataFrame(
        [{**r["entity_keys"], **r["request_data"], "event_timestamp": plane.champion.now}
         for r in rows]
    ).to_parquet(entities)  # fmt: skip
    summary = score_entities(
        plane.champion.store, plane.champion.registry, f"{MODEL}@champion", entities,
        tmp_path / "scores.parquet",
    )  # fmt: skip
    assert (summary.model, summary.rows) == (f"{MODEL}:1", len(rows))
    batch = pd.read_parquet(tmp_path / "scores.parquet")
    assert [p.score for p in out] == pytest.approx(batch["score"].tolist(), rel=1e-9, abs=1e-12)
    assert [p.label for p in out] == batch["label"].tolist()
    assert [p.confidence for p in out] == pytest.approx(batch["confidence"].tolist(), rel=1e-9)
    assert {p.model_version for p in out} == {"1"} == set(batch["model_version"].astype(str))


def test_a_prediction_is_the_pipelines_score_of_the_features_it_served(
    plane: Plane, rows: list[dict[str, Any]]
) -> None:
    out = plane.predict(rows, return_features=True)
    loaded = plane.predictor.load(plane.predictor.resolve(MODEL))
    table = pa.Table.from_pylist([p.features for p in out])
    expected = score(
        loaded.model, feature_frame(table, loaded.fields), loaded.task,
        loaded.serving["threshold"],
    )  # fmt: skip
    assert [p.score for p in out] == pytest.approx(list(expected.score), rel=1e-9, abs=1e-12)
    assert [p.label for p in out] == [str(int(x)) for x in expected.label]
    logged = plane.logged[-1]
    assert logged["score"].to_pylist() == [p.score for p in out]
    assert logged["__request_id"].to_pylist() == [out[0].request_id] * len(rows)


# ------------------------------------------------------------------ the client's mistakes


def test_an_unknown_model_or_version_is_not_found(plane: Plane, rows: list[dict[str, Any]]) -> None:
    with pytest.raises(NotFoundError, match="no_such_model"):
        plane.predict(rows[:1], model_name="no_such_model")
    with pytest.raises(
        NotFoundError, match=r"^Model 'fraud_model' has no version 99 \(has: 1\)\.$"
    ):
        plane.predict(rows[:1], version="99")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["request_data"].pop("amount"),
         "rows[1].request_data: missing request field 'amount'."),
        (lambda r: r["entity_keys"].update(user_id="7"),
         "rows[1].entity_keys: entity key 'user_id' must be INT64, got str '7'."),
        (lambda r: r["request_data"].update(colour="red"),
         "rows[1].request_data: unknown request field 'colour' (the model takes: "),
        (lambda r: r["request_data"].update(amount=float("inf")),
         "rows[1].request_data: request field 'amount' must be finite, got inf."),
    ],
    ids=["missing", "wrong-type", "unknown", "infinite"],
)  # fmt: skip
def test_bad_input_is_invalid_input_naming_the_field(
    plane: Plane, rows: list[dict[str, Any]], change: Any, message: str
) -> None:
    bad = [{k: dict(v) for k, v in r.items()} for r in rows[:2]]
    change(bad[1])
    logged = len(plane.logged)
    with pytest.raises(InvalidInput) as err:
        plane.predict(bad)
    assert str(err.value).startswith(message), str(err.value)
    assert len(plane.logged) == logged  # refused before any work: nothing logged


def test_too_many_rows_or_none_are_invalid_input(plane: Plane, rows: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidInput, match=r"^rows: at least one row is required\.$"):
        plane.predict([])
    with pytest.raises(InvalidInput, match=r"^rows: 510 rows exceed the limit of 500\.$"):
        plane.predict(rows[:1] * 510)


# ------------------------------------------------------------------ the store's failures


def online_db(champion: Champion) -> Path:
    return champion.workspace.data / "feast" / "online.db"


def test_an_unreachable_online_store_gives_the_fallback(
    plane: Plane, rows: list[dict[str, Any]]
) -> None:
    """A writer's exclusive lock on the SQLite file (a rollback journal: WAL would let
    readers in): every row answered by the fallback model on the request data, with the
    cause; once the lock is gone, the same answers as before."""
    normal = plane.predict(rows[:4])
    writer = sqlite3.connect(online_db(plane.champion), isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
        before = plane.fallbacks["online store unavailable"]
        writer.execute("BEGIN EXCLUSIVE")
        try:
            down = plane.predict(rows[:4])
        finally:
            writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert [p.decision for p in down] == [FALLBACK] * 4
    for p in down:
        assert p.reasons[0].startswith("fallback because online store unavailable: ")
        assert "database is locked" in p.reasons[0]
        assert p.reasons[1] == "fallback model on amount, hour_of_day"
        assert 0 < p.score < 1
    assert plane.fallbacks["online store unavailable"] - before == 4
    back = plane.predict(rows[:4])
    assert [p.score for p in back] == [p.score for p in normal]


def test_a_value_parity_cannot_take_is_an_internal_error_never_a_fallback(
    plane: Plane, rows: list[dict[str, Any]]
) -> None:
    """``credit_limit`` stored as text (what another writer might leave): the request
    fails with ``InternalError`` naming the model, the feature and the value, counted per
    (model, stage); other users are answered as before."""
    user = rows[0]["entity_keys"]["user_id"]
    before = plane.errors[(MODEL, "feature_lookup")]
    fallbacks = sum(plane.fallbacks.values())
    db = online_db(plane.champion)
    with stored_as_text(db, "parity_user_profile", ("user_id", user), "credit_limit", "forty"):
        with pytest.raises(InternalError) as err:
            plane.predict(rows[:1])
        others = plane.predict(rows[1:3])
    message = str(err.value)
    assert message.startswith(f"{MODEL}:1: parity could not read the features"), message
    assert "'credit_limit'" in message and "'forty'" in message
    assert plane.errors[(MODEL, "feature_lookup")] - before == 1
    assert sum(plane.fallbacks.values()) == fallbacks
    assert FALLBACK not in {p.decision for p in others}


def test_direct_reads_give_the_answers_feast_reads_give(
    plane: Plane, champion: Champion, rows: list[dict[str, Any]]
) -> None:
    """The same requests through the direct SQLite reader (the default) and through
    Feast's ``get_online_features``: identical answers — scores, decisions, reasons and
    served features — for known entities, an entity the store does not hold, a stored
    null, and (a month later, every TTL expired) values too old to use."""
    from framework.features.online_read import DirectReader, FeastReader

    through_feast = Plane(champion, direct_reads=False)
    later = Plane(champion, clock=lambda: champion.now.timestamp() + 30 * 86_400)
    later_feast = Plane(
        champion, direct_reads=False, clock=lambda: champion.now.timestamp() + 30 * 86_400
    )
    try:
        loaded = plane.predictor.load(plane.predictor.resolve(MODEL))
        assert isinstance(loaded.online.reader, DirectReader)
        loaded = through_feast.predictor.load(through_feast.predictor.resolve(MODEL))
        assert isinstance(loaded.online.reader, FeastReader)
        unknown = {**rows[0], "entity_keys": {**rows[0]["entity_keys"], "user_id": 10**9}}
        requests = [*rows[:12], unknown]
        user = rows[1]["entity_keys"]["user_id"]
        db = online_db(champion)
        with stored_as(db, "parity_user_profile", ("user_id", user), "credit_limit", b""):
            pairs = [
                (plane.predict(requests, return_features=True),
                 through_feast.predict(requests, return_features=True)),
                (later.predict(rows[:4], return_features=True),
                 later_feast.predict(rows[:4], return_features=True)),
            ]  # fmt: skip
    finally:
        for p in (through_feast, later, later_feast):
            p.predictor.close()
    seen: set[str] = set()
    for direct, feast in pairs:
        for a, b in zip(direct, feast, strict=True):
            assert (a.score, a.decision, a.reasons, a.features) == (
                b.score, b.decision, b.reasons, b.features,
            )  # fmt: skip
            seen.update(a.reasons)
    text = " ".join(seen)
    assert "(NULL_VALUE)" in text and "(OUTSIDE_MAX_AGE)" in text, text
    # The unknown user: its views' features not found, too few left to score.
    answer = pairs[0][0][-1]
    assert answer.decision == FALLBACK and answer.features is not None
    assert answer.features["credit_limit"] is None


# ------------------------------------------------------------------ whole requests merged


def _while_a_run_holds_the_version(
    plane: Plane, requests: list[list[dict[str, Any]]], prefix: str
) -> tuple[list[Any], list[list[str]]]:
    """Send ``requests[0]``, hold its run (in its log append) until the others wait for
    the version, then let go: each request's answers (or error), and the request ids of
    each log append meanwhile."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    loaded = plane.predictor.load(plane.predictor.resolve(MODEL))
    batcher = loaded.requests
    assert batcher is not None
    log = plane.predictor.log
    assert log is not None
    gate, held = threading.Event(), threading.Event()
    appends: list[list[str]] = []

    def gated(model: str, logged: Any) -> None:
        appends.append(logged.to_table().column("__request_id").to_pylist())
        if len(appends) == 1:
            held.set()
            gate.wait(10)
        log(model, logged)

    plane.predictor.log = gated
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [
                pool.submit(plane.predict, requests[0], request_id=f"{prefix}-0",
                            return_features=True)
            ]  # fmt: skip
            assert held.wait(10)
            futures += [
                pool.submit(plane.predict, r, request_id=f"{prefix}-{i}", return_features=True)
                for i, r in enumerate(requests[1:], start=1)
            ]
            while len(batcher._pending) < len(requests) - 1:
                time.sleep(0.001)
            gate.set()
            answers = [f.exception() or f.result() for f in futures]
    finally:
        plane.predictor.log = log
    return answers, appends


def test_requests_waiting_for_a_run_are_scored_in_one_and_each_gets_its_own_answers(
    champion: Champion, rows: list[dict[str, Any]]
) -> None:
    """Requests that arrive while a run holds their version are scored in the next run,
    together: one read, one model call, one log append. Each caller gets exactly what
    it gets alone (request id, row indices, scores, decisions, reasons, features), and
    each logged row carries its own request's id, latency and CPU share."""
    plane = Plane(champion)
    try:
        requests = [rows[i : i + 1 + i % 3] for i in range(0, 24, 3)]  # 1 to 3 rows each
        alone = [
            plane.predict(r, request_id=f"alone-{i}", return_features=True)
            for i, r in enumerate(requests)
        ]
        batcher = plane.predictor.load(plane.predictor.resolve(MODEL)).requests
        assert batcher is not None and batcher.calls == len(requests)  # one run each
        logged_before = len(plane.logged)
        together, appends = _while_a_run_holds_the_version(plane, requests, "together")
        assert batcher.calls == len(requests) + 2  # the first alone, then the rest in one
        assert appends[0] == ["together-0"] * len(requests[0])
        assert len(appends) == 2  # the rest in one append, in the order they reached it
        assert sorted(appends[1]) == sorted(
            f"together-{i}" for i, r in enumerate(requests) if i for _ in r
        )
        for i, (a, t) in enumerate(zip(alone, together, strict=True)):
            assert [o.request_id for o in t] == [f"together-{i}"] * len(requests[i])
            assert [o.row_index for o in t] == list(range(len(requests[i])))
            assert [(o.score, o.decision, o.reasons, o.features) for o in t] == [
                (o.score, o.decision, o.reasons, o.features) for o in a
            ]
        logged = pa.concat_tables(plane.logged[logged_before:]).to_pylist()
        assert sorted((r["__request_id"], r["__row_index"]) for r in logged) == sorted(
            (f"together-{i}", j) for i, r in enumerate(requests) for j in range(len(r))
        )
        assert all(r["latency_seconds"] > 0 and r["cpu_seconds"] > 0 for r in logged)
    finally:
        plane.predictor.close()


def test_a_request_that_fails_a_merged_run_fails_alone(
    champion: Champion, rows: list[dict[str, Any]]
) -> None:
    """A request whose stored value parity cannot take, merged with others: the run is
    retried request by request, so only that request fails (``InternalError``, counted
    once) and the others get their answers."""
    plane = Plane(champion)
    try:
        requests = [rows[i : i + 2] for i in range(0, 10, 2)]
        alone = [plane.predict(r) for r in requests]
        bad = rows[27]
        user = bad["entity_keys"]["user_id"]
        assert user not in {r["entity_keys"]["user_id"] for q in requests for r in q}
        errors = plane.errors[(MODEL, "feature_lookup")]
        db = online_db(champion)
        with stored_as_text(db, "parity_user_profile", ("user_id", user), "credit_limit", "x"):
            answers, appends = _while_a_run_holds_the_version(
                plane, [requests[0], [bad], *requests[1:]], "mixed"
            )
        assert isinstance(answers[1], InternalError) and "'credit_limit'" in str(answers[1])
        assert plane.errors[(MODEL, "feature_lookup")] - errors == 1
        for a, got in zip(alone, [answers[0], *answers[2:]], strict=True):
            assert [(o.score, o.decision) for o in got] == [(o.score, o.decision) for o in a]
        # The first run, then each of the merged run's requests alone (the bad one
        # is not logged: it was not answered).
        assert appends[0] == ["mixed-0"] * 2
        assert sorted(appends[1:]) == [[f"mixed-{i}"] * 2 for i in (2, 3, 4, 5)]
    finally:
        plane.predictor.close()


def test_closing_the_predictor_closes_its_online_store_connections(
    champion: Champion, rows: list[dict[str, Any]]
) -> None:
    """The direct SQLite reader's connections (one per thread that read) are closed when
    the predictor is, not left to the garbage collector."""
    db = online_db(champion).resolve()

    def open_on_db() -> set[str]:
        return {fd.name for fd in Path("/proc/self/fd").iterdir() if _points_to(fd, db)}

    before = open_on_db()
    plane = Plane(champion)
    plane.predict(rows[:2])
    opened = open_on_db() - before
    assert opened  # the reader's connection, this thread's
    plane.predictor.close()
    assert not opened & open_on_db()


def _points_to(fd: Path, target: Path) -> bool:
    import os

    try:
        return Path(os.readlink(fd)) == target
    except OSError:  # closed meanwhile
        return False
