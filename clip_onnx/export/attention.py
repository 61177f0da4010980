"""Fuse exported self-attention into ONNX Runtime's ``MultiHeadAttention`` op, for the CPU INT8 graphs only.

torch's exporter writes self-attention on a packed QKV projection as some
thirty nodes per layer: Transposes to split the heads, a Reshape-Transpose-
Reshape for K^T, two scale Muls, the mask Add, Softmax, two MatMuls, and a
Transpose to merge the heads again.  ``com.microsoft.MultiHeadAttention`` does
the same on (batch, seq, width) tensors in one kernel (figures in
benchmarks/NOTES.md, "int8 on CPU").  Three layouts are recognised:

- batch-first ``scaled_dot_product_attention`` on ``qkv.view(b, s, 3, heads,
  dim).permute(2, 0, 3, 1, 4)`` (RuCLIP here, timm); its packed projection is
  unpacked into q, k and v projections on slices of the weights;
- ``nn.MultiheadAttention``, which works sequence-first (OpenAI CLIP and
  open_clip); its block keeps one Transpose on each side of the fused op;
- separate q, k and v projections, each ``view(b, s, heads, dim).transpose(1, 2)``
  (Hugging Face ViT and BERT, where no mask guard follows the Softmax).

It is an ONNX Runtime contrib op that TensorRT cannot parse, so only the CPU
INT8 graphs get it, after the fp32 graph (the TensorRT and fp16 source) is
written.  A block that does not have exactly the expected shape is left as it
is; the INT8 gate then measures the fused graph against the fp32 one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from clip_onnx.errors import ExportError

log = logging.getLogger(__name__)

_MS_DOMAIN = "com.microsoft"
_SMALL = 64  # elements: the most a shape, index or scale constant has here


@dataclass(frozen=True)
class _Block:
    """One matched attention: the packed projection it reads, what it replaces, and its parameters."""

    # One packed (batch, seq, 3 * width) tensor, sequence-first (seq, batch, 3 * width) where marked,
    # its q|k|v each (heads, head_dim); or the three (batch, seq, width) projections.
    qkv: tuple[str, ...]
    output: str  # the merged heads: (batch, seq, width), or (seq * batch, width) sequence-first
    heads: int
    width: int
    scale: float
    bias: str | None  # additive mask, (seq, seq) or (1, 1, seq, seq)
    sequence_first: bool


class _Graph:
    """Producer/consumer lookups and constant folding over one graph."""

    def __init__(self, graph: onnx.GraphProto, base_dir: str):
        self.base_dir = base_dir
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.shapes: dict[str, list[int | None]] = {
            v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in (*graph.value_info, *graph.input)
            if v.type.tensor_type.HasField("shape")
        }
        self.shapes.update((name, list(init.dims)) for name, init in self.initializers.items())

    def rank(self, name: str) -> int | None:
        return len(self.shapes[name]) if name in self.shapes else None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a small constant (shapes, indices, scales), else None; weights are never read."""
        if name in self.initializers:
            tensor = self.initializers[name]
            if int(np.prod(tensor.dims)) > _SMALL:
                return None
            return numpy_helper.to_array(tensor, base_dir=self.base_dir)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def scalar(self, name: str) -> float | None:
        value = self.constant(name)
        return float(value.ravel()[0]) if value is not None and value.size == 1 else None


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _head_of(g: _Graph, name: str) -> tuple[int, onnx.NodeProto] | None:
    """(index, 5-D Transpose) when ``name`` is ``Squeeze(Slice(transpose, [i], [i + 1], axes=[0]))``."""
    squeeze = g.op(name, "Squeeze")
    sliced = g.op(squeeze.input[0], "Slice") if squeeze is not None else None
    if sliced is None or len(sliced.input) < 4:
        return None
    start, end, axes = (g.constant(n) for n in sliced.input[1:4])
    source = g.op(sliced.input[0], "Transpose")
    if start is None or end is None or axes is None or source is None:
        return None
    if list(axes.ravel()) != [0] or int(end.ravel()[0]) - int(start.ravel()[0]) != 1:
        return None
    return int(start.ravel()[0]), source


