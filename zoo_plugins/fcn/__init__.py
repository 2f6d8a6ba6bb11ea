"""Built-in plugin: torchvision's FCN (ResNet-50/101 backbones).

The cards live in zoo's ``registry.yaml``; this plugin provides the builders.
"""

from zoo import hookimpl

_BUILD = "zoo_plugins._torchvision:build"


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {
        "fcn_resnet50": _BUILD,
        "fcn_resnet101": _BUILD,
    }
