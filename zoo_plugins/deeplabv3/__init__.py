"""Built-in plugin: torchvision's DeepLabV3 (ResNet-50/101, MobileNetV3-Large backbones).

The cards live in zoo's ``registry.yaml``; this plugin provides the builders. Nothing here
imports torch: builders are named as dotted paths and imported only when a model is built.
"""

from zoo import hookimpl

_BUILD = "zoo_plugins._torchvision:build"


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {
        "deeplabv3_resnet50": _BUILD,
        "deeplabv3_resnet101": _BUILD,
        "deeplabv3_mobilenet_v3_large": _BUILD,
    }
