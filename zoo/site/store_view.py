"""What the team store holds, for the site: per artifact the signer, when, size, identity, and
whether it verifies against the trusted keys (``zoo store verify``'s checks: record name and
fields, signature, every object re-hashed, manifest consistency).

A store that cannot be read does not stop the site: the store section says why, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.site.html import esc, size, table, tag

if TYPE_CHECKING:
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

    def for_model(self, name: str) -> list[StoredArtifact]:
        return [a for a in self.artifacts if a.model == name]


def read_store(config: StoreConfig) -> StoreView:
    """List and audit the store ``config`` names; a store that fails gives a view with
    ``error`` set (never an exception for an unreachable or broken store)."""
    from zoo.weights.urls import redact_url

    view = StoreView(redact_url(config.url), trusted_keys=len(config.trusted_keys))
    trusted = list(config.trusted_keys) or None
    try:
        store = config.open()
        listed = list(store.records(None, trusted))
        report = store.verify(trusted)
    except ZooError as exc:
        view.error = str(exc)
        return view
    except OSError as exc:
        view.error = f"cannot read the store: {exc.strerror or type(exc).__name__}"
        return view
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


def page_body(view: StoreView) -> str:
    """The body of store.html."""
    parts = ["<h1>Team store</h1>\n", summary(view)]
    if view.error is None:
        parts.append(artifacts_table(view.artifacts, with_model=True) if view.artifacts
                     else tag("p", "The store holds no records."))
        for key, why in view.unreadable:
            parts.append(tag("p", esc(f"{key}: {why}"), class_="warning"))
    return "".join(parts)
