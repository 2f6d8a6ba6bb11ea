"""Build a card's model and load its weights safely, in eval mode.

Weights are loaded with ``torch.load(..., weights_only=True)``: a file whose pickle would run
code is refused, never executed. The state dict must fit the model exactly; a mismatch names
the missing and unexpected keys and any shape differences. torchvision's segmentation weights
carry the auxiliary head (``aux_classifier.*``): the model is then built with it, loaded
strictly, and the head is dropped unless ``keep_aux`` (it only helps training).

Builders are plugin code: each import and call runs inside :func:`zoo.catalog.plugins.plugin_code`
(their prints go to stderr; anything they raise, ``SystemExit`` included, is a
:class:`~zoo.errors.PluginError` naming the plugin, the model and the architecture), and
whatever they return must be an ``nn.Module``.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo._core.settings import counted
from zoo.catalog.plugins import plugin_code
from zoo.errors import PluginError, UsageError, ZooError

if TYPE_CHECKING:
    from torch import nn

    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.weights.resolve import ResolvedWeights

AUX_PREFIX = "aux_classifier."
UNTRAINED_SEED = 0
_SHOW = 5


#: A weights file may declare at most this many times the card's fp32 parameter bytes
#: (fp64 files, buffers), plus ``WEIGHTS_SLACK``; never more than ``MAX_WEIGHTS_BYTES``.
WEIGHTS_FACTOR = 2
WEIGHTS_SLACK = 16 << 20
MAX_WEIGHTS_BYTES = 16 << 30
MAX_TENSORS = 100_000


class WeightsError(ZooError):
    """A weights file that cannot be loaded into its model (unsafe, unreadable, mismatched)."""


def weights_budget(card: ModelCard | None) -> int:
    """The most bytes a weights file for ``card`` may declare (its tensors' storage): twice
    its fp32 parameter bytes (aux head included) plus slack, capped at ``MAX_WEIGHTS_BYTES``."""
    if card is None:
        return MAX_WEIGHTS_BYTES
    params = max(card.num_params, card.num_params_with_aux or 0)
    return min(MAX_WEIGHTS_BYTES, WEIGHTS_FACTOR * 4 * params + WEIGHTS_SLACK)


def check_weights_container(path: Path, budget: int = MAX_WEIGHTS_BYTES) -> bool:
    """Refuse a weights file whose *declared* sizes exceed ``budget`` before anything is
    read into memory: a ``torch.save`` ZIP's entries (checked strictly, so a deflated bomb is
    refused from its central directory), or a legacy file's own size. Returns whether the
    file is a ZIP whose entries are all stored (so it can be memory-mapped)."""
    from zoo._core.fs import human_size
    from zoo.export.containers import ContainerError, ZipLimits, check_zip

    way_out = ("re-save it with torch.save(model.state_dict(), PATH) from the model it belongs "
               "to")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if magic != b"PK\x03\x04":  # the legacy (pickle) format holds its bytes uncompressed
        if size > budget:
            raise WeightsError(f"weights file {path} holds {human_size(size)}, more than the "
                               f"{human_size(budget)} its model can need; {way_out}")
        return False
    limits = ZipLimits(max_entries=MAX_TENSORS + 16, max_entry_size=budget,
                       max_total_size=budget, max_ratio=20, ratio_floor=1 << 16)
    try:
        entries = check_zip(path, f"weights file {path}", limits)
    except ContainerError as exc:
        raise WeightsError(f"{exc}; {way_out}") from None
    return all(e.method == "stored" for e in entries)


def load_state_dict(path: Path, budget: int = MAX_WEIGHTS_BYTES) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``; accepts ``{"state_dict"|"model": ...}``
    wrappers and DataParallel's ``module.`` prefix.

    The file's declared sizes are checked against ``budget`` first
    (:func:`check_weights_container`), it is memory-mapped where it can be (nothing is read
    before the checks), and every tensor must be an ordinary dense one
    (:func:`check_tensors`)."""
    mappable = check_weights_container(path, budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol chatter; errors still raise
            obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=mappable)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):
            raise WeightsError(
                f"cannot read weights {path}: torch.load(weights_only=True) cannot parse it "
                f"({_reason(exc)}); it must be a file written by torch.save(state_dict, PATH)"
            ) from exc
        raise WeightsError(
            f"refusing to load {path}: torch.load(weights_only=True) rejected it "
            f"({_reason(exc)}); loading it fully could run code from the file; re-save it "
            "as a plain state dict with torch.save(model.state_dict(), PATH) in code you trust"
        ) from exc
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise WeightsError(
            f"cannot read weights {path}: not a torch state dict file ({_reason(exc)})"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter "
            "names to tensors)"
        )
    if len(obj) > MAX_TENSORS:
        raise WeightsError(f"weights file {path} holds {len(obj)} entries, more than the "
                           f"{MAX_TENSORS} allowed")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    check_tensors(path, state)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def check_tensors(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse tensors that are not plain weights, naming the file and the tensor: meta
    (no values), sparse or other layouts, quantized, complex."""
    for name, tensor in state.items():
        problem = None
        if tensor.is_meta:
            problem = "is on the meta device (it holds no values)"
        elif tensor.layout != torch.strided:
            problem = f"is {str(tensor.layout).removeprefix('torch.')}; expected a dense tensor"
        elif tensor.is_quantized:
            problem = f"is quantized ({_dtype(tensor)}); expected floating point"
        elif tensor.is_complex():
            problem = f"is {_dtype(tensor)}; expected floating point"
        if problem is not None:
            raise WeightsError(f"weights file {path}: tensor {name!r} {problem}; the weights "
                               "must be a plain state dict of dense real tensors")


class _FiniteCheck:
    """The non-finite value counts of a state dict's floating-point tensors, counted on a
    background thread (torch releases the GIL) while the caller builds the model."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._counts: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(dict(state),),
                                        name="zoo-finite", daemon=True)
        self._thread.start()

    def _run(self, state: dict[str, torch.Tensor]) -> None:
        try:
            self._counts = non_finite_counts(state)
        except BaseException as exc:  # raised by result()
            self._error = exc

    def result(self) -> dict[str, int]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._counts


