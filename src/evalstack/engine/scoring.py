"""The scoring service: built-in and registered scoring functions, per-sample metrics, aggregation.

Built-ins (provider ``basic``): ``basic::equality``, ``basic::subset_of``,
``basic::regex_parser_multiple_choice_answer``, ``basic::regex_parser_math_response``;
(provider ``llm-as-judge``): ``llm-as-judge::base``. Users register ``regex_parser`` and
``llm_as_judge`` functions, kept in the registry.

How request params combine with a function's definition: request params replace the
definition's, field by field where the request leaves a field empty. So ``parsing_regexes``,
``prompt_template``, ``judge_score_regexes`` and ``aggregation_functions`` fall back to the
definition's when the request gives none; with none on either side the aggregation is
``accuracy`` (basic and regex functions) or ``average`` (judges). Params of type ``basic`` only
change the aggregation. Judge params for a basic function, or regex params for a judge, are refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evalstack.engine.aggregate.llama_stack import aggregate as aggregate_rows
from evalstack.engine.aggregate.llama_stack import check_aggregations
from evalstack.engine.metrics import basic, judge
from evalstack.engine.plan import Metric, SampleOutput
from evalstack.engine.ports import ClientSource
from evalstack.engine.types import (
    BasicScoringFnParams,
    LLMAsJudgeScoringFnParams,
    ParamType,
    RegexParserScoringFnParams,
    ScoringFn,
    ScoringFnParams,
    ScoringFnRegistration,
    ScoringResult,
)
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from evalstack.inference.base import ModelEndpoint

log = logging.getLogger(__name__)

BASIC_PROVIDER = "basic"
JUDGE_PROVIDER = "llm-as-judge"
JUDGE_CONCURRENCY = 16  # judge requests in flight per scoring function in one score() call
THREAD_THRESHOLD = 512  # score this many basic rows or more off the event loop


class ScoringRegistry(Protocol):
    """What the scoring service needs from ``evalstack.registry.Registry``."""

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint: ...

    async def put_scoring_fn(self, fn: ScoringFn) -> None: ...

    async def get_scoring_fn(self, fn_id: str) -> ScoringFn | None: ...

    async def list_scoring_fns(self) -> Sequence[ScoringFn]: ...

    async def delete_scoring_fn(self, fn_id: str) -> object: ...


def _builtin(fn_id: str, provider_id: str, description: str, params: ScoringFnParams) -> ScoringFn:
    """A built-in definition; ``provider_resource_id`` is hyphenated as on the reference
    (``basic::subset_of`` -> ``subset-of``, ``llm-as-judge::base`` -> ``llm-as-judge-base``)."""
    name = fn_id.split("::", 1)[1].replace("_", "-")
    return ScoringFn(
        identifier=fn_id,
        provider_resource_id=name if provider_id == BASIC_PROVIDER else f"{provider_id}-{name}",
        provider_id=provider_id,
        description=description,
        metadata={},
        return_type=ParamType(type="number"),
        params=params,
    )


BUILTIN_FUNCTIONS: dict[str, ScoringFn] = {
    fn.identifier: fn
    for fn in (
        _builtin(
            basic.EQUALITY,
            BASIC_PROVIDER,
            "1.0 if generated_answer equals expected_answer exactly, else 0.0.",
            BasicScoringFnParams(aggregation_functions=["accuracy"]),
        ),
        _builtin(
            basic.SUBSET_OF,
            BASIC_PROVIDER,
            "1.0 if expected_answer occurs in generated_answer, else 0.0.",
            BasicScoringFnParams(aggregation_functions=["accuracy"]),
        ),
        _builtin(
            basic.MULTIPLE_CHOICE,
            BASIC_PROVIDER,
            "Extracts the option letter (A-D) after an answer prefix such as 'The best answer is' or "
            "'Answer:' (in several languages) and compares it with expected_answer: 1.0 or 0.0.",
            RegexParserScoringFnParams(
                parsing_regexes=list(basic.MULTIPLE_CHOICE_REGEXES), aggregation_functions=["accuracy"]
            ),
        ),
        _builtin(
            basic.MATH_RESPONSE,
            BASIC_PROVIDER,
            "Extracts the final answer (the last \\boxed{...}, else the text after 'final answer is'; or "
            "the first parsing regex that matches, when given) and compares it with expected_answer after "
            "light LaTeX normalisation: 1.0 or 0.0.",
            RegexParserScoringFnParams(parsing_regexes=[], aggregation_functions=["accuracy"]),
        ),
        _builtin(
            judge.JUDGE_BASE,
            JUDGE_PROVIDER,
            "Asks judge_model to grade generated_answer against expected_answer with prompt_template; "
            "the score is what the first judge_score_regex captures.",
            LLMAsJudgeScoringFnParams(
                judge_model=judge.DEFAULT_JUDGE_MODEL,
                prompt_template=judge.DEFAULT_PROMPT_TEMPLATE,
                judge_score_regexes=list(judge.DEFAULT_SCORE_REGEXES),
                aggregation_functions=["average"],
            ),
        ),
    )
}


def _is_judge(fn: ScoringFn) -> bool:
    return isinstance(fn.params, LLMAsJudgeScoringFnParams)


def aggregation_names(fn: ScoringFn, params: ScoringFnParams | None) -> list[str]:
    """The aggregation functions to apply: the request's, else the definition's, else the default."""
    names: list[str]
    if params is not None and params.aggregation_functions:
        names = list(params.aggregation_functions)
    elif fn.params is not None and fn.params.aggregation_functions:
        names = list(fn.params.aggregation_functions)
    else:
        names = [judge.DEFAULT_JUDGE_AGGREGATION if _is_judge(fn) else "accuracy"]
    check_aggregations(names)
    return names


@dataclass
class _Scorer:
    """A prepared scoring function: one of ``basic`` (sync) or ``judge`` (async) is set."""

    fn: ScoringFn
    required_fields: tuple[str, ...]
    basic: basic.BasicScorer | None = None
    judge: judge.JudgeScorer | None = None

    async def score_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.basic is not None:
            return self.basic(row)
        assert self.judge is not None
        return await self.judge(row)


@dataclass
class ScoringMetric:
    """A scoring function as an engine ``Metric``: ``name`` is the function id."""

    name: str
    scorer: _Scorer

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        """Score one sample: the row's fields, with the model output as ``generated_answer``."""
        row = dict(item)
        if output.text is not None:
            row["generated_answer"] = output.text
        return await self.scorer.score_row(row)


