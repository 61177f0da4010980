"""Which Triton models a bundle becomes, with their configs and the files each one holds.

A two-tower bundle becomes ``NAME_image`` and ``NAME_text``; a classifier
bundle becomes ``NAME_classify``: the public contract, the same in both layouts.

The ensemble layout (for Triton's own backends, e.g. the stock container on a
GPU): behind each ensemble, one Python step (``NAME_preprocess`` or
``NAME_tokenize``), then the tower's graph model (the bundle's own graph file,
or a TensorRT plan), then ``NAME_normalize``, a one-node ONNX graph, so no
Python runs after the graph.  Only the graph models wait to fill a batch.
The python layout is ``python_layout``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from clip_onnx.bundle import MANIFEST, Bundle
from clip_onnx.engines import ENGINE_DIR, records
from clip_onnx.errors import BundleError, TritonError
from clip_onnx.files import sha256_file
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.triton.config import (
    STEP_PARAMETER,
    Batching,
    ServingOptions,
    Step,
    Tensor,
    ensemble_config,
    graph_config,
    python_config,
    schema,
    tensor_from_onnx,
)

log = logging.getLogger(__name__)

STEP_MODEL = Path(__file__).with_name("step_model.py")
# L2 normalisation as one ONNX node (LpNormalization, p=2, opset 13): UNNORMALIZED -> EMBEDDING, any width.
NORMALIZE_GRAPH = Path(__file__).parents[1] / "assets" / "triton" / "l2_normalize.onnx"
LABELS = "labels.txt"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")
# The public contract: ensemble tensor names other tools call.
IMAGE = Tensor("IMAGE", "TYPE_STRING", (1,))
TEXT = Tensor("TEXT", "TYPE_STRING", (1,))
# NAME_text's second output: the tokens the textual graph saw of each text (an API's usage count).
TOKENS = Tensor("TOKENS", "TYPE_INT32", (1,))
UNNORMALIZED = "UNNORMALIZED"


@dataclass
class ModelDir:
    """One model directory: its config and the files to place in it, by path relative to the directory."""

    name: str
    config: object  # model_config_pb2.ModelConfig
    links: dict[str, Path] = field(default_factory=dict)  # byte-identical bundle files: hardlinked where possible
    copies: dict[str, Path] = field(default_factory=dict)  # small files copied in

    def signature(self) -> tuple[str, str]:
        """What the model takes and gives, batch axis first: ``("IMAGE BYTES [n, 1]", "EMBEDDING FP32 [n, 64]")``."""
        names = schema().DataType.Name

        def tensors(field) -> str:
            return ", ".join(
                f"{t.name} {names(t.data_type).removeprefix('TYPE_').replace('STRING', 'BYTES')} "
                f"[{', '.join(['n', *map(str, t.dims)])}]"
                for t in field
            )

        return tensors(self.config.input), tensors(self.config.output)


@dataclass(frozen=True)
class Graph:
    """A tower's graph model and the tensors it takes and gives."""

    model: ModelDir
    inputs: tuple[Tensor, ...]
    output: Tensor  # the one output the bundle's manifest names


def model_prefix(bundle_path: Path, name: str | None) -> str:
    """``--name``, or the bundle directory's name with characters other than [A-Za-z0-9_] made ``_``."""
    if name is None:
        return re.sub(r"[^A-Za-z0-9_]", "_", Path(bundle_path).absolute().name)
    if not NAME_PATTERN.fullmatch(name):
        raise TritonError(
            f"--name {name!r} may hold only letters, digits and '_' (it prefixes Triton model "
            "names, which are directory names and URL parts)"
        )
    return name


def ensemble_models(bundle: Bundle, name: str, options: ServingOptions, engines: bool = False) -> list[ModelDir]:
    """The ensemble layout's model directories: the steps, the graphs and the public ensembles, those last."""
    if bundle.kind == "classifier":
        return _classifier(bundle, name, options, engines)
    return _clip(bundle, name, options, engines)


