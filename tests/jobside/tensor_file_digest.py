"""Print the weights digest of a model directory's tensor files (``tensor_file_digest``), as the base model's digest
is recorded.

Run by tests/jobs/test_llm_lora.py::test_loss_falls_and_the_model_dir_holds_the_adapter_only, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/tensor_file_digest.py MODEL_DIR``
"""

from __future__ import annotations

import sys

from retrain_jobs.base import tensor_file_digest


def main(argv: list[str]) -> None:
    print(tensor_file_digest(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
