"""Built-in plugin: torchvision's LR-ASPP (MobileNetV3-Large backbone).

The card lives in zoo's ``registry.yaml``; this plugin provides the builder (shared with the
DeepLabV3 and FCN plugins: one torchvision builder, named as a dotted path).
"""

from zoo import hookimpl

_BUILD = "zoo_plugins._torchvision:build"


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {"lraspp_mobilenet_v3_large": _BUILD}
