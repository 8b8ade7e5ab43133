"""The registry: models, datasets (rows, files, HTTP, Hub), benchmarks, scoring functions, NeMo entities."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from evalstack.api.llama_stack.models import (
    Benchmark,
    ParamType,
    RegexParserScoringFnParams,
    RegisterDatasetRequest,
    RowsDataSource,
    ScoringFn,
    URIDataSource,
)
from evalstack.config import ModelEntry, Settings
from evalstack.engine.datasets import DATA_URL_MAX_CHARS, choose_hf_files
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError
from evalstack.inference.base import ModelEndpoint
from evalstack.registry import EMBEDDED_MODEL_ID, Registry
from evalstack.store.repository import Store
from tests.fakes.hf_hub import FakeHub

SECRET = "sk-very-secret-123"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(data_dir=tmp_path / "state", data_roots=[tmp_path / "data"], embedded_model=False)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    store = Store(settings.db_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def registry(store: Store, settings: Settings) -> Registry:
    return Registry(store, settings)


def rows_request(rows: list[dict[str, Any]], dataset_id: str | None = "qa") -> RegisterDatasetRequest:
    return RegisterDatasetRequest(
        purpose="eval/question-answer", source=RowsDataSource(rows=rows), dataset_id=dataset_id
    )


def uri_request(uri: str, dataset_id: str | None = "files") -> RegisterDatasetRequest:
    return RegisterDatasetRequest(
        purpose="eval/messages-answer", source=URIDataSource(uri=uri), dataset_id=dataset_id
    )


# ---- models -------------------------------------------------------------------------------------


async def test_registered_model_carries_both_client_shapes_and_never_the_key(registry: Registry) -> None:
    model = await registry.register_model(
        "my-model", "served-name", {"base_url": "http://host:8000/v1/", "api_key": SECRET, "team": "qa"}
    )
    for shown in (model, await registry.get_model("my-model"), *(await registry.list_models())):
        dumped = shown.model_dump(mode="json")
        assert SECRET not in json.dumps(dumped)
        assert dumped["identifier"] == dumped["id"] == "my-model"
        assert dumped["provider_resource_id"] == "served-name"
        assert dumped["provider_id"] == "openai"
        assert dumped["type"] == dumped["object"] == "model"
        assert dumped["model_type"] == "llm"
        assert dumped["metadata"] == {"base_url": "http://host:8000/v1", "team": "qa"}
        assert dumped["custom_metadata"] == {
            "base_url": "http://host:8000/v1",
            "team": "qa",
            "model_type": "llm",
            "provider_id": "openai",
            "provider_resource_id": "served-name",
        }
        assert isinstance(dumped["created"], int)


async def test_resolve_model_hands_the_key_to_the_endpoint_only(registry: Registry) -> None:
    await registry.register_model("m", None, {"base_url": "https://api.example/v1", "api_key": SECRET})
    assert await registry.resolve_model("m") == ModelEndpoint(
        kind="openai", model="m", base_url="https://api.example/v1", api_key=SECRET
    )


async def test_other_key_like_metadata_is_hidden_too(registry: Registry) -> None:
    model = await registry.register_model("m", None, {"base_url": "http://h/v1", "Authorization": "Bearer x"})
    assert "Authorization" not in model.metadata and "Authorization" not in model.custom_metadata


async def test_register_model_without_base_url_says_what_is_needed(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"metadata\.base_url"):
        await registry.register_model("m", None, {})
    with pytest.raises(InvalidInputError, match="'localhost:8000'"):
        await registry.register_model("m", None, {"base_url": "localhost:8000"})
    with pytest.raises(InvalidInputError, match="accepted: 'openai'"):
        await registry.register_model("m", None, {"base_url": "http://h/v1"}, provider_id="vllm")
    assert await registry.list_models() == []


async def test_re_registering_a_model_replaces_it(registry: Registry) -> None:
    await registry.register_model("m", None, {"base_url": "http://old/v1"})
    await registry.register_model("other", None, {"base_url": "http://x/v1"})
    await registry.register_model("m", "new-name", {"base_url": "http://new/v1"})
    models = await registry.list_models()
    assert [m.identifier for m in models] == ["m", "other"]
    assert models[0].metadata == {"base_url": "http://new/v1"}
    endpoint = await registry.resolve_model("m")
    assert (endpoint.base_url, endpoint.model) == ("http://new/v1", "new-name")


async def test_unknown_model_message_matches_llama_stack(registry: Registry) -> None:
    expected = "Model 'ghost' not found. Use 'client.models.list()' to list available Models."
    with pytest.raises(NotFoundError) as err:
        await registry.get_model("ghost")
    assert err.value.message == expected
    with pytest.raises(NotFoundError, match="ghost"):
        await registry.resolve_model("ghost")
    with pytest.raises(NotFoundError, match="ghost"):
        await registry.unregister_model("ghost")


async def test_unregister_model(registry: Registry) -> None:
    await registry.register_model("m", None, {"base_url": "http://h/v1"})
    await registry.unregister_model("m")
    assert await registry.list_models() == []
    with pytest.raises(NotFoundError):
        await registry.get_model("m")


async def test_resolve_a_base_url_with_and_without_a_model_name(registry: Registry) -> None:
    assert await registry.resolve_model("http://h:8000/v1") == ModelEndpoint(
        kind="openai", model="", base_url="http://h:8000/v1"
    )
    assert await registry.resolve_model("https://h/v1/#org/model-7b") == ModelEndpoint(
        kind="openai", model="org/model-7b", base_url="https://h/v1"
    )


async def test_initialize_registers_config_models_and_the_embedded_model(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        models=[
            ModelEntry(model_id="cfg", base_url="http://cfg/v1", provider_model_id="real", api_key=SECRET)
        ],
    )
    registry = Registry(store, settings)
    await registry.initialize()
    ids = [(m.identifier, m.provider_id) for m in await registry.list_models()]
    assert ids == [("cfg", "openai"), (EMBEDDED_MODEL_ID, "embedded")]
    assert (await registry.get_model("embedded")).identifier == EMBEDDED_MODEL_ID
    embedded = ModelEndpoint(kind="embedded", model=EMBEDDED_MODEL_ID)
    assert await registry.resolve_model("embedded") == embedded
    assert await registry.resolve_model(EMBEDDED_MODEL_ID) == embedded
    assert (await registry.resolve_model("cfg")).api_key == SECRET
    # A second start changes nothing and duplicates nothing.
    created = {m.identifier: m.created for m in await registry.list_models()}
    await registry.initialize()
    assert {m.identifier: m.created for m in await registry.list_models()} == created


async def test_disabling_the_embedded_model_unlists_it_but_the_alias_still_resolves(
    store: Store, tmp_path: Path
) -> None:
    await Registry(store, Settings(data_dir=tmp_path)).initialize()
    registry = Registry(store, Settings(data_dir=tmp_path, embedded_model=False))
    await registry.initialize()
    assert await registry.list_models() == []
    assert (await registry.resolve_model("embedded")).kind == "embedded"


async def test_a_model_registered_as_embedded_is_an_alias_of_the_embedded_model(registry: Registry) -> None:
    model = await registry.register_model("small", None, {}, provider_id="embedded")
    assert model.provider_id == "embedded"
    assert await registry.resolve_model("small") == ModelEndpoint(kind="embedded", model=EMBEDDED_MODEL_ID)


async def test_models_survive_a_restart(settings: Settings) -> None:
    first = Store(settings.db_url)
    await first.open()
    await Registry(first, settings).register_model("m", None, {"base_url": "http://h/v1", "api_key": SECRET})
    await first.close()
    second = Store(settings.db_url)
    await second.open()
    try:
        assert (await Registry(second, settings).resolve_model("m")).api_key == SECRET
    finally:
        await second.close()


# ---- datasets with rows -------------------------------------------------------------------------


async def test_register_rows_dataset_returns_the_llama_stack_shape(registry: Registry) -> None:
    dataset = await registry.register_dataset(rows_request([{"q": "a"}, {"q": "b"}], "team/qa-slice"))
    assert dataset.model_dump(mode="json") == {
        "identifier": "team/qa-slice",
        "provider_resource_id": "team/qa-slice",
        "provider_id": "localfs",
        "type": "dataset",
        "purpose": "eval/question-answer",
        "source": {"type": "rows", "rows": [{"q": "a"}, {"q": "b"}]},
        "metadata": {},
    }
    assert await registry.get_dataset("team/qa-slice") == dataset
    assert await registry.list_datasets() == [dataset]


async def test_missing_dataset_id_is_generated(registry: Registry) -> None:
    first = await registry.register_dataset(rows_request([{"q": 1}], None))
    second = await registry.register_dataset(rows_request([{"q": 2}], None))
    for dataset in (first, second):
        assert dataset.identifier.startswith("dataset-")
        assert len(dataset.identifier.removeprefix("dataset-")) == 32
    assert first.identifier != second.identifier


async def test_provider_id_in_metadata_is_kept(registry: Registry) -> None:
    req = RegisterDatasetRequest(
        purpose="post-training/messages",
        source=RowsDataSource(rows=[]),
        dataset_id="d",
        metadata={"provider_id": "custom", "note": "x"},
    )
    dataset = await registry.register_dataset(req)
    assert (dataset.provider_id, dataset.metadata, dataset.purpose) == (
        "custom",
        {"provider_id": "custom", "note": "x"},
        "post-training/messages",
    )


@pytest.mark.parametrize(
    ("start", "limit", "expected", "has_more"),
    [
        (None, None, list(range(10)), False),
        (4, None, list(range(10)), False),  # no limit: start_index is ignored
        (4, -1, list(range(10)), False),
        (0, 3, [0, 1, 2], True),
        (3, 3, [3, 4, 5], True),
        (7, 3, [7, 8, 9], False),
        (8, 5, [8, 9], False),
        (0, 0, [], True),
        (10, 2, [], False),
        (25, 1, [], False),
    ],
)
async def test_iterrows_pages_as_the_reference_server(
    registry: Registry, start: int | None, limit: int | None, expected: list[int], has_more: bool
) -> None:
    await registry.register_dataset(rows_request([{"i": i} for i in range(10)]))
    page = await registry.iterrows("qa", start, limit)
    assert [row["i"] for row in page.data] == expected
    assert page.has_more is has_more
    assert page.url is None


async def test_iterrows_rejects_negative_bounds(registry: Registry) -> None:
    await registry.register_dataset(rows_request([{"i": 0}]))
    with pytest.raises(InvalidInputError, match="start_index"):
        await registry.iterrows("qa", -1, 2)
    with pytest.raises(InvalidInputError, match="limit"):
        await registry.iterrows("qa", 0, -5)


async def test_unknown_dataset_message_matches_llama_stack(registry: Registry) -> None:
    expected = "Dataset 'nope' not found. Use 'client.datasets.list()' to list available Datasets."
    for call in (
        registry.get_dataset("nope"),
        registry.iterrows("nope", 0, 1),
        registry.append_rows("nope", [{"a": 1}]),
        registry.dataset_rows("nope"),
        registry.unregister_dataset("nope"),
    ):
        with pytest.raises(NotFoundError) as err:
            await call
        assert err.value.message == expected


async def test_append_rows_shows_in_rows_pages_and_the_dataset(registry: Registry) -> None:
    await registry.register_dataset(rows_request([{"i": 0}, {"i": 1}]))
    await registry.append_rows("qa", [{"i": 2}, {"i": 3}])
    assert await registry.dataset_rows("qa") == [{"i": i} for i in range(4)]
    assert await registry.dataset_rows("qa", limit=3) == [{"i": i} for i in range(3)]
    page = await registry.iterrows("qa", 2, 1)
    assert (page.data, page.has_more) == ([{"i": 2}], True)
    dataset = await registry.get_dataset("qa")
    assert isinstance(dataset.source, RowsDataSource)
    assert len(dataset.source.rows) == 4


async def test_re_registering_a_dataset_replaces_it_cleanly(registry: Registry) -> None:
    await registry.register_dataset(rows_request([{"old": i} for i in range(5)]))
    await registry.append_rows("qa", [{"old": "appended"}])
    replaced = await registry.register_dataset(rows_request([{"new": 1}]))
    assert isinstance(replaced.source, RowsDataSource)
    assert replaced.source.rows == [{"new": 1}]
    assert await registry.dataset_rows("qa") == [{"new": 1}]
    assert len(await registry.list_datasets()) == 1


async def test_without_replace_the_same_registration_is_kept_and_another_refused(
    registry: Registry,
) -> None:
    # Llama Stack 0.7.x: re-registering as is is a no-op; anything else needs an unregister first.
    first = await registry.register_dataset(rows_request([{"i": 1}]), replace=False)
    assert await registry.register_dataset(rows_request([{"i": 1}]), replace=False) == first
    with pytest.raises(
        ConflictError, match=r"Dataset 'qa' already exists with other rows\. Unregister it first"
    ):
        await registry.register_dataset(rows_request([{"i": 2}]), replace=False)
    other_purpose = rows_request([{"i": 1}]).model_copy(update={"purpose": "eval/messages-answer"})
    with pytest.raises(ConflictError, match="already exists with other purpose"):
        await registry.register_dataset(other_purpose, replace=False)
    with pytest.raises(ConflictError, match=r"already exists with other (purpose, )?source"):
        await registry.register_dataset(uri_request(DATA_CSV, dataset_id="qa"), replace=False)
    assert await registry.dataset_rows("qa") == [{"i": 1}]
    await registry.unregister_dataset("qa")
    await registry.register_dataset(rows_request([{"i": 2}]), replace=False)
    assert await registry.dataset_rows("qa") == [{"i": 2}]


async def test_without_replace_a_different_benchmark_is_refused(registry: Registry) -> None:
    bench = Benchmark(
        identifier="b", provider_id="local", dataset_id="qa", scoring_functions=["basic::equality"]
    )
    await registry.check_benchmark_replacement(bench)  # nothing registered yet
    await registry.put_benchmark(bench)
    await registry.check_benchmark_replacement(bench.model_copy())  # the same again
    changed = bench.model_copy(update={"scoring_functions": ["basic::subset_of"], "metadata": {"x": 1}})
    with pytest.raises(ConflictError, match="'b' already exists with other scoring_functions, metadata"):
        await registry.check_benchmark_replacement(changed)


DATA_CSV = "data:text/csv;base64," + base64.b64encode(b"input_query,expected_answer\nq1,a1\nq2,a2\n").decode()


async def test_data_uri_datasets_are_registered_read_and_cached(registry: Registry) -> None:
    dataset = await registry.register_dataset(uri_request(DATA_CSV, dataset_id=None))
    assert dataset.provider_id == "localfs"
    assert isinstance(dataset.source, URIDataSource) and dataset.source.uri == DATA_CSV
    rows = [{"input_query": "q1", "expected_answer": "a1"}, {"input_query": "q2", "expected_answer": "a2"}]
    assert await registry.dataset_rows(dataset.identifier) == rows
    page = await registry.iterrows(dataset.identifier, 1, 5)
    assert (page.data, page.has_more) == (rows[1:], False)
    plain = "data:application/jsonl," + quote('{"q": 1}\n{"q": 2}\n')
    await registry.register_dataset(uri_request(plain, dataset_id="plain"))
    assert await registry.dataset_rows("plain") == [{"q": 1}, {"q": 2}]


async def test_bad_data_uris_are_refused_at_registration(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match="not valid base64"):
        await registry.register_dataset(uri_request("data:text/csv;base64,@@@"))
    with pytest.raises(InvalidInputError, match="at most 16 MiB"):
        await registry.register_dataset(uri_request("data:text/csv," + "a" * DATA_URL_MAX_CHARS))
    assert await registry.list_datasets() == []


async def test_unregister_dataset_removes_its_rows(registry: Registry, store: Store) -> None:
    await registry.register_dataset(rows_request([{"i": 1}]))
    await registry.unregister_dataset("qa")
    assert await registry.list_datasets() == []
    assert await store.count_rows("qa") == 0
    with pytest.raises(NotFoundError):
        await registry.get_dataset("qa")


async def test_datasets_survive_a_restart(settings: Settings) -> None:
    first = Store(settings.db_url)
    await first.open()
    await Registry(first, settings).register_dataset(rows_request([{"i": 1}, {"i": 2}]))
    await Registry(first, settings).append_rows("qa", [{"i": 3}])
    await first.close()
    second = Store(settings.db_url)
    await second.open()
    try:
        page = await Registry(second, settings).iterrows("qa", 1, 5)
        assert (page.data, page.has_more) == ([{"i": 2}, {"i": 3}], False)
    finally:
        await second.close()


# ---- datasets from files ------------------------------------------------------------------------


async def test_local_jsonl_dataset_loads_lazily_and_rereads_changes(
    registry: Registry, settings: Settings
) -> None:
    path = settings.data_roots[0] / "qa.jsonl"
    path.write_text('{"q": "1"}\n{"q": "2"}\n')
    dataset = await registry.register_dataset(uri_request(str(path)))
    assert dataset.source == URIDataSource(uri=str(path))
    assert dataset.provider_id == "localfs"
    assert await registry.dataset_rows("files") == [{"q": "1"}, {"q": "2"}]
    path.write_text('{"q": "1"}\n{"q": "2"}\n{"q": "3"}\n')
    page = await registry.iterrows("files", 1, 1)
    assert (page.data, page.has_more) == ([{"q": "2"}], True)


async def test_local_csv_by_file_url_with_appended_rows(registry: Registry, settings: Settings) -> None:
    path = settings.data_roots[0] / "qa.csv"
    path.write_text("question,answer\n2+2,4\n3+3,6\n")
    await registry.register_dataset(uri_request(path.as_uri()))
    await registry.append_rows("files", [{"question": "1+1", "answer": "2"}])
    assert await registry.dataset_rows("files") == [
        {"question": "2+2", "answer": "4"},
        {"question": "3+3", "answer": "6"},
        {"question": "1+1", "answer": "2"},
    ]
    assert await registry.dataset_rows("files", limit=1) == [{"question": "2+2", "answer": "4"}]
    page = await registry.iterrows("files", 2, 5)
    assert (page.data, page.has_more) == ([{"question": "1+1", "answer": "2"}], False)


async def test_files_outside_the_data_roots_are_refused_at_registration(
    registry: Registry, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"a": 1}\n')
    with pytest.raises(InvalidInputError, match="data_roots"):
        await registry.register_dataset(uri_request(str(outside)))
    assert await registry.list_datasets() == []


async def test_missing_file_and_unsupported_uri_are_refused(registry: Registry, settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        await registry.register_dataset(uri_request(str(settings.data_roots[0] / "absent.jsonl")))
    with pytest.raises(InvalidInputError, match="accepted"):
        await registry.register_dataset(uri_request("s3://bucket/data.jsonl"))
    with pytest.raises(InvalidInputError, match="split, name, revision"):
        await registry.register_dataset(uri_request("huggingface://datasets/org/qa?split=test&trust=1"))
    assert await registry.list_datasets() == []


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP file server over a folder; yields its base URL and the paths requested."""
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "qa.json").write_text(json.dumps([{"q": i} for i in range(4)]))
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        thread.join(timeout=5)


