"""Read each reranking golden directory as evaluation does (``read_golden``) and print, per directory, ``read DIR``
or the DataError that names the file, row and rule.

Run by tests/jobs/test_reranker.py::test_bad_candidate_lists_name_file_row_and_rule, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/read_golden.py DIR [DIR ...]``
"""

from __future__ import annotations

import sys
from pathlib import Path

from retrain_jobs.base import DataError
from retrain_jobs.tasks.cross_encoder_reranking.evaluate import read_golden


def main(argv: list[str]) -> None:
    for directory in argv:
        try:
            read_golden(Path(directory))
            print("read", directory)
        except DataError as exc:
            print(exc)


if __name__ == "__main__":
    main(sys.argv[1:])
