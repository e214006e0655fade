"""MLflow "model from code" for the text classifier: what a registered version loads as.

    model = mlflow.pyfunc.load_model("models:/intent@champion")
    model.predict(pd.DataFrame({"text": ["I lost my card"]}))   # -> ["lost_or_stolen_card"]

The classifier directory travels as the artifact ``classifier``; ``training/`` travels as
code, so a registered version loads without this repository.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class TextClassifierModel(PythonModel):
    """Predicts label names for a column ``text`` (or a list of strings)."""

    def load_context(self, context):
        from training.modeling import load_classifier

        # The digest recorded at registration: a classifier directory changed since is refused, never served.
        expected = (getattr(context, "model_config", None) or {}).get("weights_digest") or None
        self.classifier = load_classifier(context.artifacts["classifier"], expected_digest=expected)

    def predict(self, context, model_input, params=None):
        texts = list(model_input["text"]) if hasattr(model_input, "columns") else list(model_input)
        return self.classifier.predict([str(t) for t in texts])


mlflow.models.set_model(TextClassifierModel())