class ScoringService:
    """Lists, registers and runs scoring functions (Llama Stack Scoring and ScoringFunctions APIs)."""

    def __init__(self, registry: ScoringRegistry, clients: ClientSource) -> None:
        self._registry = registry
        self._clients = clients

    # ---- definitions ---------------------------------------------------------------------------

    async def _registered(self, fn_id: str) -> ScoringFn | None:
        try:
            return await self._registry.get_scoring_fn(fn_id)
        except NotFoundError:
            return None

    async def _find(self, fn_id: str) -> ScoringFn | None:
        builtin = BUILTIN_FUNCTIONS.get(fn_id)
        if builtin is not None:
            return builtin.model_copy(deep=True)
        return await self._registered(fn_id)

    async def _available(self) -> str:
        return ", ".join(fn.identifier for fn in await self.list_functions())

    async def list_functions(self) -> list[ScoringFn]:
        """Built-ins first, then registered functions (oldest first)."""
        functions = [fn.model_copy(deep=True) for fn in BUILTIN_FUNCTIONS.values()]
        functions.extend(
            fn for fn in await self._registry.list_scoring_fns() if fn.identifier not in BUILTIN_FUNCTIONS
        )
        return functions

    async def get_function(self, fn_id: str) -> ScoringFn:
        """One function; ``NotFoundError`` naming those that exist."""
        fn = await self._find(fn_id)
        if fn is None:
            raise NotFoundError(
                f"Scoring function '{fn_id}' not found. Available: {await self._available()}."
            )
        return fn

    async def register_function(self, req: ScoringFnRegistration) -> None:
        """Register a ``regex_parser`` or ``llm_as_judge`` function under a new id.

        An id that is already registered is refused (ConflictError, 400), even with the same settings,
        as Llama Stack's llm-as-judge provider refuses it at 0.2.x and 0.7.x alike.
        """
        fn_id = req.scoring_fn_id
        if fn_id in BUILTIN_FUNCTIONS:
            raise ConflictError(
                f"'{fn_id}' is a built-in scoring function and cannot be replaced; choose another id."
            )
        if await self._registered(fn_id) is not None:
            raise ConflictError(
                f"Scoring function '{fn_id}' already exists. "
                f"Unregister it first (DELETE /v1/scoring-functions/{fn_id}) to replace it."
            )
        params = req.params
        if isinstance(params, RegexParserScoringFnParams):
            provider_id = BASIC_PROVIDER
            basic.regex_parser_scorer(fn_id, params.parsing_regexes)
        elif isinstance(params, LLMAsJudgeScoringFnParams):
            provider_id = JUDGE_PROVIDER
            judge.check_judge_settings(
                fn_id, params.judge_model, params.prompt_template, params.judge_score_regexes
            )
        else:
            raise InvalidInputError(
                f"Scoring function '{fn_id}' needs params of type 'regex_parser' (parsing_regexes) or "
                "'llm_as_judge' (judge_model, prompt_template, judge_score_regexes); "
                f"got {'none' if params is None else repr(params.type)}."
            )
        check_aggregations(params.aggregation_functions)
        if req.provider_id is not None and req.provider_id != provider_id:
            raise InvalidInputError(
                f"Scoring function '{fn_id}' with params of type '{params.type}' is served by provider "
                f"'{provider_id}', not '{req.provider_id}'. Omit provider_id or use '{provider_id}'."
            )
        fn = ScoringFn(
            identifier=fn_id,
            provider_resource_id=req.provider_scoring_fn_id or fn_id,
            provider_id=provider_id,
            description=req.description,
            metadata={},
            return_type=req.return_type,
            params=params,
        )
        await self._registry.put_scoring_fn(fn)
        log.info("registered scoring function %s (%s)", fn_id, params.type)

    async def unregister_function(self, fn_id: str) -> None:
        """Remove a registered function; built-ins cannot be removed."""
        if fn_id in BUILTIN_FUNCTIONS:
            raise UnsupportedError(f"'{fn_id}' is a built-in scoring function and cannot be unregistered.")
        if await self._registered(fn_id) is None:
            raise NotFoundError(
                f"Scoring function '{fn_id}' not found. Available: {await self._available()}."
            )
        await self._registry.delete_scoring_fn(fn_id)

    # ---- scoring ---------------------------------------------------------------------------------

    async def _prepare(self, fn: ScoringFn, params: ScoringFnParams | None) -> _Scorer:
        """Check the params against the definition and build the per-row scorer."""
        fn_id = fn.identifier
        definition = fn.params
        aggregation_names(fn, params)
        if isinstance(definition, LLMAsJudgeScoringFnParams):
            if isinstance(params, RegexParserScoringFnParams):
                raise InvalidInputError(
                    f"Scoring function '{fn_id}' is an LLM judge: give params of type 'llm_as_judge' "
                    "(or 'basic' to change only the aggregation), not 'regex_parser'."
                )
            chosen = params if isinstance(params, LLMAsJudgeScoringFnParams) else definition
            scorer = await judge.build_judge(
                fn_id,
                chosen.judge_model,
                chosen.prompt_template if chosen.prompt_template is not None else definition.prompt_template,
                chosen.judge_score_regexes or definition.judge_score_regexes,
                registry=self._registry,
                clients=self._clients,
            )
            return _Scorer(fn, scorer.required_fields, judge=scorer)
        if isinstance(params, LLMAsJudgeScoringFnParams):
            raise InvalidInputError(
                f"Scoring function '{fn_id}' is not an LLM judge: give params of type "
                f"'{definition.type if definition else 'basic'}' or 'basic', not 'llm_as_judge'."
            )
        regexes: list[str] = []
        if isinstance(params, RegexParserScoringFnParams) and params.parsing_regexes:
            regexes = list(params.parsing_regexes)
        elif isinstance(definition, RegexParserScoringFnParams):
            regexes = list(definition.parsing_regexes)
        if fn_id in basic.BUILTIN_BASIC:
            if fn_id == basic.MULTIPLE_CHOICE and tuple(regexes) == basic.MULTIPLE_CHOICE_REGEXES:
                regexes = []  # the precompiled built-ins
            return _Scorer(fn, basic.ANSWER_FIELDS, basic=basic.builtin_scorer(fn_id, regexes))
        if isinstance(definition, RegexParserScoringFnParams):
            return _Scorer(fn, basic.ANSWER_FIELDS, basic=basic.regex_parser_scorer(fn_id, regexes))
        raise InvalidInputError(
            f"Scoring function '{fn_id}' (provider '{fn.provider_id}') cannot be run here: "
            "only regex_parser and llm_as_judge functions can be registered and scored."
        )

    async def metric(self, fn_id: str, params: ScoringFnParams | None) -> Metric:
        """The per-sample scorer of ``fn_id`` with ``params``; its ``score`` returns ``{"score": ...}``
        (plus ``judge_feedback`` for judges). Unknown ids and bad params raise ``InvalidInputError``."""
        fn = await self._find(fn_id)
        if fn is None:
            raise InvalidInputError(
                f"Scoring function '{fn_id}' is not supported. Available: {await self._available()}."
            )
        return ScoringMetric(fn_id, await self._prepare(fn, params))

    def aggregate(
        self, fn: ScoringFn, params: ScoringFnParams | None, score_rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Aggregate the score rows of ``fn`` with the aggregation functions ``params`` select."""
        return aggregate_rows(score_rows, aggregation_names(fn, params))

    async def score(
        self, rows: list[dict[str, Any]], functions: Mapping[str, ScoringFnParams | None]
    ) -> dict[str, ScoringResult]:
        """Score ``rows`` with every function in ``functions``: ``{fn_id: ScoringResult}``.

        Everything is checked before anything is scored: the ids, the params, and that every row
        has the fields each function needs (the error names the row index and the field).
        """
        if not functions:
            raise InvalidInputError(
                f"Give at least one scoring function. Available: {await self._available()}."
            )
        definitions: dict[str, ScoringFn] = {}
        for fn_id in functions:
            fn = await self._find(fn_id)
            if fn is not None:
                definitions[fn_id] = fn
        unknown = [fn_id for fn_id in functions if fn_id not in definitions]
        if unknown:
            raise InvalidInputError(
                f"Scoring function(s) not supported: {', '.join(repr(u) for u in unknown)}. "
                f"Available: {await self._available()}."
            )
        scorers = {
            fn_id: await self._prepare(definitions[fn_id], params) for fn_id, params in functions.items()
        }
        for fn_id, scorer in scorers.items():
            _check_rows(rows, scorer.required_fields, fn_id)
        results: dict[str, ScoringResult] = {}
        for fn_id, scorer in scorers.items():
            score_rows = await _score_all(rows, scorer)
            aggregated = self.aggregate(scorer.fn, functions[fn_id], score_rows)
            results[fn_id] = ScoringResult(score_rows=score_rows, aggregated_results=aggregated)
        return results


def _check_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], fn_id: str) -> None:
    """``InvalidInputError`` naming the first row that lacks (or has null for) a needed field."""
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"Row {index} is not an object; every input row must be a JSON object.")
        for field in fields:
            if row.get(field) is None:
                problem = "has null for" if field in row else "has no"
                raise InvalidInputError(
                    f"Row {index} {problem} '{field}', which scoring function '{fn_id}' needs "
                    f"(it needs: {', '.join(fields)}).",
                    detail={"row": index, "field": field, "scoring_fn": fn_id},
                )


def _with_row_index(index: int, exc: InvalidInputError) -> InvalidInputError:
    return InvalidInputError(f"Row {index}: {exc.message}", detail=exc.detail)


def _score_basic(rows: Sequence[Mapping[str, Any]], scorer: basic.BasicScorer) -> list[dict[str, Any]]:
    out = []
    for index, row in enumerate(rows):
        try:
            out.append(scorer(row))
        except InvalidInputError as exc:
            raise _with_row_index(index, exc) from exc
    return out


async def _score_all(rows: Sequence[Mapping[str, Any]], scorer: _Scorer) -> list[dict[str, Any]]:
    """Score every row: basic ones in a thread when there are many, judges concurrently (bounded)."""
    if scorer.basic is not None:
        if len(rows) >= THREAD_THRESHOLD:
            return await asyncio.to_thread(_score_basic, rows, scorer.basic)
        return _score_basic(rows, scorer.basic)
    judge_scorer = scorer.judge
    assert judge_scorer is not None
    gate = asyncio.Semaphore(JUDGE_CONCURRENCY)
    results: list[dict[str, Any]] = [{} for _ in rows]

    async def one(index: int, row: Mapping[str, Any]) -> None:
        async with gate:
            try:
                results[index] = await judge_scorer(row)
            except InvalidInputError as exc:
                raise _with_row_index(index, exc) from exc

    try:
        async with asyncio.TaskGroup() as group:
            for index, row in enumerate(rows):
                group.create_task(one(index, row))
    except* Exception as excs:  # surface the first failure itself, not the group
        raise excs.exceptions[0] from None
    return results
