"""The baseline of bench/training.py: a minimal hand-written PyTorch fine-tuning loop.

Runs with the job interpreter (PYTHONPATH=include). Same model
(retrain_jobs.tasks.text_classification.model.build_classifier),
same trainable parameters as train.py with --trainable-layers 6 (every transformer layer and the
head; embeddings frozen), same AdamW parameter groups, batch size, max_seq_length and threads.
Batches are the same length-bucketed chunks train.py forms, padded once before timing and
visited in a seeded random order each epoch, so both loops do the same arithmetic. Nothing
else: no collation in the loop, no loss readback, no scaler, no deterministic-kernel mode.
Prints one JSON line: loop_seconds, samples, samples_per_second.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from retrain_jobs.tasks.text_classification.model import build_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, kind in (
        ("train-jsonl", str),
        ("labels-file", str),
        ("base-model", str),
        ("epochs", int),
        ("batch-size", int),
        ("max-seq-length", int),
        ("threads", int),
        ("learning-rate", float),
        ("head-learning-rate", float),
        ("weight-decay", float),
        ("seed", int),
    ):
        parser.add_argument(f"--{name}", type=kind, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    labels = json.loads(Path(args.labels_file).read_text())
    rows = [json.loads(line) for line in Path(args.train_jsonl).read_text().splitlines()]
    model, tokenizer = build_classifier(args.base_model, len(labels))
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(("encoder.encoder.layer.", "head."))
    optimizer = torch.optim.AdamW(
        [
            {"params": model.head.parameters(), "lr": args.head_learning_rate},
            {"params": [p for n, p in model.encoder.named_parameters() if p.requires_grad], "lr": args.learning_rate},
        ],
        weight_decay=args.weight_decay,
    )

    ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_seq_length)["input_ids"]
    y = torch.tensor([labels.index(r["label"]) for r in rows])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for start in range(0, len(order), args.batch_size):
        chunk = order[start : start + args.batch_size]
        padded = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
        batches.append((padded["input_ids"], padded["attention_mask"], y[chunk]))

    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    started = time.perf_counter()
    for _ in range(args.epochs):
        for k in torch.randperm(len(batches), generator=generator).tolist():
            input_ids, mask, target = batches[k]
            loss = nn.functional.cross_entropy(model(input_ids, mask), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    samples = len(rows) * args.epochs
    print(json.dumps({"loop_seconds": seconds, "samples": samples, "samples_per_second": samples / seconds}))


if __name__ == "__main__":
    main()
