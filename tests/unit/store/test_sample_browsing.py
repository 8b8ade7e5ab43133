"""Reading a job's samples a page at a time: filters, keyset paging, full-text search, histograms.

Runs on SQLite and on PostgreSQL (the fixtures of ``test_repository``), since the search index and
the JSON filters are written per database.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evalstack.store import sample_query
from evalstack.store.records import JobRecord, SampleFilter, SampleKey, SampleRecord
from evalstack.store.repository import Store
from tests.unit.store.test_repository import db_url, postgres_url, sqlite_url, store  # noqa: F401

JOB = "eval-browse"
TASKS = ("alpha", "beta")
PER_TASK = 30


def make_sample(task: str, index: int) -> SampleRecord:
    """Right when index is even; 5 mod 10 failed (inference; invalid in task beta); 7 mod 10 unparsed."""
    word = "zebra" if index % 9 == 0 else "plain"
    item = {"question": f"{task} question {index} about {word}", "answer": str(index)}
    if index % 10 == 5:
        kind = "inference" if task == "alpha" else "invalid"
        return SampleRecord(task, index, item, error=f"failed {index}", extra={"error_kind": kind})
    parsed = 0.0 if index % 10 == 7 else 1.0
    return SampleRecord(
        task,
        index,
        item,
        output_text=f"reply {index} mentions quokka" if index % 11 == 0 else f"reply {index}",
        finish_reason="length" if index % 6 == 1 else "stop",
        scores={
            "acc": {"acc": 1.0 if index % 2 == 0 else 0.0},
            "bleu": {"sentence": index / 3},
            "parsed": {"m": parsed},
        },
        extra={
            "request": {"kind": "chat", "messages": [{"role": "user", "content": f"asking {task} {index}"}]}
        },
    )


ALL = [make_sample(task, index) for task in TASKS for index in range(PER_TASK)]


def keys(samples: list[SampleRecord]) -> list[tuple[str, int]]:
    return [(s.task, s.index) for s in samples]


def expected(predicate: object) -> list[tuple[str, int]]:
    return [(s.task, s.index) for s in ALL if predicate(s)]  # type: ignore[operator]


@pytest.fixture
async def filled(store: Store) -> Store:  # noqa: F811
    await store.create_job(JobRecord(id=JOB, front="nemo", spec={}))
    await store.create_job(JobRecord(id="eval-other", front="nemo", spec={}))
    await store.add_samples(JOB, ALL[::-1])  # written out of order; read back in (task, index) order
    await store.add_samples("eval-other", [make_sample("alpha", 0)])
    return store


async def read_all(source: Store, flt: SampleFilter, limit: int) -> list[SampleRecord]:
    """Every matching sample, following the keyset pages forward."""
    out: list[SampleRecord] = []
    after: SampleKey | None = None
    while True:
        page = await source.page_samples(JOB, flt, after=after, limit=limit)
        out += page.samples
        assert page.has_before == (after is not None and bool(out[: -len(page.samples) or None]))
        if not page.has_after:
            return out
        after = SampleKey(out[-1].task, out[-1].index)


async def test_pages_walk_every_sample_once_in_task_then_index_order(filled: Store) -> None:
    samples = await read_all(filled, SampleFilter(), limit=7)
    assert keys(samples) == sorted(keys(ALL))


async def test_paging_backwards_returns_the_previous_page_in_order(filled: Store) -> None:
    page = await filled.page_samples(JOB, before=SampleKey("beta", 2), limit=4)
    assert keys(page.samples) == [("alpha", 28), ("alpha", 29), ("beta", 0), ("beta", 1)]
    assert page.has_before and page.has_after
    first = await filled.page_samples(JOB, before=SampleKey("alpha", 3), limit=5)
    assert keys(first.samples) == [("alpha", 0), ("alpha", 1), ("alpha", 2)] and not first.has_before


@pytest.mark.parametrize(
    ("flt", "predicate"),
    [
        (SampleFilter(task="beta"), lambda s: s.task == "beta"),
        (SampleFilter(metric="acc", outcome="right"), lambda s: s.error is None and s.index % 2 == 0),
        (SampleFilter(metric="acc", outcome="wrong"), lambda s: s.error is None and s.index % 2 == 1),
        (
            SampleFilter(metric="bleu", score="sentence", min_score=2.0, max_score=5.0),
            lambda s: s.error is None and 2.0 <= s.index / 3 <= 5.0,
        ),
        (SampleFilter(error="any"), lambda s: s.error is not None),
        (SampleFilter(error="none"), lambda s: s.error is None),
        (SampleFilter(error="inference"), lambda s: s.error is not None and s.task == "alpha"),
        (SampleFilter(error="invalid"), lambda s: s.error is not None and s.task == "beta"),
        (SampleFilter(unparsed=True), lambda s: s.error is None and s.index % 10 == 7),
        (SampleFilter(truncated=True), lambda s: s.error is None and s.index % 6 == 1),
        (
            SampleFilter(task="alpha", metric="acc", outcome="wrong", truncated=True),
            lambda s: s.task == "alpha" and s.error is None and s.index % 2 == 1 and s.index % 6 == 1,
        ),
    ],
)
async def test_filters_pick_exactly_the_matching_samples(
    filled: Store, flt: SampleFilter, predicate: object
) -> None:
    want = expected(predicate)
    assert want  # the data holds some of each
    assert keys(await read_all(filled, flt, limit=4)) == want
    assert await filled.count_matching_samples(JOB, flt) == len(want)


@pytest.fixture(params=["few matches", "many matches"])
def search_plans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Search starts from the matches when they are few, from the job's samples when many: both must agree."""
    if request.param == "many matches":
        monkeypatch.setattr(sample_query, "RARE_MATCHES", 1)


