"""Built-in plugin: TorchScript (``.pt``), lite interpreter (``.ptl``), ExecuTorch (``.pte``)
and ONNX (``.onnx``) export formats; the last two need their optional extras at export time.

Registered through the ``zoo`` entry-point group like a third-party format would be.
"""

from zoo import hookimpl


@hookimpl
def zoo_exporters() -> dict[str, str]:
    return {
        "torchscript": "zoo_plugins.formats.torchscript:TorchScriptExporter",
        "lite": "zoo_plugins.formats.torchscript:LiteExporter",
        "pte": "zoo_plugins.formats.executorch:PteExporter",
        "onnx": "zoo_plugins.formats.onnx:OnnxExporter",
    }
