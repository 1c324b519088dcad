"""The public face: `llmgather.__all__` is the package's real public namespace, sorted, and each name resolves.

The names load on first use (`__getattr__`), so the namespace is looked at in a fresh interpreter: in this one,
other tests have already loaded names and submodules onto the package.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import llmgather

_NAMESPACE = """
import json, types, llmgather

def public(names):
    return sorted(n for n in names if not n.startswith("_") and not isinstance(getattr(llmgather, n), types.ModuleType))

listed = public(dir(llmgather))
for name in llmgather.__all__:
    getattr(llmgather, name)
print(json.dumps({"dir": listed, "vars": public(vars(llmgather))}))
"""


def fresh_namespace() -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", _NAMESPACE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def exported() -> list[str]:
    return [name for name in llmgather.__all__ if not name.startswith("__")]


def test_all_is_sorted_and_names_each_export_once() -> None:
    assert llmgather.__all__ == sorted(set(llmgather.__all__))


def test_dir_lists_exactly_the_exported_names_before_any_is_loaded() -> None:
    # What a REPL's completion and help() see: the lazily loaded names too, and no helper of __init__.py.
    assert fresh_namespace()["dir"] == exported()


def test_no_public_name_of_the_package_is_left_out_of_all() -> None:
    assert set(fresh_namespace()["vars"]) <= set(exported())


def test_each_exported_name_resolves_to_the_object_type_checkers_see() -> None:
    """The names imported for type checkers in __init__.py are the ones exported, and each resolves at run
    time to the very object its import names: a name moved in one place and not the other fails here."""
    tree = ast.parse(Path(llmgather.__file__).read_text())
    static = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmgather")
        for alias in node.names
    }
    assert sorted(static) == exported()
    for name, (module, attribute) in static.items():
        value = getattr(llmgather, name)
        assert value is getattr(importlib.import_module(module), attribute), name
        assert getattr(value, "__module__", "").startswith("llmgather."), name