def _reshaped_transpose(g: _Graph, name: str, perm: list[int]) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(outer, inner Reshape) when ``name`` is ``Reshape(Transpose(Reshape(x), perm))``."""
    outer = g.op(name, "Reshape")
    transpose = g.op(outer.input[0], "Transpose") if outer is not None else None
    inner = g.op(transpose.input[0], "Reshape") if transpose is not None else None
    return (outer, inner) if inner is not None and _perm(transpose) == perm else None


def _sequence_head_of(g: _Graph, name: str) -> tuple[int, onnx.NodeProto, onnx.NodeProto] | None:
    """(index, Squeeze, 4-D Reshape) when ``name`` is nn.MultiheadAttention's q, k or v as (batch, heads, seq, dim):
    ``Reshape(Transpose(Reshape(Gather(squeeze, i, axis=0)), perm [1, 0, 2]))``."""
    chain = _reshaped_transpose(g, name, [1, 0, 2])
    gather = g.op(chain[1].input[0], "Gather") if chain is not None else None
    if gather is None:
        return None
    index = g.constant(gather.input[1])
    squeeze = g.op(gather.input[0], "Squeeze")
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    if index is None or index.size != 1 or squeeze is None or axis != 0:
        return None
    return int(index.ravel()[0]), squeeze, chain[0]


def _key_of(g: _Graph, name: str) -> str | None:
    """K when ``name`` is K^T written as Reshape(Transpose(Reshape(K), perm [0, 2, 1]))."""
    chain = _reshaped_transpose(g, name, [0, 2, 1])
    return chain[1].input[0] if chain is not None else None


def _scaled(g: _Graph, name: str) -> tuple[str, float] | None:
    mul = g.op(name, "Mul")
    if mul is None:
        return None
    for tensor, factor in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        value = g.scalar(factor)
        if value is not None:
            return tensor, value
    return None


def _match(g: _Graph, softmax: onnx.NodeProto) -> _Block | None:
    if next((a.i for a in softmax.attribute if a.name == "axis"), -1) not in (-1, 3):
        return None
    scores, bias = softmax.input[0], None
    add = g.op(scores, "Add")
    if add is not None:
        scores, bias = add.input
    if bias is not None and g.rank(bias) != 2 and g.shapes.get(bias, [])[:2] != [1, 1]:
        return None  # MultiHeadAttention takes a mask as (1, 1, seq, seq); a per-batch or per-head one stays
    matmul = g.op(scores, "MatMul")
    attend = g.only_consumer(softmax.output[0], "MatMul")
    if matmul is None or attend is None or attend.input[0] != softmax.output[0]:
        return None
    q, kt = _scaled(g, matmul.input[0]), _scaled(g, matmul.input[1])
    key = _key_of(g, kt[0]) if kt is not None else None
    if q is None or kt is None or key is None:
        return None
    names, scale = (q[0], key, attend.input[1]), q[1] * kt[1]
    for block in (_batch_first_block, _sequence_first_block, _separate_block):
        found = block(g, names, attend, scale, bias)
        if found is not None:
            return found
    return None


def _batch_first_block(g: _Graph, names, attend, scale: float, bias: str | None) -> _Block | None:
    heads = [_head_of(g, name) for name in names]
    if any(h is None for h in heads) or [h[0] for h in heads] != [0, 1, 2]:
        return None
    permute = heads[0][1]
    if any(h[1] is not permute for h in heads) or _perm(permute) != [2, 0, 3, 1, 4]:
        return None
    split = g.op(permute.input[0], "Reshape")
    dims = _shape_dims(g, split.input[1]) if split is not None else []
    if len(dims) != 5 or dims[2] != 3 or dims[3] is None or dims[4] is None:
        return None
    width = dims[3] * dims[4]
    merged = _merged(g, attend, [0, 2, 1, 3], 3, width)
    return _Block((split.input[0],), merged, dims[3], width, scale, bias, False) if merged else None


def _sequence_first_block(g: _Graph, names, attend, scale: float, bias: str | None) -> _Block | None:
    heads = [_sequence_head_of(g, name) for name in names]
    if any(h is None for h in heads) or [h[0] for h in heads] != [0, 1, 2]:
        return None
    squeeze = heads[0][1]
    transpose = g.op(squeeze.input[0], "Transpose")
    unsqueeze = g.op(transpose.input[0], "Unsqueeze") if transpose is not None else None
    split = g.op(unsqueeze.input[0], "Reshape") if unsqueeze is not None else None
    if any(h[1] is not squeeze for h in heads) or split is None or _perm(transpose) != [3, 1, 2, 0, 4]:
        return None
    dims = _shape_dims(g, heads[0][2].input[1])  # (batch, heads, seq, dim)
    if len(dims) != 4 or dims[1] is None or dims[3] is None:
        return None
    width = dims[1] * dims[3]
    merged = _merged(g, attend, [2, 0, 1, 3], 2, width)
    return _Block((split.input[0],), merged, dims[1], width, scale, bias, True) if merged else None


def _separate_block(g: _Graph, names, attend, scale: float, bias: str | None) -> _Block | None:
    projections, layouts = [], set()
    for name in names:  # each Transpose(Reshape(projection, (batch, seq, heads, dim)), perm [0, 2, 1, 3])
        transpose = g.op(name, "Transpose")
        split = g.op(transpose.input[0], "Reshape") if transpose is not None else None
        dims = _shape_dims(g, split.input[1]) if split is not None else []
        if len(dims) != 4 or dims[2] is None or dims[3] is None or _perm(transpose) != [0, 2, 1, 3]:
            return None
        projections.append(split.input[0])
        layouts.add((dims[2], dims[3]))
    if len(layouts) != 1:
        return None
    heads, head_dim = layouts.pop()
    merged = _merged(g, attend, [0, 2, 1, 3], 3, heads * head_dim)
    return _Block(tuple(projections), merged, heads, heads * head_dim, scale, bias, False) if merged else None


def _merged(g: _Graph, attend: onnx.NodeProto, perm: list[int], rank: int, width: int) -> str | None:
    """The output of the Reshape that merges the heads through a Transpose of ``perm`` into ``rank``
    dimensions, the last ``width`` wide."""
    merge = g.only_consumer(attend.output[0], "Transpose")
    merged = g.only_consumer(merge.output[0], "Reshape") if merge is not None else None
    if merged is None or _perm(merge) != perm:
        return None
    dims = _shape_dims(g, merged.input[1])
    return merged.output[0] if len(dims) == rank and dims[-1] == width else None


def _shape_dims(g: _Graph, shape: str) -> list[int | None]:
    """A Reshape's target shape, one entry per dimension, None where it is computed at run time."""
    whole = g.constant(shape)
    if whole is not None:
        return [int(d) for d in whole.ravel()]
    concat = g.op(shape, "Concat")
    dims: list[int | None] = []
    for piece in concat.input if concat is not None else []:
        value = g.constant(piece)
        if value is None and (g.rank(piece) or 1) != 1:
            return []  # a computed piece that is not one dimension: the dimensions cannot be told apart
        dims.extend([None] if value is None else [int(d) for d in value.ravel()])
    return dims


