"""Print the tensor names of a safetensors file, sorted, as a JSON list.

Run by tests/jobs/test_llm_lora.py::test_loss_falls_and_the_model_dir_holds_the_adapter_only, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/safetensors_keys.py FILE``
"""

from __future__ import annotations

import json
import sys

from safetensors import safe_open


def main(argv: list[str]) -> None:
    print(json.dumps(sorted(safe_open(argv[0], "pt").keys())))


if __name__ == "__main__":
    main(sys.argv[1:])
