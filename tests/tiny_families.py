"""The ``tiny`` configuration of every registered family at 32³, for the tests that run them all."""

from __future__ import annotations

from medgen.core.errors import UsageError
from medgen.families import registry

S = 32


def tiny_model(family: str) -> dict:
    """The family's ``tiny`` preset at 32³, with two classes where the family takes classes.

    ``ldm`` is trained on another run's autoencoder; here it gets a tiny one at random weights.
    """
    fam = registry.get(family)
    extra = {}
    if family == "ldm":
        extra["autoencoder"] = registry.get("ldm-autoencoder").model_config("tiny", S).to_dict()
    try:
        return fam.model_config("tiny", S, num_classes=2, **extra).to_dict()
    except UsageError:  # a family without classes
        return fam.model_config("tiny", S, **extra).to_dict()
