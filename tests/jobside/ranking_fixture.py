"""The embedding adapter's ranking metrics on a fixture small enough to check by hand (three queries, four passages;
the expected figures are worked out in the test): prints ``ranking_metrics``'s per-query arrays as JSON.

Run by tests/jobs/test_embedding_adapter.py::test_ranking_metrics_by_hand, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/ranking_fixture.py``
"""

from __future__ import annotations

import json
import sys

import numpy as np

from retrain_jobs.tasks.embedding_adapter.evaluate import ranking_metrics


def main(argv: list[str]) -> None:
    scores = np.array([[0.5, 0.9, 0.1, 0.0], [0.7, 0.2, 0.8, 0.1], [0.3, 0.3, 0.3, 0.3]])
    relevance = np.array([[0, 1, 0, 0], [1, 0, 0, 2], [0, 0, 1, 0]])
    print(json.dumps({k: v.tolist() for k, v in ranking_metrics(scores, relevance).items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
