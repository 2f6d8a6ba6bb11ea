"""What the team store holds, for the site: per artifact the signer, when, size, identity, and
whether it verifies against the trusted keys (``zoo store verify``'s checks: record name and
fields, signature, every object re-hashed, manifest consistency); and the bench records it
holds (``bench/``, read by :func:`zoo.store.bench_records.list_bench`), each refused file
with its reason.

A store that cannot be read does not stop the site: the store section says why, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.site.html import esc, size, table, tag

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zoo.store.bench_records import PublishedBench
    from zoo.store.config import StoreConfig


@dataclass(frozen=True)
class StoredArtifact:
    """One record of the store, with its audit verdict."""

    model: str
    format: str
    precision: str
    size: int
    signer: str  # 'ed25519:<16 hex>' or 'unsigned'
    signature: str  # trusted, untrusted, valid, invalid, unsigned
    published_at: str
    publisher: str
    identity: str
    record: str
    untrained: bool
    verifies: bool
    problems: tuple[str, ...]
    revoked: str | None


@dataclass
class StoreView:
    """The store's artifacts (newest first), or why they could not be listed."""

    url: str
    artifacts: list[StoredArtifact] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (record key, why)
    error: str | None = None
    trusted_keys: int = 0
    bench: list[PublishedBench] = field(default_factory=list)  # checked, oldest first
    bench_refused: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    bench_error: str | None = None  # bench/ could not be listed

    def for_model(self, name: str) -> list[StoredArtifact]:
        return [a for a in self.artifacts if a.model == name]

    def bench_refused_for(self, name: str) -> list[tuple[str, str]]:
        """The refused bench files filed under model ``name``."""
        return [(k, why) for k, why in self.bench_refused if k.startswith(f"bench/{name}/")]


def _failure(exc: Exception) -> str:
    if isinstance(exc, ZooError):
        return str(exc)
    return f"cannot read the store: {getattr(exc, 'strerror', None) or type(exc).__name__}"


def read_store(config: StoreConfig, models: Iterable[str] | None = None) -> StoreView:
    """List and audit the store ``config`` names, and read its bench records of ``models``
    (None: all); a store that fails gives a view with ``error`` set (never an exception for
    an unreachable or broken store)."""
    from zoo.store.bench_records import list_bench
    from zoo.weights.urls import redact_url

    view = StoreView(redact_url(config.url), trusted_keys=len(config.trusted_keys))
    trusted = list(config.trusted_keys) or None
    try:
        store = config.open()
        listed = list(store.records(None, trusted))
        report = store.verify(trusted)
    except (ZooError, OSError) as exc:
        view.error = _failure(exc)
        return view
    try:
        bench = list_bench(store, models, trusted)
        view.bench, view.bench_refused = bench.records, bench.refused
    except (ZooError, OSError) as exc:
        view.bench_error = _failure(exc)
    verdicts = {entry["record"]: entry for entry in report.records}
    for item in listed:
        if item.record is None:
            view.unreadable.append((item.key, item.error or "unreadable"))
            continue
        st = item.record.statement
        sig = item.record.signature
        audit = verdicts.get(item.key, {"problems": ["not seen by the audit"]})
        problems = tuple(str(p) for p in audit.get("problems") or ())
        view.artifacts.append(StoredArtifact(
            model=st.model, format=st.format, precision=st.precision, size=st.size,
            signer=sig.public_key.short if sig else "unsigned",
            signature=item.signature or "unsigned", published_at=st.published_at,
            publisher=st.publisher, identity=st.identity, record=item.key,
            untrained=st.untrained, verifies=not problems and not item.revoked,
            problems=problems, revoked=item.revoked))
    view.artifacts.sort(key=lambda a: (a.published_at, a.record), reverse=True)
    view.unreadable.sort()
    return view


def _verdict(a: StoredArtifact) -> str:
    if a.revoked:
        return tag("span", esc(f"REVOKED: {a.revoked}"), class_="bad")
    if a.verifies:
        what = "verifies" + (" (signed by a trusted key)" if a.signature == "trusted" else
                             f" ({a.signature})")
        return tag("span", esc(what), class_="good")
    return tag("span", esc("does NOT verify: " + "; ".join(a.problems)), class_="bad")


def artifacts_table(artifacts: list[StoredArtifact], *, with_model: bool) -> str:
    """The store's artifacts as a table (markup)."""
    headers = (["model"] if with_model else []) + [
        "format", "precision", "size", "signed by", "published", "identity", "verifies"]
    rows = []
    for a in artifacts:
        model = [esc(a.model) + (" " + tag("span", "untrained", class_="warning-inline")
                                 if a.untrained else "")] if with_model else []
        rows.append([
            *model, esc(a.format), esc(a.precision), esc(size(a.size)),
            esc(a.signer) + tag("span", esc(f" ({a.signature})"), class_="dim"),
            esc(a.published_at[:19].replace("T", " ") + "Z") + "<br>" +
            tag("span", esc(a.publisher), class_="dim"),
            tag("code", esc(a.identity[:16]), title=a.identity),
            _verdict(a)])
    return table(headers, rows, class_="store", numeric=[3 if with_model else 2])


def summary(view: StoreView) -> str:
    """The store's state in one paragraph (markup)."""
    keys = (f"checked against {view.trusted_keys} trusted key(s)" if view.trusted_keys else
            "no trusted keys given: signatures are checked, signers are not vouched for "
            "(pass --trusted-key)")
    if view.error is not None:
        return tag("p", esc(f"The team store {view.url} could not be read: {view.error}"),
                   class_="warning store-error")
    good = sum(1 for a in view.artifacts if a.verifies)
    return tag("p", esc(f"The team store {view.url} holds {len(view.artifacts)} artifact(s), "
                        f"{good} of them verify; {keys}."), class_="store-summary")


def bench_summary(view: StoreView) -> str:
    """The store's bench records in one paragraph, and each refused file (markup)."""
    if view.error is not None:
        return ""
    if view.bench_error is not None:
        return tag("p", esc(f"The store's bench records could not be read: {view.bench_error}"),
                   class_="warning store-error")
    signed = sum(1 for b in view.bench if b.signature is not None)
    parts = [tag("p", esc(f"The team store holds {len(view.bench)} bench record(s) of this "
                          f"catalogue's models ({signed} signed); they are plotted on the "
                          "model pages."), class_="store-summary")]
    return "".join(parts) + refused_list(view.bench_refused)


def refused_list(refused: list[tuple[str, str]]) -> str:
    """Refused bench files, one line each: the key and why (markup)."""
    return "".join(tag("p", esc(f"refused {key}: {why}"), class_="warning bench-refused")
                   for key, why in refused)


def page_body(view: StoreView) -> str:
    """The body of store.html."""
    parts = ["<h1>Team store</h1>\n", summary(view)]
    if view.error is None:
        parts.append(artifacts_table(view.artifacts, with_model=True) if view.artifacts
                     else tag("p", "The store holds no records."))
        for key, why in view.unreadable:
            parts.append(tag("p", esc(f"{key}: {why}"), class_="warning"))
        parts.append("<h2>Bench records</h2>\n" + bench_summary(view))
    return "".join(parts)
