"""Reproducible lite archives: kept as the name ``torchscript.py`` imports.

``torch.jit.mobile._backport_for_mobile`` names constant tensors after their memory
addresses (``constants/94828856384912.storage``), so two backports of the same model differ;
scripting names classes from a process-wide counter; debug records hold install paths.
:func:`zoo_plugins.formats.canonical.canonicalize` undoes all three, for lite and TorchScript
archives alike.
"""

from __future__ import annotations

from zoo_plugins.formats.canonical import canonicalize

__all__ = ["canonicalize"]
