"""The cross-encoder reranker's metrics on a fixture small enough to check by hand (five queries, four candidates
each; the expected figures are worked out in the test): prints ``reranked_metrics``'s per-query arrays as JSON.

Run by tests/jobs/test_reranker.py::test_reranking_metrics_by_hand, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/reranking_fixture.py``
"""

from __future__ import annotations

import json
import sys

import numpy as np

from retrain_jobs.tasks.cross_encoder_reranking.evaluate import reranked_metrics


def main(argv: list[str]) -> None:
    scores = np.array(
        [[0.5, 0.9, 0.1, 0.0], [0.7, 0.2, 0.8, 0.1], [0.3, 0.3, 0.3, 0.3], [0.4, 0.3, 0.2, 0.1], [0.1, 0.9, 0.2, 0.0]]
    )
    gains = np.array([[0, 1, 0, 0], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    ideal = [[1], [1, 2], [1], [1], [1, 1]]
    print(json.dumps({k: v.tolist() for k, v in reranked_metrics(scores, gains, ideal).items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
