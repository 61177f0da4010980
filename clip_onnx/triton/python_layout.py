"""The python layout: one Python-backend model per public endpoint, running the bundle with ONNX Runtime.

``NAME_image`` and ``NAME_text`` (or ``NAME_classify``) each open the bundle
through ``ClipModel.load`` / ``ClipClassifier.load`` (``steps.open_model``) and
do the whole request in one process: decode or tokenize, the graph, the L2
normalisation.  Per request that is one hop from Triton's core into Python and
none after the graph.  It needs only Triton's Python backend, which the
``nvidia-pytriton`` wheel's ``tritonserver`` has, so it is what `clip-onnx serve`
runs; the stock container serves it on CPU too.
"""

from __future__ import annotations

from pathlib import Path

from clip_onnx.bundle import MANIFEST, Bundle
from clip_onnx.errors import BundleError
from clip_onnx.triton.config import (
    BUNDLE_PARAMETER,
    STEP_PARAMETER,
    THREADS_PARAMETER,
    Batching,
    ServingOptions,
    Tensor,
    python_config,
)
from clip_onnx.triton.models import IMAGE, LABELS, STEP_MODEL, TEXT, TOKENS, ModelDir, labels_file

# Where a model that carries its bundle keeps it, inside its version folder.
BUNDLE_DIR = "bundle"


def python_models(bundle: Bundle, name: str, options: ServingOptions, embed_bundle: bool) -> list[ModelDir]:
    """``NAME_image`` and ``NAME_text``, or ``NAME_classify``, each a Python-backend model running its tower."""
    batching = Batching(options.instances, options.queue_delay_us)
    parameters = {THREADS_PARAMETER: str(options.threads)}
    if not embed_bundle:
        parameters[BUNDLE_PARAMETER] = str(bundle.path.absolute())
    links = _bundle_links(bundle) if embed_bundle else {}
    copies = {"1/model.py": STEP_MODEL}
    if embed_bundle:
        copies[f"1/{BUNDLE_DIR}/{MANIFEST}"] = bundle.path / MANIFEST
    if bundle.kind == "classifier":
        count = bundle.manifest.labels.count if bundle.manifest.labels else None
        if count is None or count < 1:
            raise BundleError(f"{bundle.path}: a classifier manifest needs labels.count, the number of classes")
        logits = Tensor("LOGITS", "TYPE_FP32", (count,), labels=LABELS)
        model = f"{name}_classify"
        config = python_config(model, {STEP_PARAMETER: "classify", **parameters}, [IMAGE], [logits], options, batching)
        return [ModelDir(model, config, links=dict(links), copies={**copies, LABELS: labels_file(bundle)})]
    embedding = Tensor("EMBEDDING", "TYPE_FP32", (bundle.manifest.embed_dim,))
    models = []
    for suffix, source, outputs in (("image", IMAGE, [embedding]), ("text", TEXT, [embedding, TOKENS])):
        model = f"{name}_{suffix}"
        config = python_config(model, {STEP_PARAMETER: suffix, **parameters}, [source], outputs, options, batching)
        models.append(ModelDir(model, config, links=dict(links), copies=dict(copies)))
    return models


def _bundle_links(bundle: Bundle) -> dict[str, Path]:
    """Every file the manifest lists, under ``1/bundle/``: ``ClipModel.load`` checks each one's size and hash."""
    return {f"1/{BUNDLE_DIR}/{name}": bundle.file(name) for name in bundle.manifest.files}
