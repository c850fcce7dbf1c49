"""engine/ does no I/O (issue 23 item 2, house style): no SQLite, argparse, files, sockets or printing.

Read from the sources (every import, at any depth, and every call), and checked at run time: importing
every engine module loads neither sqlite3 nor the voiceprints package's store or service. The one
tie to voiceprints/ is engine.torch_models, the torch model side, which loads checkpoints like
models/ does: given an x-vector checkpoint folder it builds `voiceprints.xvector.XVectorEmbedder`
(the weights, their fingerprint, the measured threshold). Nothing in the engine reads the speaker store.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = sorted((ROOT / "engine").glob("*.py"))

FORBIDDEN_MODULES = {"sqlite3", "argparse", "json", "soundfile", "socket", "asyncio", "threading", "tempfile",
                     "shutil", "io", "mmap", "pickle", "subprocess", "sounddevice", "websockets", "textual"}
ALLOWED_VOICEPRINTS = {("torch_models.py", "voiceprints.xvector")}  # see the module docstring
FORBIDDEN_CALLS = {"open", "print", "input"}
FORBIDDEN_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "open", "mkdir", "unlink"}


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _io_calls(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
            bad.append(f"{f.id}() at line {node.lineno}")
        elif isinstance(f, ast.Attribute) and f.attr in FORBIDDEN_METHODS:
            bad.append(f".{f.attr}() at line {node.lineno}")
    return bad


def test_engine_sources_import_nothing_that_does_io():
    assert len(ENGINE) > 10
    problems = []
    for path in ENGINE:
        for module in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            root = module.split(".")[0]
            if root in FORBIDDEN_MODULES:
                problems.append(f"{path.name} imports {module}")
            if root == "voiceprints" and (path.name, module) not in ALLOWED_VOICEPRINTS:
                problems.append(f"{path.name} imports {module}")
    assert not problems, problems


def test_engine_sources_call_no_file_or_terminal_io():
    problems = {p.name: _io_calls(ast.parse(p.read_text(encoding="utf-8"))) for p in ENGINE}
    assert not {k: v for k, v in problems.items() if v}


def test_the_source_checks_see_what_they_look_for():
    tree = ast.parse("def f(p):\n    import sqlite3\n    from voiceprints.store import SpeakerStore\n"
                     "    print(open(p).read(), p.read_text())\n")
    assert {"sqlite3", "voiceprints.store"} <= _imports(tree)
    assert sorted(c.split(" ")[0] for c in _io_calls(tree)) == [".read_text()", "open()", "print()"]


def test_importing_the_engine_loads_no_database_or_store():
    code = ("import importlib, pkgutil, sys, engine\n"
            "for m in pkgutil.iter_modules(engine.__path__): importlib.import_module('engine.' + m.name)\n"
            "print(' '.join(m for m in ('sqlite3', 'voiceprints.store', 'voiceprints.service', 'voiceprints.calibrate')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
