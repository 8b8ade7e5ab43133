"""Input bounds: inline rows, limit_samples and n_samples are refused past their limit, saying which."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from evalstack.config import Settings
from evalstack.engine.benchmarks.common import parse_options
from evalstack.engine.nemo_plan import NemoParams
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint
from evalstack.limits import MAX_INLINE_ROWS, MAX_LIMIT_SAMPLES, MAX_N_SAMPLES, MAX_ROW_INDEX
from evalstack.server import create_app

ENDPOINT = ModelEndpoint(kind="openai", model="m", base_url="http://127.0.0.1:9/v1")


def test_too_many_inline_rows_are_refused(tmp_path: Path) -> None:
    rows = [{"q": i} for i in range(MAX_INLINE_ROWS + 1)]
    with TestClient(create_app(Settings(data_dir=tmp_path, embedded_model=False))) as client:
        body = {
            "purpose": "eval/messages-answer",
            "source": {"type": "rows", "rows": rows},
            "dataset_id": "big",
        }
        refused = client.post("/v1/datasets", json=body)
        assert refused.status_code == 400
        assert (
            f"holds {MAX_INLINE_ROWS + 1} rows; at most {MAX_INLINE_ROWS}"
            in refused.json()["error"]["message"]
        )
        body["source"] = {"type": "rows", "rows": rows[:2]}
        assert client.post("/v1/datasets", json=body).status_code == 200
        appended = client.post("/v1/datasetio/append-rows/big", json={"rows": rows})
        assert appended.status_code == 400
        assert "at most" in appended.json()["error"]["message"]
        scored = client.post("/v1/scoring/score", json={"input_rows": rows, "scoring_functions": {}})
        assert scored.status_code == 400
        assert "input_rows" in scored.json()["error"]["message"]


def test_a_rows_page_is_bounded_where_a_database_integer_is_not(tmp_path: Path) -> None:
    # Found by the stateful fuzzer: a limit past SQLite's INTEGER overflowed inside the query (500).
    with TestClient(create_app(Settings(data_dir=tmp_path, embedded_model=False))) as client:
        rows = {"type": "rows", "rows": [{"q": i} for i in range(3)]}
        client.post(
            "/v1/datasets", json={"purpose": "eval/messages-answer", "source": rows, "dataset_id": "d"}
        )
        largest = client.get(
            "/v1beta/datasetio/iterrows/d", params={"start_index": 1, "limit": MAX_ROW_INDEX}
        )
        assert largest.status_code == 200 and largest.json()["data"] == [{"q": 1}, {"q": 2}]
        for name in ("limit", "start_index"):
            refused = client.get("/v1beta/datasetio/iterrows/d", params={name: 451631269840024401608704})
            assert refused.status_code == 400
            assert name in refused.text and str(MAX_ROW_INDEX) in refused.text


def test_limit_samples_and_n_samples_have_upper_bounds() -> None:
    with pytest.raises(InvalidInputError, match=f"limit_samples must be at most {MAX_LIMIT_SAMPLES}"):
        parse_options(ENDPOINT, [{"limit_samples": MAX_LIMIT_SAMPLES + 1}])
    with pytest.raises(InvalidInputError, match=f"n_samples must be at most {MAX_N_SAMPLES}"):
        parse_options(ENDPOINT, [{"extra": {"n_samples": MAX_N_SAMPLES + 1}}])
    assert parse_options(ENDPOINT, [{"limit_samples": 5, "extra": {"n_samples": 10}}]).n_samples == 10
    with pytest.raises(ValueError, match="less than or equal to 10000000"):
        NemoParams.model_validate({"limit_samples": MAX_LIMIT_SAMPLES + 1})
