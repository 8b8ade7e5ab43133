"""ScoringService: listing, registration, params, row checks, score() and the engine metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalstack.api.llama_stack.models import (
    BasicScoringFnParams,
    LLMAsJudgeScoringFnParams,
    ParamType,
    RegexParserScoringFnParams,
    RegisterScoringFnRequest,
    ScoreResponse,
    ScoringFn,
)
from evalstack.engine.plan import SampleOutput
from evalstack.engine.scoring import BUILTIN_FUNCTIONS, ScoringService
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from evalstack.inference.base import InferenceRequest, InferenceResult, ModelClient, ModelEndpoint
from tests.fakes.registry import InMemoryScoringFunctions


class FakeRegistry(InMemoryScoringFunctions):
    """The registry methods the scoring service uses, in memory."""

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint:
        if name_or_url.startswith("http"):
            return ModelEndpoint(kind="openai", model="", base_url=name_or_url)
        if name_or_url in ("judge", "embedded"):
            return ModelEndpoint(kind="openai", model=name_or_url, base_url="http://judge.invalid/v1")
        raise NotFoundError(f"Model '{name_or_url}' not found.")


class NoCallClients:
    """A client source whose clients must never be called (tests that stop before judging)."""

    def get(self, endpoint: ModelEndpoint) -> ModelClient:
        return _NoCallClient()


class _NoCallClient:
    async def generate(self, request: InferenceRequest) -> InferenceResult:
        raise AssertionError("the judge must not be called in this test")

    async def aclose(self) -> None:
        return None


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def service(registry: FakeRegistry) -> ScoringService:
    return ScoringService(registry, NoCallClients())


def qa_rows() -> list[dict[str, Any]]:
    return [
        {"input_query": "2+2?", "expected_answer": "4", "generated_answer": "4"},
        {"input_query": "Capital of France?", "expected_answer": "Paris", "generated_answer": "It is Paris."},
        {"input_query": "Pick", "expected_answer": "B", "generated_answer": "The best answer is B"},
        {"input_query": "Pick", "expected_answer": "C", "generated_answer": "The answer is (C)."},
    ]


def regex_request(fn_id: str = "my::grade", **changes: Any) -> RegisterScoringFnRequest:
    body: dict[str, Any] = {
        "scoring_fn_id": fn_id,
        "description": "grade parser",
        "return_type": {"type": "number"},
        "params": {"type": "regex_parser", "parsing_regexes": [r"Grade: (\w+)"]},
    }
    body.update(changes)
    return RegisterScoringFnRequest.model_validate(body)


# ---- listing -------------------------------------------------------------------------------------


async def test_builtins_are_listed_with_the_reference_shape(service: ScoringService) -> None:
    listed = {fn.identifier: fn.model_dump(mode="json") for fn in await service.list_functions()}
    assert list(listed) == [
        "basic::equality",
        "basic::subset_of",
        "basic::regex_parser_multiple_choice_answer",
        "basic::regex_parser_math_response",
        "llm-as-judge::base",
    ]
    mc = listed["basic::regex_parser_multiple_choice_answer"]
    assert mc["provider_resource_id"] == "regex-parser-multiple-choice-answer"
    assert mc["provider_id"] == "basic"
    assert mc["type"] == "scoring_function"
    assert mc["metadata"] == {}
    assert mc["return_type"] == {"type": "number"}
    assert mc["params"]["type"] == "regex_parser"
    assert mc["params"]["aggregation_functions"] == ["accuracy"]
    assert any("The best answer is" in r for r in mc["params"]["parsing_regexes"])
    assert listed["basic::equality"]["params"] == {"type": "basic", "aggregation_functions": ["accuracy"]}
    assert listed["basic::subset_of"]["provider_resource_id"] == "subset-of"
    judge = listed["llm-as-judge::base"]
    assert (judge["provider_id"], judge["provider_resource_id"]) == ("llm-as-judge", "llm-as-judge-base")
    assert judge["params"]["type"] == "llm_as_judge" and judge["params"]["aggregation_functions"] == [
        "average"
    ]
    assert all(isinstance(fn["description"], str) and fn["description"] for fn in listed.values())


async def test_a_listed_builtin_cannot_be_changed_by_the_caller(service: ScoringService) -> None:
    fn = await service.get_function("basic::equality")
    fn.description = "changed"
    assert (await service.get_function("basic::equality")).description != "changed"


async def test_unknown_function_not_found_names_what_exists(service: ScoringService) -> None:
    with pytest.raises(NotFoundError) as err:
        await service.get_function("basic::nope")
    assert "basic::nope" in err.value.message and "basic::equality" in err.value.message


# ---- registration --------------------------------------------------------------------------------


async def test_register_regex_parser_persists_in_the_registry(
    service: ScoringService, registry: FakeRegistry
) -> None:
    await service.register_function(regex_request(provider_scoring_fn_id="grade-v1"))
    stored = registry.functions["my::grade"]
    assert stored.provider_id == "basic" and stored.provider_resource_id == "grade-v1"
    assert [fn.identifier for fn in await service.list_functions()][-1] == "my::grade"
    result = await service.score(
        [
            {"expected_answer": "pass", "generated_answer": "Grade: pass"},
            {"expected_answer": "pass", "generated_answer": "Grade: fail"},
        ],
        {"my::grade": None},
    )
    assert result["my::grade"].score_rows == [{"score": 1.0}, {"score": 0.0}]
    # no aggregation registered: accuracy is the default
    assert result["my::grade"].aggregated_results == {
        "accuracy": {"accuracy": 0.5, "num_correct": 1.0, "num_total": 2}
    }


async def test_registering_an_existing_id_conflicts_until_it_is_unregistered(
    service: ScoringService, registry: FakeRegistry
) -> None:
    # As Llama Stack's llm-as-judge provider: a second registration is refused, identical or not.
    await service.register_function(regex_request())
    changed = regex_request(params={"type": "regex_parser", "parsing_regexes": [r"Mark: (\w+)"]})
    for again in (regex_request(), changed):
        with pytest.raises(ConflictError, match=r"already exists\. Unregister it first"):
            await service.register_function(again)
    assert registry.functions["my::grade"].params == regex_request().params
    await service.unregister_function("my::grade")
    await service.register_function(changed)
    assert registry.functions["my::grade"].params == changed.params


async def test_register_judge_uses_the_judge_provider(
    service: ScoringService, registry: FakeRegistry
) -> None:
    req = regex_request(
        "my::judge",
        params={
            "type": "llm_as_judge",
            "judge_model": "judge",
            "prompt_template": "Q: {input_query} A: {generated_answer}",
            "judge_score_regexes": [r"(\d)"],
            "aggregation_functions": ["median"],
        },
    )
    await service.register_function(req)
    assert registry.functions["my::judge"].provider_id == "llm-as-judge"


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"scoring_fn_id": "basic::equality"}, ConflictError, "built-in"),
        ({"params": None}, InvalidInputError, "regex_parser"),
        ({"params": {"type": "basic"}}, InvalidInputError, "llm_as_judge"),
        ({"params": {"type": "regex_parser", "parsing_regexes": []}}, InvalidInputError, "parsing_regexes"),
        ({"params": {"type": "regex_parser", "parsing_regexes": ["(bad"]}}, InvalidInputError, "(bad"),
        ({"provider_id": "llm-as-judge"}, InvalidInputError, "provider"),
        (
            {"params": {"type": "llm_as_judge", "judge_model": "judge", "prompt_template": "{question}"}},
            InvalidInputError,
            "{question}",
        ),
        ({"params": {"type": "llm_as_judge", "judge_model": " "}}, InvalidInputError, "judge_model"),
    ],
)
async def test_bad_registrations_are_refused_with_a_reason(
    service: ScoringService,
    registry: FakeRegistry,
    changes: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error) as err:
        await service.register_function(regex_request(**changes))
    assert words in str(err.value)
    assert registry.functions == {}


async def test_unknown_aggregation_at_registration_lists_the_accepted(service: ScoringService) -> None:
    req = regex_request()
    assert isinstance(req.params, RegexParserScoringFnParams)
    req.params.aggregation_functions = ["mode"]  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="categorical_count"):
        await service.register_function(req)


async def test_unregister(service: ScoringService, registry: FakeRegistry) -> None:
    await service.register_function(regex_request())
    await service.unregister_function("my::grade")
    assert "my::grade" not in registry.functions
    with pytest.raises(NotFoundError):
        await service.unregister_function("my::grade")
    with pytest.raises(UnsupportedError):
        await service.unregister_function("basic::subset_of")


async def test_registered_functions_survive_a_restart_with_the_real_registry(tmp_path: Path) -> None:
    from evalstack.config import load_settings
    from evalstack.registry import Registry
    from evalstack.store.repository import Store

    settings = load_settings(data_dir=tmp_path, embedded_model=False)
    for round_ in range(2):
        store = Store(settings.db_url)
        await store.open()
        try:
            service = ScoringService(Registry(store, settings), NoCallClients())
            if round_ == 0:
                await service.register_function(regex_request())
            else:
                fn = await service.get_function("my::grade")
                assert fn.params == RegexParserScoringFnParams(parsing_regexes=[r"Grade: (\w+)"])
                result = await service.score(
                    [{"expected_answer": "ok", "generated_answer": "Grade: ok"}], {"my::grade": None}
                )
                assert result["my::grade"].score_rows == [{"score": 1.0}]
        finally:
            await store.close()


# ---- score() -------------------------------------------------------------------------------------


async def test_score_several_functions_hand_worked(service: ScoringService) -> None:
    results = await service.score(
        qa_rows(),
        {
            "basic::equality": None,
            "basic::subset_of": BasicScoringFnParams(aggregation_functions=["accuracy", "categorical_count"]),
            "basic::regex_parser_multiple_choice_answer": None,
        },
    )
    assert list(results) == [
        "basic::equality",
        "basic::subset_of",
        "basic::regex_parser_multiple_choice_answer",
    ]
    assert [r["score"] for r in results["basic::equality"].score_rows] == [1.0, 0.0, 0.0, 0.0]
    assert results["basic::equality"].aggregated_results == {
        "accuracy": {"accuracy": 0.25, "num_correct": 1.0, "num_total": 4}
    }
    # subset_of: "4" in "4", "Paris" in "It is Paris.", "B" in "...is B", "C" in "...(C)."
    assert [r["score"] for r in results["basic::subset_of"].score_rows] == [1.0, 1.0, 1.0, 1.0]
    assert results["basic::subset_of"].aggregated_results == {
        "accuracy": {"accuracy": 1.0, "num_correct": 4.0, "num_total": 4},
        "categorical_count": {"categorical_count": {"1.0": 4}},
    }
    # multiple choice: rows 0, 1 have no answer prefix; row 2 is right; row 3 is "(C)" after "The answer is"
    assert [r["score"] for r in results["basic::regex_parser_multiple_choice_answer"].score_rows] == [
        0.0,
        0.0,
        1.0,
        0.0,
    ]
    ScoreResponse(results=results)  # the wire model accepts it


async def test_request_params_replace_the_definition_params(service: ScoringService) -> None:
    rows = [{"expected_answer": "B", "generated_answer": "Option (B)"}]
    custom = RegexParserScoringFnParams(
        parsing_regexes=[r"Option \(([A-D])\)"], aggregation_functions=["average"]
    )
    results = await service.score(rows, {"basic::regex_parser_multiple_choice_answer": custom})
    assert results["basic::regex_parser_multiple_choice_answer"].score_rows == [{"score": 1.0}]
    assert results["basic::regex_parser_multiple_choice_answer"].aggregated_results == {
        "average": {"average": 1.0}
    }
    # basic params only change the aggregation; the built-in regexes stay
    basic_only = BasicScoringFnParams(aggregation_functions=["median"])
    results = await service.score(rows, {"basic::regex_parser_multiple_choice_answer": basic_only})
    assert results["basic::regex_parser_multiple_choice_answer"].score_rows == [{"score": 0.0}]
    assert results["basic::regex_parser_multiple_choice_answer"].aggregated_results == {
        "median": {"median": 0.0}
    }


async def test_unknown_function_is_refused_before_anything_is_scored(service: ScoringService) -> None:
    with pytest.raises(InvalidInputError) as err:
        await service.score(qa_rows(), {"basic::equality": None, "basic::nope": None, "x::y": None})
    message = err.value.message
    assert "'basic::nope'" in message and "'x::y'" in message and "basic::subset_of" in message


async def test_no_function_is_refused(service: ScoringService) -> None:
    with pytest.raises(InvalidInputError, match="at least one"):
        await service.score(qa_rows(), {})


async def test_missing_column_names_the_row_and_the_field(service: ScoringService) -> None:
    rows = qa_rows()
    del rows[2]["generated_answer"]
    with pytest.raises(InvalidInputError) as err:
        await service.score(rows, {"basic::subset_of": None})
    assert "Row 2" in err.value.message and "'generated_answer'" in err.value.message
    assert "basic::subset_of" in err.value.message
    assert err.value.detail == {"row": 2, "field": "generated_answer", "scoring_fn": "basic::subset_of"}


async def test_null_column_is_reported_too(service: ScoringService) -> None:
    rows = qa_rows()
    rows[1]["expected_answer"] = None
    with pytest.raises(InvalidInputError, match="Row 1 has null for 'expected_answer'"):
        await service.score(rows, {"basic::equality": None})


async def test_wrongly_typed_column_gives_the_row_index(service: ScoringService) -> None:
    rows = qa_rows()
    rows[3]["generated_answer"] = ["C"]
    with pytest.raises(InvalidInputError, match=r"Row 3:.*list"):
        await service.score(rows, {"basic::equality": None})


async def test_judge_params_on_a_basic_function_are_refused(service: ScoringService) -> None:
    with pytest.raises(InvalidInputError, match="not an LLM judge"):
        await service.score(qa_rows(), {"basic::equality": LLMAsJudgeScoringFnParams(judge_model="judge")})


async def test_regex_params_on_a_judge_are_refused(service: ScoringService) -> None:
    params = RegexParserScoringFnParams(parsing_regexes=["(x)"])
    with pytest.raises(InvalidInputError, match="llm_as_judge"):
        await service.score(qa_rows(), {"llm-as-judge::base": params})


async def test_judge_rows_are_checked_for_the_template_fields_before_judging(service: ScoringService) -> None:
    params = LLMAsJudgeScoringFnParams(
        judge_model="judge",
        prompt_template="Q {input_query} A {generated_answer}",
        judge_score_regexes=["(\\d)"],
    )
    rows = [
        {"input_query": "q", "generated_answer": "a"},
        {"generated_answer": "a"},
    ]  # no expected_answer needed
    with pytest.raises(InvalidInputError, match="Row 1 has no 'input_query'"):
        await service.score(rows, {"llm-as-judge::base": params})


async def test_unknown_judge_model_is_a_clear_not_found(service: ScoringService) -> None:
    with pytest.raises(NotFoundError, match="judge model 'ghost'"):
        await service.score(qa_rows(), {"llm-as-judge::base": LLMAsJudgeScoringFnParams(judge_model="ghost")})


async def test_unknown_aggregation_in_the_request_lists_the_accepted(service: ScoringService) -> None:
    params = BasicScoringFnParams.model_construct(type="basic", aggregation_functions=["mode"])
    with pytest.raises(InvalidInputError, match="weighted_average"):
        await service.score(qa_rows(), {"basic::equality": params})


async def test_many_rows_are_scored_off_the_event_loop_with_the_same_result(service: ScoringService) -> None:
    rows = [{"expected_answer": str(i % 3), "generated_answer": "1"} for i in range(1500)]
    results = await service.score(rows, {"basic::equality": None})
    assert results["basic::equality"].aggregated_results["accuracy"] == {
        "accuracy": 500 / 1500,
        "num_correct": 500.0,
        "num_total": 1500,
    }


# ---- aggregate() and metric() -------------------------------------------------------------------


def test_aggregate_default_per_function(service: ScoringService) -> None:
    rows = [{"score": 1.0}, {"score": 3.0}]
    assert service.aggregate(BUILTIN_FUNCTIONS["basic::equality"], None, rows) == {
        "accuracy": {"accuracy": 2.0, "num_correct": 4.0, "num_total": 2}
    }
    assert service.aggregate(BUILTIN_FUNCTIONS["llm-as-judge::base"], None, rows) == {
        "average": {"average": 2.0}
    }
    judge_without_aggregation = ScoringFn(
        identifier="j",
        provider_id="llm-as-judge",
        return_type=ParamType(type="number"),
        params=LLMAsJudgeScoringFnParams(judge_model="judge"),
    )
    assert service.aggregate(judge_without_aggregation, None, rows) == {"average": {"average": 2.0}}
    params = BasicScoringFnParams(aggregation_functions=["median", "categorical_count"])
    assert service.aggregate(BUILTIN_FUNCTIONS["basic::equality"], params, rows) == {
        "median": {"median": 2.0},
        "categorical_count": {"categorical_count": {"1.0": 1, "3.0": 1}},
    }


async def test_metric_scores_the_model_output_against_the_item(service: ScoringService) -> None:
    metric = await service.metric("basic::subset_of", None)
    assert metric.name == "basic::subset_of"
    item = {"input_query": "Capital of France?", "expected_answer": "Paris"}
    assert await metric.score(item, SampleOutput(text="It is Paris.")) == {"score": 1.0}
    assert await metric.score(item, SampleOutput(text="Lyon")) == {"score": 0.0}


async def test_metric_falls_back_to_the_rows_generated_answer(service: ScoringService) -> None:
    metric = await service.metric("basic::equality", None)
    item = {"expected_answer": "4", "generated_answer": "4"}
    assert await metric.score(item, SampleOutput(text=None)) == {"score": 1.0}
    assert await metric.score(item, SampleOutput(text="5")) == {"score": 0.0}


async def test_metric_for_a_row_without_expected_answer_fails_that_sample(service: ScoringService) -> None:
    metric = await service.metric("basic::regex_parser_math_response", None)
    with pytest.raises(InvalidInputError, match="expected_answer"):
        await metric.score({"input_query": "1+1"}, SampleOutput(text="\\boxed{2}"))


async def test_metric_for_an_unknown_function(service: ScoringService) -> None:
    with pytest.raises(InvalidInputError, match="basic::equality"):
        await service.metric("basic::unknown", None)
