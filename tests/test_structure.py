"""ui/ is layout and wiring (issue 28): no ui module keeps state of its own. Every cache, hook, lock or set
the pages share is an attribute of the app's one Studio (dcgan/studio.py, ui/state.py), so two apps in one
process (the tests make many) never share one by accident, and the state has tests without Gradio.

Allowed at a module's (or a class's) top level: constants (str, int, float, bool, None, tuple, frozenset,
MappingProxyType, all the way down), type aliases, functions, classes and modules, and a logging.Logger
(a name in the process's logging registry, holding nothing of the app's)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import re
import sys
import types
import typing
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parent.parent / "ui"
CONSTANTS = (str, bytes, int, float, complex, bool, type(None), re.Pattern)
HANDLES = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type, logging.Logger,
           types.GenericAlias, types.UnionType)


def immutable(value: object) -> bool:
    if isinstance(value, CONSTANTS + HANDLES) or type(value).__module__ == "typing":
        return not hasattr(value, "cache_info")  # an lru_cache'd function is a cache
    if isinstance(value, (tuple, frozenset)):
        return all(immutable(v) for v in value)
    if isinstance(value, types.MappingProxyType):
        return all(immutable(k) and immutable(v) for k, v in value.items())
    return False


def assigned(body: list[ast.stmt]) -> list[str]:
    names = []
    for node in body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None
                   else [])
        for target in targets:
            names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def state_of(module: types.ModuleType) -> list[str]:
    """What a module keeps beyond constants: mutable module or class attributes and `global` statements."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = [f"{name} = {type(getattr(module, name)).__name__}" for name in assigned(tree.body)
             if hasattr(module, name) and not immutable(getattr(module, name))]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name)
            found += [f"{node.name}.{name} = {type(getattr(cls, name)).__name__}" for name in assigned(node.body)
                      if not immutable(getattr(cls, name))]
    found += [f"global {', '.join(node.names)} (line {node.lineno})" for node in ast.walk(tree)
              if isinstance(node, ast.Global)]
    found += [f"{name}: a cached function" for name, value in vars(module).items()
              if hasattr(value, "cache_info") and getattr(value, "__module__", None) == module.__name__]
    return found


@pytest.mark.parametrize("name", sorted(p.stem for p in UI.glob("*.py")))
def test_no_ui_module_keeps_state(name):
    module = importlib.import_module(f"ui.{name}")
    assert state_of(module) == [], f"ui/{name}.py keeps state: move it to the Studio (dcgan/studio.py, ui/state.py)"


def test_the_check_sees_each_kind_of_state(tmp_path):
    source = '''
import functools, threading, weakref
from collections import OrderedDict
from types import MappingProxyType
COLORS = MappingProxyType({"a": "#fff"})
NAMES = ("x", "y")
ROWS = MappingProxyType({"a": ["still", "mutable"]})
CACHE = {}
SEEN: set[str] = set()
ORDER = OrderedDict()
HOOKS = weakref.WeakKeyDictionary()
LOCK = threading.Lock()
class Lane:
    jobs = []
LANE = Lane()
def remember(x):
    global CACHE
@functools.lru_cache
def cached(x):
    return x
'''
    path = tmp_path / "stateful_ui.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("stateful_ui", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["stateful_ui"] = module
    try:
        spec.loader.exec_module(module)
        found = state_of(module)
    finally:
        del sys.modules["stateful_ui"]
    assert found == ["ROWS = mappingproxy", "CACHE = dict", "SEEN = set", "ORDER = OrderedDict",
                     "HOOKS = WeakKeyDictionary", "LOCK = lock", "LANE = Lane", "Lane.jobs = list",
                     "global CACHE (line 17)", "cached: a cached function"], found


def test_every_tab_has_the_one_build_signature():
    import inspect

    import app

    for _, module_name in app.TABS:
        params = list(inspect.signature(importlib.import_module(module_name).build).parameters)
        assert params == ["studio", "view"], (module_name, params)


def test_the_train_form_lays_out_exactly_the_studios_fields():
    from dcgan.studio import FORM_FIELDS
    from ui import train_tab

    laid_out = [name for rows in (train_tab.BASIC, train_tab.ADVANCED) for row in rows for name in row]
    assert sorted(laid_out) == sorted(["preset", *FORM_FIELDS]) and len(set(laid_out)) == len(laid_out)


def test_typing_aliases_are_constants():
    assert immutable(dict[str, typing.Any]) and immutable(typing.Callable[[], None]) and immutable(int | None)