@pytest.mark.usefixtures("search_plans")
async def test_search_finds_words_in_the_prompt_the_request_and_the_output(filled: Store) -> None:
    in_item = expected(lambda s: s.index % 9 == 0)
    assert keys(await read_all(filled, SampleFilter(search="ZEBRA"), limit=50)) == in_item
    in_output = expected(lambda s: s.error is None and s.index % 11 == 0)
    assert keys(await read_all(filled, SampleFilter(search="quokka"), limit=50)) == in_output
    in_request = expected(lambda s: s.error is None and s.task == "beta")
    assert keys(await read_all(filled, SampleFilter(search="asking beta"), limit=50)) == in_request
    both = [k for k in in_item if k in in_output]
    assert keys(await read_all(filled, SampleFilter(search="zebra quokka"), limit=50)) == both
    assert await filled.count_matching_samples(JOB, SampleFilter(search="nowhere-to-be-found")) == 0
    wrong_with_zebra = expected(lambda s: s.index % 9 == 0 and s.error is None and s.index % 2 == 1)
    flt = SampleFilter(search="zebra", metric="acc", outcome="wrong")
    assert keys(await read_all(filled, flt, limit=2)) == wrong_with_zebra
    assert await filled.count_matching_samples(JOB, flt) == len(wrong_with_zebra)
    backwards = await filled.page_samples(
        JOB, SampleFilter(search="zebra"), before=SampleKey("beta", 0), limit=2
    )
    assert keys(backwards.samples) == [k for k in in_item if k[0] == "alpha"][-2:]


@pytest.mark.parametrize("query", ['"', "zebra OR", "NEAR(", "a*b'; DROP TABLE samples; --", "^-:"])
async def test_search_treats_query_syntax_as_plain_words(filled: Store, query: str) -> None:
    page = await filled.page_samples(JOB, SampleFilter(search=query), limit=5)
    assert isinstance(page.samples, list)  # no syntax error reaches the caller
    assert await filled.count_samples(JOB) == len(ALL)


async def test_count_stops_at_the_cap(filled: Store) -> None:
    assert await filled.count_matching_samples(JOB, SampleFilter(task="alpha"), cap=10) == 10
    assert await filled.count_matching_samples(JOB, SampleFilter(task="alpha")) == PER_TASK


async def test_get_sample_reads_one_sample_whole(filled: Store) -> None:
    sample = await filled.get_sample(JOB, "beta", 11)
    assert sample is not None and sample == make_sample("beta", 11)
    assert await filled.get_sample(JOB, "beta", PER_TASK) is None
    assert await filled.get_sample(JOB, "gamma", 0) is None


async def test_histogram_counts_every_value_in_equal_bins(filled: Store) -> None:
    found = await filled.score_histogram(JOB, "bleu", "sentence", bins=4)
    assert found is not None
    low, high, counts = found
    values = [s.index / 3 for s in ALL if s.error is None]
    assert (low, high) == (min(values), max(values))
    width = (high - low) / 4
    want = [0] * 4
    for v in values:
        want[min(int((v - low) / width), 3)] += 1
    assert counts == want
    assert await filled.score_histogram(JOB, "missing", "missing") is None


