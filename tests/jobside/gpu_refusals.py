"""train.py's own arguments (ARG ...) with each GPU-only option added in turn (--precision bf16, --precision fp16,
--quantization nf4, --deepspeed-stage 3), trained in process on CPU: prints, per option value, ``trained`` or
``ExceptionType: message`` as JSON.

Run by tests/jobs/test_llm_lora.py::test_gpu_only_options_are_refused_on_cpu_before_any_work, in the job environment
(PYTHONPATH=include:plugins, SM_* as the runner sets them): ``python tests/jobside/gpu_refusals.py ARG [ARG ...]``
"""

from __future__ import annotations

import json
import sys

from retrain_jobs.train import parse_args, train


def main(argv: list[str]) -> None:
    results = {}
    gpu_only = (["--precision", "bf16"], ["--precision", "fp16"], ["--quantization", "nf4"], ["--deepspeed-stage", "3"])
    for flags in gpu_only:
        try:
            train(*parse_args(argv + flags))
            results[flags[1]] = "trained"
        except Exception as exc:
            results[flags[1]] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
