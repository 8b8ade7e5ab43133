"""LLM-as-judge: templates, score parsing, and judging through a real HTTP fake model server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from evalstack.api.llama_stack.models import (
    BasicScoringFnParams,
    LLMAsJudgeScoringFnParams,
    RegisterScoringFnRequest,
)
from evalstack.engine.metrics.judge import (
    DEFAULT_PROMPT_TEMPLATE,
    build_judge,
    check_judge_settings,
    parse_judge_score,
    render_prompt,
    template_fields,
)
from evalstack.engine.plan import SampleOutput
from evalstack.engine.scoring import ScoringService
from evalstack.errors import InvalidInputError, NotFoundError, UpstreamError
from evalstack.inference.base import ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from tests.fakes.model_server import FakeModelServer
from tests.fakes.registry import InMemoryScoringFunctions

# ---- templates -------------------------------------------------------------------------------------


def test_template_fields_in_order_without_repeats() -> None:
    template = "{generated_answer} vs {expected_answer}; again {generated_answer}"
    assert template_fields(template, "j") == ("generated_answer", "expected_answer")
    assert template_fields("no placeholders, {{literal}}", "j") == ()
    assert template_fields('Reply {{"score": N}} to {generated_answer}', "j") == ("generated_answer",)
    assert set(template_fields(DEFAULT_PROMPT_TEMPLATE, "j")) == {
        "input_query",
        "expected_answer",
        "generated_answer",
    }


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("Judge {context}", "{context}"),
        ("Judge {}", "{}"),
        ("Judge {0}", "{0}"),
        ("Judge {input_query.upper}", "{input_query.upper}"),
        ("Judge {input_query[0]}", "{input_query[0]}"),
        ("Judge {generated_answer!x}", "{generated_answer!x}"),  # unknown conversion
        ("Judge {generated_answer:{width}}", "{generated_answer:{width}}"),  # nested field
        ('Reply as JSON: {"score": 1}', "'{{'"),
        ("Unbalanced {input_query", "'{{'"),
        ("Closing } alone", "'{{'"),
    ],
)
def test_bad_templates_say_what_is_accepted(template: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        template_fields(template, "my::judge")
    message = err.value.message
    assert words in message and "my::judge" in message and "{generated_answer}" in message


def test_render_prompt_formats_like_str_format() -> None:
    template = "Q={input_query!r} A={generated_answer:>4} {{x}}"
    row = {"input_query": "why", "generated_answer": "ok", "unused": 1}
    assert render_prompt(template, template_fields(template, "j"), row, "j") == "Q='why' A=  ok {x}"


def test_render_prompt_writes_lists_as_json_and_numbers_as_text() -> None:
    template = "{input_query} / {expected_answer}"
    row = {"input_query": [{"role": "user", "content": "hé"}], "expected_answer": 4}
    assert render_prompt(template, template_fields(template, "j"), row, "j") == (
        '[{"role": "user", "content": "hé"}] / 4'
    )


@pytest.mark.parametrize(
    ("row", "problem"),
    [({"generated_answer": "x"}, "does not have"), ({"expected_answer": None}, "has null for")],
)
def test_render_prompt_missing_or_null_field_names_it(row: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        render_prompt("{expected_answer}", ("expected_answer",), row, "j")
    assert info.value.message == (
        "Scoring function 'j' needs the field 'expected_answer' for its prompt template, "
        f"and the row {problem} it."
    )


def test_every_str_format_conversion_is_accepted() -> None:
    template = "{input_query!s} {expected_answer!r} {generated_answer!a}"
    fields = template_fields(template, "j")
    row = {"input_query": "q", "expected_answer": "e", "generated_answer": "é"}
    assert render_prompt(template, fields, row, "j") == "q 'e' '\\xe9'"


def test_a_format_spec_the_value_refuses_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError) as info:
        render_prompt("{input_query:d}", ("input_query",), {"input_query": "q"}, "my::judge")
    assert info.value.message == (
        "Scoring function 'my::judge': the prompt template does not render: "
        "Unknown format code 'd' for object of type 'str'."
    )


def test_a_bad_placeholder_lists_the_accepted_ones() -> None:
    with pytest.raises(InvalidInputError) as info:
        template_fields("Judge {context}", "my::judge")
    assert info.value.message == (
        "Scoring function 'my::judge': the prompt template has the placeholder {context}, which cannot be "
        "filled. Placeholders accepted: {input_query}, {expected_answer}, {generated_answer}; "
        "write literal braces as '{{' and '}}'."
    )


def test_judge_settings_default_the_template_and_name_what_is_wrong() -> None:
    template, fields, regexes = check_judge_settings("f", "m", None, [r"Score: (\d)"])
    assert template == DEFAULT_PROMPT_TEMPLATE and fields == (
        "input_query",
        "expected_answer",
        "generated_answer",
    )
    assert [r.pattern for r in regexes] == [r"Score: (\d)"]
    for model in ("", "   "):
        with pytest.raises(InvalidInputError) as info:
            check_judge_settings("f", model, None, [])
        assert info.value.message == (
            "Scoring function 'f' needs a judge_model: a registered model id, or an OpenAI-compatible "
            "base URL such as http://host:8000/v1."
        )
    with pytest.raises(InvalidInputError) as info:
        check_judge_settings("f", "m", None, ["("])
    assert info.value.message.startswith(
        "Scoring function 'f': judge score regex '(' is not a valid regular expression: "
    )
    with pytest.raises(InvalidInputError, match=r"^Scoring function 'f': the prompt template has"):
        check_judge_settings("f", "m", "{context}", [])


# ---- score parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "regexes", "score"),
    [
        ("Reasoning. Score: 4", [r"Score: (\d+)"], 4.0),
        ("Score: 4.5/5", [r"Score: ([\d.]+)"], 4.5),
        ("Verdict: B", [r"Score: (\d)", r"Verdict: ([ABC])"], "B"),  # the second regex matches
        ("Score: 2 ... Verdict: A", [r"Verdict: ([ABC])", r"Score: (\d)"], "A"),  # list order decides
        ("I cannot grade this", [r"Score: (\d)"], None),
        ("7", [r"\d"], 7.0),  # a regex without a group gives the whole match
        ("Score: nan", [r"Score: (\w+)"], "nan"),  # not a finite number: kept as text
        ("Score:", [r"Score:(\d)?"], None),  # the group did not take part
        ("anything", [], None),
    ],
)
def test_parse_judge_score(reply: str, regexes: list[str], score: float | str | None) -> None:
    assert parse_judge_score(reply, [re.compile(r) for r in regexes]) == score


# ---- judging through the fake model server ---------------------------------------------------------


class ServerRegistry(InMemoryScoringFunctions):
    """A registry that knows one judge model, served by the fake server, and keeps scoring functions."""

    def __init__(self, server: FakeModelServer) -> None:
        super().__init__()
        self.server = server

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint:
        if name_or_url == "judge":
            return ModelEndpoint(kind="openai", model="judge-model", base_url=self.server.base_url)
        raise NotFoundError(f"Model '{name_or_url}' not found.")


def grade(prompt: str) -> str:
    """A deterministic judge: 5 when the answer to grade equals the reference, 1 otherwise."""
    if "UNPARSEABLE" in prompt:
        return "I refuse to grade."
    reference = re.search(r"Reference answer: (.*)", prompt)
    answer = re.search(r"Answer to grade: (.*)", prompt)
    same = reference and answer and reference.group(1).strip() == answer.group(1).strip()
    return f"Looks {'right' if same else 'wrong'}.\nScore: {5 if same else 1}"


@pytest.fixture
def judge_server() -> Any:
    with FakeModelServer(answer=grade) as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[ModelClientPool]:
    clients = ModelClientPool()
    yield clients
    await clients.aclose()


@pytest.fixture
def service(judge_server: FakeModelServer, pool: ModelClientPool) -> ScoringService:
    return ScoringService(ServerRegistry(judge_server), pool)


ROWS = [
    {"input_query": "2+2?", "expected_answer": "4", "generated_answer": "4"},
    {"input_query": "Capital of France?", "expected_answer": "Paris", "generated_answer": "Lyon"},
    {"input_query": "UNPARSEABLE", "expected_answer": "x", "generated_answer": "x"},
]


async def test_base_judge_with_the_default_template(
    service: ScoringService, judge_server: FakeModelServer
) -> None:
    params = LLMAsJudgeScoringFnParams(judge_model="judge")  # template and regexes from the definition
    result = (await service.score(ROWS, {"llm-as-judge::base": params}))["llm-as-judge::base"]
    assert [row["score"] for row in result.score_rows] == [5.0, 1.0, None]
    assert result.score_rows[0] == {"score": 5.0, "judge_feedback": "Looks right.\nScore: 5"}
    assert result.score_rows[2]["judge_feedback"] == "I refuse to grade."
    # average of the non-null scores: (5 + 1) / 2
    assert result.aggregated_results == {"average": {"average": 3.0}}
    # one user message per row, holding the filled template, sent to the resolved model name
    assert len(judge_server.requests) == 3
    sent = {body["messages"][0]["content"]: body for body in judge_server.requests}
    prompt = DEFAULT_PROMPT_TEMPLATE.format(**ROWS[1])
    assert sent[prompt]["messages"] == [{"role": "user", "content": prompt}]
    assert sent[prompt]["model"] == "judge-model"
    assert all(body["temperature"] == 0.0 for body in judge_server.requests)  # the judge is greedy


async def test_request_template_regexes_and_aggregations(
    service: ScoringService, judge_server: FakeModelServer
) -> None:
    judge_server.set_answer(lambda prompt: f"Rating [[{len(prompt)}]]")
    params = LLMAsJudgeScoringFnParams(
        judge_model="judge",
        prompt_template="{generated_answer}",
        judge_score_regexes=[r"Score: (\d+)", r"\[\[(\d+)\]\]"],
        aggregation_functions=["median", "categorical_count"],
    )
    rows = [
        {"generated_answer": "abc"},
        {"generated_answer": "abcdef"},
    ]  # only the template's field is needed
    result = (await service.score(rows, {"llm-as-judge::base": params}))["llm-as-judge::base"]
    assert [row["score"] for row in result.score_rows] == [3.0, 6.0]
    assert result.aggregated_results == {
        "median": {"median": 4.5},
        "categorical_count": {"categorical_count": {"3.0": 1, "6.0": 1}},
    }


async def test_registered_judge_function(service: ScoringService, judge_server: FakeModelServer) -> None:
    judge_server.set_answer(lambda prompt: "A" if "Paris" in prompt else "C")
    await service.register_function(
        RegisterScoringFnRequest.model_validate(
            {
                "scoring_fn_id": "team::simpleqa",
                "description": "SimpleQA-style grade",
                "return_type": {"type": "string"},
                "params": {
                    "type": "llm_as_judge",
                    "judge_model": "judge",
                    "prompt_template": "Gold: {expected_answer}\nPredicted: {generated_answer}",
                    "judge_score_regexes": ["(A|B|C)"],
                    "aggregation_functions": ["categorical_count"],
                },
            }
        )
    )
    rows = [
        {"expected_answer": "Paris", "generated_answer": "Paris"},
        {"expected_answer": "Rome", "generated_answer": "Milan"},
        {"expected_answer": "Oslo", "generated_answer": "Bergen"},
    ]
    result = (await service.score(rows, {"team::simpleqa": None}))["team::simpleqa"]
    assert [row["score"] for row in result.score_rows] == ["A", "C", "C"]
    assert result.aggregated_results == {"categorical_count": {"categorical_count": {"A": 1, "C": 2}}}
    # basic params change only the aggregation; text verdicts cannot be averaged
    with pytest.raises(InvalidInputError, match="categorical_count"):
        await service.score(rows, {"team::simpleqa": BasicScoringFnParams(aggregation_functions=["average"])})


async def test_judge_as_engine_metric(service: ScoringService, judge_server: FakeModelServer) -> None:
    metric = await service.metric("llm-as-judge::base", LLMAsJudgeScoringFnParams(judge_model="judge"))
    assert metric.name == "llm-as-judge::base"
    item = {"input_query": "2+2?", "expected_answer": "4"}
    judged = SampleOutput(text="4")
    assert await metric.score(item, judged) == {"score": 5.0, "judge_feedback": "Looks right.\nScore: 5"}
    assert judged.extra["judgement"] == {"llm-as-judge::base": "Looks right.\nScore: 5"}  # for the viewer
    assert (await metric.score(item, SampleOutput(text="5")))["score"] == 1.0


async def test_judge_base_url_as_judge_model(judge_server: FakeModelServer, pool: ModelClientPool) -> None:
    registry = ServerRegistry(judge_server)

    async def resolve(name_or_url: str) -> ModelEndpoint:
        base_url, _, model = name_or_url.partition("#")
        return ModelEndpoint(kind="openai", model=model, base_url=base_url)

    registry.resolve_model = resolve  # type: ignore[method-assign]
    url_service = ScoringService(registry, pool)
    params = LLMAsJudgeScoringFnParams(judge_model=f"{judge_server.base_url}#url-judge")
    result = await url_service.score(ROWS[:1], {"llm-as-judge::base": params})
    assert result["llm-as-judge::base"].score_rows[0]["score"] == 5.0
    assert judge_server.requests[-1]["model"] == "url-judge"


async def test_judge_requests_run_concurrently_but_bounded(
    service: ScoringService, judge_server: FakeModelServer
) -> None:
    judge_server.latency = 0.05
    rows = [{"input_query": str(i), "expected_answer": "a", "generated_answer": "a"} for i in range(40)]
    result = await service.score(rows, {"llm-as-judge::base": LLMAsJudgeScoringFnParams(judge_model="judge")})
    assert [row["score"] for row in result["llm-as-judge::base"].score_rows] == [5.0] * 40
    assert 1 < judge_server.max_in_flight <= 16


async def test_a_failing_judge_is_an_upstream_error_not_a_score(
    service: ScoringService, judge_server: FakeModelServer
) -> None:
    judge_server.fail_next(1, status=400)  # a client error is not retried
    with pytest.raises(UpstreamError, match="Judge model 'judge'"):
        await service.score(ROWS[:1], {"llm-as-judge::base": LLMAsJudgeScoringFnParams(judge_model="judge")})


async def test_an_empty_judge_reply_scores_none_with_empty_feedback(
    judge_server: FakeModelServer, pool: ModelClientPool
) -> None:
    judge_server.set_answer("")
    scorer = await build_judge(
        "f", "judge", None, [r"Score: (\d)"], registry=ServerRegistry(judge_server), clients=pool
    )
    assert await scorer(ROWS[0]) == {"score": None, "judge_feedback": ""}
    with pytest.raises(InvalidInputError, match=r"^Scoring function 'f' needs the field 'input_query'"):
        await scorer({"expected_answer": "x", "generated_answer": "y"})


async def test_an_unknown_judge_model_says_what_to_give(
    judge_server: FakeModelServer, pool: ModelClientPool
) -> None:
    class Registry(ServerRegistry):
        async def resolve_model(self, name_or_url: str) -> ModelEndpoint:
            raise NotFoundError(f"Model '{name_or_url}' not found.", detail={"model": name_or_url})

    with pytest.raises(NotFoundError) as info:
        await build_judge("f", "nope", None, [], registry=Registry(judge_server), clients=pool)
    assert info.value.message == (
        "Scoring function 'f': judge model 'nope' is not available (Model 'nope' not found.). "
        "Give a registered model id or an OpenAI-compatible base URL as judge_model."
    )
    assert info.value.detail == {"model": "nope"}
    with pytest.raises(InvalidInputError, match=r"^Scoring function 'f' needs a judge_model"):
        await build_judge("f", "", None, [], registry=Registry(judge_server), clients=pool)
