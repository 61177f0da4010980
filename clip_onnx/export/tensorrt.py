"""Build TensorRT plans from a bundle's graphs: one per tower, dynamic-batch profiles, persistent timing cache.

FP16 lives in the ONNX graph (``--precision fp16`` at export): TensorRT >=
10.12 builds strongly typed networks and has no FP16 builder flag.  On older
TensorRT 10.x an fp32 graph is built with the FP16 flag instead.

``ahead_of_time="SM89"`` uses TensorRT-RTX, whose builder runs without a GPU,
to build for a named compute capability: the CPU-side proof that the graphs
parse and build with their profiles.  Its plans are recorded as product
"tensorrt-rtx" and are never offered to the standard TensorRT runtime.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from clip_onnx.bundle import TOWERS, Bundle, read_bundle
from clip_onnx.engines import ENGINE_DIR, Profile, Target, plan_key, records, write_record
from clip_onnx.errors import ExportError, ParityError
from clip_onnx.export.engine_gate import EngineGate
from clip_onnx.files import atomic_write_bytes, sha256_bytes, sha256_file
from clip_onnx.parity import GATE_IMAGES

log = logging.getLogger(__name__)


def import_tensorrt(ahead_of_time: str | None):
    name = "tensorrt_rtx" if ahead_of_time else "tensorrt"
    try:
        return importlib.import_module(name)
    except ImportError:
        extra = "tensorrt-rtx-cu13" if ahead_of_time else "clip-onnx[tensorrt]"
        raise ExportError(f"{name} is not importable; pip install {extra}") from None


def current_target(trt, ahead_of_time: str | None) -> Target:
    if ahead_of_time:
        sm = ahead_of_time.upper().removeprefix("SM")
        return Target("tensorrt-rtx", trt.__version__, "any", f"{sm[:-1]}.{sm[-1]}")
    import torch  # the exporter has torch; the runtime reads the GPU through cupy instead

    if not torch.cuda.is_available():
        raise ExportError(
            "building a TensorRT plan for this machine needs a CUDA GPU; none is visible "
            "(use --ahead-of-time SM89 with tensorrt-rtx for a CPU-side build check)"
        )
    major, minor = torch.cuda.get_device_capability(0)
    return Target("tensorrt", trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}")


def build_engines(
    bundle_path,
    profile: Profile,
    *,
    workspace_gib: float = 4.0,
    ahead_of_time: str | None = None,
    timing_cache: Path | None = None,
    gate: bool = True,
    gate_images: int = GATE_IMAGES,
    progress: Callable[[str], None] = lambda msg: None,
) -> list[dict]:
    """Build (or reuse) one plan per tower; returns their records.

    With ``gate`` (and a GPU to run them: not ``ahead_of_time``), each plan must
    match its ONNX graph on the engine gate, whose figures go into the plan's
    record under "parity"; a plan that misses it is deleted and ParityError raised.
    """
    bundle = read_bundle(bundle_path)
    context = bundle.manifest.tokenizer.context_length if bundle.manifest.tokenizer else None
    if profile.max_seq is None and context:
        # A text graph with a symbolic sequence axis gets the tokenizer's whole range by default.
        profile = replace(profile, max_seq=int(context), opt_seq=profile.opt_seq or min(16, int(context)))
    trt = import_tensorrt(ahead_of_time)
    target = current_target(trt, ahead_of_time)
    cache_name = f"{target.product}-{target.version}.timing"
    timing_cache = Path(timing_cache or Path.home() / ".cache" / "clip-onnx" / cache_name)
    (bundle.path / ENGINE_DIR).mkdir(exist_ok=True)
    if gate and ahead_of_time:
        log.info("ahead-of-time plans cannot run on this machine; they are built without the engine gate")
    engine_gate = EngineGate(bundle, gate_images) if gate and not ahead_of_time else None
    built = []
    for tower in (t for t in TOWERS if t in bundle.manifest.graphs):
        graph_sha = bundle.manifest.sha256(bundle.graph(tower).file)
        key = plan_key(graph_sha, target, profile)
        existing = [r for r in records(bundle.path, tower) if r["key"] == key]
        plan_path = bundle.path / ENGINE_DIR / f"{tower}-{key}.plan"
        record = existing[0] if existing else None
        if record and plan_path.is_file() and sha256_file(plan_path) == record["plan_sha256"]:
            log.info("reusing %s", plan_path.name)
            if engine_gate is None or "parity" in record:
                built.append(record)
                continue
        else:
            progress(f"building {tower} plan")
            plan, path = build_plan(
                trt,
                bundle.graph_path(tower),
                profile,
                bundle.graph(tower).precision,
                target,
                ahead_of_time,
                workspace_gib,
                timing_cache,
            )
            atomic_write_bytes(plan_path, plan)
            record = {
                "key": key,
                "tower": tower,
                "graph_sha256": graph_sha,
                "target": asdict(target),
                "profile": asdict(profile),
                "fp16": path,
                "plan": plan_path.name,
                "plan_sha256": sha256_bytes(plan),
                "plan_bytes": len(plan),
            }
        if engine_gate is not None:
            progress(f"checking {tower} plan against its ONNX graph")
            record = _gated(engine_gate, tower, plan_path, record, profile)
        write_record(bundle.path, tower, key, record)
        built.append(record)
    if engine_gate is not None:
        progress("self-test through the plans")
        _self_test(bundle)
    return built


def _self_test(bundle: Bundle) -> None:
    """The bundle's own self-test through the new plans on this GPU: SelfTestError if their vectors stray."""
    from clip_onnx.runtime import ClipClassifier, ClipModel

    if bundle.manifest.self_test is None:
        log.warning(
            "%s carries no self-test (exported before clip-onnx wrote one); only the engine gate ran", bundle.path
        )
        return
    opener = ClipClassifier if bundle.kind == "classifier" else ClipModel
    opener.load(bundle.path, backend="tensorrt", self_test=True)


