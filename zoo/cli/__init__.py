"""The ``zoo`` command line: one module a command group, wired together in ``main``."""
