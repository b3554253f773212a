"""The package's layout holds: imports flow one way through its layers, with no cycle, and no file
is over 500 lines (README `## Layout`).

Every module's imports are read from its source (ast; nothing is imported), at module level and
inside functions alike, plus the modules named as strings (the CLI's subcommand table). Layers,
lowest first; a module may import its own layer and those below it, never one above:

    core        errors.py, text.py, metrics.py   shared leaves
    audio       audio.py                         16-kHz samples and log-mel, read by the encoder
    models      models/                          encoder, projector, backbone, tokenizer, Whisper decoder
    decoding    decoding/                        methods, samplers, CTC beam, n-gram, alignment
    model       model.py                         the assembled model and its checkpoints
    pipeline    pipeline/                        VAD, transcribe, stream, writers, manifests
    api         diffasr/__init__.py              load(), model.transcribe / model.stream
    front ends  serving/, apps/, cli.py          the server and the commands

training/ may import anything; nothing outside it imports it, except the CLI's table naming the
`diffasr train` and `diffasr corpus` modules (imported only when that command runs).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

LAYERS = [  # (name, module prefixes), lowest first
    ("core", ["diffasr.errors", "diffasr.text", "diffasr.metrics"]),
    ("audio", ["diffasr.audio"]),
    ("models", ["diffasr.models"]),
    ("decoding", ["diffasr.decoding"]),
    ("model", ["diffasr.model"]),
    ("pipeline", ["diffasr.pipeline"]),
    ("api", ["diffasr"]),  # the package's __init__ only (a prefix "diffasr" matches nothing else)
    ("front ends", ["diffasr.serving", "diffasr.apps", "diffasr.cli", "diffasr.__main__"]),
]
TRAINING = "diffasr.training"
INTO_TRAINING = {"diffasr.cli"}  # `diffasr train` / `diffasr corpus`: named in COMMANDS, imported on demand
MAX_LINES = 500


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    where: str  # path:line
    how: str  # "module level", "in a function", "by name (string)"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under `root` (the folder holding diffasr/), by dotted name."""
    return {module_name(root, p): p for p in sorted((root / "diffasr").rglob("*.py"))}