def check_engines(options: ServingOptions, engines: bool) -> None:
    if engines and options.kind != "gpu":
        raise TritonError("--engines serves TensorRT plans, which run only on GPU instances; add --kind gpu")
    if engines and options.layout != "ensemble":
        raise TritonError("--engines serves TensorRT plans as graph models of the ensemble layout; drop --layout")


def _clip(bundle: Bundle, name: str, options: ServingOptions, engines: bool) -> list[ModelDir]:
    widths = token_widths(bundle)
    visual = graph_model(bundle, f"{name}_visual", "visual", options, engines)
    textual = graph_model(bundle, f"{name}_textual", "textual", options, engines, seq=max(widths.values()))
    dim = bundle.manifest.embed_dim
    embedding = Tensor("EMBEDDING", "TYPE_FP32", (dim,))
    for graph in (visual, textual):
        if graph.output.data_type != "TYPE_FP32" or graph.output.dims != (dim,):
            raise BundleError(
                f"{bundle.path}: graph output {graph.output} is not float32 [{dim}] as the manifest's embed_dim says"
            )
    preprocess = preprocess_model(bundle, f"{name}_preprocess", visual.inputs, options)
    tokenize = tokenize_model(bundle, f"{name}_tokenize", textual.inputs, widths, options)
    normalize = normalize_model(f"{name}_normalize", dim, options)
    ensembles = []
    for ensemble, source, step, graph, extra in (
        (f"{name}_image", IMAGE, preprocess, visual, []),
        (f"{name}_text", TEXT, tokenize, textual, [TOKENS]),
    ):
        step_outputs = {t.name: t.name for t in (*graph.inputs, *extra)}
        steps = [
            Step(step.name, {source.name: source.name}, step_outputs),
            Step(graph.model.name, {t.name: t.name for t in graph.inputs}, {graph.output.name: graph.output.name}),
            Step(normalize.name, {UNNORMALIZED: graph.output.name}, {embedding.name: embedding.name}),
        ]
        config = ensemble_config(ensemble, [source], [embedding, *extra], steps, options)
        ensembles.append(ModelDir(ensemble, config))
    return [visual.model, textual.model, preprocess, tokenize, normalize, *ensembles]


def _classifier(bundle: Bundle, name: str, options: ServingOptions, engines: bool) -> list[ModelDir]:
    visual = graph_model(bundle, f"{name}_visual", "visual", options, engines)
    count = bundle.manifest.labels.count if bundle.manifest.labels else None
    if visual.output.data_type != "TYPE_FP32" or visual.output.dims != (count,):
        raise BundleError(
            f"{bundle.path}: graph output {visual.output} is not float32 [{count}] as the manifest's label count says"
        )
    preprocess = preprocess_model(bundle, f"{name}_preprocess", visual.inputs, options)
    logits = Tensor("LOGITS", "TYPE_FP32", (count,), labels=LABELS)
    steps = [
        Step(preprocess.name, {IMAGE.name: IMAGE.name}, {t.name: t.name for t in visual.inputs}),
        Step(visual.model.name, {t.name: t.name for t in visual.inputs}, {visual.output.name: logits.name}),
    ]
    config = ensemble_config(f"{name}_classify", [IMAGE], [logits], steps, options)
    classify = ModelDir(f"{name}_classify", config, copies={LABELS: labels_file(bundle)})
    return [visual.model, preprocess, classify]


def labels_file(bundle: Bundle) -> Path:
    """The classifier's class names, one a line in logit order: Triton's label_filename for LOGITS."""
    if bundle.manifest.labels is None:
        raise BundleError(f"{bundle.path}: a classifier manifest needs labels.file naming the class-names file")
    return bundle.file(bundle.manifest.labels.file)


def normalize_model(model_name: str, dim: int, options: ServingOptions) -> ModelDir:
    """L2 normalisation as an ONNX graph model: it runs in Triton's ONNX Runtime backend, not in Python."""
    config = graph_config(
        model_name,
        "onnxruntime_onnx",
        [Tensor(UNNORMALIZED, "TYPE_FP32", (dim,))],
        [Tensor("EMBEDDING", "TYPE_FP32", (dim,))],
        options,
        # Its batches are the graph's, already formed: never wait. On CPU even beside GPU graphs (a few floats).
        Batching(options.steps, 0),
    )
    return ModelDir(model_name, config, copies={"1/model.onnx": NORMALIZE_GRAPH})