async def test_deleted_jobs_leave_nothing_searchable(filled: Store) -> None:
    await filled.delete_job(JOB)
    await filled.create_job(JobRecord(id=JOB, front="nemo", spec={}))
    await filled.add_samples(JOB, [SampleRecord("alpha", 0, {"q": "fresh"}, output_text="new")])
    assert await filled.count_matching_samples(JOB, SampleFilter(search="zebra")) == 0
    assert keys((await filled.page_samples(JOB, SampleFilter(search="fresh"))).samples) == [("alpha", 0)]


async def test_a_database_from_before_search_gets_its_index_filled_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    async with Store(url) as old:
        await old.create_job(JobRecord(id=JOB, front="nemo", spec={}))
        await old.add_samples(JOB, ALL)
    with sqlite3.connect(tmp_path / "old.db") as conn:  # as an earlier version left it
        conn.execute("DROP TRIGGER samples_fts_delete")
        conn.execute("DROP TABLE samples_fts")
        conn.execute("DROP TABLE samples_fts_upto")
    async with Store(url) as reopened:
        found = await reopened.page_samples(JOB, SampleFilter(search="zebra"), limit=100)
        assert keys(found.samples) == expected(lambda s: s.index % 9 == 0)
        await reopened.add_samples(JOB, [SampleRecord("gamma", 0, {"q": "later okapi"})])
        assert await reopened.count_matching_samples(JOB, SampleFilter(search="okapi")) == 1


def indexed(path: Path) -> int:
    """How many samples the SQLite full-text index holds."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM samples_fts").fetchone()[0])


async def test_a_search_indexes_what_was_recorded_since_and_deleted_samples_leave(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with Store(f"sqlite:///{path}") as opened:
        await opened.create_job(JobRecord(id=JOB, front="nemo", spec={}))
        await opened.add_samples(JOB, [SampleRecord("alpha", i, {"q": f"zebra {i}"}) for i in range(3)])
        assert indexed(path) == 0  # recording indexes nothing
        assert await opened.count_matching_samples(JOB, SampleFilter(search="zebra")) == 3
        assert indexed(path) == 3
        await opened.delete_job(JOB)  # the newest samples go: SQLite gives their seq to the next ones
        assert indexed(path) == 0
        await opened.create_job(JobRecord(id=JOB, front="nemo", spec={}))
        await opened.add_samples(JOB, [SampleRecord("beta", i, {"q": f"okapi {i}"}) for i in range(2)])
        assert await opened.count_matching_samples(JOB, SampleFilter(search="zebra")) == 0
        found = await opened.page_samples(JOB, SampleFilter(search="okapi"))
        assert keys(found.samples) == [("beta", 0), ("beta", 1)]
        await opened.add_samples(JOB, [SampleRecord("beta", 2, {"q": "zebra and okapi"})])
        assert await opened.count_matching_samples(JOB, SampleFilter(search="okapi")) == 3
        assert await opened.count_matching_samples(JOB, SampleFilter(search="zebra")) == 1
        assert indexed(path) == 3


async def test_a_database_that_indexed_on_insert_keeps_its_index(tmp_path: Path) -> None:
    path = tmp_path / "before.db"
    async with Store(f"sqlite:///{path}") as old:
        await old.create_job(JobRecord(id=JOB, front="nemo", spec={}))
        await old.add_samples(JOB, ALL)
        assert await old.count_matching_samples(JOB, SampleFilter(search="zebra")) > 0  # all indexed
    with sqlite3.connect(path) as conn:  # as the version that indexed each sample on insert left it
        conn.execute("DROP TABLE samples_fts_upto")
        conn.execute("CREATE TRIGGER samples_fts_insert AFTER INSERT ON samples BEGIN SELECT 1; END")
    async with Store(f"sqlite:///{path}") as reopened:
        found = await reopened.page_samples(JOB, SampleFilter(search="zebra"), limit=100)
        assert keys(found.samples) == expected(lambda s: s.index % 9 == 0)  # once each: none indexed twice
        assert indexed(path) == len(ALL)
        await reopened.add_samples(JOB, [SampleRecord("gamma", 0, {"q": "later okapi"})])
        assert await reopened.count_matching_samples(JOB, SampleFilter(search="okapi")) == 1
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert names == {"samples_fts_delete"}


async def test_samples_of_other_jobs_never_show(filled: Store) -> None:
    assert await filled.count_matching_samples("eval-other", SampleFilter()) == 1
    assert await filled.count_matching_samples(JOB, SampleFilter(task="alpha")) == PER_TASK
