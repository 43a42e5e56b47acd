"""Plugins import from `autoprune.plugin` only, so the rest of `autoprune` can move.

The rule, checked on the source of every module under `plugins/` (the built-in plugins and the
example third-party package), including imports inside functions and `TYPE_CHECKING` blocks:

- allowed: `from autoprune.plugin import x`, `import autoprune.plugin [as p]`,
  `from autoprune import plugin`, and `from autoprune import x` where `x` is a name
  `autoprune.plugin` exports (such as `hookimpl`, which README examples import that way);
- forbidden: any other `from autoprune.<module> import ...` or `import autoprune.<module>`, and a
  bare `import autoprune` (its attributes reach every core module unchecked).

Sibling plugin modules (`autoprune_plugins.*`), relative imports, torch and the stdlib are not
`autoprune` and are not restricted.
"""

import ast
import importlib
from pathlib import Path

import autoprune.plugin

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
API = "autoprune.plugin"


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Every import of `autoprune` in `source` that bypasses `autoprune.plugin`, as `file:line: what`."""
    allowed_names = set(autoprune.plugin.__all__) | {"plugin"}
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.name == "autoprune" or alias.name.startswith("autoprune.")) and alias.name != API:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "autoprune":
                for alias in node.names:
                    if alias.name not in allowed_names:
                        found.append(f"{filename}:{node.lineno}: from autoprune import {alias.name}")
            elif node.module.startswith("autoprune.") and node.module != API:
                names = ", ".join(alias.name for alias in node.names)
                found.append(f"{filename}:{node.lineno}: from {node.module} import {names}")
    return found


def test_plugins_import_only_the_plugin_api():
    files = sorted(PLUGINS.rglob("*.py"))
    assert PLUGINS / "example" / "autoprune_example.py" in files
    violations = [
        v for path in files for v in forbidden_imports(path.read_text(), str(path.relative_to(PLUGINS.parent)))
    ]
    assert not violations, f"plugins must import from {API} only:\n" + "\n".join(violations)


def test_every_exported_name_resolves():
    module = importlib.import_module(API)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name, None) is not None, name
    namespace: dict = {}
    exec(f"from {API} import *", namespace)
    assert set(module.__all__) <= namespace.keys()


def test_hookimpl_is_the_same_marker_from_either_import():
    import autoprune

    assert autoprune.hookimpl is autoprune.plugin.hookimpl


def test_the_checker_reports_each_kind_of_forbidden_import():
    source = "\n".join(
        [
            "import torch",
            "from autoprune.plugin import LinearStats, hookimpl",
            "import autoprune.plugin as api",
            "from autoprune import hookimpl, plugin",
            "from autoprune_plugins.sparsity import prune_mask",
            "from . import sibling",
            "from autoprune.components import PruningMetric",  # line 7
            "import autoprune.model",  # line 8
            "from autoprune import study",  # line 9
            "import autoprune",  # line 10
            "def f():",
            "    from autoprune.journal import Journal",  # line 12
        ]
    )
    assert forbidden_imports(source, "bad.py") == [
        "bad.py:7: from autoprune.components import PruningMetric",
        "bad.py:8: import autoprune.model",
        "bad.py:9: from autoprune import study",
        "bad.py:10: import autoprune",
        "bad.py:12: from autoprune.journal import Journal",
    ]