def fuse_attention(model: onnx.ModelProto, base_dir: str = "") -> int:
    """Rewrite every matching attention block of ``model`` in place; returns how many were fused.

    ``base_dir`` is where a model loaded without its external data finds it.
    """
    g = _Graph(model.graph, base_dir)
    blocks = [b for b in (_match(g, n) for n in model.graph.node if n.op_type == "Softmax") if b is not None]
    if not blocks:
        return 0
    replaced = {b.output for b in blocks}
    kept = [n for n in model.graph.node if not (set(n.output) & replaced)]
    fused = []
    for i, block in enumerate(blocks):
        nodes, initializers = _mha_nodes(g, block, f"fused_attention_{i}")
        fused.extend(nodes)
        model.graph.initializer.extend(initializers)
    del model.graph.node[:]
    model.graph.node.extend(kept + fused)
    _topological_sort(model.graph)
    _drop_dead_nodes(model.graph)
    if not any(o.domain == _MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    log.info("fused %d attention blocks into MultiHeadAttention", len(blocks))
    return len(blocks)


def _mha_nodes(g: _Graph, block: _Block, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes (and new weights) that replace ``block``."""
    nodes, initializers, qkv = _qkv(g, block, prefix)
    fused = f"{prefix}_out" if block.sequence_first else block.output
    inputs = [*qkv, "", "", ""]
    if block.bias is not None and g.rank(block.bias) == 4:
        inputs[5] = block.bias
    elif block.bias is not None:
        axes = f"{prefix}_axes"
        nodes.append(_constant(axes, np.array([0, 1], dtype=np.int64)))
        inputs[5] = f"{prefix}_bias"
        nodes.append(helper.make_node("Unsqueeze", [block.bias, axes], [inputs[5]], f"{prefix}_bias4d"))
    attention = helper.make_node(
        "MultiHeadAttention", inputs, [fused], prefix, domain=_MS_DOMAIN, num_heads=block.heads, scale=block.scale
    )
    nodes.append(attention)
    if block.sequence_first:  # back to what the out-projection reads: (seq * batch, width)
        rows, shape = f"{prefix}_sequence_first", f"{prefix}_rows"
        nodes.append(helper.make_node("Transpose", [fused], [rows], rows, perm=[1, 0, 2]))
        nodes.append(_constant(shape, np.array([-1, block.width], dtype=np.int64)))
        nodes.append(helper.make_node("Reshape", [rows, shape], [block.output], f"{prefix}_merge"))
    return nodes, initializers


def _qkv(g: _Graph, block: _Block, prefix: str) -> tuple[list, list, tuple[str, ...]]:
    """(nodes, new weights, names) that give batch-first q, k and v: the block's own separate
    projections; else three projections on column slices of the packed projection's weights, which
    is cheaper than the packed product and a Split (benchmarks/NOTES.md, "int8 on CPU"); else a
    Split of the packed tensor (sequence-first blocks, and weights in external data)."""
    if len(block.qkv) == 3:
        return [], [], block.qkv
    names = tuple(f"{prefix}_{x}" for x in "qkv")
    unpacked = None if block.sequence_first else _unpacked_projections(g, block.qkv[0], block.width, names)
    return (*unpacked, names) if unpacked is not None else (_split_qkv(block, prefix, names), [], names)


def _unpacked_projections(g: _Graph, packed: str, width: int, names) -> tuple[list, list] | None:
    """Nodes and weights computing ``names`` from ``packed`` = Add(MatMul(x, weight), bias) as three
    MatMul + Add, where weight and bias are in-memory initializers of the expected shape."""
    add = g.op(packed, "Add")
    matmul = g.op(add.input[0], "MatMul") if add is not None else None
    tensors = [g.initializers.get(n) for n in (matmul.input[1], add.input[1])] if matmul is not None else [None]
    if any(t is None or t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        return None
    weight, bias = (numpy_helper.to_array(t) for t in tensors)
    if weight.ndim != 2 or weight.shape[1] != 3 * width or bias.shape != (3 * width,):
        return None
    nodes, initializers = [], []
    for i, name in enumerate(names):
        columns = slice(i * width, (i + 1) * width)
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(weight[:, columns]), f"{name}_weight"))
        initializers.append(numpy_helper.from_array(bias[columns].copy(), f"{name}_bias"))
        nodes.append(helper.make_node("MatMul", [matmul.input[0], f"{name}_weight"], [f"{name}_matmul"]))
        nodes.append(helper.make_node("Add", [f"{name}_matmul", f"{name}_bias"], [name]))
    return nodes, initializers


def _split_qkv(block: _Block, prefix: str, names) -> list[onnx.NodeProto]:
    """Nodes that split a packed projection into batch-first ``names``."""
    sizes, packed = f"{prefix}_sizes", block.qkv[0]
    nodes = [_constant(sizes, np.full(3, block.width, dtype=np.int64))]
    if block.sequence_first:
        packed = f"{prefix}_packed"
        nodes.append(helper.make_node("Transpose", [block.qkv[0]], [packed], f"{prefix}_batch_first", perm=[1, 0, 2]))
    nodes.append(helper.make_node("Split", [packed, sizes], list(names), f"{prefix}_split", axis=-1))
    return nodes


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name, value=numpy_helper.from_array(value, name))


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    alive = []
    for node in reversed(graph.node):
        if set(node.output) & needed:
            alive.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(alive))
    live_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live_inits)


def _topological_sort(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input} - available)[:5]
            raise ExportError(
                f"attention fusion left a cycle or a dangling input in the graph ({missing}); this is a bug in "
                "clip-onnx: export with the gate on, whose last int8 rung does not fuse"
            )
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)
