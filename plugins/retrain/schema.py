"""The base of every validated config section: strict (unknown fields are errors) and frozen.

Shared by the model config (``retrain.config``), the aws backend's section (``retrain.aws.config``) and each
task type's gate policy section (``retrain.tasks.<task>``), so none of them imports another to get it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config section: unknown fields are refused, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
