"""The import rules of docs/ARCHITECTURE.md, checked on the source (no imports executed)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("zoo.bert", "zoo.gpt", "zoo.elmo")


def _modules():
    for folder, _, files in os.walk(os.path.join(ROOT, "zoo")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                yield os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__"), path


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


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
            if own and name.startswith(("zoo.training", "zoo.export", "zoo.data.pipeline", "zoo.data.instances", "zoo.data.corpus")):
                rule("a family is handed data and training; it may read zoo.data.schema only")
            if module.startswith(("zoo.data", "zoo.training", "zoo.export", "zoo.optim", "zoo.model_dir")) and other:
                rule("shared machinery knows no family")
    return bad


def test_import_rules():
    assert _violations() == []


def test_rules_catch_a_violation(tmp_path, monkeypatch):
    # The checker must be able to fail: plant a forbidden import and see it reported.
    fake = tmp_path / "zoo" / "layers"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import zoo.bert\nfrom trainers import flags\n")
    (tmp_path / "zoo" / "kernels").mkdir()
    (tmp_path / "zoo" / "kernels" / "bad.py").write_text("from zoo.layers import islands\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    found = _violations()
    assert any("zoo.layers is the leaf" in v for v in found)
    assert any("zoo.kernels imports no zoo module" in v for v in found)
    assert any("never imports the apps" in v for v in found)


def test_families_are_named_in_one_literal_dict():
    tree = ast.parse(open(os.path.join(ROOT, "zoo", "__init__.py")).read())
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FAMILIES"]
    assert assigns and isinstance(assigns[0].value, ast.Dict)
