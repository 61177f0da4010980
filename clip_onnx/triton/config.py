"""``config.pbtxt`` messages built from Triton's own protobuf schema, never from text templates.

The schema (``model_config_pb2``) comes with ``tritonclient[grpc]``; a field
name or enum value that Triton does not know fails here, at write time, not
when the server loads the repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from clip_onnx.errors import BundleError, InputError, TritonError

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
# ensemble: Python steps around graph models run by Triton's own backends (the stock container, GPUs);
# python: one Python-backend model per endpoint that runs the whole path with ONNX Runtime (CPU, `clip-onnx serve`).
LAYOUTS = ("ensemble", "python")
# Config parameters the shared Python model (step_model.py) reads: which step it is, and for the python
# layout the bundle to open (relative to the model directory, or absolute) and ONNX Runtime's threads.
STEP_PARAMETER = "clip_onnx_step"
BUNDLE_PARAMETER = "clip_onnx_bundle"
THREADS_PARAMETER = "clip_onnx_threads"


def schema():
    """Triton's ``model_config_pb2``, or TritonError saying which extra to install."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TritonError(
            f"writing a Triton repository needs Triton's config schema ({exc}); pip install 'clip-onnx[triton]'"
        ) from None
    return model_config_pb2


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model: dims exclude the batch axis, -1 where the size varies."""

    name: str
    data_type: str  # a Triton DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]
    labels: str | None = None  # label_filename: class names, one a line, for Triton's classification extension


@dataclass(frozen=True)
class ServingOptions:
    """How the repository's models are served.

    ``instances`` and ``queue_delay_us`` apply to the models that run a graph
    (the graph models of the ensemble layout, every model of the python layout);
    the ensemble's Python steps get ``step_instances`` (default: ``instances``)
    and never wait to fill a batch. ``threads`` is ONNX Runtime's intra-op
    threads per instance of the python layout (0: the machine's cores divided
    among the instances).
    """

    max_batch: int = 32
    instances: int = 1
    kind: str = "cpu"
    queue_delay_us: int = 0
    layout: str = "ensemble"
    step_instances: int | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        for field, low in (("max_batch", 1), ("instances", 1), ("queue_delay_us", 0), ("threads", 0)):
            _check_int(field, getattr(self, field), low)
        if self.step_instances is not None:
            _check_int("step_instances", self.step_instances, 1)
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout == "python" and self.kind != "cpu":
            raise InputError(
                "the python layout runs ONNX Runtime on CPU inside Triton's Python backend; for GPU instances "
                "use --layout ensemble, whose graphs run on Triton's ONNX Runtime or TensorRT backend"
            )

    @property
    def steps(self) -> int:
        """Instances of each Python step of the ensemble layout."""
        return self.instances if self.step_instances is None else self.step_instances


def _check_int(field: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{field.replace('_', '-')} must be an int >= {low}, got {value!r}")


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


@dataclass(frozen=True)
class Batching:
    """One model's instances and dynamic batcher: how many, where, and how long a batch may wait to fill."""

    instances: int
    queue_delay_us: int
    gpu: bool = False


def graph_config(
    name: str,
    platform: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    options: ServingOptions,
    batching: Batching | None = None,
):
    """A graph model (``onnxruntime_onnx`` or ``tensorrt_plan``) behind the dynamic batcher.

    By default it gets ``options``' instances, kind and queue delay: batching buys throughput at the graph.
    """
    pb = schema()
    config = pb.ModelConfig(name=name, platform=platform, max_batch_size=options.max_batch)
    _add(config.input, inputs)
    _add(config.output, outputs)
    _batching(config, batching or Batching(options.instances, options.queue_delay_us, options.kind == "gpu"))
    return config


def python_config(
    name: str,
    parameters: Mapping[str, str],
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    options: ServingOptions,
    batching: Batching,
):
    """A clip-onnx model on Triton's Python backend, on CPU instances whatever the graphs use."""
    pb = schema()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch)
    _add(config.input, inputs)
    _add(config.output, outputs)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    _batching(config, batching)
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
        added = field.add(name=tensor.name, data_type=data_types.Value(tensor.data_type), dims=list(tensor.dims))
        if tensor.labels:
            added.label_filename = tensor.labels


def _batching(config, batching: Batching) -> None:
    # A delay of 0 still merges the requests that queued while every instance was busy, without waiting.
    config.dynamic_batching.max_queue_delay_microseconds = batching.queue_delay_us
    group = schema().ModelInstanceGroup
    config.instance_group.add(count=batching.instances, kind=group.KIND_GPU if batching.gpu else group.KIND_CPU)
