"""The package layout: data flows one way (no module imports a later one), tasks are named only by tasks."""

import ast
import pathlib
import re

import colplugin

ROOT = pathlib.Path(colplugin.__file__).parent
#: The data flow, as documented in colplugin/__init__.py; each module may import only earlier ones.
ORDER = ["_version", "_io", "_warnings", "params", "column", "siegert", "transfers", "field", "network", "stimulus",
         "_neo", "solve", "plotting", "training", "tasks", "export", "spiking", "analysis", "experiments", "cli"]


def _rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "colplugin" or len(parts) < 2:
        return None
    return ORDER.index(parts[1]) if parts[1] in ORDER else None


def _imports(path: pathlib.Path) -> list[tuple[str, str]]:
    mod = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    if path.name == "__init__.py":
        mod = mod[: -len(".__init__")]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions count too
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                out.append((mod, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                out.append((mod, node.module))
        elif isinstance(node, ast.Import):
            out.extend((mod, a.name) for a in node.names)
    return out


def test_every_module_has_a_place_in_the_flow():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")} - {"__init__"}
    assert tops <= set(ORDER), f"modules missing from ORDER: {tops - set(ORDER)}"


def test_no_module_imports_a_later_one():
    bad = []
    for path in ROOT.rglob("*.py"):
        for mod, target in _imports(path):
            me, other = _rank(mod), _rank(target)
            if me is not None and other is not None and other > me:
                bad.append(f"{mod} imports {target}")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def test_pipelines_and_cli_name_no_task():
    for name in ("experiments.py", "cli.py"):
        text = (ROOT / name).read_text()
        found = re.findall(r"""["'](xor|decision|fit)["']""", text)
        assert not found, f"{name} names tasks {found}; task behaviour belongs on the Task"


def test_equation_strings_are_not_edited_outside_the_field():
    for path in ROOT.rglob("*.py"):
        if path.name == "field.py":
            continue
        text = path.read_text()
        assert not re.search(r"EQUATIONS\w*\.replace\(|eqs\w*\.replace\(", text), f"{path} edits an equation string"
