"""Built-in plugin: the seed's single-layer model, Conv2d(3, C, 3, padding=1) + ReLU."""

from zoo import hookimpl


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {"single_conv": "zoo_plugins.single_conv.model:build"}
