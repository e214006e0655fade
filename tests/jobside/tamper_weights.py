"""Overwrite a text classifier's head in place (bias + 1.0): the model dir's weights are no longer the registered ones.

Run by tests/jobs/test_registry.py::test_weights_changed_after_registration_are_neither_rolled_back_to_nor_served,
in the job environment (PYTHONPATH=include:plugins): ``python tests/jobside/tamper_weights.py MODEL_DIR``
"""

from __future__ import annotations

import sys

from safetensors.torch import load_file, save_file


def main(argv: list[str]) -> None:
    path = argv[0] + "/head.safetensors"
    head = load_file(path)
    head["bias"] = head["bias"] + 1.0
    save_file(head, path)


if __name__ == "__main__":
    main(sys.argv[1:])
