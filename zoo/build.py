"""Build a card's model and load its weights safely, in eval mode.

Weights are loaded with ``torch.load(..., weights_only=True)``: a file whose pickle would run
code is refused, never executed. The state dict must fit the model exactly; a mismatch names
the missing and unexpected keys and any shape differences. torchvision's segmentation weights
carry the auxiliary head (``aux_classifier.*``): the model is then built with it, loaded
strictly, and the head is dropped unless ``keep_aux`` (it only helps training).

Builders are plugin code: each import and call runs inside :func:`zoo.plugins.plugin_code`
(their prints go to stderr; anything they raise, ``SystemExit`` included, is a
:class:`~zoo.errors.PluginError` naming the plugin, the model and the architecture), and
whatever they return must be an ``nn.Module``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.errors import PluginError, UsageError, ZooError
from zoo.plugins import plugin_code

if TYPE_CHECKING:
    from torch import nn

    from zoo.registry import Registry
    from zoo.schema import ModelCard
    from zoo.weights import ResolvedWeights

AUX_PREFIX = "aux_classifier."
UNTRAINED_SEED = 0
_SHOW = 5


class WeightsError(ZooError):
    """A weights file that cannot be loaded into its model (unsafe, unreadable, mismatched)."""


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``; accepts ``{"state_dict"|"model": ...}``
    wrappers and DataParallel's ``module.`` prefix."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol chatter; errors still raise
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
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
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


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
        from zoo.registry import default_registry

        registry = default_registry()
    plugin = builder_plugin(card, registry)
    builder = _resolve_builder(card, registry, plugin)
    if weights.untrained or weights.path is None:
        torch.manual_seed(UNTRAINED_SEED)  # untrained exports are reproducible
        return call_builder(builder, card, keep_aux, plugin).eval()
    state = load_state_dict(weights.path)
    has_aux = any(k.startswith(AUX_PREFIX) for k in state)
    if keep_aux and not has_aux:
        raise UsageError(
            f"--keep-aux: the weights {weights.source} have no auxiliary head "
            f"({AUX_PREFIX}* keys); drop --keep-aux or use weights that include it"
        )
    where = f"weights {weights.path} do not fit model {card.name!r}"
    check_fit(_skeleton(builder, card, has_aux, plugin), state, where)
    if has_aux and not keep_aux:  # build without the head rather than set it to None later:
        # torchvision declares aux_classifier a TorchScript constant; None breaks scripting
        state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
    model = _skeleton(builder, card, keep_aux and has_aux, plugin)
    dtypes = {k: t.dtype for k, t in model.state_dict().items()}
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
