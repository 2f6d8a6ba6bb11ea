"""Built-in plugin: the export formats zoo ships.

TorchScript (``.pt``), the lite interpreter (``.ptl``, deprecated: ExecuTorch is its
successor), ExecuTorch (``.pte``), ONNX (``.onnx``), Core ML (``.mlpackage``) and LiteRT
(``.tflite``). All but the first two need their optional extras at export time
(``zoo[executorch]``, ``zoo[onnx]``, ``zoo[coreml]``, ``zoo[litert]``). Each format is one
exporter class plus one self-contained runtime module under ``runtimes/``.

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
        "coreml": "zoo_plugins.formats.coreml:CoreMLExporter",
        "tflite": "zoo_plugins.formats.tflite:TFLiteExporter",
    }
