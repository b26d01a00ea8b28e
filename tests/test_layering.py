"""The dependency direction of the packages: no module imports from a package above it.

Layers, lowest first (a package may import its own modules and any package of a lower layer,
never one of its own layer or above; imports under ``if TYPE_CHECKING:`` count too):

====  =======================================================================================
0     ``core`` (errors, RE2 policy, registries), ``textsafe``, ``version``
1     ``event``, ``schema``
2     ``configmodel`` (below both the config reader and the filter)
3     ``interfaces`` (Source, Stage, Sink)
4     ``config``, ``filtering``, ``detection``, ``sources``, ``sinks``, ``stages``, ``service``
5     ``sensor`` (live collection on Linux)
6     ``scanners`` (process scanners; the sensor reaches them through the ``SCANNERS`` registry)
7     ``windows`` (Windows Event Log and ETW sources, Sysmon management)
8     ``pipeline`` (the one loop)
9     ``workbench`` (config stats, config diff, ATT&CK coverage, HTML reports over replays)
10    ``cli`` (the command line: one module per command, Sysmon's switches in ``cli.sysmon``)
====  =======================================================================================

So ``config`` and ``filtering`` never import each other, sources never import sinks, and nothing
but the command line imports the pipeline. Imports are read from the source (``ast``), including
those inside functions.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sysmonx"

LAYERS = [
    {"core", "textsafe", "version"},
    {"event", "schema"},
    {"configmodel"},
    {"interfaces"},
    {"config", "filtering", "detection", "sources", "sinks", "stages", "service"},
    {"sensor"},
    {"scanners"},
    {"windows"},
    {"pipeline"},
    {"workbench"},
    {"cli"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """``(line, absolute module imported)`` for every import in ``path``."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or node.level and not node.module:
                for a in node.names:  # from . import x: x may be a submodule
                    yield node.lineno, f"{target}.{a.name}"
            else:
                yield node.lineno, target


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "sysmonx" else ""


def test_every_top_level_package_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
             and p.name != "__init__.py"}
    assert names - set(LAYER) == set()


def test_no_module_imports_from_a_package_above_it():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = _top(_module_name(path))
        if not own:
            continue  # sysmonx/__init__.py: re-exports the version only
        for line, target in _imports(path):
            top = _top(target)
            if not top or top == own:
                continue
            if top not in LAYER:
                if target.startswith("sysmonx.") and top not in LAYER:
                    bad.append(f"{path.relative_to(SRC)}:{line}: {target} has no layer")
                continue
            if LAYER[top] >= LAYER[own]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {own} (layer {LAYER[own]}) imports "
                           f"{target} (layer {LAYER[top]})")
    assert bad == []


def test_config_and_filtering_do_not_import_each_other():
    for a, b in (("config", "filtering"), ("filtering", "config")):
        for path in sorted((SRC / a).rglob("*.py")):
            for line, target in _imports(path):
                assert _top(target) != b, f"{path.relative_to(SRC)}:{line} imports {target}"


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: an import of a higher layer is reported."""
    probe = SRC / "filtering" / "_layering_probe.py"
    probe.write_text("from ..pipeline import loop\nfrom ..config import parse\n")
    try:
        found = [t for _, t in _imports(probe)]
        assert found == ["sysmonx.pipeline", "sysmonx.config"]
        assert LAYER[_top(found[0])] > LAYER["filtering"]
        assert LAYER[_top(found[1])] == LAYER["filtering"]
    finally:
        probe.unlink()


def _package_names(path: Path) -> set:
    """Dotted names of the packages ``path`` lies in (its own package and every one above)."""
    mod = _module_name(path)
    parts = mod.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def test_no_module_imports_from_its_own_package_init():
    """A module takes what it needs from the module that defines it, never from the
    ``__init__`` of a package it lies in (those only re-export): no import cycles through
    package initialisation, and every name has one home."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        mod = _module_name(path)
        above = _package_names(path)
        package = mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if target not in above:
                continue
            pkg_dir = SRC.parent.joinpath(*target.split("."))
            for a in node.names:
                if not ((pkg_dir / f"{a.name}.py").exists() or (pkg_dir / a.name).is_dir()):
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {a.name} from {target}")
    assert bad == []
