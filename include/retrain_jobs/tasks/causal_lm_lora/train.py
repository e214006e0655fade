"""Training side of the causal_lm_lora task type: a LoRA adapter (peft) on a small causal LM that answers a prompt
with a JSON object of a closed schema.

A channel holds the ETL's split files: ``text`` is the prompt (a review), ``label`` the response (a compact JSON
string, one of ``--labels-file``, the schema's valid responses). Each example is the prompt wrapped in
``--prompt-template`` (``{prompt}`` is replaced), then the response and the tokenizer's end-of-sequence token;
the loss is the mean cross-entropy over the response tokens only (the prompt's labels are -100). The base model is
frozen; LoRA layers (rank ``lora_r``, scale ``lora_alpha / lora_r``, dropout ``lora_dropout``) on
``lora_target_modules`` train. They are built in ``build``, after train.py's ``set_seed``: their initialisation
and dropout draw from torch's seeded RNG, so the same data, arguments and code give the same adapter on CPU.

The model directory holds the adapter only (``adapter/``: peft's ``adapter_model.safetensors`` and
``adapter_config.json``), the tokenizer and ``lm_spec.json``: the base model's name and weights digest
(``retrain_jobs.base.tensor_file_digest``), the prompt template, the response schema and the generation settings.
``load`` resolves the base model, refuses it if its digest is not the recorded one, applies the adapter and checks
the whole model's weights digest; ``predict`` answers greedy generated responses.

GPU-only options, each a real code path, each refused on a CPU before any work:
``quantization: nf4`` (QLoRA: the base loaded 4-bit NF4 through bitsandbytes, ``prepare_model_for_kbit_training``),
``--precision bf16 | fp16`` (train.py's shared option: autocast and loss scaling on CUDA; the base weights load in it)
and
``deepspeed_stage: 3`` (ZeRO-3: a DeepSpeed JSON written from these arguments, the model built under transformers'
``HfDeepSpeedConfig`` so it loads partitioned, and ``deepspeed.initialize``; for multi-GPU SageMaker jobs started
with one process per GPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from retrain_jobs.base import (
    DataError,
    Refused,
    WeightsMismatch,
    resolve_base_model,
    tensor_file_digest,
    verified_digest,
)

SPEC_FILE = "lm_spec.json"
DEFAULT_TEMPLATE = "Review: {prompt}\nJSON (sentiment, source): "


@dataclass
class Args:
    """Hyperparameters of this task type, beside train.py's shared ones; each arrives as ``--key value``."""

    labels_file: str = field(default="", metadata={"help": "JSON list of every valid response (the closed schema)."})
    prompt_template: str = field(
        default=DEFAULT_TEMPLATE,
        metadata={"help": "Wraps each prompt; {prompt} is replaced, a backslash-n is a line break."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj", metadata={"help": "Comma-separated module names that get LoRA layers."}
    )
    lora_layers: int = field(
        default=0,
        metadata={"help": "Only the top K decoder layers get LoRA layers (backward then stops below them); 0 = all."},
    )
    max_prompt_tokens: int = field(default=96, metadata={"help": "Tokens kept of a wrapped prompt (its end is kept)."})
    max_response_tokens: int = field(
        default=24, metadata={"help": "Tokens kept of a response (the end-of-sequence token included)."}
    )
    max_new_tokens: int = field(default=20, metadata={"help": "Greedy generation length when serving and evaluating."})
    quantization: str = field(
        default="none", metadata={"help": "none, or nf4: QLoRA, the base 4-bit NF4 via bitsandbytes (GPU only)."}
    )
    deepspeed_stage: int = field(
        default=0, metadata={"help": "0 = off, 3 = DeepSpeed ZeRO-3 (multi-GPU SageMaker jobs; GPU only)."}
    )
    deepspeed_config_file: str = field(
        default="",
        metadata={"help": "Where the ZeRO-3 JSON is written; default: SM_OUTPUT_DATA_DIR or the checkpoint dir."},
    )


@dataclass
class LMSpec:
    """Everything beside the adapter weights that serving needs (``lm_spec.json``)."""

    base_model: str
    base_model_digest: str
    prompt_template: str
    responses: list[str]
    max_prompt_tokens: int
    max_new_tokens: int
    lora_r: int
    lora_alpha: int
    target_modules: list[str]


def refuse_unsupported(task_args: Args, device: torch.device) -> None:
    """Check the GPU-only options against the device, before anything is read or built (train.py's Precision has
    already refused a GPU-only precision)."""
    if task_args.quantization not in ("none", "nf4"):
        raise Refused(f"quantization {task_args.quantization!r}: expected none or nf4")
    if task_args.deepspeed_stage not in (0, 3):
        raise Refused(f"deepspeed_stage {task_args.deepspeed_stage}: expected 0 (off) or 3 (ZeRO-3)")
    cuda = device.type == "cuda"
    if task_args.quantization == "nf4" and not cuda:
        raise Refused(
            "quantization nf4 (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit NF4 base weights exist to save GPU memory; "
            "this job has none. Use quantization: none on CPU"
        )
    if task_args.deepspeed_stage and not cuda:
        raise Refused(
            "deepspeed_stage 3 (ZeRO-3) needs CUDA GPUs (a multi-GPU SageMaker training job); this job has none. "
            "Use deepspeed_stage: 0 on CPU"
        )
    if task_args.deepspeed_stage and task_args.quantization == "nf4":
        raise Refused(
            "deepspeed_stage 3 with quantization nf4: ZeRO-3 cannot partition bitsandbytes 4-bit weights; choose one"
        )


def deepspeed_config(args, task_args: Args) -> dict:
    """The ZeRO-3 configuration, from this job's arguments (batch sizes, accumulation, precision)."""
    return {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_clipping": 1.0,
        "zero_allow_untested_optimizer": True,  # the client's AdamW (train.py)
        "bf16": {"enabled": args.precision == "bf16"},
        "fp16": {"enabled": args.precision == "fp16"},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "seed": args.seed,
    }


def write_deepspeed_config(args, task_args: Args) -> Path:
    directory = (
        Path(task_args.deepspeed_config_file).parent
        if task_args.deepspeed_config_file
        else Path(os.environ.get("SM_OUTPUT_DATA_DIR") or os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    )
    path = (
        Path(task_args.deepspeed_config_file) if task_args.deepspeed_config_file else directory / "deepspeed_zero3.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deepspeed_config(args, task_args), indent=2) + "\n")
    return path


def read_responses(path: str) -> list[str]:
    if not path:
        raise DataError(
            "--labels-file is required: the JSON list of valid responses (rule: the response schema is closed)"
        )
    responses = list(json.loads(Path(path).read_text()))
    for i, text in enumerate(responses):
        if not isinstance(json.loads(text), dict):
            raise DataError(
                f"{path}: item {i}: {text!r} is not a JSON object; rule: every valid response is a JSON object"
            )
    return responses


def read_channel(directory: str, limit: int) -> list[dict]:
    """Prompt/response rows of every ``*.jsonl`` file of a channel; an empty prompt or response is a DataError (file,
    line, rule)."""
    rows = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            for name, what in (("text", "prompt"), ("label", "response")):
                if not str(row.get(name) or "").strip():
                    raise DataError(
                        f"{path}: line {line_no}: empty {what} ({name!r}); rule: a prompt/response row has a non-empty "
                        "prompt and response"
                    )
            rows.append({"prompt": row["text"], "response": row["label"]})
    if not rows:
        raise DataError(f"{directory}: no examples (*.jsonl); rule: a channel holds at least one prompt/response row")
    return rows[:limit] if limit else rows


def wrap(template: str, prompt: str) -> str:
    """The template with ``{prompt}`` replaced; a backslash-n in the template is a line break (hyperparameters travel
    as single-line strings: SageMaker's CreateTrainingJob refuses a line break in one)."""
    return template.replace("\\n", "\n").replace("{prompt}", prompt)


def encode_pairs(
    tokenizer, template: str, rows: list[dict], max_prompt: int, max_response: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) per row; a long prompt keeps its end (the question is next to the answer)."""
    prompts = tokenizer([wrap(template, r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p[-max_prompt:], (r + [eos])[:max_response]) for p, r in zip(prompts, responses, strict=True)]


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Left-padded input ids, attention mask, position ids (from the mask, as generation counts them) and labels
    (-100 outside the responses). Left padding puts every response at the end, so only the last
    ``longest response + 1`` positions need logits."""
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (p, r) in enumerate(pairs):
        n = len(p) + len(r)
        ids[row, width - n :] = torch.tensor(p + r)
        mask[row, width - n :] = 1
        labels[row, width - len(r) :] = torch.tensor(r)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, labels


def response_loss(
    model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the response tokens, and their count. The LM head runs only on the
    positions that predict a response token (the vocabulary projection is a fifth of the model's compute)."""
    keep = int((labels != -100).sum(-1).max()) + 1
    logits = (
        model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits[:, :-1].float()
    )
    target = labels[:, -(keep - 1) :]
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((target != -100).sum())


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class Task:
    """Frozen causal LM + trainable LoRA layers; the loss is on the response tokens."""

    def __init__(self, args, task_args: Args, device: torch.device, autocast) -> None:
        refuse_unsupported(task_args, device)  # before anything is read, resolved or built
        self.args, self.task_args, self.device, self.autocast = args, task_args, device, autocast
        self.responses = read_responses(task_args.labels_file)
        self.engine = None
        self.deepspeed_file = write_deepspeed_config(args, task_args) if task_args.deepspeed_stage else None
        self.base_dir = resolve_base_model(args.base_model)
        self.base_digest = tensor_file_digest(self.base_dir)
        self.tokenizer = load_tokenizer(self.base_dir)

    def read(self, directory: str, limit: int) -> list[dict]:
        return read_channel(directory, limit)

    def _base(self):
        from transformers import AutoModelForCausalLM

        kwargs = {}
        if self.args.precision in (
            "bf16",
            "fp16",
        ):  # chosen explicitly: the base weights too (auto keeps them fp32 under autocast)
            kwargs["dtype"] = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.args.precision]
        if self.task_args.quantization == "nf4":
            from transformers import BitsAndBytesConfig

            compute = kwargs.get("dtype", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
            kwargs["device_map"] = {"": self.device.index or 0}
        if self.deepspeed_file:
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(
                str(self.deepspeed_file)
            )  # kept alive: from_pretrained then loads ZeRO-3 partitioned
        model = AutoModelForCausalLM.from_pretrained(str(self.base_dir), **kwargs)
        if self.task_args.quantization == "nf4":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return model

    def build(self) -> nn.Module:
        """The frozen base with fresh LoRA layers (torch's RNG was seeded before), on the device."""
        from peft import LoraConfig, get_peft_model

        base = self._base()
        base.config.use_cache = False
        layers = base.config.num_hidden_layers
        if not 0 <= self.task_args.lora_layers <= layers:
            raise ValueError(f"lora_layers={self.task_args.lora_layers}: {self.args.base_model} has {layers} layers")
        top = list(range(layers - self.task_args.lora_layers, layers)) if self.task_args.lora_layers else None
        config = LoraConfig(
            r=self.task_args.lora_r,
            lora_alpha=self.task_args.lora_alpha,
            lora_dropout=self.task_args.lora_dropout,
            target_modules=self.target_modules,
            layers_to_transform=top,
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, config)
        if self.task_args.quantization != "nf4" and not self.deepspeed_file:
            self.model.to(self.device)
        return self.model

    @property
    def target_modules(self) -> list[str]:
        return [m.strip() for m in self.task_args.lora_target_modules.split(",") if m.strip()]

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": self.args.learning_rate}]

    def wrap_training(self, optimizer, scaler):
        """ZeRO-3: ``deepspeed.initialize`` over the model and train.py's optimizer, and the engine's backward and step
        in
        place of train.py's loss scaler (the engine scales, partitions gradients and steps the optimizer). Else
        ``scaler``."""
        if not self.deepspeed_file:
            return scaler
        import deepspeed

        self.engine, _, _, _ = deepspeed.initialize(
            model=self.model, optimizer=optimizer, config=str(self.deepspeed_file)
        )
        return EngineStep(self.engine)

    def prepare(self, rows: list[dict]) -> list[tuple[torch.Tensor, ...]]:
        """Batches of ``batch_size`` pairs of similar lengths (a stable sort by length, so padding stays small), padded
        once; train.py reorders them each epoch with its seeded generator."""
        pairs = encode_pairs(
            self.tokenizer,
            self.task_args.prompt_template,
            rows,
            self.task_args.max_prompt_tokens,
            self.task_args.max_response_tokens,
        )
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        size = self.args.batch_size
        return [
            tuple(
                t.to(self.device)
                for t in collate([pairs[i] for i in order[start : start + size]], self.tokenizer.pad_token_id)
            )
            for start in range(0, len(order), size)
        ]

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the batch's response tokens, and its example count."""
        with self.autocast():
            total, n = response_loss(self.engine or self.model, *batch)
        return total / max(n, 1), len(batch[0])

    def validate(self, batches) -> dict[str, float]:
        """Response-token loss and perplexity of the validation split."""
        self.model.eval()
        total, n = 0.0, 0
        with torch.no_grad(), self.autocast():
            for batch in batches:
                loss, count = response_loss(self.model, *batch)
                total, n = total + loss.item(), n + count
        mean = total / max(n, 1)
        return {"val_loss": mean, "val_perplexity": float(torch.exp(torch.tensor(mean)))}

    def summary_fields(self) -> dict:
        """Extra training_summary.json fields: the base model's weights digest."""
        return {"base_model_digest": self.base_digest}

    def save(self, model_dir: Path) -> None:
        """The adapter only (peft's adapter weights and config), the tokenizer and lm_spec.json."""
        model_dir.mkdir(parents=True, exist_ok=True)
        if self.engine is not None:  # ZeRO-3 partitions the parameters: gather the adapter's before saving it
            import deepspeed

            trainable = [p for p in self.model.parameters() if p.requires_grad]
            with deepspeed.zero.GatheredParameters(trainable):
                self.model.save_pretrained(str(model_dir / "adapter"))
        else:
            self.model.save_pretrained(str(model_dir / "adapter"))
        self.tokenizer.save_pretrained(str(model_dir / "tokenizer"))
        spec = LMSpec(
            base_model=self.args.base_model,
            base_model_digest=self.base_digest,
            prompt_template=self.task_args.prompt_template,
            responses=self.responses,
            max_prompt_tokens=self.task_args.max_prompt_tokens,
            max_new_tokens=self.task_args.max_new_tokens,
            lora_r=self.task_args.lora_r,
            lora_alpha=self.task_args.lora_alpha,
            target_modules=self.target_modules,
        )
        (model_dir / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")


class EngineStep:
    """train.py's loss-scaler interface over a DeepSpeed engine: ``scale(loss).backward()`` is
    ``engine.backward(loss)``,
    ``step`` is ``engine.step()`` (which also zeroes the gradients), ``update`` is the engine's (nothing to do)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def scale(self, loss):
        engine = self.engine

        class _Backward:
            def backward(self_inner):
                engine.backward(loss)

            def __getattr__(self_inner, name):
                return getattr(loss, name)

        return _Backward()

    def step(self, optimizer) -> None:
        self.engine.step()

    def update(self) -> None:
        pass


class LoadedLM:
    """A served LM: the base model with the adapter applied, merged into the base weights once the digest is checked
    (un-merged LoRA layers make every generated token pay for the adapter again). ``base_model()`` is the base alone,
    loaded afresh from the pinned directory: the baseline."""

    def __init__(self, model_dir, expected_digest: str | None) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model_dir = Path(model_dir)
        self.spec = LMSpec(**json.loads((model_dir / SPEC_FILE).read_text()))
        self.base_dir = resolve_base_model(self.spec.base_model)
        found = tensor_file_digest(self.base_dir)
        if found != self.spec.base_model_digest:
            raise WeightsMismatch(
                f"{self.base_dir}: base model weights digest {found} is not the {self.spec.base_model_digest} "
                f"{model_dir} was trained on"
            )
        self.tokenizer = load_tokenizer(model_dir / "tokenizer")
        self.tokenizer.padding_side = "left"  # batched generation: every prompt ends where generation starts
        peft_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(self.base_dir)), str(model_dir / "adapter")
        )
        self.digest = verified_digest(model_dir, peft_model, expected_digest)  # base + adapter, as train.py recorded it
        self.model = peft_model.merge_and_unload().eval()

    def base_model(self) -> LoadedLM:
        """The same interface over the base model alone (no adapter), from the base directory whose digest was
        checked."""
        from transformers import AutoModelForCausalLM

        base = object.__new__(LoadedLM)
        base.spec, base.base_dir, base.tokenizer, base.digest = (
            self.spec,
            self.base_dir,
            self.tokenizer,
            self.spec.base_model_digest,
        )
        base.model = AutoModelForCausalLM.from_pretrained(str(self.base_dir)).eval()
        return base

    def generate(self, prompts: list[str], batch_size: int = 32) -> list[str]:
        """Greedy responses (``max_new_tokens``), batched and left-padded; text up to the end-of-sequence token."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                texts = [wrap(self.spec.prompt_template, p) for p in prompts[start : start + batch_size]]
                enc = self.tokenizer(
                    texts,
                    add_special_tokens=False,
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_prompt_tokens,
                )
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.spec.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
                out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [text.strip() for text in out]


def load(model_dir, expected_digest: str | None) -> LoadedLM:
    """Base + adapter, refused (WeightsMismatch) if the base's digest is not the recorded one or the whole model's
    weights digest is not ``expected_digest``: serving, rollback, evaluation."""
    return LoadedLM(model_dir, expected_digest)


def predict(model: LoadedLM, requests: list) -> list[str]:
    """What the served LM answers: the greedy generated response to each prompt (a string, or a dict with ``text``)."""
    prompts = [r["text"] if isinstance(r, dict) else str(r) for r in requests]
    return model.generate(prompts)
