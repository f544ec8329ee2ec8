"""The public API says what it is: every exported name exists, is documented and fully
annotated, and importing the package pulls in none of the optional extras.

No broker needed: this inspects the modules only.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

#: The modules a user imports from, each with its own ``__all__``.
PUBLIC_MODULES = ("celery_floodgate", "celery_floodgate.aio", "celery_floodgate.client",
                  "celery_floodgate.metrics")
#: What ``import celery_floodgate`` must not import: the extras' dependencies, and the
#: application this library came out of.
NOT_IMPORTED = ("tenacity", "httpx", "prometheus_client", "boto3", "botocore", "aio_pika",
                "aiormq", "fastapi",
                "sqlalchemy", "api", "config", "tasks", "scheduler", "bench")


def exported() -> Iterator[tuple[str, str, Any]]:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield module_name, name, getattr(module, name, AttributeError)


EXPORTED = list(exported())
IDS = [f"{module}.{name}" for module, name, _ in EXPORTED]


def own_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The class's public methods (and properties' getters) written in this package."""
    for name, member in vars(cls).items():
        if isinstance(member, property):
            member = member.fget
        elif isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if (inspect.isfunction(member) and (not name.startswith("_") or name == "__init__")
                and member.__module__.startswith("celery_floodgate")):
            yield name, member


def unannotated(fn: Callable[..., Any]) -> list[str]:
    """The parameters of ``fn`` without an annotation, and ``return`` if it has none."""
    signature = inspect.signature(fn)
    missing = [name for name, p in signature.parameters.items()
               if p.annotation is inspect.Parameter.empty and name not in ("self", "cls")]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def attribute_docstrings(module: ModuleType) -> dict[str, str]:
    """Module-level names documented by a string right below their assignment."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    found: dict[str, str] = {}
    for node, after in zip(tree.body, tree.body[1:]):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if (isinstance(target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            found[target.id] = after.value.value
    return found


def test_every_public_module_lists_its_api_in_all() -> None:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert module.__all__, module_name
        assert len(set(module.__all__)) == len(module.__all__), f"{module_name}: a name twice"
        assert module.__doc__ and module.__doc__.strip(), f"{module_name} has no docstring"


@pytest.mark.parametrize(("module_name", "name", "obj"), EXPORTED, ids=IDS)
def test_every_exported_name_exists_and_is_documented(module_name: str, name: str,
                                                      obj: Any) -> None:
    assert obj is not AttributeError, f"{module_name}.__all__ names {name}, which it lacks"
    if name.startswith("__"):  # __version__: a dunder says what it is
        assert isinstance(obj, str) and obj
        return
    if inspect.isclass(obj) or inspect.isfunction(obj):
        # the class's own docstring, not one inherited from a base
        doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert doc and doc.strip(), f"{module_name}.{name} has no docstring"
    else:  # data: documented where it is assigned, as the API reference shows it
        doc = attribute_docstrings(importlib.import_module(module_name)).get(name)
        assert doc and doc.strip(), f"{module_name}.{name} has no docstring below it"


@pytest.mark.parametrize(("module_name", "name", "obj"), EXPORTED, ids=IDS)
def test_every_exported_callable_is_fully_annotated(module_name: str, name: str,
                                                    obj: Any) -> None:
    if inspect.isfunction(obj):
        assert not unannotated(obj), f"{module_name}.{name}: {unannotated(obj)} unannotated"
    elif inspect.isclass(obj):
        for method_name, method in own_methods(obj):
            missing = unannotated(method)
            assert not missing, f"{module_name}.{name}.{method_name}: {missing} unannotated"


@pytest.mark.parametrize(("module_name", "name", "obj"),
                         [e for e in EXPORTED if inspect.isclass(e[2])],
                         ids=[i for i, e in zip(IDS, EXPORTED) if inspect.isclass(e[2])])
def test_the_public_methods_of_exported_classes_are_documented(module_name: str, name: str,
                                                               obj: type) -> None:
    undocumented = [m for m, method in own_methods(obj)
                    if m != "__init__" and not (method.__doc__ or "").strip()]
    assert not undocumented, f"{module_name}.{name}: {undocumented} have no docstring"


def test_importing_the_package_pulls_in_no_extra_and_none_of_the_app() -> None:
    # A fresh interpreter: this one has imported the extras already (client, metrics).
    out = subprocess.run(
        [sys.executable, "-c", "import celery_floodgate, sys; print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    ).stdout
    modules = ast.literal_eval(out.strip())
    assert "celery_floodgate" in modules
    pulled = sorted(m for m in modules if m.split(".")[0] in NOT_IMPORTED)
    assert not pulled, f"import celery_floodgate imported {pulled}"


def test_the_optional_parts_import_their_extra_only_when_used() -> None:
    script = ("import sys, celery_floodgate.metrics as m; "
              "before = 'prometheus_client' in sys.modules; "
              "m.counter('accepted', 'q').inc(); "
              "print(before, 'prometheus_client' in sys.modules, m.ACCEPTED is not None)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout.split()
    assert out == ["False", "True", "True"]
