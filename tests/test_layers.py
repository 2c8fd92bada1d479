"""The apps' layering: `common` is below both apps, `recovery` below `qualifier`; nothing
imports upward (a module named in a setting, such as RECOVERY_RUN_TASK, is not an import)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABOVE = {"common": ("recovery", "qualifier"), "recovery": ("qualifier",)}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("app", sorted(ABOVE))
def test_an_app_imports_no_app_above_it(app):
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / app).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if module.split(".")[0] in ABOVE[app]
    ]
    assert offenders == []
