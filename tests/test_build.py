"""BUILD names every module, and is what scripts/update_build.py generates from the current imports."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_python_file_is_in_build():
    build = open(os.path.join(ROOT, "BUILD")).read()
    missing = []
    for package in ("zoo", "trainers", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py") and "__pycache__" not in folder:
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)
                    if f'"{rel}"' not in build:
                        missing.append(rel)
    assert not missing, f"Not in BUILD (run python scripts/update_build.py): {missing}"


def test_build_is_up_to_date():
    result = subprocess.run([sys.executable, "scripts/update_build.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_has_all_rule_kinds():
    build = open(os.path.join(ROOT, "BUILD")).read()
    for kind in ("py_library(", "py_binary(", "py_test("):
        assert kind in build
    assert 'name = "trainers_pretrain"' in build and 'name = "zoo_bert_backbone"' in build