def non_finite_counts(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``{name: count}`` of the floating-point tensors holding NaN or infinite values."""
    counts = {}
    for name, tensor in state.items():
        if tensor.dtype.is_floating_point and tensor.numel():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                counts[name] = int((~finite).sum())
    return counts


def check_values(path: Path, state: Mapping[str, torch.Tensor],
                 expected: Mapping[str, torch.dtype],
                 non_finite: Mapping[str, int] | None = None) -> None:
    """Each tensor's kind matches the model's (floating point for floating point, integer
    for integer), and floating-point values are finite; errors name the file and tensor.
    ``non_finite`` is :func:`non_finite_counts` of ``state`` when the caller has it."""
    if non_finite is None:
        non_finite = non_finite_counts(state)
    for name, tensor in state.items():
        want = expected.get(name)
        if want is None:
            continue
        if tensor.dtype.is_floating_point != want.is_floating_point:
            kind = "floating point" if want.is_floating_point else \
                f"an integer type ({_dtype_name(want)})"
            raise WeightsError(f"weights file {path}: tensor {name!r} is {_dtype(tensor)}; "
                               f"expected {kind}; nothing is cast silently: are these weights "
                               "for this model?")
        bad = non_finite.get(name, 0)
        if bad:
            raise WeightsError(f"weights file {path}: tensor {name!r} holds "
                               f"{counted(bad, 'NaN or infinite value')} (of "
                               f"{tensor.numel()}); the weights are damaged (diverged "
                               "training or a bad conversion)")


def _dtype(tensor: torch.Tensor) -> str:
    return _dtype_name(tensor.dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _reason(exc: BaseException) -> str:
    """The telling line of torch's multi-paragraph load errors."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    telling = [ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln]
    text = (telling or lines or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def check_fit(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise WeightsError naming missing/unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_listed(shapes)})")
    if problems:
        raise WeightsError(f"{where}: {'; '.join(problems)}; are these weights for this model?")


def _forgotten(exc: WeightsError, weights: ResolvedWeights) -> WeightsError:
    """``exc``, after removing downloaded weights that failed it from the weights cache (a
    server that answered with a bad body must not poison later runs); local files are left
    alone."""
    from zoo.weights.cache import reject_cached

    if weights.url is None or weights.path is None or weights.sha256 is None or \
            not reject_cached(weights.path, weights.sha256):
        return exc
    return WeightsError(f"{exc}; the download was removed from the weights cache, so the next "
                        f"run fetches {weights.url} again")


def builder_plugin(card: ModelCard, registry: Registry) -> str:
    """The name of the plugin that provides ``card``'s builder (for messages)."""
    try:
        return registry.builder_ref(card)[0]
    except ZooError:  # an architecture given as "module:callable" belongs to no plugin
        return card.plugin or card.architecture.partition(":")[0]


def _resolve_builder(card: ModelCard, registry: Registry, plugin: str) -> Any:
    with plugin_code(plugin, f"importing the builder of architecture {card.architecture!r}"):
        return registry.builder(card)


def call_builder(builder: Any, card: ModelCard, aux: bool, plugin: str) -> nn.Module:
    """``builder(card, aux=aux)``, contained; anything but an ``nn.Module`` is the plugin's
    :class:`~zoo.errors.PluginError` naming the plugin, the model and the architecture."""
    from torch import nn

    what = f"building model {card.name!r} (architecture {card.architecture!r})"
    with plugin_code(plugin, what):
        model = builder(card, aux=aux)
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"plugin {plugin!r}: the builder of architecture {card.architecture!r} returned "
            f"{'None' if model is None else 'a ' + type(model).__name__} for model "
            f"{card.name!r}, not a torch.nn.Module; the builder must return the model "
            "(see docs/plugins.md)"
        )
    return model


