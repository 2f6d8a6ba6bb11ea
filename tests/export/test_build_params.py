"""Every built-in model, built through its plugin without weights, matches its card.

Parameter counts (``num_params`` without the aux head, ``num_params_with_aux`` with it) and
the output contract (a dict with ``out`` and, with the aux head, ``aux``; or a bare tensor of
``num_classes`` channels at the input size). Each model variant is built once.
"""

from __future__ import annotations

import pytest

from zoo.catalog.registry import builtin_registry_path, default_registry, read_registry_file

CARDS = read_registry_file(builtin_registry_path())  # plain data: no plugin, no torch
VARIANTS = [(c.name, False) for c in CARDS] + [
    (c.name, True) for c in CARDS if c.num_params_with_aux
]


def test_the_catalogue_declares_the_seed_counts() -> None:
    counts = {c.name: (c.num_params, c.num_params_with_aux) for c in CARDS}
    assert counts["single_conv"] == (644, None)
    assert counts["deeplabv3_resnet50"] == (39638869, 42004074)
    assert len(VARIANTS) == 7 + 5  # five models have an auxiliary head


@pytest.mark.parametrize(
    ("name", "aux"), VARIANTS, ids=[f"{n}-{'aux' if a else 'main'}" for n, a in VARIANTS]
)
def test_built_model_matches_its_card(name: str, aux: bool) -> None:
    import torch

    registry = default_registry()
    card = registry.get(name)
    model = registry.builder(card)(card, aux=aux)
    assert isinstance(model, torch.nn.Module)

    count = sum(p.numel() for p in model.parameters())
    assert count == (card.num_params_with_aux if aux else card.num_params)

    model.eval()
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
    shape = (1, card.num_classes, 64, 48)
    if card.output.kind == "tensor":
        assert isinstance(out, torch.Tensor)
        assert out.shape == shape
        return
    assert isinstance(out, dict)
    assert out[card.output.key].shape == shape
    expected_keys = {card.output.key, *(card.output.optional_keys if aux else [])}
    assert set(out) == expected_keys
    for key in expected_keys:
        assert out[key].shape == shape
