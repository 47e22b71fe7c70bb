"""The import rules of docs/ARCHITECTURE.md, checked on the source (no imports executed).

Every import counts, module-level or inside a function: a function-local import hides a cycle from Python's
import machinery, not from the design.
"""

import ast
import io
import os
import re
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("zoo.bert", "zoo.gpt", "zoo.elmo")
FAMILY_NAME = re.compile(r"\b(bert|gpt|elmo)\b", re.IGNORECASE)


def _modules(package="zoo"):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                yield os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__"), path


def _imports(path, known=()):
    """The modules `path` imports; `from pkg import name` counts as pkg.name when that is a module in `known`."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
            yield from names or [node.module]


def _violations():
    bad = []
    for module, path in _modules():
        for name in _imports(path):
            def rule(msg):
                bad.append(f"{module} imports {name}: {msg}")

            if name.split(".")[0] in ("trainers", "tests") or name.startswith("absl.flags"):
                rule("zoo never imports the apps, the tests or flags")
            if module.startswith("zoo.kernels") and name.startswith("zoo."):
                rule("zoo.kernels imports no zoo module")
            if module.startswith("zoo.layers") and name.startswith("zoo.") and not name.startswith(("zoo.layers", "zoo.kernels")):
                rule("zoo.layers is the leaf (above zoo.kernels)")
            if module.startswith("zoo.text") and name.startswith("zoo.") and not name.startswith("zoo.text"):
                rule("zoo.text knows no model")
            own = next((f for f in FAMILIES if module.startswith(f)), None)
            other = next((f for f in FAMILIES if name.startswith(f)), None)
            if own and other and own != other:
                rule("a family never imports another family")
            if own and name.startswith(("zoo.training", "zoo.export", "zoo.data.pipeline", "zoo.data.instances",
                                        "zoo.data.corpus", "zoo.data.objectives")):
                rule("a family is handed data and training; it may read zoo.data.schema only")
            if module.startswith(("zoo.data", "zoo.training", "zoo.export", "zoo.optim", "zoo.model_dir", "zoo.contract",
                                  "zoo.task", "zoo.backbone", "zoo.config", "zoo.formats")) and other:
                rule("shared machinery knows no family")
    return bad


def _trainer_violations():
    """Trainers drive families through zoo.contract: no zoo.<family> import, no family name outside a flag default."""
    bad = []
    for module, path in _modules("trainers"):
        source = open(path, encoding="utf-8").read()
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FAMILIES) or re.fullmatch(r"zoo\.(bert|gpt|elmo)", name):
                bad.append(f"{module} imports {name}: trainers name no family")
        tree = ast.parse(source)
        for node in ast.walk(tree):  # `from zoo import bert`
            if isinstance(node, ast.ImportFrom) and node.module == "zoo" and any(FAMILY_NAME.fullmatch(a.name) for a in node.names):
                bad.append(f"{module} line {node.lineno}: from zoo import a family: trainers name no family")
        allowed = set()  # the line and column of each flag definition's default
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE_") and len(node.args) >= 2:
                allowed.add((node.args[1].lineno, node.args[1].col_offset))
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT) and FAMILY_NAME.search(tok.string) \
                    and tok.start not in allowed:
                bad.append(f"{module} line {tok.start[0]}: {tok.string[:60]!r} spells a family name outside a flag default")
    return bad


def _cycles():
    """Import cycles among zoo modules (strongly connected components of more than one module)."""
    modules = dict(_modules())
    graph = {m: {n for n in _imports(p, modules) if n in modules and n != m} for m, p in modules.items()}
    # A package's __init__ re-exporting its submodules is not a cycle with them: drop package -> own child edges.
    graph = {m: {n for n in deps if not n.startswith(m + ".")} for m, deps in graph.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_import_rules():
    assert _violations() == []


def test_trainers_name_no_family():
    assert _trainer_violations() == []


def test_no_import_cycles():
    assert _cycles() == []


def test_rules_catch_a_violation(tmp_path, monkeypatch):
    # The checkers must be able to fail: plant forbidden imports, a family name and a cycle, and see them reported.
    fake = tmp_path / "zoo" / "layers"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import zoo.bert\nfrom trainers import flags\n")
    (tmp_path / "zoo" / "kernels").mkdir()
    (tmp_path / "zoo" / "kernels" / "bad.py").write_text("from zoo.layers import islands\n")
    (tmp_path / "zoo" / "a.py").write_text("def f():\n    from zoo import b\n")
    (tmp_path / "zoo" / "b.py").write_text("import zoo.a\n")
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "app.py").write_text(
        'from absl import flags\nflags.DEFINE_string("model", "bert", "ok")\n'
        'def main():\n    from zoo.bert import pretrained\n    return "gpt"\n')
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    found = _violations()
    assert any("zoo.layers is the leaf" in v for v in found)
    assert any("zoo.kernels imports no zoo module" in v for v in found)
    assert any("never imports the apps" in v for v in found)
    assert _cycles() == [["zoo.a", "zoo.b"]]
    trainer = _trainer_violations()
    assert any("imports zoo.bert" in v for v in trainer)
    assert any("'\"gpt\"'" in v for v in trainer) and not any("line 2" in v for v in trainer)


def test_families_are_named_in_one_literal_dict():
    tree = ast.parse(open(os.path.join(ROOT, "zoo", "__init__.py")).read())
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FAMILIES"]
    assert assigns and isinstance(assigns[0].value, ast.Dict)
