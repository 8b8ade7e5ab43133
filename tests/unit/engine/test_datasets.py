"""Dataset loading: file formats, limits, data-root confinement, http(s), data: URLs, and hf:// through
the real huggingface_hub client against a fake Hub speaking the Hub's file API."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalstack.config import Settings
from evalstack.engine.datasets import DATA_URL_MAX_CHARS, load_rows, parse_hf_url
from evalstack.errors import InvalidInputError, NotFoundError, UpstreamError
from tests.fakes.hf_hub import FakeHub

ROWS = [{"prompt": f"q{i}", "ideal_response": f"a{i}", "n": i} for i in range(5)]
JSONL = "".join(json.dumps(row) + "\n" for row in ROWS)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, root: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", data_roots=[root])


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_file("default/sample-basic-test", "testing/testing.jsonl", JSONL)
        server.add_file("default/sample-basic-test", "README.md", "# not data\n")
        yield server


# ---- formats -----------------------------------------------------------------------------------


async def test_json_array_jsonl_and_json_objects_with_rows(root: Path, settings: Settings) -> None:
    (root / "a.json").write_text(json.dumps(ROWS))
    (root / "b.jsonl").write_text(JSONL.replace("\n", "\n\n"))  # blank lines are skipped
    (root / "c.json").write_text(json.dumps({"data": ROWS}))
    (root / "d.json").write_text(json.dumps({"rows": ROWS, "meta": 1}))
    (root / "e.json").write_text(JSONL)  # JSON Lines saved as .json
    for name in ("a.json", "b.jsonl", "c.json", "d.json", "e.json"):
        assert await load_rows(str(root / name), settings=settings) == ROWS, name


async def test_csv_values_are_text(root: Path, settings: Settings) -> None:
    (root / "a.csv").write_text('prompt,ideal_response\nq0,a0\n"q, 1","a""1"\n', encoding="utf-8-sig")
    assert await load_rows(str(root / "a.csv"), settings=settings) == [
        {"prompt": "q0", "ideal_response": "a0"},
        {"prompt": "q, 1", "ideal_response": 'a"1'},
    ]


async def test_parquet_and_gzipped_jsonl(root: Path, settings: Settings) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), root / "a.parquet")
    (root / "b.jsonl.gz").write_bytes(gzip.compress(JSONL.encode()))
    assert await load_rows(str(root / "a.parquet"), settings=settings) == ROWS
    assert await load_rows(str(root / "b.jsonl.gz"), settings=settings) == ROWS


async def test_format_is_sniffed_without_an_extension(root: Path, settings: Settings) -> None:
    (root / "rows").write_text(JSONL)
    pq.write_table(pa.Table.from_pylist(ROWS), root / "table")
    assert await load_rows(str(root / "rows"), settings=settings) == ROWS
    assert await load_rows(str(root / "table"), settings=settings) == ROWS


@pytest.mark.parametrize("name", ["a.json", "b.jsonl", "c.csv", "d.parquet"])
async def test_limit_keeps_the_first_rows(root: Path, settings: Settings, name: str) -> None:
    (root / "a.json").write_text(json.dumps(ROWS))
    (root / "b.jsonl").write_text(JSONL)
    (root / "c.csv").write_text("prompt\n" + "".join(f"q{i}\n" for i in range(5)))
    pq.write_table(pa.Table.from_pylist(ROWS), root / "d.parquet")
    rows = await load_rows(str(root / name), settings=settings, limit=2)
    assert [r["prompt"] for r in rows] == ["q0", "q1"]
    assert await load_rows(str(root / name), settings=settings, limit=0) == []


async def test_a_folder_reads_its_data_files_in_path_order(root: Path, settings: Settings) -> None:
    (root / "set" / "sub").mkdir(parents=True)
    (root / "set" / "b.jsonl").write_text(json.dumps(ROWS[1]) + "\n")
    (root / "set" / "a.json").write_text(json.dumps([ROWS[0]]))
    (root / "set" / "sub" / "c.jsonl").write_text(json.dumps(ROWS[2]) + "\n")
    (root / "set" / "notes.txt").write_text("ignored")
    assert await load_rows(str(root / "set"), settings=settings) == ROWS[:3]


async def test_malformed_files_name_the_problem(root: Path, settings: Settings) -> None:
    (root / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InvalidInputError, match="line 2 is not valid JSON"):
        await load_rows(str(root / "bad.jsonl"), settings=settings)
    (root / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="row 0 is JSON int"):
        await load_rows(str(root / "list.json"), settings=settings)


# ---- confinement -------------------------------------------------------------------------------


async def test_relative_paths_and_file_urls_resolve_under_the_data_roots(
    root: Path, settings: Settings
) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "a.jsonl").write_text(JSONL)
    assert await load_rows("sub/a.jsonl", settings=settings) == ROWS
    assert await load_rows("file://sub/a.jsonl", settings=settings) == ROWS
    assert await load_rows(f"file://{root}/sub/a.jsonl", settings=settings) == ROWS


async def test_paths_outside_the_data_roots_are_refused(
    tmp_path: Path, root: Path, settings: Settings
) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_text(JSONL)
    (root / "link.jsonl").symlink_to(outside)
    for url in (str(outside), f"file://{outside}", "../secret.jsonl", str(root / "link.jsonl")):
        with pytest.raises(InvalidInputError) as err:
            await load_rows(url, settings=settings)
        assert "outside the allowed data roots" in err.value.message
        assert str(root) in err.value.message


async def test_a_path_the_file_system_cannot_take_is_bad_input(root: Path, settings: Settings) -> None:
    for url in ("a" * 300, f"file://{'b' * 300}.jsonl"):  # longer than a file name may be
        with pytest.raises(InvalidInputError) as err:
            await load_rows(url, settings=settings)
        assert "is not a usable file name (File name too long)" in err.value.message
        assert str(root) in err.value.message


async def test_a_missing_file_names_where_it_looked(root: Path, settings: Settings) -> None:
    with pytest.raises(NotFoundError) as err:
        await load_rows("nope/x.jsonl", settings=settings)
    assert str(root / "nope" / "x.jsonl") in err.value.message


async def test_unsupported_schemes_list_the_accepted_forms(settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match=r"hf://datasets/.*file:// URLs"):
        await load_rows("s3://bucket/file.jsonl", settings=settings)


# ---- http and data: URLs ---------------------------------------------------------------------


async def test_http_urls_are_downloaded(settings: Settings, hub: FakeHub) -> None:
    hub.add_file("default/web", "data.csv", "prompt\nq0\nq1\n")
    url = f"{hub.url}/datasets/default/web/resolve/main/data.csv"
    assert await load_rows(url, settings=settings) == [{"prompt": "q0"}, {"prompt": "q1"}]
    with pytest.raises(NotFoundError, match="404"):
        await load_rows(f"{hub.url}/datasets/default/web/resolve/main/missing.csv", settings=settings)


async def test_data_urls_hold_a_whole_file(settings: Settings) -> None:
    url = "data:application/jsonl;base64," + base64.b64encode(JSONL.encode()).decode()
    assert await load_rows(url, settings=settings, limit=3) == ROWS[:3]


CSV = 'input_query,expected_answer\nWhat is 2+2?,4\n"Paris, or Rome?",Paris\n'
CSV_ROWS = [
    {"input_query": "What is 2+2?", "expected_answer": "4"},
    {"input_query": "Paris, or Rome?", "expected_answer": "Paris"},
]


@pytest.mark.parametrize(
    ("url", "rows"),
    [
        # base64, as Llama Stack's tests build them (mimetypes' type of the file)
        ("data:text/csv;base64," + base64.b64encode(CSV.encode()).decode(), CSV_ROWS),
        ("data:application/jsonl;base64," + base64.b64encode(JSONL.encode()).decode(), ROWS),
        # mimetypes knows no .jsonl: Llama Stack's helper then writes the type as "None"
        ("data:None;base64," + base64.b64encode(JSONL.encode()).decode(), ROWS),
        # base64 wrapped at 76 columns, and a charset parameter
        (
            "data:text/csv;charset=utf-8;base64," + base64.encodebytes(CSV.encode() * 1).decode(),
            CSV_ROWS,
        ),
        # plain (percent-encoded) data, typed and untyped
        ("data:text/csv," + quote(CSV), CSV_ROWS),
        ("data:application/x-ndjson," + quote(JSONL), ROWS),
        ("data:," + quote(JSONL), ROWS),
        ("data:text/plain;charset=utf-8," + quote(CSV), CSV_ROWS),
    ],
)
async def test_data_urls_base64_or_plain_csv_or_json_lines(
    settings: Settings, url: str, rows: list[dict[str, object]]
) -> None:
    assert await load_rows(url, settings=settings) == rows


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:text/csv;base64,not base64!", "not valid base64"),
        ("data:text/csv;base64-and-no-comma", "needs a comma"),
        (
            "data:image/png;base64,iVBORw0KGgo=",
            "'image/png' is not a supported dataset format; accepted: text/csv",
        ),
        ("data:application/jsonl," + quote('{"a": 1}\n[2]\n'), "line 2 is JSON list, not an object"),
        ("data:text/csv," + quote("a\n" + "x" * 200_000 + "\n"), "is not readable CSV: field larger"),
    ],
)
async def test_bad_data_urls_say_what_is_wrong(settings: Settings, url: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await load_rows(url, settings=settings)
    assert words in caught.value.message


async def test_data_urls_are_bounded_in_size(settings: Settings) -> None:
    head = "data:text/csv,abc%0Ax%0A"
    fits = head + "y" * (DATA_URL_MAX_CHARS - len(head))
    assert await load_rows(fits, settings=settings, limit=1) == [{"abc": "x"}]
    with pytest.raises(InvalidInputError) as caught:
        await load_rows(fits + "y", settings=settings, limit=1)
    message = caught.value.message
    assert "at most 16 MiB; this one is 16.0 MiB" in message
    assert "data_roots" in message and "http(s)://" in message


# ---- hf:// -----------------------------------------------------------------------------------


def test_hub_urls_are_parsed() -> None:
    location = parse_hf_url("hf://datasets/ns/repo@v1/folder/file.jsonl")
    assert (location.repo_id, location.revision, location.path) == ("ns/repo", "v1", "folder/file.jsonl")
    assert parse_hf_url("nds:ns/repo/file.json").path == "file.json"
    assert parse_hf_url("huggingface://datasets/ns/repo?split=test").split == "test"
    with pytest.raises(InvalidInputError, match="hf://datasets/<namespace>/<repo>"):
        parse_hf_url("hf://ns/repo/file.json")


async def test_hf_file_is_downloaded_through_the_hub_client(settings: Settings, hub: FakeHub) -> None:
    url = "hf://datasets/default/sample-basic-test/testing/testing.jsonl"
    assert await load_rows(url, settings=settings, hf_endpoint=hub.url) == ROWS
    assert ("HEAD", "/datasets/default/sample-basic-test/resolve/main/testing/testing.jsonl") in hub.requests
    cached = list((settings.data_dir / "huggingface").rglob("testing.jsonl"))
    assert cached, "the download is kept in the Hub cache under data_dir"


async def test_the_endpoint_comes_from_the_settings_unless_the_dataset_names_one(
    tmp_path: Path, root: Path, hub: FakeHub
) -> None:
    settings = Settings(data_dir=tmp_path / "data", data_roots=[root], hf_endpoint=hub.url)
    rows = await load_rows("nds:default/sample-basic-test/testing/testing.jsonl", settings=settings, limit=2)
    assert rows == ROWS[:2]
    with FakeHub() as other:
        other.add_file("default/sample-basic-test", "testing/testing.jsonl", json.dumps({"from": "other"}))
        url = "hf://datasets/default/sample-basic-test/testing/testing.jsonl"
        assert await load_rows(url, settings=settings, hf_endpoint=other.url) == [{"from": "other"}]


async def test_downloads_are_cached_and_used_when_the_endpoint_is_down(settings: Settings) -> None:
    url = "hf://datasets/default/cached/file.jsonl"
    with FakeHub() as hub:
        hub.add_file("default/cached", "file.jsonl", JSONL)
        assert await load_rows(url, settings=settings, hf_endpoint=hub.url) == ROWS
        assert await load_rows(url, settings=settings, hf_endpoint=hub.url) == ROWS
        assert hub.downloads == 1
        endpoint = hub.url
    assert await load_rows(url, settings=settings, hf_endpoint=endpoint) == ROWS


async def test_a_repository_or_folder_means_its_data_files(settings: Settings, hub: FakeHub) -> None:
    hub.add_file("ns/multi", "data/train-00000.jsonl", json.dumps({"split": "train"}) + "\n")
    hub.add_file("ns/multi", "data/test-00000.jsonl", json.dumps({"split": "test"}) + "\n")
    hub.add_file("ns/multi", ".gitattributes", "*.parquet filter=lfs\n")
    base = "hf://datasets/ns/multi"
    assert await load_rows(base, settings=settings, hf_endpoint=hub.url) == [
        {"split": "test"},
        {"split": "train"},
    ]
    assert await load_rows(f"{base}/data", settings=settings, hf_endpoint=hub.url, limit=1) == [
        {"split": "test"}
    ]
    assert await load_rows(f"{base}?split=train", settings=settings, hf_endpoint=hub.url) == [
        {"split": "train"}
    ]
    # the single data file of the seed example's repository
    assert (
        await load_rows("hf://datasets/default/sample-basic-test", settings=settings, hf_endpoint=hub.url)
        == ROWS
    )


async def test_listing_falls_back_to_the_repo_info_without_a_tree_api(settings: Settings) -> None:
    with FakeHub(tree_api=False) as hub:
        hub.add_file("ns/store", "x/a.jsonl", JSONL)
        assert await load_rows("hf://datasets/ns/store/x", settings=settings, hf_endpoint=hub.url) == ROWS
        assert any("/api/datasets/ns/store/revision/main" in path for _, path in hub.requests)


async def test_hub_errors_say_what_is_missing(settings: Settings, hub: FakeHub) -> None:
    with pytest.raises(NotFoundError, match="repository 'default/nope' not found"):
        await load_rows("hf://datasets/default/nope/x.jsonl", settings=settings, hf_endpoint=hub.url)
    with pytest.raises(NotFoundError, match=r"File 'missing\.jsonl' not found in dataset repository"):
        await load_rows(
            "hf://datasets/default/sample-basic-test/missing.jsonl", settings=settings, hf_endpoint=hub.url
        )
    with pytest.raises(NotFoundError, match="No data files"):
        await load_rows(
            "hf://datasets/default/sample-basic-test?split=train", settings=settings, hf_endpoint=hub.url
        )


async def test_an_unreachable_endpoint_without_a_cached_copy_is_an_upstream_error(
    settings: Settings, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UpstreamError, match="not in the cache"):
        await load_rows(
            "hf://datasets/default/sample-basic-test/testing/testing.jsonl",
            settings=settings,
            hf_endpoint=hub.url,
        )
