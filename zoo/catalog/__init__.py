"""The catalogue: model cards (``schema``), where they come from (``registry``: built-in
``registry.yaml``, plugins, the user's files), compiled entries (``compiled``), strict YAML
(``yamlio``), plugin discovery (``plugins``, ``distributions``) and the hook specs."""