async def test_http_dataset_is_downloaded_once_and_paged(
    registry: Registry, http_files: tuple[str, list[str]]
) -> None:
    base, requested = http_files
    await registry.register_dataset(uri_request(f"{base}/qa.json"))
    assert requested == []  # lazy: nothing fetched at registration
    first = await registry.iterrows("files", 0, 3)
    second = await registry.iterrows("files", 3, 3)
    assert (first.data, first.has_more) == ([{"q": 0}, {"q": 1}, {"q": 2}], True)
    assert (second.data, second.has_more) == ([{"q": 3}], False)
    assert len(requested) == 1
    # Rows handed out are copies: editing one does not change the dataset.
    first.data[0]["q"] = "edited"
    assert (await registry.dataset_rows("files", limit=1)) == [{"q": 0}]


async def test_huggingface_uri_reads_the_requested_split(tmp_path: Path, store: Store) -> None:
    with FakeHub() as hub:
        hub.add_file("org/qa", "data/train-00000-of-00001.jsonl", '{"q": "train"}\n')
        hub.add_file("org/qa", "data/test-00000-of-00001.jsonl", '{"q": "test 1"}\n{"q": "test 2"}\n')
        hub.add_file("org/qa", "README.md", "# qa\n")
        settings = Settings(data_dir=tmp_path / "state", hf_endpoint=hub.url, embedded_model=False)
        registry = Registry(store, settings)
        dataset = await registry.register_dataset(uri_request("huggingface://datasets/org/qa?split=test"))
        assert dataset.provider_id == "huggingface"
        assert await registry.dataset_rows("files") == [{"q": "test 1"}, {"q": "test 2"}]
        await registry.register_dataset(uri_request("huggingface://datasets/org/qa?split=validation", "v"))
        with pytest.raises(NotFoundError, match="split 'validation'"):
            await registry.dataset_rows("v")


