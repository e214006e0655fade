"""The sentiment model's classification blocks (false escalation rate, per-class F1) for a challenger and a champion
on six golden examples, escalation label index 0 (the expected figures are worked out in the test). Prints
``{"challenger": block, "champion": block}`` as JSON.

Run by tests/jobs/test_sentiment.py::test_false_escalation_rate_by_hand, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/escalation_fixture.py``
"""

from __future__ import annotations

import json
import sys

import numpy as np

from retrain_jobs.tasks.text_classification.evaluate import classification_block


def main(argv: list[str]) -> None:
    labels = ["negative", "positive"]
    y = np.array([0, 0, 1, 1, 1, 1])
    out = {
        role: classification_block(y, np.array(pred), labels, escalation=0)
        for role, pred in (("challenger", [0, 1, 0, 1, 1, 0]), ("champion", [0, 0, 1, 1, 1, 0]))
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
