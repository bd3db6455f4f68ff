"""The package's shape: every module imports, and no module imports itself back through others."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import iaabench

PACKAGE = Path(iaabench.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The iaabench modules `name` imports (at any depth in the file: a function-level import
    still closes a circle when that function runs)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[:len(base) - node.level + 1]
                mod = ".".join(root + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_every_module_imports():
    for name in _modules():
        if not name.endswith("__main__"):  # running it is the CLI
            importlib.import_module(name)


#: Imports that still close a circle, added by work running beside issue 11 (reported to be fixed
#: where they were made): `weights.safe_load` asks `export.check_format`, and `export` and `predict`
#: import each other (predict/export); `cards` validates a card's search space with `tune`, which
#: reads cards (tune); `results` re-exports `frame.frame`, which reads records (table); `protocol`
#: reads `pinned`, which runs plans through `runner`, which reads the protocol (check). Remove an
#: edge here when its module stops importing upwards; a new circle anywhere else fails this test.
KNOWN_CYCLE_EDGES = {("iaabench.protocol", "iaabench.pinned")}


def test_no_import_cycle():
    mods = _modules()
    known = set(mods)
    graph = {n: {m for m in _imports(n, p, known) if not n.startswith(m + ".") and (n, m) not in KNOWN_CYCLE_EDGES}
             for n, p in mods.items()}
    # a package's __init__ importing its own submodules is how registration works: not a cycle
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


MAX_MODULE_LINES = 600
#: Modules still over the limit, to be split (reported to the lead, not exempted for good):
#: `cli.py` (774 lines) holds every command. Remove a name here once its module is split.
OVER_THE_LIMIT: set[str] = set()


def test_no_module_is_over_600_lines():
    lines = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in _modules().items()}
    over = sorted(f"{n} ({k} lines)" for n, k in lines.items() if k > MAX_MODULE_LINES and n not in OVER_THE_LIMIT)
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them, one concern per module): {', '.join(over)}"
    fixed = sorted(n for n in OVER_THE_LIMIT if lines.get(n, 0) <= MAX_MODULE_LINES)
    assert not fixed, f"back under {MAX_MODULE_LINES} lines (or gone): remove from OVER_THE_LIMIT: {', '.join(fixed)}"


def test_the_data_layer_names_no_model():
    """The data layer reads a model's declared input; it never imports or names a model."""
    from iaabench.registry import list_models, model_info

    names = set(list_models()) | {model_info(n).family for n in list_models()}
    for name, path in _modules().items():
        if not name.startswith("iaabench.data"):
            continue
        assert not any(m.startswith("iaabench.models") for m in _imports(name, path, set(_modules()))), name
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & names, f"{name} names {sorted(strings & names)}"


def test_models_json_lists_every_model_with_its_declared_input():
    import json
    import subprocess
    import sys

    from iaabench.registry import list_models, reference_models

    out = subprocess.run([sys.executable, "-m", "iaabench", "models", "--json"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(list_models()) | set(reference_models())
    refs = {n: rows.pop(n) for n in reference_models()}
    assert refs and all(r["reference_only"] and r["input"] is None and r["card"].endswith(".yaml") for r in refs.values())
    for r in rows.values():
        assert r["reference_only"] is False
        assert {"name", "family", "paper", "heads", "input"} <= set(r) and r["heads"]
        assert {"size", "resize", "interpolation", "mean", "std"} <= set(r["input"])
        assert len(r["input"]["mean"]) == len(r["input"]["std"]) == 3
    assert rows["nima-inception"]["input"]["mean"] == rows["nima-inception"]["input"]["std"] == [0.5] * 3
    assert rows["nima"]["input"]["mean"] == [0.485, 0.456, 0.406]
    assert rows["nima-irv2"]["input"] | {"max_side": None} == {"size": 299, "resize": "shorter", "interpolation": "bilinear",
                                                               "mean": [0.5] * 3, "std": [0.5] * 3, "max_side": None}
    assert rows["mlsp"]["input"]["resize"] == "native"


def test_a_transform_takes_the_models_declared_input():
    from iaabench.data.cache import can_cache, make_key
    from iaabench.data.pipeline import TransformSpec
    from iaabench.models.base import InputSpec

    recipe = TransformSpec.from_dict({"crop": 200, "flip": True})
    square = recipe.with_input(InputSpec(size=256, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3))
    assert square.resize == (256, 256) and square.mean == (0.5,) * 3 and square.interpolation == "bicubic"
    assert can_cache(square)
    assert not can_cache(recipe.with_input(InputSpec(size=None, resize="native")))
    assert not can_cache(TransformSpec(resize=(256, 256)).with_input(InputSpec(resize="shorter")))
    # the cache key follows what changes the stored pixels (the filter), not what the device applies
    plain = TransformSpec(resize=(8, 8))
    key = make_key([], plain, {"dataset": "x"})
    assert make_key([], TransformSpec(resize=(8, 8), mean=(0.5,) * 3), {"dataset": "x"}) == key
    assert make_key([], TransformSpec(resize=(8, 8), interpolation="bicubic"), {"dataset": "x"}) != key
    # the data layer's defaults are InputSpec's
    default = TransformSpec().with_input(InputSpec())
    assert (default.mean, default.std) == (TransformSpec().mean, TransformSpec().std)
