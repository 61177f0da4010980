"""The import rules and size limits of docs/architecture.md, checked on the source itself.

The fresh-interpreter test in test_runtime.py proves that importing the runtime
loads no torch; these static checks also cover modules that are imported lazily
(inside functions), which that test cannot see.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clip_onnx"

# Torch, onnx and youtokentome belong to the exporter; everything a worker or a server loads stays free of them.
HEAVY = (
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "onnxconverter_common",
    "youtokentome",
    "open_clip",
    "timm",
    "transformers",
)
# Packages and modules that never import the exporter or the heavy libraries.
TORCH_FREE = (
    "runtime",
    "demo",
    "triton",
    "openai_api",
    "batch",
    "ray",
    "bundle.py",
    "manifest",
    "machine.py",
    "gate_feeds.py",
    "preprocess_spec.py",
    "texts.py",
    "files.py",
    "errors.py",
    "registry.py",
    "engines.py",
    "parity.py",
    "synthetic.py",
    "thresholds.py",
    "lazy.py",
    "__init__.py",
)
# What the CLI and the benchmark may import from clip_onnx: packages' public surfaces, never a module's internals.
PUBLIC = {
    "clip_onnx",
    "clip_onnx.runtime",
    "clip_onnx.export",
    "clip_onnx.errors",
    "clip_onnx.registry",
    "clip_onnx.engines",
    "clip_onnx.files",
    "clip_onnx.bundle",
    "clip_onnx.parity",
    "clip_onnx.synthetic",
    "clip_onnx.triton",
    "clip_onnx.openai_api",
    "clip_onnx.batch",
    "clip_onnx.ray",
    "clip_onnx.demo",
    "clip_onnx.benchmark",
    "clip_onnx.thresholds",
    "clip_onnx.lazy",
    "clip_onnx.machine",
    "clip_onnx.manifest",
    "clip_onnx.gate_feeds",
}
# The only modules that read the manifest's JSON; everything else reads the typed ``Manifest``.
MANIFEST_READERS = ("manifest", "bundle.py")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules(*roots: str) -> list[Path]:
    found = []
    for root in roots:
        path = PACKAGE / root
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("*.py")))
    return found


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement, relative imports resolved, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.append((base, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("path", modules(*TORCH_FREE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_free_modules_import_no_exporter_and_no_heavy_library(path):
    bad = [
        module
        for module, _ in imports(path)
        if module.split(".")[0] in HEAVY or module.startswith(("clip_onnx.export", "clip_onnx.benchmark"))
    ]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("path", modules("openai_api"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_openai_api_is_a_translator_that_opens_no_bundle(path):
    # It forwards to Triton's models, so it reads no bundle, runs no graph and writes no repository.
    bad = [m for m, _ in imports(path) if m.startswith(("clip_onnx.runtime", "clip_onnx.bundle", "clip_onnx.triton"))]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("path", modules("cli", "benchmark"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_cli_and_benchmark_use_public_apis_only(path):
    own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:2])
    bad = []
    for module, names in imports(path):
        if not module.startswith("clip_onnx") or module.startswith(own):
            continue
        if module not in PUBLIC or any(name.startswith("_") for name in names):
            bad.append(f"{module}: {', '.join(names)}")
    assert not bad, f"{path.relative_to(PACKAGE)} reaches into internals: {bad}"


def test_no_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules(".")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end: the code a reader follows.

    The signature is left out because the formatter puts one parameter a line once
    it passes 120 columns, and the docstring because explaining is never too long.
    """
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def test_no_function_is_longer_than_the_limit():
    long = {}
    for path in modules("."):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = body_lines(node)
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _manifest_indexing(path: Path) -> list[str]:
    """``manifest[...]`` and ``manifest.get(...)`` on anything named manifest: the raw JSON's way of reading."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = None
        if isinstance(node, ast.Subscript):
            target = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target = node.func.value
        name = getattr(target, "id", None) or getattr(target, "attr", None)
        if name == "manifest":
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_only_the_manifest_package_and_bundle_read_the_raw_manifest():
    readers = {p for root in MANIFEST_READERS for p in modules(root)}
    bad = {
        str(p.relative_to(PACKAGE)): hits for p in modules(".") if p not in readers if (hits := _manifest_indexing(p))
    }
    assert not bad, f"raw manifest indexing outside {MANIFEST_READERS}: {bad}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """clip_onnx module -> the clip_onnx modules it imports, at the top or inside functions.

    ``from package import name`` counts as importing ``package.name`` where that is a module, else ``package``.
    """
    known = {_module_name(p) for p in modules(".")}
    graph = {}
    for path in modules("."):
        edges = set()
        for module, names in imports(path):
            if not module.startswith("clip_onnx"):
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
            edges |= targets or ({module} if module in known else set())
        graph[_module_name(path)] = edges - {_module_name(path)}
    return graph


def test_no_import_cycles_lazy_imports_included():
    graph, index, low, stack, on_stack, cycles = import_graph(), {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"
