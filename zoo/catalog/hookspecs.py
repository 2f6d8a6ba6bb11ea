"""The plugin contract: every hook a zoo plugin can implement, in one file.

A plugin is a module (or object) registered under the entry-point group ``zoo``::

    [project.entry-points.zoo]
    my_models = "my_package.zoo_plugin"

and implements any of the hooks below, decorated with ``zoo.hookimpl``::

    from zoo import hookimpl

    @hookimpl
    def zoo_models():
        return [Path(__file__).with_name("models.yaml")]

Plugin modules are imported when zoo first needs the registry (not when ``zoo`` is imported),
once per process. Keep them free of heavy imports: name builders as ``"module:callable"``
strings so ``torch`` is imported only when a model is actually built.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("zoo")


@hookspec
def zoo_models() -> list[Any]:
    """Contribute model cards.

    Called once when the registry is first built. Return a list whose items are any of:
    a :class:`zoo.ModelCard`; a ``dict`` with a card's fields; a ``str``/``Path`` to a YAML
    file shaped like ``registry.yaml`` (``models:`` list). Every card is validated; an invalid
    card or an exception here marks the plugin as failed (see ``zoo plugins``) without
    affecting other plugins. A model name claimed by two sources is reported with both.
    """


@hookspec
def zoo_builders() -> dict[str, Any]:
    """Contribute model builders, keyed by architecture name.

    Called once when the registry is first built. Return ``{architecture: builder}`` where
    ``builder`` is a callable or a ``"package.module:callable"`` string (imported only when a
    model is built). A card selects its builder with its ``architecture`` field. The builder
    is called as ``builder(card, aux=False)`` and returns an ``nn.Module`` in eval-ready form
    with ``card.num_classes`` output channels; ``aux=True`` asks for the auxiliary head where
    the architecture has one (needed to load weights that include it).
    """


@hookspec
def zoo_exporters() -> dict[str, Any]:
    """Contribute export formats, keyed by format name (e.g. ``"lite"``).

    Called once when exporters are first needed. Return ``{format: exporter}`` where
    ``exporter`` is a :class:`zoo.export.Exporter` instance, a zero-argument callable
    returning one, or a ``"package.module:attr"`` string naming either.
    """