def imports(root: Path, name: str, path: Path, known: set[str]) -> list[Edge]:
    """The package modules `name` imports: `import`, `from ... import` (absolute or relative; a name
    that is a submodule counts as that submodule), and string literals that name a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    rel = path.relative_to(root)
    edges = []

    def add(target: str, node: ast.AST, how: str) -> None:
        if target.split(".")[0] == "diffasr" and target != name:
            edges.append(Edge(name, target, f"{rel}:{node.lineno}", how))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            how = "in a function" if in_function else "module level"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, how)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                for alias in child.names:
                    sub = f"{module}.{alias.name}"
                    add(sub if sub in known else module, child, how)
            elif isinstance(child, ast.Constant) and isinstance(child.value, str):
                if child.value in known and "." in child.value:
                    add(child.value, child, "by name (string)")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return edges


def layer_of(name: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if name == p or (p != "diffasr" and name.startswith(p + ".")):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges, in order) per strongly connected component of the import graph."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    found = []
    for component in components:  # walk from the smallest name back to itself inside the component
        start = min(component)
        path, seen, node = [], {start}, start
        while True:
            nxt = sorted(w for w in graph[node] if w in component)
            step = next((w for w in nxt if w == start), None) or next((w for w in nxt if w not in seen), nxt[0])
            path.append(graph[node][step])
            if step == start or step in seen:
                break
            seen.add(step)
            node = step
        found.append(path)
    return found


def problems(root: Path) -> list[str]:
    """Every way the package under `root` breaks the layout, one readable line each."""
    mods = modules(root)
    known = set(mods)
    edges = [e for name, path in mods.items() for e in imports(root, name, path, known)]
    out = []
    for name, path in mods.items():
        if not name.startswith(TRAINING) and layer_of(name) is None:
            out.append(f"{path.relative_to(root)}: in no layer; add it to LAYERS in tests/test_layout.py")
    for e in edges:
        if e.source.startswith(TRAINING):
            continue  # training may import anything
        if e.target.startswith(TRAINING):
            if e.source not in INTO_TRAINING:
                out.append(f"{e.where}: {e.source} imports {e.target} ({e.how}); nothing outside training/ imports it")
            continue
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is not None and dst is not None and dst > src:
            out.append(
                f"{e.where}: {e.source} ({LAYERS[src][0]}) imports {e.target} ({LAYERS[dst][0]}) {e.how}: "
                f"a back-edge, imports flow {' -> '.join(n for n, _ in LAYERS)}; move the shared code down "
                "to the lower layer or the import up to the caller"
            )
    for cycle in cycles(edges):
        chain = " -> ".join([cycle[0].source] + [e.target for e in cycle])
        detail = "; ".join(f"{e.where} ({e.how})" for e in cycle)
        out.append(f"import cycle {chain}: {detail}")
    return out


def test_imports_flow_one_way_with_no_cycle():
    found = problems(REPO)
    assert not found, "\n".join(found)


def test_no_package_file_over_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted((REPO / "diffasr").rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines, split by what the parts are: {long}"


def test_every_path_in_the_readme_layout_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    paths = set()
    for tree in re.findall(r"\n```\n(diffasr/\n.*?)\n```", section, re.S):  # the tree: names before the gap
        for line in tree.splitlines()[1:]:
            paths |= {f"diffasr/{name}" for name in re.split(r"\s{2,}", line.strip())[0].split()}
    section = re.sub(r"\n```.*?\n```", "", section, flags=re.S)
    for code in re.findall(r"`([^`]+)`", section):
        for word in code.split():
            if re.match(r"(diffasr|configs|scripts|benchmarks|tests|docs)/", word):
                brace = re.search(r"\{([^}]*)\}", word)  # configs/recipes/{base,small}.toml
                options = brace.group(1).split(",") if brace else [""]
                paths |= {word[: brace.start()] + o + word[brace.end() :] if brace else word for o in options}
    assert len(paths) > 20, "the layout section lost its table of paths"
    missing = sorted(p for p in paths if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"README ## Layout names paths that do not exist: {missing}"


# The checker itself, on small made-up packages: a back-edge and a cycle are each reported where they are.


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, source in {"diffasr/__init__.py": "", **files}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    return tmp_path


def test_a_back_edge_is_reported(tmp_path):
    root = _package(
        tmp_path,
        {
            "diffasr/models/__init__.py": "",
            "diffasr/models/encoder.py": "def f():\n    from ..pipeline.transcribe import transcribe\n",
            "diffasr/pipeline/__init__.py": "",
            "diffasr/pipeline/transcribe.py": "from ..models import encoder\n",
        },
    )
    back_edge, cycle = problems(root)
    assert back_edge.startswith("diffasr/models/encoder.py:2: diffasr.models.encoder (models) imports")
    assert "diffasr.pipeline.transcribe (pipeline) in a function: a back-edge" in back_edge
    assert cycle.startswith(
        "import cycle diffasr.models.encoder -> diffasr.pipeline.transcribe -> diffasr.models.encoder"
    )


def test_a_cycle_is_reported(tmp_path):
    root = _package(
        tmp_path,
        {
            "diffasr/decoding/__init__.py": "",
            "diffasr/decoding/decode.py": "from . import whisper\n",
            "diffasr/decoding/whisper.py": "def f():\n    from .decode import decode\n",
        },
    )
    (found,) = problems(root)
    assert "diffasr.decoding.decode -> diffasr.decoding.whisper -> diffasr.decoding.decode" in found
    assert "diffasr/decoding/whisper.py:2 (in a function)" in found


@pytest.mark.parametrize(
    "files, expected",
    [
        (
            {"diffasr/serving/__init__.py": "", "diffasr/serving/serve.py": "import diffasr.training.train\n"},
            "training",
        ),
        ({"diffasr/newthing.py": ""}, "in no layer"),
        ({"diffasr/text.py": "x = 'diffasr.model'\n", "diffasr/model.py": ""}, "by name (string): a back-edge"),
    ],
    ids=["imports-training", "unplaced-module", "string-import"],
)
def test_other_breaks_are_reported(tmp_path, files, expected):
    (found,) = problems(_package(tmp_path, files))
    assert expected in found
