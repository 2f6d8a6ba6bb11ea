"""Built-in plugin: the TorchScript (``.pt``) and lite-interpreter (``.ptl``) export formats.

Registered through the ``zoo`` entry-point group like a third-party format would be.
"""

from zoo import hookimpl


@hookimpl
def zoo_exporters() -> dict[str, str]:
    return {
        "torchscript": "zoo.export.torchscript:TorchScriptExporter",
        "lite": "zoo.export.torchscript:LiteExporter",
    }
