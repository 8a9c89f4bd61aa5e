"""The metadata store on both databases (a SQLite file and PostgreSQL).

Covers opening and migrating (the migrations reproduce ``keel.meta.schema``
exactly, a newer schema is refused) and the tracking tables: writing batches
of params, tags and metrics, the per-metric summaries kept in
``latest_metrics``, and searching runs with filters, ordering and pages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id
from keel.core.filters import parse_filter, parse_order_by
from keel.core.values import encode_param
from keel.errors import InvalidInput, NotFound, SchemaTooNew, StoreError
from keel.meta import Database, migrate, open_database
from keel.meta.migrate import HEAD, current_revision, ensure_schema
from keel.meta.schema import metadata
from keel.meta.tracking import TrackingStore

INF = math.inf
NAN = math.nan


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated, empty database (closed afterwards)."""
    database = open_database(database_url)
    try:
        ensure_schema(database)
        yield database
    finally:
        database.close()


@pytest.fixture
def tracking(db: Database) -> TrackingStore:
    return TrackingStore(db)


def _same(a: float, b: float) -> bool:
    """Equal, counting NaN as equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


# PostgreSQL's monthly span partitions (and the default one) are made at run time (keel.meta.trace_partitions)
_SPAN_PARTITION = re.compile(r"spans_(default|p[0-9]{6})")


# -- opening and migrating ------------------------------------------------------
def test_ensure_schema_creates_every_table(db: Database) -> None:
    with db.read() as conn:
        tables = {t for t in conn.table_names() if not _SPAN_PARTITION.fullmatch(t)}

    assert tables == set(metadata.tables) | {"alembic_version"}
    assert current_revision(db) == HEAD


def test_reopening_a_migrated_database_changes_nothing(
    db: Database, tracking: TrackingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking.create_project("kept", "survives reopening")
    migrations: list[str] = []
    monkeypatch.setattr(migrate, "_upgrade", lambda database: migrations.append(database.url))
    again = open_database(db.url)
    try:
        ensure_schema(again)
        ensure_schema(again)
        names = [p.name for p, _ in TrackingStore(again).list_projects()]
    finally:
        again.close()

    assert names == ["kept"]
    assert migrations == []


def _server_default_differs(
    _context: Any,
    _inspected: Any,
    _declared: Any,
    reflected: str | None,
    _default: Any,
    rendered: str | None,
) -> bool | None:
    """Alembic's default comparison, except that SQLite's ``('')`` equals a declared ``''``."""
    if reflected is not None and rendered is not None and reflected.strip("()").strip("'") == rendered:
        return False
    return None  # let Alembic decide


def test_migrations_reproduce_the_declared_schema(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    opts = {
        "compare_type": True,
        "compare_server_default": _server_default_differs,
        "include_object": lambda _obj, name, kind, _reflected, _other: not (
            kind == "table" and _SPAN_PARTITION.fullmatch(name)
        ),
    }
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)

    assert differences == []


def test_a_schema_from_a_newer_keel_is_refused_with_a_clear_message(database_url: str, db: Database) -> None:
    with db.write() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    newer = open_database(database_url)
    try:
        with pytest.raises(SchemaTooNew) as caught:
            ensure_schema(newer)
    finally:
        newer.close()

    error = caught.value
    assert isinstance(error, StoreError) and error.code == "schema_too_new"
    assert "9999" in error.message and HEAD in error.message
    assert error.hint is not None and "upgrade keel" in error.hint
    assert "sqlalchemy" not in str(error).lower() and "Traceback" not in str(error)
    assert current_revision(db) == "9999"  # left as it was, not "migrated" backwards


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("mysql://user@localhost/db", InvalidInput),
        ("not a url://at all", InvalidInput),
        ("sqlite:////no/such/folder/keel.db", StoreError),
        ("postgresql+psycopg://keel@127.0.0.1:1/postgres", StoreError),  # nothing listens on port 1
    ],
    ids=["unsupported", "malformed", "sqlite-missing-folder", "postgres-refused"],
)
def test_a_bad_database_url_raises_a_keel_error(url: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        database = open_database(url)
        try:
            ensure_schema(database)
        finally:
            database.close()

    assert "Traceback" not in str(caught.value)
    assert caught.value.hint  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_a_missing_postgres_database_raises_store_error(pg_url: str) -> None:
    database = open_database(pg_url.rsplit("/", 1)[0] + "/no_such_database")
    try:
        with pytest.raises(StoreError, match="no_such_database"):
            ensure_schema(database)
    finally:
        database.close()


# -- writing runs -----------------------------------------------------------------
def _run(tracking: TrackingStore, project: str = "exp", name: str = "run", start: int = 1_000, **kw: Any) -> str:
    run_id = new_run_id()
    tracking.create_run(run_id, project, name, start, **kw)
    return run_id


def _params(run_id: str, values: dict[str, Any], overwrite: bool = False) -> list[tuple[str, str, str, str, bool]]:
    return [(run_id, key, *encode_param(key, value), overwrite) for key, value in values.items()]


def test_create_run_and_read_it_back(tracking: TrackingStore) -> None:
    parent = _run(tracking, name="parent", start=1_000)
    child = _run(
        tracking,
        name="child",
        start=2_000,
        parent_id=parent,
        context={"git": "abc"},
        tag_rows=[("team", "search")],
    )

    record = tracking.get_run(child)

    assert (record.project, record.name, record.status, record.start_time) == (
        "exp",
        "child",
        "running",
        2_000,
    )
    assert (record.parent_id, record.context, record.tags) == (
        parent,
        {"git": "abc"},
        {"team": "search"},
    )
    assert tracking.children(parent) == [child]
    with pytest.raises(NotFound):
        tracking.get_run(new_run_id())
    with pytest.raises(NotFound):
        _run(tracking, parent_id=new_run_id())


def test_params_and_tags_read_back_as_logged(tracking: TrackingStore) -> None:
    run_id = _run(tracking)
    values = {
        "model": "gpt-4",
        "top_k": 5,
        "lr": 0.001,
        "use_rag": True,
        "stop": None,
        "layers": [1, 2, {"a": "b"}],
        "nan": NAN,
        "inf": INF,
        "ninf": -INF,
        "unicode": "日本語 ✓",
    }
    tracking.write_batch(WriteBatch(params=_params(run_id, values), tags=[(run_id, "team", "search")]))
    tracking.write_batch(WriteBatch(tags=[(run_id, "team", "chat")]))  # tags can change

    record = tracking.get_run(run_id)

    got = dict(record.params)
    assert math.isnan(got.pop("nan"))
    expected = dict(values)
    expected.pop("nan")
    assert got == expected
    assert type(got["top_k"]) is int and type(got["use_rag"]) is bool
    assert record.tags == {"team": "chat"}


def test_a_logged_param_is_fixed_unless_overwritten(tracking: TrackingStore) -> None:
    run_id = _run(tracking)
    tracking.write_batch(WriteBatch(params=_params(run_id, {"lr": 0.1})))

    tracking.write_batch(WriteBatch(params=_params(run_id, {"lr": 0.2})))  # ignored, not an error
    assert tracking.get_run(run_id).params == {"lr": 0.1}
    tracking.write_batch(WriteBatch(params=_params(run_id, {"lr": 0.2}, overwrite=True)))
    assert tracking.get_run(run_id).params == {"lr": 0.2}


def test_writing_to_an_unknown_run_raises_not_found_and_writes_nothing(
    tracking: TrackingStore,
) -> None:
    known = _run(tracking)
    batch = WriteBatch(
        metrics=[(known, "acc", 1.0, 0, 1), (new_run_id(), "acc", 1.0, 0, 1)],
        params=_params(known, {"lr": 0.1}),
    )

    with pytest.raises(NotFound):
        tracking.write_batch(batch)
    record = tracking.get_run(known)
    assert (record.metrics, record.params) == ({}, {})


def test_nan_and_infinities_are_stored_faithfully(tracking: TrackingStore) -> None:
    run_id = _run(tracking)
    values = [1.5, NAN, INF, -INF, -0.25]
    tracking.write_batch(WriteBatch(metrics=[(run_id, "m", v, step, 100 + step) for step, v in enumerate(values)]))
    tracking.write_batch(WriteBatch(metrics=[(run_id, "last_nan", NAN, 0, 1), (run_id, "last_inf", INF, 0, 1)]))

    history = tracking.metric_history(run_id, "m")
    summaries = {s.key: s for s in tracking.metric_summaries(run_id)}
    record = tracking.get_run(run_id)

    assert [h.step for h in history] == [0, 1, 2, 3, 4]
    assert all(_same(h.value, v) for h, v in zip(history, values, strict=True))
    m = summaries["m"]
    assert (m.latest, m.step, m.min, m.max, m.count) == (-0.25, 4, -INF, INF, 5)
    assert math.isnan(summaries["last_nan"].latest) and math.isnan(summaries["last_nan"].min)
    assert summaries["last_inf"].latest == INF
    assert math.isnan(record.metrics["last_nan"]) and record.metrics["last_inf"] == INF


def test_metric_summaries_across_batches_and_out_of_order_steps(tracking: TrackingStore) -> None:
    run_id = _run(tracking)
    # (value, step, timestamp), in the order they are logged, over three batches.
    batches = [
        [(0.5, 0, 10), (0.6, 1, 11), (0.4, 5, 12)],
        [(0.9, 3, 20), (0.1, 2, 21)],  # older steps logged later: not the latest
        [(0.7, 5, 30), (NAN, 4, 31)],  # same step as the latest but newer: the latest
    ]
    for rows in batches:
        tracking.write_batch(WriteBatch(metrics=[(run_id, "acc", v, s, t) for v, s, t in rows]))

    (summary,) = tracking.metric_summaries(run_id)

    assert (summary.key, summary.latest, summary.step, summary.timestamp) == ("acc", 0.7, 5, 30)
    assert (summary.min, summary.max, summary.count) == (0.1, 0.9, 7)
    assert tracking.get_run(run_id).metrics == {"acc": 0.7}
    history = tracking.metric_history(run_id, "acc")
    steps = [(h.step, h.timestamp) for h in history]
    assert steps == [(0, 10), (1, 11), (2, 21), (3, 20), (4, 31), (5, 12), (5, 30)]


def test_several_runs_and_keys_in_one_batch(tracking: TrackingStore) -> None:
    a, b = _run(tracking, name="a"), _run(tracking, name="b")
    rows = [(run, key, float(step), step, step) for run in (a, b) for key in ("x", "y") for step in range(50)]
    tracking.write_batch(WriteBatch(metrics=rows))

    for run in (a, b):
        summaries = tracking.metric_summaries(run)
        assert [(s.key, s.latest, s.min, s.max, s.count) for s in summaries] == [
            ("x", 49.0, 0.0, 49.0, 50),
            ("y", 49.0, 0.0, 49.0, 50),
        ]


# -- searching runs ---------------------------------------------------------------
class Runs:
    """A small, fixed set of runs to search (names are the handles)."""

    def __init__(self, tracking: TrackingStore) -> None:
        self.tracking = tracking
        self.ids: dict[str, str] = {}
        # fmt: off
        specs: list[tuple[str, str, dict[str, Any], dict[str, str], dict[str, float], str]] = [
            # name, project, params, tags, metrics, status
            ("a", "exp", {"model": "gpt-4", "lr": 0.01, "top_k": 5, "rag": True},
             {"team": "search"}, {"acc": 0.9, "loss": 0.3}, "finished"),
            ("b", "exp", {"model": "gpt-3.5", "lr": 0.001, "top_k": 3, "rag": False},
             {"team": "chat"}, {"acc": 0.7, "loss": 0.5}, "finished"),
            ("c", "exp", {"model": "claude", "lr": 0.1, "top_k": "many"},
             {}, {"acc": NAN}, "failed"),
            ("d", "exp", {"model": "gpt-4o", "top_k": 10},
             {"team": "search"}, {"acc": INF, "loss": 0.1}, "running"),
            ("e", "exp", {}, {}, {}, "running"),
            ("x", "other", {"model": "gpt-4"}, {}, {"acc": 0.95}, "finished"),
        ]
        # fmt: on
        batch = WriteBatch()
        for i, (name, project, params, tag_map, metric_map, status) in enumerate(specs):
            run_id = _run(tracking, project=project, name=name, start=1_000 + i)
            self.ids[name] = run_id
            batch.params += _params(run_id, params)
            batch.tags += [(run_id, k, v) for k, v in tag_map.items()]
            batch.metrics += [(run_id, k, v, 0, 1) for k, v in metric_map.items()]
            if status != "running":
                batch.run_ends.append((run_id, status, 2_000 + i, None))
        tracking.write_batch(batch)
        self.exp = tracking.project_ids(["exp"])

    def search(
        self,
        filter_text: str | None = None,
        order: str | None = None,
        projects: list[int] | None = None,
        limit: int = 100,
        offset: int = 0,
        **kw: Any,
    ) -> list[str]:
        node = parse_filter(filter_text) if filter_text else None
        records, _ = self.tracking.search(projects, node, parse_order_by(order), limit, offset, **kw)
        names = {v: k for k, v in self.ids.items()}
        return [names[r.run_id] for r in records]


@pytest.fixture
def runs(tracking: TrackingStore) -> Runs:
    """The runs in a database of their own, for tests that change them."""
    return Runs(tracking)


@pytest.fixture(scope="module")
def shared_runs(module_database_url: str) -> Iterator[Runs]:
    """The runs in one database shared by the read-only search tests (much faster)."""
    database = open_database(module_database_url)
    try:
        ensure_schema(database)
        yield Runs(TrackingStore(database))
    finally:
        database.close()


def test_search_without_filter_returns_newest_first(shared_runs: Runs) -> None:
    assert shared_runs.search() == ["x", "e", "d", "c", "b", "a"]
    assert shared_runs.search(projects=shared_runs.exp) == ["e", "d", "c", "b", "a"]
    assert shared_runs.search(projects=[]) == []


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        # metrics: numbers; NaN matches no comparison, +inf is larger than everything
        ("metrics.acc > 0.8", {"a", "d", "x"}),
        ("metrics.acc <= 0.9", {"a", "b"}),
        ("metrics.acc = 0.7", {"b"}),
        ("metrics.acc != 0.7", {"a", "d", "x"}),
        ("metrics.acc in (0.7, 0.9)", {"a", "b"}),
        ("metrics.loss is null", {"c", "e", "x"}),
        ("metrics.acc is not null", {"a", "b", "c", "d", "x"}),
        # params: strings, numbers (compared as numbers), booleans
        ("params.model = 'gpt-4'", {"a", "x"}),
        ("params.model != 'gpt-4'", {"b", "c", "d"}),
        ("params.model like 'gpt-4%'", {"a", "d", "x"}),
        ("params.model not like 'gpt%'", {"c"}),
        ("params.model ilike 'GPT-3%'", {"b"}),
        ("params.model in ('claude', 'gpt-3.5')", {"b", "c"}),
        ("params.model not in ('claude', 'gpt-3.5')", {"a", "d", "x"}),
        ("params.lr < 0.05", {"a", "b"}),
        ("params.lr >= 0.01", {"a", "c"}),
        ("params.top_k > 4", {"a", "d"}),  # the string 'many' is not a number
        ("params.top_k = '5'", {"a"}),
        ("params.rag = true", {"a"}),
        ("params.rag = false", {"b"}),
        ("params.lr is null", {"d", "e", "x"}),
        # tags
        ("tags.team = 'search'", {"a", "d"}),
        ("tags.team != 'search'", {"b"}),
        ("tags.team is null", {"c", "e", "x"}),
        ("tags.`team` like '%a%'", {"a", "b", "d"}),
        # attributes
        ("status = 'finished'", {"a", "b", "x"}),
        ("attributes.status = 'FAILED'", {"c"}),
        ("status in ('running', 'failed')", {"c", "d", "e"}),
        ("name like '_'", {"a", "b", "c", "d", "e", "x"}),
        ("run.name = 'c'", {"c"}),
        ("end_time is null", {"d", "e"}),
        ("project = 'other'", {"x"}),
        ("start_time >= 1003", {"d", "e", "x"}),
        # and / or / not / parentheses
        ("metrics.acc > 0.5 and params.model = 'gpt-4' and tags.team = 'search'", {"a"}),
        ("metrics.acc < 0.8 or tags.team = 'search'", {"a", "b", "d"}),
        ("not metrics.acc > 0.8", {"b", "c", "e"}),
        ("not (status = 'running' or params.model like 'gpt%')", {"c"}),
        ("(metrics.loss < 0.4 or metrics.loss > 0.4) and not tags.team = 'chat'", {"a", "d"}),
        ("metrics.acc > 0.5 and metrics.acc < 1", {"a", "b", "x"}),
    ],
)
def test_search_filters(shared_runs: Runs, filter_text: str, expected: set[str]) -> None:
    assert set(shared_runs.search(filter_text)) == expected


@pytest.mark.parametrize(
    "filter_text",
    ["metrics.acc > 'high'", "metrics.acc like '0.%'", "nosuch = 1"],
)
def test_search_rejects_filters_that_cannot_apply(shared_runs: Runs, filter_text: str) -> None:
    with pytest.raises(InvalidInput):
        shared_runs.search(filter_text)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # runs without the metric (and NaN, which is no number) come last either way
        ("metrics.acc desc", ["d", "x", "a", "b", "e", "c"]),
        ("metrics.acc asc", ["b", "a", "x", "d", "e", "c"]),
        ("metrics.loss", ["d", "a", "b", "x", "e", "c"]),
        ("tags.team asc, metrics.acc desc", ["b", "d", "a", "x", "e", "c"]),
        ("name desc", ["x", "e", "d", "c", "b", "a"]),
        ("start_time asc", ["a", "b", "c", "d", "e", "x"]),
        ("end_time asc", ["a", "b", "c", "x", "e", "d"]),
    ],
)
def test_search_order_by(shared_runs: Runs, order: str, expected: list[str]) -> None:
    assert shared_runs.search(order=order) == expected


def test_search_order_by_an_unknown_attribute_is_refused(shared_runs: Runs) -> None:
    with pytest.raises(InvalidInput, match="nosuch"):
        shared_runs.search(order="nosuch desc")


def test_search_pages_cover_every_run_once_in_order(shared_runs: Runs) -> None:
    tracking = shared_runs.tracking
    order = parse_order_by("metrics.acc desc")
    pages: list[list[str]] = []
    more = True
    offset = 0
    while more:
        records, more = tracking.search(None, None, order, limit=4, offset=offset)
        pages.append([r.run_id for r in records])
        offset += 4

    assert [len(p) for p in pages] == [4, 2]
    assert sum(pages, []) == [shared_runs.ids[n] for n in shared_runs.search(order="metrics.acc desc")]
    records, more = tracking.search(None, None, order, limit=6, offset=0)
    assert (len(records), more) == (6, False)
    records, more = tracking.search(None, None, order, limit=10, offset=50)
    assert (records, more) == ([], False)


def test_search_pages_with_a_filter(shared_runs: Runs) -> None:
    first = shared_runs.search("params.model like 'gpt%'", order="name asc", limit=2)
    second = shared_runs.search("params.model like 'gpt%'", order="name asc", limit=2, offset=2)

    assert (first, second) == (["a", "b"], ["d", "x"])


def test_search_hides_deleted_runs_unless_asked(runs: Runs) -> None:
    runs.tracking.set_deleted(runs.ids["a"], True)

    assert "a" not in runs.search()
    assert runs.search(only_deleted=True) == ["a"]
    assert set(runs.search(include_deleted=True)) == set(runs.ids)
    runs.tracking.set_deleted(runs.ids["a"], False)
    assert "a" in runs.search()


def test_search_returns_full_records(shared_runs: Runs) -> None:
    records, more = shared_runs.tracking.search(None, parse_filter("name = 'a'"), [], limit=10)

    assert not more
    (record,) = records
    assert (record.project, record.status, record.end_time) == ("exp", "finished", 2_000)
    assert record.params == {"model": "gpt-4", "lr": 0.01, "top_k": 5, "rag": True}
    assert (record.metrics, record.tags) == ({"acc": 0.9, "loss": 0.3}, {"team": "search"})


@pytest.mark.parametrize("value", [INF, -INF, NAN], ids=["inf", "-inf", "nan"])
def test_a_non_finite_float_param_compares_the_same_on_both_databases(
    tracking: TrackingStore, value: float, request: pytest.FixtureRequest
) -> None:
    run_id = _run(tracking)
    tracking.write_batch(WriteBatch(params=_params(run_id, {"lr": value})))

    def matches(filter_text: str) -> bool:
        records, _ = tracking.search(None, parse_filter(filter_text), [], limit=10)
        return [r.run_id for r in records] == [run_id]

    expected_low = value == -INF  # only -inf is below 0; NaN is no number and matches nothing
    expected_high = value == INF
    assert matches("params.lr < -1e300") == expected_low
    assert matches("params.lr > 1e300") == expected_high
    assert matches("params.lr = 0") is False
