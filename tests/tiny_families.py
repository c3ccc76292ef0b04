"""The ``tiny`` configuration of every registered family at 32³, for the tests that run them all."""

from __future__ import annotations

from medgen.core.errors import UsageError
from medgen.families import registry

S = 32


def tiny_model(family: str) -> dict:
    """The family's ``tiny`` preset at 32³, with two classes where the family takes classes.

    ``ldm`` is trained on another run's autoencoder; here it gets a tiny one at random weights (and ``fanogan``,
    trained against another run's HA-GAN, a tiny HA-GAN at random weights). ``cyclegan``
    translates between ``image`` and ``degraded``, the second volume of the shared tests' data sets
    (``make_dataset(..., degraded=True)``), which serves for its mechanics as an unpaired ``b`` would, and
    ``progression`` predicts that volume from ``image`` and the manifest's ``label`` column as the interval
    (a longitudinal toy set: ``make_dataset(..., longitudinal=True)``).
    """
    fam = registry.get(family)
    extra = {}
    if family == "ldm":
        extra["autoencoder"] = registry.get("ldm-autoencoder").model_config("tiny", S).to_dict()
    if family == "fanogan":
        extra["generator"] = registry.get("hagan").model_config("tiny", S).to_dict()
    if family == "cyclegan":
        extra["domain_b"] = "degraded"
    if family == "progression":  # follow-up: the 'degraded' volume; interval: the 0/1 'label' column
        extra.update(target="degraded", interval_column="label")
    try:
        return fam.model_config("tiny", S, num_classes=2, **extra).to_dict()
    except UsageError:  # a family without classes
        return fam.model_config("tiny", S, **extra).to_dict()
