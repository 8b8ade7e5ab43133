"""Generation benchmarks: XSum (ROUGE) and WMT22 English-German (BLEU, chrF).

XSum (Narayan et al., 2018), one-sentence news summaries. Prompt (HELM's): completion
``###\\nArticle: <document>\\n\\nSummarize the above article in 1 sentence.\\n`` greedy, ``max_tokens``
64, stop at a blank line; chat: the same text as the user message. Scores ``rouge1``, ``rouge2``,
``rougeL``: F-measures (0 to 1) with Porter stemming (rouge-score), mean over articles with
statistics and CI. 0-shot.

WMT22 general test, en->de (Kocmi et al., 2022). Prompt: ``Translate the following English text into
German.\\n\\nEnglish: <source>\\nGerman:`` (chat: the same, the model answers with the translation
only), greedy, ``max_tokens`` 256, stop at a newline on completions endpoints. Scores: corpus ``bleu``
and ``chrf`` (sacrebleu defaults, 13a tokenisation, as the WMT reports), plus sentence-level
``sentence_bleu`` and ``sentence_chrf`` with statistics and CI. 0-shot. Local data: the aligned
plain-text files ``wmt22/en-de.src.en`` and ``wmt22/en-de.ref.de``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from evalstack.engine.benchmarks.base import Compiled, Context, Rows
from evalstack.engine.benchmarks.common import (
    DataSource,
    Memo,
    chat_request,
    completion_request,
    load_split,
    request_params,
)
from evalstack.engine.benchmarks.extract import strip_reasoning
from evalstack.engine.benchmarks.results import TaskSummary
from evalstack.engine.plan import SampleOutput, TaskPlan
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest
from evalstack.store.records import SampleRecord

# ----------------------------------------------------------------------------------------- XSum


def _xsum_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    return {
        "id": str(row.get("id", position)),
        "document": str(row["document"]),
        "summary": str(row["summary"]),
    }


class _RougeMetric:
    name = "rouge"

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)

    def _score(self, reference: str, prediction: str) -> dict[str, Any]:
        result = self._scorer.score(reference, prediction)
        return {key: float(result[key].fmeasure) for key in ("rouge1", "rouge2", "rougeL")}

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        prediction = strip_reasoning(output.text)
        return await asyncio.to_thread(self._score, str(item["summary"]), prediction)


class Xsum:
    name = "xsum"
    summary = "XSum: one-sentence news summarisation, ROUGE (Narayan et al., 2018)"
    test = DataSource("xsum/test.jsonl", "hf://datasets/EdinburghNLP/xsum?split=test")

    def compile(self, ctx: Context) -> Compiled:
        opts = ctx.opts
        rows = Rows(self.name, ctx, self.test, _xsum_row)

        async def load() -> list[dict[str, Any]]:
            items = await rows.rows()
            return items[: opts.limit]  # a None limit keeps every row

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            text = f"###\nArticle: {item['document']}\n\nSummarize the above article in 1 sentence.\n"
            if opts.endpoint_type == "chat":
                return chat_request(opts, [], text.strip(), request_params(opts, max_tokens=64, stop=None))
            return completion_request(opts, text, request_params(opts, max_tokens=64, stop=["\n\n"]))

        info = {"benchmark": self.name, "endpoint_type": opts.endpoint_type, "num_fewshot": 0}
        plan = TaskPlan(name=ctx.task_name, rows=load, metrics=[_RougeMetric()], build_request=build)
        return Compiled(plans=[plan], summaries=[TaskSummary(name=ctx.task_name, info=info)])


# ---------------------------------------------------------------------------------------- WMT22


def _translation(text: str | None) -> str:
    reply = strip_reasoning(text).strip()
    return reply.splitlines()[0].strip() if reply else ""


class _SentenceMetric:
    name = "translation"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        import sacrebleu

        hypothesis = _translation(output.text)
        reference = str(item["reference"])
        return {
            "sentence_bleu": float(sacrebleu.sentence_bleu(hypothesis, [reference]).score),
            "sentence_chrf": float(sacrebleu.sentence_chrf(hypothesis, [reference]).score),
        }


def _corpus(samples: Sequence[SampleRecord]) -> dict[str, float | None]:
    import sacrebleu

    hypotheses = [_translation(s.output_text) for s in samples]
    references = [str(s.item["reference"]) for s in samples]
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
    }


def _wmt_pairs(row: Mapping[str, Any]) -> tuple[str, str]:
    if "source" in row and "reference" in row:
        return str(row["source"]), str(row["reference"])
    pair = row.get("translation") or row.get("en-de") or row
    if isinstance(pair, Mapping) and "en" in pair and "de" in pair:
        return str(pair["en"]), str(pair["de"])
    raise ValueError("expected source/reference, en/de or translation: {en, de}")


class Wmt22EnDe:
    name = "wmt22_en_de"
    summary = "WMT22 general test, English to German, BLEU and chrF (Kocmi et al., 2022)"
    source = DataSource(
        "wmt22/en-de.src.en", "hf://datasets/haoranxu/WMT22-Test/en-de?split=test", reader="lines"
    )
    reference = DataSource("wmt22/en-de.ref.de", "", reader="lines")

    def compile(self, ctx: Context) -> Compiled:
        opts = ctx.opts

        async def load_all() -> list[dict[str, Any]]:
            first = await load_split(self.name, self.source, opts, ctx.settings)
            if first and set(first[0]) == {"text"}:  # aligned plain-text files
                refs = await load_split(self.name, self.reference, opts, ctx.settings)
                if len(refs) != len(first):
                    raise InvalidInputError(
                        f"{self.name}: the source has {len(first)} lines but the reference {len(refs)}; "
                        "they must align"
                    )
                return [
                    {"id": str(i), "source": s["text"], "reference": r["text"]}
                    for i, (s, r) in enumerate(zip(first, refs, strict=True))
                ]
            items = []
            for i, row in enumerate(first):
                try:
                    source, reference = _wmt_pairs(row)
                except ValueError as exc:
                    raise InvalidInputError(f"{self.name}: row {i}: {exc}") from exc
                items.append({"id": str(i), "source": source, "reference": reference})
            return items

        memo = Memo(load_all)

        async def load() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = await memo.get()
            return items[: opts.limit]  # a None limit keeps every row

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            text = f"Translate the following English text into German.\n\nEnglish: {item['source']}\nGerman:"
            if opts.endpoint_type == "chat":
                user = text.removesuffix("\nGerman:") + "\n\nReply with the German translation only."
                return chat_request(opts, [], user, request_params(opts, max_tokens=256, stop=None))
            return completion_request(opts, text, request_params(opts, max_tokens=256, stop=["\n"]))

        info = {"benchmark": self.name, "endpoint_type": opts.endpoint_type, "num_fewshot": 0}
        plan = TaskPlan(name=ctx.task_name, rows=load, metrics=[_SentenceMetric()], build_request=build)
        summary = TaskSummary(name=ctx.task_name, corpus_scores=_corpus, info=info)
        return Compiled(plans=[plan], summaries=[summary])


XSUM = Xsum()
WMT22_EN_DE = Wmt22EnDe()
