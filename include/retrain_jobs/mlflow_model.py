"""MLflow "model from code" for every task type: what a registered version loads as.

    model = mlflow.pyfunc.load_model("models:/intent@champion")
    model.predict(pd.DataFrame({"text": ["I lost my card"]}))   # -> ["lost_or_stolen_card"]

The model directory travels as the artifact ``model`` and ``training/`` travels as code, so a
registered version loads without this repository. The task type recorded at registration
(``model_config["task"]``) picks ``retrain_jobs.tasks.<task>.train``, whose ``load`` checks the weights against
the recorded digest and whose ``predict`` answers a batch of requests (a classifier: label names; an
embedding adapter: vectors). Input: a DataFrame with one column ``text`` or a list of requests.
"""

from __future__ import annotations

import importlib

import mlflow
from mlflow.pyfunc import PythonModel


def requests_of(model_input) -> list:
    """A batch of requests: the ``text`` column's strings, a DataFrame's rows as dicts, or the list itself."""
    if hasattr(model_input, "columns"):
        if list(model_input.columns) == ["text"]:
            return [str(text) for text in model_input["text"]]
        return model_input.to_dict(orient="records")
    return list(model_input)


class RetrainModel(PythonModel):
    """Serves a trained model directory through its task type's ``load`` and ``predict``."""

    def load_context(self, context):
        config = getattr(context, "model_config", None) or {}
        self.task = importlib.import_module(f"retrain_jobs.tasks.{config.get('task') or 'text_classification'}.train")
        # The digest recorded at registration: a directory changed since is refused, never served.
        self.model = self.task.load(context.artifacts["model"], config.get("weights_digest") or None)

    def predict(self, context, model_input, params=None):
        return self.task.predict(self.model, requests_of(model_input))


mlflow.models.set_model(RetrainModel())
