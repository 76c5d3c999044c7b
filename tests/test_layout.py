"""The package layout: data flows one way (no module imports a later one), modules import each other at
module level (only the CLI imports inside functions), tasks are named only by tasks."""

import ast
import io
import pathlib
import re
import tokenize

import colplugin

ROOT = pathlib.Path(colplugin.__file__).parent
#: The data flow, as documented in colplugin/__init__.py; each module may import only earlier ones.
ORDER = ["_version", "_mpi", "_io", "_warnings", "params", "column", "siegert", "transfers", "field", "network",
         "stimulus", "_neo", "solve", "plotting", "training", "tasks", "export", "spiking", "analysis", "experiments",
         "cli"]


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


#: Modules that may import colplugin's own modules inside functions without saying why: the CLI, whose
#: start-up time (``colplugin --help``) needs each command to import its modules when it runs.
LAZY_ALLOWED = {"cli.py"}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _unexplained_lazy_imports(source: str, name: str = "<source>") -> list[str]:
    """Imports of colplugin modules inside function bodies without a comment that says why.

    The comment is on the import's own line(s) or on the line just above it, and says
    something (``# noqa`` alone does not count).
    """
    comments = _comments(source)
    lines = source.splitlines()
    bad = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                ours = node.level > 0 or (node.module or "").split(".")[0] == "colplugin"
            elif isinstance(node, ast.Import):
                ours = any(a.name.split(".")[0] == "colplugin" for a in node.names)
            else:
                continue
            if not ours:
                continue
            above = node.lineno - 1
            own = [comments.get(k, "") for k in range(node.lineno, (node.end_lineno or node.lineno) + 1)]
            if above in comments and lines[above - 1].lstrip().startswith("#"):
                own.append(comments[above])
            if not any(len(re.sub(r"noqa(:\s*[\w, ]+)?", "", c).strip()) >= 10 for c in own):
                bad.append(f"{name}:{node.lineno} ({fn.name}): {ast.unparse(node)}")
    return bad


def test_colplugin_imports_sit_at_module_level():
    """An import of a colplugin module inside a function (outside the CLI) must say why on its line or the one above:
    an import cycle, or a name looked up when called; every other one belongs at the top of its module."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).as_posix() in LAZY_ALLOWED:
            continue
        bad += _unexplained_lazy_imports(path.read_text(), str(path.relative_to(ROOT.parent)))
    assert not bad, ("imports of colplugin modules inside functions; move them to the top of the module, or say "
                     "on the line why one must stay:\n" + "\n".join(bad))


def test_the_lazy_import_check_can_fail():
    source = """
from . import fine_at_top


def f():
    from .network import ColumnNetwork
    from colplugin.params import load_preset  # noqa
    import colplugin.solve
    import json
    # an import cycle: colplugin.spiking imports this module
    from ..spiking import simulate_spiking
    from .stimulus import Stimulus  # looked up per call: tests replace it
    return ColumnNetwork, load_preset, colplugin, json, simulate_spiking, Stimulus
"""
    bad = _unexplained_lazy_imports(source)
    assert [b.split(" ", 1)[0] for b in bad] == ["<source>:6", "<source>:7", "<source>:8"], bad
