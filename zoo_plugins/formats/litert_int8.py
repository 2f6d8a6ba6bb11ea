"""int8 graphs that LiteRT's XNNPACK delegate runs whole: what the LiteRT exporter changes
before litert-torch's PT2E quantization.

litert-torch's quantizer, left alone, gives a graph XNNPACK cannot take in one piece (lraspp:
20 delegate partitions, int8 *slower* than fp32):

* XNNPACK's LiteRT delegate takes no int8 ``HARD_SWISH``, so every hardswish split the graph:
  the exporter writes them as ``x * relu6(x + 3) * (1/6)`` first
  (:func:`zoo_plugins.formats.rewrites.hardswish_as_relu6`: int8 ADD with a fused RELU6,
  then MUL, ops the delegate takes).
* Its ``add``/``mul`` annotators find nodes by ``source_fn_stack``, which ``torch.export``
  no longer records, and skip in-place ``add_`` (torchvision's residual ``out += x``): those
  adds stayed float between DEQUANTIZE and QUANTIZE. :func:`quantizer` annotates what it
  missed, every float ``add``/``mul`` node still unannotated, then lets litert-torch's
  propagation run again so the ops that share their input's parameters (relu6, views,
  means) after those adds are quantized too.

When the last op is quantized the output stays int8 (scale and zero point in the output
tensor), as the input already was; runtimes dequantize it, and its arg-max is already the
label map.
"""

from __future__ import annotations

from typing import Any


def quantizer() -> Any:
    """litert-torch's ``PT2EQuantizer`` (symmetric, per-channel weights, static int8
    activations) that also annotates the float ``add``/``mul`` nodes left unannotated after
    its own annotators (including those of :mod:`.rewrites`), then propagates again.
    ``annotated_extra`` counts them after ``annotate``."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import (
        get_input_act_qspec,
        get_output_act_qspec,
        propagate_annotation,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    aten = torch.ops.aten
    missed = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor}

    def is_float(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.dtype.is_floating_point

    class CompleteQuantizer(pt2e_quantizer.PT2EQuantizer):  # type: ignore[misc]
        annotated_extra = 0

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            config = self.global_config
            self.annotated_extra = 0
            for node in model.graph.nodes:
                if (node.op != "call_function" or node.target not in missed
                        or "quantization_annotation" in node.meta
                        or not is_float(node.meta.get("val"))):
                    continue
                inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)
                          and is_float(a.meta.get("val"))]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: get_input_act_qspec(config) for a in inputs},
                    output_qspec=get_output_act_qspec(config), _annotated=True)
                self.annotated_extra += 1
            propagate_annotation(model)  # what follows the new annotations shares them
            return model

    return CompleteQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(
        is_per_channel=True, is_dynamic=False))