def test_choose_hf_files_matches_split_and_config_as_whole_path_parts() -> None:
    files = [
        "README.md",
        "main/train-00000-of-00001.parquet",
        "main/test-00000-of-00001.parquet",
        "socratic/test-00000-of-00001.parquet",
        "data/contest.jsonl",
    ]
    assert choose_hf_files(files, "test", "main") == ["main/test-00000-of-00001.parquet"]
    assert choose_hf_files(files, "test") == [
        "main/test-00000-of-00001.parquet",
        "socratic/test-00000-of-00001.parquet",
    ]
    assert choose_hf_files(files, "train", "absent-config") == ["main/train-00000-of-00001.parquet"]
    assert choose_hf_files(files, "validation") == []


# ---- benchmarks, scoring functions, NeMo entities -----------------------------------------------


async def test_benchmarks_round_trip(registry: Registry) -> None:
    bench = Benchmark(
        identifier="mmlu-slice",
        provider_resource_id="mmlu-slice",
        provider_id="local",
        dataset_id="qa",
        scoring_functions=["basic::equality"],
        metadata={"type": "custom"},
    )
    await registry.put_benchmark(bench)
    assert await registry.get_benchmark("mmlu-slice") == bench
    assert await registry.list_benchmarks() == [bench]
    await registry.delete_benchmark("mmlu-slice")
    with pytest.raises(NotFoundError, match="Benchmark 'mmlu-slice' not found"):
        await registry.get_benchmark("mmlu-slice")
    with pytest.raises(NotFoundError):
        await registry.delete_benchmark("mmlu-slice")


