"""The original change's README example "register a custom evaluation", verbatim, for the tests that run it.

Its dataset, ``hf://datasets/default/sample-basic-test/testing/testing.jsonl``, is served in tests by
``tests.fakes.hf_hub.FakeHub`` as ``HUB_REPO`` / ``HUB_PATH``.
"""

from __future__ import annotations

import json
from typing import Any

# The body of POST /eval/benchmarks, as the README gives it.
SEED_REGISTER_BODY = json.loads(
    """
{
"benchmark_id": "my-custom-benchmark",
"dataset_id": "",
"scoring_functions": [],
"metadata": {
"type": "custom",
"params": {
"parallelism": 8
},
"tasks": {
"qa": {
"type": "completion",
"params": {
"template": {
"prompt": "{{prompt}}",
"max_tokens": 200
}
},
"dataset": {
"files_url": "hf://datasets/default/sample-basic-test/testing/testing.jsonl"
},
"metrics": {
"bleu": {
"type": "bleu",
"params": {
"references": [
"{{ideal_response}}"
]
}
}
}
}
}
}
}
"""
)

SEED_CONFIG: dict[str, Any] = SEED_REGISTER_BODY["metadata"]
BENCHMARK_ID: str = SEED_REGISTER_BODY["benchmark_id"]
HUB_REPO = "default/sample-basic-test"
HUB_PATH = "testing/testing.jsonl"
