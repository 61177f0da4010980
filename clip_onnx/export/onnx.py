"""torch -> ONNX for one tower, with symbolic axes that are checked, not assumed."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch

from clip_onnx.errors import ExportError
from clip_onnx.export.families.base import Tower
from clip_onnx.export.options import DEFAULT_OPSET, SUPPORTED_OPSETS, check_opset

log = logging.getLogger(__name__)

# Loggers whose records (tracebacks included) go into an ExportError's message, not onto the terminal, below -vv.
_CHATTY_LOGGERS = ("torch.onnx", "onnxscript")
# Example batch used for tracing.  Never 1: torch's exporter specialises a
# dimension it sees as 1 and would silently freeze the batch axis.
EXAMPLE_BATCH = 2
# Protobuf cannot serialise a model over 2 GiB; above this we store weights as external data.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def export_tower(tower: Tower, example: Mapping[str, torch.Tensor], path: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``tower`` to ``path`` and return it; raises ExportError on any failure."""
    check_opset(opset)
    for name, tensor in example.items():
        if tensor.shape[0] == 1:
            raise ExportError(f"example input {name!r} has batch 1; the exporter would freeze the batch axis")
    dims = {}
    dynamic_shapes = {}
    for name in tower.input_names:
        axes = tower.dynamic_axes.get(name, {})
        dynamic_shapes[name] = {
            axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=4096)) for axis, label in axes.items()
        }
    args = tuple(example[n] for n in tower.input_names)
    log.info("exporting %s tower to %s (opset %d)", tower.name, path, opset)
    chatter = io.StringIO()
    try:
        # The exporter prints progress lines on stdout and logs harmless warnings (a
        # non-parameter attention mask becomes a constant); keep them for the error message.
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            _quiet_torch_onnx(chatter),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                tower.module.eval(),
                args,
                input_names=list(tower.input_names),
                output_names=[tower.output_name],
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed for the {tower.name} tower: {exc}\n{chatter.getvalue()[-2000:]}"
        ) from exc
    save_graph(program.model_proto, path)
    check_symbolic_axes(path, tower)
    written = graph_opset(path)
    if written != opset:
        raise ExportError(
            f"asked for opset {opset}, torch.onnx.export wrote the {tower.name} graph at opset "
            f"{written}; choose an opset from {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}"
        )
    return path


def graph_opset(path: Path) -> int:
    """The default-domain opset a written graph carries."""
    model = onnx.load(path, load_external_data=False)
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if len(versions) != 1:
        raise ExportError(f"{path}: expected one default-domain opset import, found {versions}")
    return versions[0]


class _NoTraceback(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A copy: another handler may already have cached the traceback text on the record itself.
        return super().format(
            logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        )


@contextlib.contextmanager
def _quiet_torch_onnx(sink: io.StringIO):
    """Send the exporter's log records to ``sink`` without tracebacks, unless debug logging (-vv) is on.

    torch.onnx and onnxscript log whole tracebacks of failures they recover from,
    or that we turn into an ExportError; a user should see one line, not those.
    torch's own handlers sit on its loggers, so every handler below the chatty
    loggers is set aside for the duration, not only the propagation to the root.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    handler = logging.StreamHandler(sink)
    handler.setFormatter(_NoTraceback("%(levelname)s %(name)s: %(message)s"))
    names = [
        n
        for n in list(logging.Logger.manager.loggerDict)
        if any(n == top or n.startswith(top + ".") for top in _CHATTY_LOGGERS)
    ]
    loggers = [logging.getLogger(n) for n in {*names, *_CHATTY_LOGGERS}]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        top = logger.name in _CHATTY_LOGGERS
        logger.handlers = [handler] if top else []
        logger.propagate = not top
        if top:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path``, with its weights in ``<name>.data`` beside it only where protobuf needs that."""
    # ByteSize() itself fails past protobuf's 2 GiB limit, so count the weights instead.
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > _EXTERNAL_DATA_THRESHOLD:
        # Location is relative to the graph, so a moved or renamed bundle still resolves it.
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, path)


def check_symbolic_axes(path: Path, tower: Tower) -> None:
    """Refuse a graph whose declared dynamic axes came out as fixed numbers."""
    model = onnx.load(path, load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    for name, axes in tower.dynamic_axes.items():
        if name not in inputs:
            raise ExportError(f"{tower.name} graph lost its input {name!r}; it has {sorted(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            if not dims[axis].dim_param:
                raise ExportError(
                    f"{tower.name} input {name!r} axis {axis} ({label}) was exported as the fixed "
                    f"size {dims[axis].dim_value}, not as a symbolic axis"
                )
