"""Bench records on a model page: read (``--bench`` files by :func:`zoo.bench.read_record`,
the team store's by :mod:`zoo.store.bench_records`), grouped, labelled with the machine they
were measured on and where they came from, drawn and tabled.

Each record is its own group: its plots and its table carry the machine's description (CPU,
cores, OS, torch, runtimes), the settings and the zoo version, so numbers from two machines or
two zoo versions are never drawn in one plot, and never shown unlabelled. A record from
another zoo version than the one building the site says so. Each group says where it came
from: a bench file (unsigned), or the team store with each signer and whether it is trusted
(or that it is unsigned); the same record from several places is one group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.site.html import esc, num, size, table, tag
from zoo.site.plots import Bar, bar_chart

if TYPE_CHECKING:
    from zoo.bench.record import BenchRecord, Row
    from zoo.store.bench_records import PublishedBench

#: records of one model from the team store shown at most (trusted first, then newest)
MAX_STORE_GROUPS = 32
_STANDING = {"trusted": "a trusted key", "valid": "signature valid; no trusted keys given, "
             "so the signer is not vouched for", "untrusted": "NOT one of the trusted keys"}


@dataclass(frozen=True)
class BenchGroup:
    """One record on a page, and where it came from: bench file names, and the team store's
    copies as ``(signer or None, standing)`` (standing: trusted, valid, untrusted,
    unsigned)."""

    record: BenchRecord
    files: tuple[str, ...] = ()
    stored: tuple[tuple[str | None, str], ...] = ()

    def origin(self) -> str:
        """Where the record came from and who signed it, in words."""
        parts = []
        if self.files:
            parts.append(f"bench file {', '.join(self.files)} (unsigned)")
        for signer, standing in self.stored:
            why = _STANDING.get(standing, standing)
            parts.append("the team store, unsigned" if signer is None else
                         f"the team store, signed by {signer} ({why})")
        return "From " + "; ".join(parts) + "."


#: Which store copies a page keeps first: standing, then newest (``created`` is the
#: publisher's word, so it only orders copies of the same standing).
_RANK = {"trusted": 3, "valid": 2, "untrusted": 1, "unsigned": 0}


def groups(files: dict[str, list[tuple[str, BenchRecord]]],
           stored: Sequence[PublishedBench]) -> dict[str, list[BenchGroup]]:
    """By model, oldest first: each distinct record once, with every place it came from
    (``files``: model -> (file name, record); ``stored``: checked store records, of which
    :data:`MAX_STORE_GROUPS` per model are kept: signed by a trusted key first, then newest)."""
    from zoo.store.bench_records import record_digest

    found: dict[str, dict[str, BenchGroup]] = {}
    for model, items in files.items():
        for name, record in items:
            mine = found.setdefault(model, {})
            key = record_digest(record)
            old = mine.get(key, BenchGroup(record))
            if name not in old.files:
                mine[key] = BenchGroup(record, (*old.files, name), old.stored)
    by_model: dict[str, list[PublishedBench]] = {}
    for item in stored:
        by_model.setdefault(item.record["model"], []).append(item)
    for model, copies in by_model.items():
        copies.sort(key=lambda p: (_RANK.get(p.status, 0), p.record["created"], p.key))
        mine = found.setdefault(model, {})
        for item in copies[-MAX_STORE_GROUPS:]:
            key = record_digest(item.record)
            old = mine.get(key, BenchGroup(item.record))
            copy = (item.signer, item.status)
            if copy not in old.stored:
                mine[key] = BenchGroup(old.record, old.files,
                                       tuple(sorted((*old.stored, copy),
                                                    key=lambda c: (c[0] or "", c[1]))))
    return {model: sorted(mine.values(),
                          key=lambda g: (*_order(g.record), record_digest(g.record)))
            for model, mine in found.items()}


def read_records(paths: Sequence[Path], known: set[str]
                 ) -> dict[str, list[tuple[str, BenchRecord]]]:
    """Every ``--bench`` file, validated, by model: (file name, record), oldest first.
    Raises :class:`zoo.bench.BenchRecordError` (exit 2) for a file that is not a record, and
    UsageError for a record of a model the site does not have."""
    from zoo.bench.record import read_record
    from zoo.errors import UsageError

    found: dict[str, list[tuple[str, BenchRecord]]] = {}
    seen: set[str] = set()
    for path in paths:
        key = str(Path(path).resolve())
        if key in seen:
            continue
        seen.add(key)
        record = read_record(path)
        if record["model"] not in known:
            raise UsageError(f"bench file {path} is for model {record['model']!r}, which is "
                             "not in this catalogue; add its registry file with --registry, "
                             "or leave the file out")
        found.setdefault(record["model"], []).append((Path(path).name, record))
    for records in found.values():
        records.sort(key=lambda item: _order(item[1]))
    return found


def _order(record: BenchRecord) -> tuple[str, str, str]:
    m = record["machine"]
    return (record["created"], machine_label(record), m["cpu"])


def machine_label(record: BenchRecord) -> str:
    """One line naming the machine, its software and the settings of a record."""
    m = record["machine"]
    s = record["settings"]
    runtimes = ", ".join(f"{k} {v}" for k, v in sorted(m["runtimes"].items()))
    return (f"{m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, torch "
            f"{m['torch']}" + (f", {runtimes}" if runtimes else "") +
            f"; {s['size'][0]}x{s['size'][1]}, {s['threads']} threads, {s['runs']} pairs, "
            f"weights {s['weights']}")


def artifact_sizes(records: Sequence[BenchGroup]) -> dict[tuple[str, str], int]:
    """(format, precision) -> artifact size in bytes, from the newest record that has one."""
    sizes: dict[tuple[str, str], int] = {}
    for group in records:  # oldest first: newer records overwrite
        for row in group.record["rows"]:
            if row["size_bytes"] is not None:
                sizes[(row["format"], row["precision"])] = row["size_bytes"]
    return sizes


def _name(row: Row) -> str:
    return f"{row['format']} {row['precision']}"


def section(records: Sequence[BenchGroup], zoo_version: str) -> str:
    """The bench part of a model page: one labelled group per record."""
    return "".join(_group(i + 1, g, zoo_version) for i, g in enumerate(records))


def _group(number: int, group: BenchGroup, zoo_version: str) -> str:
    record = group.record
    rows = record["rows"]
    doubtful = any(standing == "untrusted" for _signer, standing in group.stored)
    origin_class = "origin warning" if doubtful else "origin"
    label = machine_label(record)
    version = record["zoo_version"]
    badge = "" if version == zoo_version else tag(
        "p", esc(f"Measured with zoo {version}; this site was built with zoo {zoo_version}."),
        class_="warning other-version")
    ok = [r for r in rows if r["status"] == "ok" and r["ratio"] is not None]
    charts = []
    if ok:
        charts.append(bar_chart(
            "latency vs eager fp32 (median of pair ratios, min-max whiskers)",
            [Bar(_name(r), r["ratio"]["median"], r["ratio"]["min"], r["ratio"]["max"],
                 f"{r['ratio']['median']:.2f}") for r in ok if r["ratio"] is not None],
            unit="x", reference=1.0, reference_label="eager"))
    sized = [r for r in rows if r["size_bytes"] is not None]
    if sized:
        top = max(r["size_bytes"] or 0 for r in sized) or 1
        scale, unit = next(((s, u) for s, u in ((1 << 30, " GiB"), (1 << 20, " MiB"),
                                                 (1 << 10, " KiB")) if top >= s), (1, " B"))
        charts.append(bar_chart(
            "artifact size", [Bar(_name(r), (r["size_bytes"] or 0) / scale,
                                  text=f"{(r['size_bytes'] or 0) / scale:.1f}") for r in sized],
            unit=unit))
    fidelity = [r for r in rows if r["sqnr_db"] is not None]
    if fidelity:
        charts.append(bar_chart(
            "SQNR vs eager fp32 (higher is closer)",
            [Bar(_name(r), max(0.0, r["sqnr_db"] or 0.0), text=f"{r['sqnr_db']:.1f}")
             for r in fidelity], unit=" dB"))
    cells = []
    for r in rows:
        ratio = r["ratio"]
        lat = r["latency_ms"]
        eager = r["eager_ms"]
        cells.append([
            esc(r["format"]), esc(r["precision"]), esc(r["status"]),
            esc(num(ratio["median"]) if ratio else "-"),
            esc(f"{ratio['min']:.2f}\u2013{ratio['max']:.2f}" if ratio else "-"),
            esc(num(lat["median"], 1) if lat else "-"),
            esc(num(eager["median"], 1) if eager else "-"),
            esc(size(r["size_bytes"])), esc(num(r["sqnr_db"], 1)),
            esc(f"{100 * r['argmax_agreement']:.2f} %" if r["argmax_agreement"] is not None
                else "-"),
            esc(num(r["export_s"], 1)), esc(r["reason"] or ""),
        ])
    numbers = table(
        ["format", "precision", "status", "ratio (median)", "ratio min\u2013max",
         "latency ms", "eager ms", "size", "SQNR dB", "argmax agreement", "export s",
         "why not run"], cells, caption=f"measured {record['created']} on {label}",
        class_="bench", numeric=range(3, 11))
    return (f'<section class="bench-group" id="bench-{number}">\n'
            f"<h3>Measured on {esc(record['machine']['cpu'])} "
            f"({esc(record['machine']['cores'])} cores)</h3>\n"
            f'<p class="machine">{esc(label)}; zoo {esc(version)}; {esc(record["created"])}</p>\n'
            f'<p class="{origin_class}">{esc(group.origin())}</p>\n'
            f"{badge}{''.join(charts)}{numbers}</section>\n")
