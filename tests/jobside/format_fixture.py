"""The LLM task's format metrics on six generations against one reference (the expected figures are worked out in
the test): whether each parses under data/llm/responses.json's schema, and whether it is an exact match. Prints
``{"valid": [...], "match": [...]}`` as JSON. Reads data/llm/responses.json from the working directory: run it
from the project root.

Run by tests/jobs/test_llm_lora.py::test_format_metrics_by_hand, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/format_fixture.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from retrain_jobs.tasks.causal_lm_lora.evaluate import exact_match, parse_response, schema_of


def main(argv: list[str]) -> None:
    responses = json.loads(Path("data/llm/responses.json").read_text())
    schema = schema_of(responses)
    reference = '{"sentiment": "negative", "source": "imdb"}'
    generations = [
        '{"sentiment": "negative", "source": "imdb"}',
        ' {"source": "imdb", "sentiment": "negative"} ',
        '{"sentiment": "positive", "source": "imdb"}',
        '{"sentiment": "negative", "source": "netflix"}',
        '{"sentiment": "negative"}',
        "Sentiment: negative",
    ]
    valid = [parse_response(g, schema) is not None for g in generations]
    match = [exact_match(g, reference, schema) for g in generations]
    print(json.dumps({"valid": valid, "match": match}))


if __name__ == "__main__":
    main(sys.argv[1:])
