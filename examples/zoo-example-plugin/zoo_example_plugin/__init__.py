"""An example zoo plugin: one model card (``models.yaml``) and the builder that makes it.

zoo imports this module when it first needs its registry, even for ``zoo list``, so it stays
light: no torch here. The builder is named as a dotted path and imported only when a model is
built (``zoo fetch``, ``zoo run``).
"""

from __future__ import annotations

from pathlib import Path

from zoo import hookimpl

MODELS_FILE = Path(__file__).with_name("models.yaml")


@hookimpl
def zoo_models() -> list[Path]:
    """Our cards live in a YAML file shipped as package data, shaped like zoo's registry.yaml."""
    return [MODELS_FILE]


@hookimpl
def zoo_builders() -> dict[str, str]:
    """The card's ``architecture: tiny_segnet`` selects this builder."""
    return {"tiny_segnet": "zoo_example_plugin.model:build"}


@hookimpl
def zoo_exporters() -> dict[str, str]:
    """A format of our own: the class is imported only when the format is used."""
    return {"example_traced": "zoo_example_plugin.formats:TracedExporter"}