def _gated(engine_gate: EngineGate, tower: str, plan_path: Path, record: dict, profile: Profile) -> dict:
    """``record`` with the plan's engine-gate figures; deletes the plan (and any record of it) if it misses."""
    from clip_onnx.runtime.backends.tensorrt import TensorRTRunner

    try:
        with TensorRTRunner(plan_path, record) as runner:
            report = engine_gate.check(tower, runner, profile)
    except ParityError:
        plan_path.unlink(missing_ok=True)
        plan_path.with_suffix(".json").unlink(missing_ok=True)
        raise
    log.info("%s plan matches its ONNX graph: %s", tower, report.to_dict())
    return {**record, "parity": report.to_dict()}


def build_plan(
    trt,
    onnx_path: Path,
    profile: Profile,
    graph_precision: str,
    target: Target,
    ahead_of_time: str | None,
    workspace_gib: float,
    timing_cache: Path,
) -> tuple[bytes, str]:
    logger = _CollectingLogger(trt)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    # Strongly typed keeps the graph's own fp16/fp32 split; the FP16 flag is for fp32 graphs on old TensorRT.
    strongly_typed = flag is not None and (graph_precision == "fp16" or not has_fp16_flag)
    network = builder.create_network((1 << int(flag)) if strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse {onnx_path.name}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if ahead_of_time:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, ahead_of_time.upper()), 0)
    if graph_precision == "fp16" or strongly_typed:
        fp16 = "strongly typed fp16 graph" if graph_precision == "fp16" else "none (fp32 graph, no FP16 flag)"
    else:
        config.set_flag(trt.BuilderFlag.FP16)
        fp16 = "BuilderFlag.FP16 on fp32 graph"
    optimization = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = [d if d >= 0 else tensor.name for d in tensor.shape]
        optimization.set_shape(tensor.name, *profile.shapes(dims))
    config.add_optimization_profile(optimization)
    # Ahead-of-time builds time no kernels (there is no GPU), so they have no timing cache to keep.
    if not ahead_of_time:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = logger.errors or ["(no message)"]
        raise ExportError(f"TensorRT failed to build {onnx_path.name}:\n  " + "\n  ".join(errors))
    if not ahead_of_time:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), fp16


def _CollectingLogger(trt):
    """A TensorRT logger that keeps error messages for our exception and routes the rest to logging."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
                log.error("tensorrt: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("tensorrt: %s", msg)
            else:
                log.debug("tensorrt: %s", msg)

    return Logger()