def graph_model(
    bundle: Bundle, model_name: str, tower: str, options: ServingOptions, engines: bool, seq: int | None = None
) -> Graph:
    """The tower's graph as a Triton model: ``1/model.onnx``, its directory form, or ``1/model.plan``.

    ``seq`` is the token width every text request has, which a text plan's profile must take.
    """
    graph = bundle.graph(tower)
    inputs, outputs = graph_signature(bundle.file(graph.file), f"{bundle.path} {tower} graph")
    if [t.name for t in inputs] != list(graph.inputs) or graph.output not in [t.name for t in outputs]:
        raise BundleError(
            f"{bundle.path}: the {tower} graph takes {[t.name for t in inputs]} and gives "
            f"{[t.name for t in outputs]}, but the manifest says {list(graph.inputs)} -> "
            f"{graph.output!r}"
        )
    output = next(t for t in outputs if t.name == graph.output)
    plan = select_plan(bundle, tower, options, seq) if engines else None
    if plan is not None:
        config = graph_config(model_name, "tensorrt_plan", inputs, outputs, options)
        return Graph(ModelDir(model_name, config, links={"1/model.plan": plan}), inputs, output)
    files = bundle.graph_files(tower)
    if files == [graph.file]:
        links = {"1/model.onnx": bundle.file(graph.file)}
    else:
        # Triton's directory form: the graph as model.onnx/model.onnx, its external data beside it under
        # the names the graph records (the bundle keeps them beside the graph with the same names).
        links = {f"1/model.onnx/{f}": bundle.file(f) for f in files if f != graph.file}
        links["1/model.onnx/model.onnx"] = bundle.file(graph.file)
    config = graph_config(model_name, "onnxruntime_onnx", inputs, outputs, options)
    return Graph(ModelDir(model_name, config, links=links), inputs, output)


def graph_signature(path: Path, what: str) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The graph's inputs and outputs as Triton tensors, read by ONNX Runtime (which also loads external data)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for unreadable graphs
        raise BundleError(f"{what}: ONNX Runtime cannot load {path} ({exc})") from None
    return (
        tuple(tensor_from_onnx(v, what) for v in session.get_inputs()),
        tuple(tensor_from_onnx(v, what) for v in session.get_outputs()),
    )


def preprocess_model(bundle: Bundle, model_name: str, pixels: tuple[Tensor, ...], options: ServingOptions) -> ModelDir:
    size = bundle.manifest.preprocess.image_size
    if len(pixels) != 1 or not _fits(pixels[0].dims, (3, size, size)):
        raise BundleError(
            f"{bundle.path}: the visual graph takes {pixels}, not one [3, {size}, {size}] image "
            "batch as the manifest's preprocess says"
        )
    out = Tensor(pixels[0].name, pixels[0].data_type, (3, size, size))
    config = python_config(model_name, {STEP_PARAMETER: "preprocess"}, [IMAGE], [out], options, step_batching(options))
    return ModelDir(model_name, config, copies={"1/model.py": STEP_MODEL, f"1/{MANIFEST}": bundle.path / MANIFEST})


def token_widths(bundle: Bundle) -> dict[str, int]:
    """The tokenizer's outputs and the width it pads each to, found by running it once."""
    sample = load_tokenizer(bundle.manifest.tokenizer, bundle.path)(["clip-onnx"])
    sample = sample if isinstance(sample, dict) else {"input_ids": sample}
    return {name: int(array.shape[1]) for name, array in sample.items()}