def _skeleton(builder: Any, card: ModelCard, aux: bool, plugin: str) -> nn.Module:
    """The model's structure without initialising weights: built on the meta device (no
    memory, no random init), to be filled by ``load_state_dict(assign=True)``."""
    with torch.device("meta"):
        return call_builder(builder, card, aux, plugin)


def build_model(
    card: ModelCard,
    weights: ResolvedWeights,
    *,
    keep_aux: bool = False,
    registry: Registry | None = None,
) -> nn.Module:
    """The card's model with ``weights`` loaded (or seeded random init when untrained), in
    eval mode. The aux head is kept only with ``keep_aux``."""
    if registry is None:
        from zoo.catalog.registry import default_registry

        registry = default_registry()
    plugin = builder_plugin(card, registry)
    builder = _resolve_builder(card, registry, plugin)
    if weights.untrained or weights.path is None:
        torch.manual_seed(UNTRAINED_SEED)  # untrained exports are reproducible
        return call_builder(builder, card, keep_aux, plugin).eval()
    try:
        state = load_state_dict(weights.path, weights_budget(card))
    except WeightsError as exc:
        raise _forgotten(exc, weights) from exc
    has_aux = any(k.startswith(AUX_PREFIX) for k in state)
    if keep_aux and not has_aux:
        raise UsageError(
            f"--keep-aux: the weights {weights.source} have no auxiliary head "
            f"({AUX_PREFIX}* keys); drop --keep-aux or use weights that include it"
        )
    where = f"weights {weights.path} do not fit model {card.name!r}"
    finite = _FiniteCheck(state)  # counts non-finite values while the skeleton is built
    model = _skeleton(builder, card, has_aux, plugin)
    check_fit(model, state, where)
    if has_aux and not keep_aux:  # build without the head rather than set it to None later:
        # torchvision declares aux_classifier a TorchScript constant; None breaks scripting
        state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
        model = _skeleton(builder, card, False, plugin)  # the one case that builds twice
    dtypes = {k: t.dtype for k, t in model.state_dict().items()}
    try:
        check_values(weights.path, state, dtypes, finite.result())
    except WeightsError as exc:
        raise _forgotten(exc, weights) from exc
    state = {k: v.to(dtypes[k]) if k in dtypes else v for k, v in state.items()}  # fp16 files
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # pragma: no cover - check_fit catches what strict loading would
        raise WeightsError(f"{where}: {' '.join(str(exc).split())[:300]}") from exc
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        # a tensor the state dict does not hold (non-persistent buffer): build for real
        model = call_builder(builder, card, keep_aux and has_aux, plugin)
        model.load_state_dict(state, strict=True)
    return model.eval()
