"""zoo site: a static, offline, deterministic catalogue site (HTML + CSS, a little plain
JavaScript), built from the registry, bench records, the team store and ONNX artifacts.

``build_site(registry, out, options)`` writes the whole site into a fresh folder and swaps it
into place. Nothing on a page is fetched at view time: styles, scripts, images, plots (inline
SVG) and the demo's ONNX Runtime Web files are inside the folder. Every string from a card, a
bench record, a store or a manifest is data and is escaped (:mod:`zoo.site.html`).

Modules, by job: ``html`` (escaping, the page shell), ``palette`` (swatches, contrast, paging),
``plots`` (hand-written SVG), ``index`` (the index page, its search data), ``model_page`` (a
page per model), ``benchdata`` (bench records grouped by machine), ``overlays`` (the golden
scene through the eager model), ``snippets`` (docs/apps.md per format), ``store_view`` (what
the team store holds), ``demo`` (onnxruntime-web pages), ``build`` (the whole site).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.site.build import SiteOptions, SiteReport, build_site

__all__ = ["SiteOptions", "SiteReport", "build_site"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo.site import build

        return getattr(build, name)
    raise AttributeError(f"module 'zoo.site' has no attribute {name!r}")
