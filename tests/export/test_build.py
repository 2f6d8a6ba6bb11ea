"""build_model: safe loading, key mismatches named, torchvision's aux head handled."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.support.httpserver import state_dict_bytes
from zoo.catalog.registry import default_registry
from zoo.errors import UsageError
from zoo.export.build import WeightsError, build_model
from zoo.weights.resolve import UNTRAINED, ResolvedWeights


def local(path: Path) -> ResolvedWeights:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return ResolvedWeights(path, sha, str(path), None, False)


def write(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def test_loads_a_state_dict_in_eval_mode(tmp_path: Path) -> None:
    card = default_registry().get("single_conv")
    path = tmp_path / "w.pth"
    path.write_bytes(state_dict_bytes("single_conv", seed=7))
    model = build_model(card, local(path))
    assert not model.training
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_wrapped_and_data_parallel_state_dicts(tmp_path: Path) -> None:
    card = default_registry().get("single_conv")
    state = torch.load(io.BytesIO(state_dict_bytes("single_conv")), weights_only=True)
    for obj in ({"state_dict": state}, {"model": state},
                {f"module.{k}": v for k, v in state.items()}):
        model = build_model(card, local(write(tmp_path / "x.pth", obj)))
        key = "conv_layer1.0.weight"
        assert torch.equal(model.state_dict()[key], state[key])


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    card = default_registry().get("single_conv")
    evil = write(tmp_path / "evil.pth", {"conv_layer1.0.weight": _Payload()})
    with pytest.raises(WeightsError, match="refusing to load") as info:
        build_model(card, local(evil))
    assert str(evil) in str(info.value) and "posix.system" in str(info.value)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(WeightsError, match=r"raw\.pkl"):
        build_model(card, local(raw))
    assert not (tmp_path / "PWNED").exists()


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(WeightsError, match=r"cannot read weights .*junk\.pth"):
        build_model(default_registry().get("single_conv"), local(junk))


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    registry = default_registry()
    card = registry.get("single_conv")
    state = torch.load(write(tmp_path / "a.pth", {
        "conv_layer1.0.weight": torch.zeros(21, 3, 3, 3), "conv_layer1.0.bias": torch.zeros(21),
    }), weights_only=True)
    with pytest.raises(WeightsError, match=r"2 shape mismatches \(conv_layer1\.0\.bias \[21\] "
                       r"vs model \[23\], conv_layer1\.0\.weight \[21, 3, 3, 3\] vs model "
                       r"\[23, 3, 3, 3\]"):
        build_model(card, local(tmp_path / "a.pth"))
    renamed = {"conv.weight": state["conv_layer1.0.weight"], "conv_layer1.0.bias": torch.zeros(23)}
    with pytest.raises(WeightsError) as info:
        build_model(card, local(write(tmp_path / "b.pth", renamed)))
    message = str(info.value)
    assert "1 missing keys (conv_layer1.0.weight)" in message
    assert "1 unexpected keys (conv.weight)" in message
    assert "single_conv" in message and "b.pth" in message


@pytest.fixture(scope="module")
def deeplab_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deeplab")
    files = {}
    for aux in (True, False):
        files[f"aux={aux}"] = root / f"aux_{aux}.pth"
        files[f"aux={aux}"].write_bytes(state_dict_bytes("deeplabv3_mobilenet_v3_large", aux=aux))
    return files


def test_aux_head_is_loaded_then_dropped(deeplab_files: dict[str, Path]) -> None:
    card = default_registry().get("deeplabv3_mobilenet_v3_large")
    weights = local(deeplab_files["aux=True"])
    model = build_model(card, weights)
    assert model.aux_classifier is None and not model.training
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert set(out) == {"out"} and out["out"].shape == (1, 21, 64, 64)
    kept = build_model(card, weights, keep_aux=True)
    assert kept.aux_classifier is not None
    with torch.no_grad():
        assert set(kept(torch.rand(1, 3, 64, 64))) == {"out", "aux"}
    saved = torch.load(deeplab_files["aux=True"], weights_only=True)
    assert torch.equal(kept.state_dict()["aux_classifier.4.bias"], saved["aux_classifier.4.bias"])


def test_weights_without_aux(deeplab_files: dict[str, Path]) -> None:
    card = default_registry().get("deeplabv3_mobilenet_v3_large")
    weights = local(deeplab_files["aux=False"])
    assert build_model(card, weights).aux_classifier is None
    with pytest.raises(UsageError, match="no auxiliary head"):
        build_model(card, weights, keep_aux=True)


def test_untrained_is_seeded_and_reproducible() -> None:
    card = default_registry().get("single_conv")
    torch.manual_seed(123)
    a = build_model(card, UNTRAINED)
    torch.manual_seed(456)
    b = build_model(card, UNTRAINED)
    assert not a.training
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def _registry_with(builder: object) -> tuple[object, object]:
    """A registry where plugin 'contract_test' provides architecture 'contract_arch' with
    ``builder``, and a copy of single_conv's card that uses it."""
    import zoo
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.registry import Registry

    class Builders:
        @zoo.hookimpl
        def zoo_builders(self) -> dict[str, object]:
            return {"contract_arch": builder}

    host = PluginHost()
    host.register(Builders(), name="contract_test")
    registry = Registry(host=host)
    card = registry.get("single_conv").model_copy(
        update={"name": "contract_model", "architecture": "contract_arch"})
    return registry, card


def test_builder_contract_breaches_are_the_plugins_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With and without weights (the weights path builds on the meta device first): a
    builder returning None or a dict, raising, or calling sys.exit() is a PluginError naming
    the plugin, the model and the architecture; what it prints goes to stderr."""
    import sys

    from zoo.errors import PluginError

    weights = tmp_path / "w.pth"
    weights.write_bytes(state_dict_bytes("single_conv"))

    def exits(card: object, aux: bool = False) -> None:
        sys.exit(0)

    def raises(card: object, aux: bool = False) -> None:
        raise KeyError("backbone")

    def chatty(card: object, aux: bool = False) -> object:
        print("building!")
        from zoo_plugins.single_conv.model import build

        return build(card, aux=aux)

    cases = [
        (lambda card, aux=False: None, r"plugin 'contract_test': the builder of architecture "
         r"'contract_arch' returned None for model 'contract_model', not a torch\.nn\.Module"),
        (lambda card, aux=False: {"out": 1}, r"returned a dict for model 'contract_model'"),
        (raises, r"plugin 'contract_test' failed in building model 'contract_model' "
         r"\(architecture 'contract_arch'\): KeyError: 'backbone'"),
        (exits, r"plugin 'contract_test' failed in building model 'contract_model' .*"
         r"SystemExit\(0\)"),
    ]
    for builder, message in cases:
        registry, card = _registry_with(builder)
        for source in (UNTRAINED, local(weights)):
            with pytest.raises(PluginError, match=message):
                build_model(card, source, registry=registry)  # type: ignore[arg-type]
    registry, card = _registry_with(chatty)
    model = build_model(card, local(weights), registry=registry)  # type: ignore[arg-type]
    assert isinstance(model, torch.nn.Module) and not model.training
    out, err = capsys.readouterr()
    # one build: the meta skeleton checks the fit and takes the weights (a second build is
    # needed only to drop an aux head the weights have)
    assert out == "" and err.count("building!") == 1
