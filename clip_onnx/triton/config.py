"""``config.pbtxt`` messages built from Triton's own protobuf schema, never from text templates.

The schema (``model_config_pb2``) comes with ``tritonclient[grpc]``; a field
name or enum value that Triton does not know fails here, at write time, not
when the server loads the repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from clip_onnx.errors import BundleError, ClipOnnxError, InputError

# ONNX Runtime's type strings -> Triton's DataType names; what the ONNX Runtime backend pairs them with.
ONNX_TO_TRITON = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}
KINDS = ("cpu", "gpu")
# The parameter that tells the shared Python step model which step it is.
STEP_PARAMETER = "clip_onnx_step"


def schema():
    """Triton's ``model_config_pb2``, or TritonError saying which extra to install."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TritonError(
            f"writing a Triton repository needs Triton's config schema ({exc}); pip install 'clip-onnx[triton]'"
        ) from None
    return model_config_pb2


class TritonError(ClipOnnxError):
    """A Triton model repository cannot be written from this bundle with these options."""


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model: dims exclude the batch axis, -1 where the size varies."""

    name: str
    data_type: str  # a Triton DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ServingOptions:
    """How every model of the repository is served: batch limit, instances and the dynamic batcher's delay."""

    max_batch: int = 32
    instances: int = 1
    kind: str = "cpu"
    queue_delay_us: int = 2000

    def __post_init__(self) -> None:
        for field, low in (("max_batch", 1), ("instances", 1), ("queue_delay_us", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{field.replace('_', '-')} must be an int >= {low}, got {value!r}")
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}")


def tensor_from_onnx(value, what: str) -> Tensor:
    """A Triton tensor for one ONNX Runtime NodeArg whose first axis is the (symbolic) batch axis."""
    if value.type not in ONNX_TO_TRITON:
        raise BundleError(f"{what}: {value.name!r} has type {value.type}, which Triton cannot serve")
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in value.shape]
    if not shape or shape[0] != -1:
        raise BundleError(
            f"{what}: {value.name!r} has shape {value.shape} without a dynamic batch axis first; "
            "re-export the bundle with clip-onnx, whose graphs have one"
        )
    return Tensor(value.name, ONNX_TO_TRITON[value.type], tuple(shape[1:]))


def graph_config(
    name: str, platform: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], options: ServingOptions
):
    """A graph model (``onnxruntime_onnx`` or ``tensorrt_plan``) behind the dynamic batcher."""
    pb = schema()
    config = pb.ModelConfig(name=name, platform=platform, max_batch_size=options.max_batch)
    _add(config.input, inputs)
    _add(config.output, outputs)
    kind = pb.ModelInstanceGroup.KIND_GPU if options.kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    _batching(config, options, kind)
    return config


def python_config(name: str, step: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], options: ServingOptions):
    """A clip-onnx step on Triton's Python backend; steps run on CPU instances whatever the graphs use."""
    pb = schema()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch)
    _add(config.input, inputs)
    _add(config.output, outputs)
    config.parameters[STEP_PARAMETER].string_value = step
    _batching(config, options, pb.ModelInstanceGroup.KIND_CPU)
    return config


@dataclass(frozen=True)
class Step:
    """One model call inside an ensemble: its tensor names mapped to the ensemble's."""

    model: str
    inputs: Mapping[str, str]  # the model's input name -> ensemble tensor
    outputs: Mapping[str, str]  # the model's output name -> ensemble tensor


def ensemble_config(
    name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], steps: Iterable[Step], options: ServingOptions
):
    pb = schema()
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=options.max_batch)
    _add(config.input, inputs)
    _add(config.output, outputs)
    for step in steps:
        # -1: the newest version, which is the only one a repository written here has.
        entry = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        entry.input_map.update(step.inputs)
        entry.output_map.update(step.outputs)
    return config


def render(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse(text: str):
    """A ``config.pbtxt``'s text as a ModelConfig message; ParseError on anything Triton would not read."""
    from google.protobuf import text_format

    return text_format.Parse(text, schema().ModelConfig())


def _add(field, tensors: Sequence[Tensor]) -> None:
    data_types = schema().DataType
    for tensor in tensors:
        field.add(name=tensor.name, data_type=data_types.Value(tensor.data_type), dims=list(tensor.dims))


def _batching(config, options: ServingOptions, kind) -> None:
    config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    config.instance_group.add(count=options.instances, kind=kind)
