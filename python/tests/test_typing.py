"""The stubs and annotations: mypy --strict over the package and a typed usage file, and mypy's
stubtest of python/ropex/_core.pyi against the compiled module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PKG = HERE.parent / "ropex"


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=HERE.parent)


def test_mypy_strict() -> None:
    r = _mypy("mypy", "--strict", "--no-incremental", "ropex", str(HERE / "typing_usage.py"))
    assert r.returncode == 0, r.stdout + r.stderr


def _nb_params(obj: object) -> list[tuple[str, object]]:
    """(name, default or EMPTY) of a nanobind function, from its __nb_signature__."""
    sig, _doc, defaults = obj.__nb_signature__[0]  # type: ignore[attr-defined]
    inner = sig[sig.index("(") + 1 : sig.rindex(") ->")]
    out: list[tuple[str, object]] = []
    depth, cur, parts = 0, "", []
    for ch in inner:
        depth += ch in "[(" and 1 or (ch in "])" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in (p.strip() for p in parts if p.strip()):
        name = p.split(":")[0].split("=")[0].strip()
        if "= \\" in p:
            out.append((name, defaults[int(p.rsplit("\\", 1)[1])]))
        else:
            out.append((name, EMPTY))
    return out


EMPTY = object()


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, object]]:
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults: list[object] = [EMPTY] * (len(pos) - len(a.defaults)) + [ast.literal_eval(d) for d in a.defaults]
    return [(x.arg, d) for x, d in zip(pos, defaults)]


def test_core_stub_matches_the_module() -> None:
    """Every name, parameter name and default of _core.pyi is the compiled module's (mypy's
    stubtest cannot introspect nanobind functions, so the signatures nanobind records are read)."""
    import ropex._core as core

    tree = ast.parse((PKG / "_core.pyi").read_text())
    stub_names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stub_names.add(node.name)
            assert _stub_params(node) == _nb_params(getattr(core, node.name)), node.name
        elif isinstance(node, ast.ClassDef):
            stub_names.add(node.name)
            cls = getattr(core, node.name)
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                is_prop = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                runtime = cls.__dict__.get(item.name)
                assert runtime is not None, f"{node.name}.{item.name} is not in the module"
                if is_prop:
                    assert isinstance(runtime, property), f"{node.name}.{item.name}"
                else:
                    assert _stub_params(item) == _nb_params(getattr(cls, item.name)), f"{node.name}.{item.name}"
            runtime_public = {k for k in vars(cls) if not k.startswith("_")}
            stub_public = {i.name for i in node.body if isinstance(i, ast.FunctionDef) and not i.name.startswith("_")}
            if node.name != "Error":
                assert runtime_public == stub_public, node.name
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub_names.add(node.target.id)
    runtime_names = {k for k in dir(core) if not k.startswith("_")} | {"__version__"}
    assert runtime_names == stub_names