def tokenize_model(
    bundle: Bundle, model_name: str, graph_inputs: tuple[Tensor, ...], widths: dict[str, int], options: ServingOptions
) -> ModelDir:
    """The tokenizer step: UTF-8 text in, the textual graph's inputs out, padded to the full context."""
    spec = bundle.manifest.tokenizer
    if set(widths) != {t.name for t in graph_inputs}:
        raise BundleError(
            f"{bundle.path}: the tokenizer gives {sorted(widths)} but the textual graph takes "
            f"{[t.name for t in graph_inputs]}"
        )
    outputs = []
    for tensor in graph_inputs:
        width = widths[tensor.name]
        if not _fits(tensor.dims, (width,)):
            raise BundleError(
                f"{bundle.path}: the textual graph's {tensor.name!r} has dims {list(tensor.dims)}, "
                f"the tokenizer pads to {width}"
            )
        outputs.append(Tensor(tensor.name, tensor.data_type, (width,)))
    outputs.append(TOKENS)
    config = python_config(model_name, {STEP_PARAMETER: "tokenize"}, [TEXT], outputs, options, step_batching(options))
    copies = {"1/model.py": STEP_MODEL, f"1/{MANIFEST}": bundle.path / MANIFEST}
    if spec is not None:
        copies[f"1/{spec.file}"] = bundle.file(spec.file)
    return ModelDir(model_name, config, copies=copies)


def step_batching(options: ServingOptions) -> Batching:
    # Decoding and tokenizing cost the same per item in a batch or alone: waiting to fill one buys nothing.
    return Batching(options.steps, 0)


def _fits(graph_dims: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    """Whether a graph axis list (-1 where symbolic) accepts ``dims``."""
    return len(graph_dims) == len(dims) and all(g in (-1, d) for g, d in zip(graph_dims, dims, strict=True))


def select_plan(bundle: Bundle, tower: str, options: ServingOptions, seq: int | None = None) -> Path | None:
    """The TensorRT plan `clip-onnx build-engine` made for this tower's graph, checked against the options.

    None (the ONNX graph is served) when there is none; TritonError when the
    plan cannot take what Triton will send it.
    """
    graph_sha = bundle.manifest.sha256(bundle.graph(tower).file)
    found = [r for r in records(bundle.path, tower) if r.get("graph_sha256") == graph_sha]
    usable = [r for r in found if r["target"]["product"] == "tensorrt"]
    if len(found) > len(usable):
        log.info(
            "%s: ignoring TensorRT-RTX plans for %s; Triton's TensorRT backend does not load them", bundle.path, tower
        )
    if not usable:
        log.warning(
            "%s: no TensorRT plan for the %s graph in %s/; serving it with ONNX Runtime", bundle.path, tower, ENGINE_DIR
        )
        return None
    if len(usable) > 1:
        raise TritonError(
            f"{bundle.path}: {len(usable)} TensorRT plans for the {tower} graph "
            f"({', '.join(r['plan'] for r in usable)}); Triton serves one per model, so remove "
            f"those not built for the serving GPU from {ENGINE_DIR}/"
        )
    record = usable[0]
    _check_profile(record, tower, options, seq)
    plan = bundle.path / ENGINE_DIR / record["plan"]
    if not plan.is_file() or sha256_file(plan) != record["plan_sha256"]:
        raise TritonError(
            f"{plan}: missing or not the plan its record describes; rebuild with `clip-onnx build-engine`"
        )
    return plan


def _check_profile(record: dict, tower: str, options: ServingOptions, seq: int | None) -> None:
    profile, plan = record["profile"], record["plan"]
    if options.max_batch > profile["max_batch"]:
        raise TritonError(
            f"--max-batch {options.max_batch} exceeds the {tower} plan's profile (max batch "
            f"{profile['max_batch']}, {plan}); pass --max-batch {profile['max_batch']} or rebuild "
            f"with `clip-onnx build-engine --max-batch {options.max_batch}`"
        )
    if profile["min_batch"] > 1:
        raise TritonError(
            f"the {tower} plan {plan} needs batches of at least {profile['min_batch']}, but the "
            "dynamic batcher also sends single requests; rebuild with `--min-batch 1`"
        )
    # The tokenizer pads every text to the full context, so a sequence profile must reach it.
    if seq is not None and profile.get("max_seq") is not None and not profile["min_seq"] <= seq <= profile["max_seq"]:
        raise TritonError(
            f"the {tower} plan {plan} takes sequences of {profile['min_seq']}..{profile['max_seq']} "
            f"tokens, Triton sends {seq}; rebuild with `clip-onnx build-engine --max-seq {seq}`"
        )
