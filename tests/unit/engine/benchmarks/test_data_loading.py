"""Where an academic task's rows come from when its dataset.files_url is a data: URL."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from evalstack.config import Settings
from evalstack.engine.benchmarks.common import DataSource, Options, load_split

SOURCE = DataSource("gsm8k/test.jsonl", "hf://datasets/openai/gsm8k/main?split=test")


@pytest.mark.parametrize("count", [1, 2, 3])  # base64 with two, one and no padding characters
async def test_a_data_url_files_url_is_read_as_the_file_it_holds(count: int, tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(count)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    url = "data:application/jsonl;base64," + base64.b64encode(text.encode()).decode()
    options = Options(files_url=url)

    loaded = await load_split("gsm8k", SOURCE, options, Settings(data_dir=tmp_path, embedded_model=False))

    assert loaded == rows
