"""Which model exports to which format and precision: for `zoo list --format` and `zoo info`.

Plain data, no torch: exporters declare their precisions, optional extra and ``supports``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

from zoo.export import available_formats, get_exporter
from zoo.schema import ModelCard


@dataclass(frozen=True)
class FormatSupport:
    """One row of a card's format matrix."""

    format: str
    suffix: str
    fp32: bool
    int8: bool
    installed: bool
    install: str | None
    note: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def support_matrix(card: ModelCard) -> list[FormatSupport]:
    """Every installed format's support for ``card``."""
    rows = []
    for fmt in available_formats():
        exporter = get_exporter(fmt)
        reason = exporter.supports(card)
        module, extra = exporter.requires or (None, None)
        installed = module is None or importlib.util.find_spec(module) is not None
        rows.append(FormatSupport(
            format=fmt, suffix=exporter.suffix, fp32=reason is None,
            int8=reason is None and "int8" in exporter.quantize_schemes, installed=installed,
            install=None if installed else f"pip install 'zoo[{extra}]'", note=reason,
        ))
    return rows


def exports_to(card: ModelCard, fmt: str) -> bool:
    """Whether ``card`` is known to export to ``fmt``."""
    return get_exporter(fmt).supports(card) is None
