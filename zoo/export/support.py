"""Which model exports to which format and precision: for `zoo list --format` and `zoo info`.

Plain data, no torch: every fact comes from the format's exporter (precisions, optional
extra, ``supports``, runtime availability, deprecation). A format whose plugin is broken
shows as broken in its own row; the other formats are unaffected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from zoo.catalog.schema import ModelCard
from zoo.errors import ZooError
from zoo.export import available_formats, get_exporter


@dataclass(frozen=True)
class FormatSupport:
    """One row of a card's format matrix."""

    format: str
    suffix: str
    precisions: list[str]  # those that work for the card (empty: not supported)
    default_precision: str | None
    installed: bool  # export works here (its extra is installed)
    install: str | None  # the pip line when not
    runs_here: bool  # `zoo verify` can run the golden inputs on this machine
    runtime_note: str | None
    deprecated: str | None
    note: str | None  # why the card does not export to it, or why the format is broken

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def support_row(card: ModelCard, fmt: str) -> FormatSupport:
    """The matrix row of format ``fmt`` for ``card``."""
    try:
        exporter = get_exporter(fmt)
        reason = exporter.supports(card)
        install = exporter.missing_extra()
        runtime = exporter.runtime_unavailable()
        precisions = list(exporter.precisions_for(card))
    except ZooError as exc:
        return FormatSupport(fmt, "?", [], None, False, None, False, None, None,
                             f"broken plugin: {exc}")
    return FormatSupport(
        format=fmt, suffix=exporter.suffix, precisions=precisions,
        default_precision=exporter.default_precision() if precisions else None,
        installed=install is None, install=install, runs_here=runtime is None,
        runtime_note=runtime, deprecated=exporter.deprecated, note=reason,
    )


def support_matrix(card: ModelCard) -> list[FormatSupport]:
    """Every installed format's support for ``card``."""
    return [support_row(card, fmt) for fmt in available_formats()]


def exports_to(card: ModelCard, fmt: str) -> bool:
    """Whether ``card`` is known to export to ``fmt``."""
    return bool(support_row(card, fmt).precisions)