async def test_scoring_functions_round_trip(registry: Registry) -> None:
    fn = ScoringFn(
        identifier="my::regex",
        provider_id="basic",
        description="letters",
        return_type=ParamType(type="number"),
        params=RegexParserScoringFnParams(
            parsing_regexes=[r"Answer: (\w)"], aggregation_functions=["accuracy"]
        ),
    )
    await registry.put_scoring_fn(fn)
    assert await registry.get_scoring_fn("my::regex") == fn
    assert await registry.list_scoring_fns() == [fn]
    await registry.delete_scoring_fn("my::regex")
    assert await registry.get_scoring_fn("my::regex") is None
    with pytest.raises(NotFoundError, match="my::regex"):
        await registry.delete_scoring_fn("my::regex")


async def test_nemo_entities_conflict_unless_replaced(registry: Registry) -> None:
    config = {"namespace": "team", "name": "qa", "type": "custom", "tasks": {}}
    await registry.put_nemo("config", config)
    with pytest.raises(ConflictError, match="team/qa"):
        await registry.put_nemo("config", {**config, "type": "other"})
    assert (await registry.get_nemo("config", "team/qa"))["type"] == "custom"
    await registry.put_nemo("config", {**config, "type": "other"}, replace=True)
    assert (await registry.get_nemo("config", "team/qa"))["type"] == "other"
    await registry.put_nemo("target", {"namespace": "team", "name": "qa", "type": "model"})
    assert [e["type"] for e in await registry.list_nemo("config")] == ["other"]
    assert [e["type"] for e in await registry.list_nemo("target")] == ["model"]
    await registry.delete_nemo("config", "team/qa")
    with pytest.raises(NotFoundError, match="team/qa"):
        await registry.get_nemo("config", "team/qa")
    with pytest.raises(NotFoundError):
        await registry.delete_nemo("config", "team/qa")
    with pytest.raises(InvalidInputError, match="namespace"):
        await registry.put_nemo("target", {"name": "x"})
