"""Registries: every kind lists its built-ins, plugins register once where defined (a second
object under a taken name is refused), entry points add third-party plugins, and what is
registered is usable at once (a condition in a config, a format on the command line)."""

import fnmatch
import subprocess
import sys
import types

import pytest

from sysmonx.cli import main
from sysmonx.config import ConfigError, parse_config
from sysmonx.core.errors import PluginError
from sysmonx.core.registry import (BACKENDS, CONDITIONS, SINKS, SOURCES, STAGES, Registry,
                                   all_registries)
from sysmonx.filtering import FilterEngine
from sysmonx.filtering.conditions import Condition
from sysmonx.sinks.base import Writer

BUILTIN = {
    "sources": {"evtx", "xml", "syslog", "jsonl", "winlogbeat", "nxlog", "sentinel", "flatjson",
                "evtxjson", "files", "live", "eventlog", "etw-kernel-process", "windows",
                "sqlite", "nats"},
    "stages": {"duplicates", "clock-check", "time-window", "tamper", "sysmon-gate",
               "sigma-only-drop", "filter", "record-numbers", "sigma-match", "sigma-correlate",
               "alert-triage", "sigma-alert-events", "sigma-alerts-read-back", "alerts-only",
               "config-stats", "config-diff", "rulename-counter",
               "powershell-scriptblocks", "kernel-process-sysmon", "windows-tamper",
               "scanner-findings", "scanner-requests", "enrich", "enrich-strip"},
    "sinks": {"xml", "linux-xml", "jsonl", "csv", "syslog", "console", "alerts-jsonl",
              "eventlog", "ecs", "tcp", "tls", "udp", "http", "sqlite", "nats", "kafka"},
    "backends": {"ebpf", "audit", "cnproc", "dns", "shell"},
    "conditions": {"is", "is not", "contains", "excludes", "begin with", "end with",
                   "less than", "more than", "image", "contains any", "is any", "contains all",
                   "excludes any", "excludes all", "not begin with", "not end with", "regex"},
    "scanners": {"memfd_exec", "deleted_exe", "exe_in_writable_dir", "anon_exec_memory",
                 "rwx_memory", "elf_in_anon_memory", "text_modified", "ptrace_attached",
                 "ld_preload", "argv_spoofed", "yara"},
}


def test_every_registry_lists_its_builtins():
    assert [r.kind for r in all_registries()] == list(BUILTIN)
    for reg in all_registries():
        assert set(reg.names()) == BUILTIN[reg.kind], reg.kind
        assert reg.broken == {}
        for e in reg.entries():
            assert e.summary and "\n" not in e.summary, e.name
            assert e.origin.startswith("sysmonx."), e.name


def test_plugins_command_prints_every_registry(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind, names in BUILTIN.items():
        assert f"{kind} (" in out and f"entry points: sysmonx.{kind}" in out
        for name in names:
            assert f"\n  {name} " in out, (kind, name)
    assert main(["plugins", "sinks"]) == 0
    assert "conditions (" not in capsys.readouterr().out
    assert main(["plugins", "nope"]) == 87


def test_a_name_is_registered_once():
    reg = Registry("things", (), "test")

    class A:
        name = "a"
        summary = "first"

    class B:
        name = "a"

    reg.register(A)
    reg.register(A)  # the same object again: fine (a module imported twice)
    with pytest.raises(PluginError, match="registered twice"):
        reg.register(B)
    with pytest.raises(PluginError, match="unknown thing 'b'; known: a"):
        reg.get("b")


def test_entry_points_add_third_party_plugins(monkeypatch):
    class Ndjson(Writer):
        """Newline-delimited JSON (a third-party format)."""

        name = "thirdparty-ndjson"

        def write(self, event):
            self.stream.write(b"{}\n")

    class EP:
        def __init__(self, name, obj):
            self.name, self.value, self.dist = name, "pkg.mod:obj", None
            self.group = "sysmonx.sinks"
            self._obj = obj

        def load(self):
            return self._obj

    class Broken(EP):
        def load(self):
            raise ImportError("no module named pkg")

    class Found(list):  # what importlib.metadata.entry_points() returns: every group
        groups = {"sysmonx.sinks"}

        def select(self, group):
            return [ep for ep in self if ep.group == group]

    def entry_points():  # read once per process for every sysmonx.* group
        return Found([EP("thirdparty-ndjson", Ndjson), Broken("broken", None)])

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    monkeypatch.setattr("sysmonx.core.registry._EP_GROUPS", None)  # a fresh process
    # no installed distribution declares a sysmonx group here: say one may, so the (faked)
    # scan runs (the real precheck is tested below with a real distribution)
    monkeypatch.setattr("sysmonx.core.registry._may_have_plugins", lambda: True)
    reg = Registry("sinks", (), "test")
    assert reg.names() == ["thirdparty-ndjson"]
    assert reg.get("thirdparty-ndjson") is Ndjson
    assert reg.entries()[0].summary == "Newline-delimited JSON (a third-party format)."
    assert "ImportError: no module named pkg" in reg.broken["entry point broken"]


_PLUGIN_MODULE = '''from sysmonx.sinks.base import Writer


class TpNdjson(Writer):
    """Third-party NDJSON (test distribution)."""

    name = NAME

    def write(self, event):
        self.stream.write(b"{}\\n")
'''


def _install_plugin(root, group="sysmonx.sinks", name="tp-ndjson"):
    """A real installed distribution in ``root`` (a sys.path folder): a module defining a
    Writer and a dist-info folder whose entry_points.txt declares it in ``group``."""
    (root / "tp_sysmonx_plugin.py").write_text(_PLUGIN_MODULE.replace("NAME", repr(name)))
    info = root / "tp_sysmonx_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-sysmonx-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nsysmonx = sysmonx.cli:main\n\n"
        f"[{group}]\n{name} = tp_sysmonx_plugin:TpNdjson\n")


def test_a_real_installed_distribution_plugin_is_found(tmp_path, monkeypatch):
    """End to end through importlib.metadata (nothing faked): a dist-info folder on sys.path
    declaring a [sysmonx.sinks] entry point makes its writer a registered sink."""
    from sysmonx.core import registry
    _install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_EP_GROUPS", None)  # a fresh process
    monkeypatch.delitem(sys.modules, "tp_sysmonx_plugin", raising=False)
    assert registry._may_have_plugins()
    reg = Registry("sinks", (), "test")
    assert reg.names() == ["tp-ndjson"]
    obj = reg.get("tp-ndjson")
    assert obj.__name__ == "TpNdjson" and obj.__module__ == "tp_sysmonx_plugin"
    assert reg.entries()[0].origin == "entry point tp-sysmonx-plugin"


def test_the_precheck_reads_group_headers_only(tmp_path, monkeypatch):
    """sysmonx's own console script (``sysmonx = sysmonx.cli:main``) is not a plugin group;
    a [sysmonx.*] header in any sys.path folder is (and the scan then runs)."""
    from sysmonx.core import registry
    assert not registry._declares_sysmonx_group("[console_scripts]\nsysmonx = sysmonx.cli:main\n")
    assert registry._declares_sysmonx_group("[console_scripts]\nx = y:z\n\n[ sysmonx.stages ]\n")
    assert not registry._declares_sysmonx_group("[other]\n# [sysmonx.sinks] in a comment\n")
    # the standard finders only (another test may leave a finder that can list distributions:
    # the precheck then rightly leaves the answer to the full scan)
    from importlib.machinery import PathFinder
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if getattr(f, "find_distributions", None) is None]
                        + [PathFinder])
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert not registry._may_have_plugins()  # an empty folder
    _install_plugin(tmp_path, group="sysmonx.stages")
    assert registry._may_have_plugins()
    zipped = tmp_path / "plugins.zip"
    zipped.write_bytes(b"PK\x05\x06" + bytes(18))
    monkeypatch.setattr(sys, "path", [str(zipped)])
    assert registry._may_have_plugins()  # an archive: the full scan decides

    class Finder:  # a finder of another kind that can list distributions
        @staticmethod
        def find_distributions(context=None):
            return iter(())

    monkeypatch.setattr(sys, "path", [str(tmp_path / "nothing")])
    assert not registry._may_have_plugins()
    monkeypatch.setattr(sys, "meta_path", sys.meta_path + [Finder])
    assert registry._may_have_plugins()


def test_a_builtin_lookup_reads_no_entry_points(tmp_path, monkeypatch):
    """get() of a name a built-in module registers imports the built-in modules only; an
    unknown name, a listing or ``in`` read the entry points (once)."""
    from sysmonx.core import registry
    calls = []

    def entry_points(group):
        calls.append(group)
        return []

    monkeypatch.setattr(registry, "_entry_points", entry_points)
    reg = Registry("things", ("tp_builtin_things",), "test")
    holder = types.ModuleType("tp_things_holder")
    holder.REG = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tp_things_holder", holder)
    (tmp_path / "tp_builtin_things.py").write_text(
        "import tp_things_holder\n\n\nclass A:\n    name = 'a'\n\n\n"
        "tp_things_holder.REG.register(A)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tp_builtin_things", raising=False)
    assert reg.get("a").__module__ == "tp_builtin_things"
    assert calls == []
    with pytest.raises(PluginError, match="unknown thing 'b'; known: a"):
        reg.get("b")
    assert calls == ["sysmonx.things"]
    assert "a" in reg and reg.names() == ["a"]
    assert calls == ["sysmonx.things"]


def test_listing_every_registry_does_not_import_importlib_metadata():
    """No installed distribution here declares a sysmonx group, so a whole listing (what
    ``sysmonx plugins`` and a replay's format lookups do) never imports importlib.metadata
    (tens of milliseconds of every CLI run before)."""
    code = ("import sys\nfrom sysmonx.core.registry import all_registries\n"
            "n = sum(len(r.names()) for r in all_registries())\n"
            "print(n, 'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) >= sum(len(v) for v in BUILTIN.values())
    assert out[1] == "False"


@pytest.fixture
def glob_condition():
    cond = Condition("glob", "fnmatch-style wildcards (test plugin)",
                     lambda r, raw, fold, mem: lambda v: fnmatch.fnmatchcase(v, r),
                     extension=True)
    CONDITIONS.add(cond, name="glob", summary=cond.summary, origin=__name__)
    yield cond
    CONDITIONS.remove("glob")


def test_a_registered_condition_is_accepted_by_configs_and_evaluated(glob_condition):
    cfg = parse_config('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate '
                       'onmatch="include"><Image name="g" condition="glob">*\\power?hell.exe'
                       '</Image></ProcessCreate></EventFiltering></Sysmon>')
    eng = FilterEngine(cfg)
    assert eng.decide(1, {"Image": "C:\\Windows\\PowerShell.exe"}) == (True, "g")
    assert eng.decide(1, {"Image": "C:\\Windows\\cmd.exe"})[0] is False
    with pytest.raises(ConfigError, match="Unknown condition: glob"):
        parse_config('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate '
                     'onmatch="include"><Image condition="glob">*</Image></ProcessCreate>'
                     '</EventFiltering></Sysmon>', extensions=False)


def test_command_line_choices_come_from_the_registries(tmp_path, capsys):
    class Lines(Writer):
        name = "event-ids"
        summary = "one EventID per line (test plugin)"

        def write(self, event):
            self.stream.write(b"%d\n" % event.event_id)

    SINKS.add(Lines, origin=__name__)
    try:
        out = tmp_path / "ids.txt"
        assert main(["replay", "--sample", "--format", "event-ids", "-o", str(out), "-q"]) == 0
        assert out.read_text().split()[:2] == ["4", "16"]
    finally:
        SINKS.remove("event-ids")
    assert main(["replay", "--sample", "--format", "event-ids", "-q"]) == 87
    assert "invalid choice: 'event-ids'" in capsys.readouterr().err
    assert set(BUILTIN["sources"]) >= {"evtx"} and "live" in SOURCES and "dns" in BACKENDS
    assert "filter" in STAGES


def test_a_stage_from_the_registry_runs_after_the_filter(tmp_path, capsys):
    from sysmonx.interfaces import Stage

    class OnlyProcesses(Stage):
        name = "only-processes"
        summary = "keep process events (test plugin)"

        def process(self, item, emit):
            return getattr(item, "event_id", 1) in (1, 5)

    STAGES.add(OnlyProcesses, origin=__name__)
    try:
        out = tmp_path / "p.jsonl"
        assert main(["replay", "--sample", "--stage", "only-processes", "-f", "jsonl",
                     "-o", str(out), "-q"]) == 0
        assert out.read_bytes().count(b"\n") == 4 + 1  # the default config's four 1s and a 5
    finally:
        STAGES.remove("only-processes")
    assert main(["replay", "--sample", "--stage", "nope", "-q"]) == 87
    assert "unknown stage 'nope'" in capsys.readouterr().err


def test_a_config_of_known_conditions_reads_no_entry_points():
    """Loading a config whose conditions are Sysmon's and the built-in ``regex`` does not read
    the installed distributions' entry points (about 1.5 ms of every config's first load in
    a process); one naming an unknown condition does, to look for a plugin's."""
    code = ("import sys\nfrom sysmonx.core import registry\n"
            "from sysmonx.config import parse_config, ConfigError\n"
            "head = '<Sysmon schemaversion=\"4.90\"><EventFiltering><ProcessCreate "
            "onmatch=\"include\">'\n"
            "tail = '</ProcessCreate></EventFiltering></Sysmon>'\n"
            "cfg = parse_config(head + '<Image condition=\"end with\">a.exe</Image>'"
            " + '<CommandLine condition=\"regex\">x+</CommandLine>' + tail)\n"
            "print(len(cfg.rule_sets[0].filters), registry._EP_GROUPS is None)\n"
            "try:\n    parse_config(head + '<Image condition=\"glob\">*</Image>' + tail)\n"
            "except ConfigError as exc:\n    print('refused', 'Unknown condition: glob' in str(exc))\n"
            "print(registry._EP_GROUPS is None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["2", "True", "refused", "True", "False"]


def test_a_condition_from_an_entry_point_is_found_when_a_config_names_it(monkeypatch):
    """A plugin's condition known only through its entry point is still accepted: the reader
    reads the entry points when a config names a condition it does not know."""
    from sysmonx.core import registry
    cond = Condition("tpglob", "fnmatch-style wildcards (entry point)",
                     lambda r, raw, fold, mem: lambda v: fnmatch.fnmatchcase(v, r),
                     extension=True)

    class EP:
        name, value, dist, group = "tpglob", "pkg.mod:cond", None, "sysmonx.conditions"

        def load(self):
            return cond

    monkeypatch.setattr(registry, "_entry_points",
                        lambda group: [EP()] if group == "sysmonx.conditions" else [])
    monkeypatch.setattr(CONDITIONS, "_discovered", False)  # as in a fresh process
    try:
        cfg = parse_config('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate '
                           'onmatch="include"><Image name="g" condition="tpglob">*\\pwsh.exe'
                           '</Image></ProcessCreate></EventFiltering></Sysmon>')
        assert cfg.rule_sets[0].filters[0].condition == "tpglob"
        assert FilterEngine(cfg).decide(1, {"Image": "C:\\x\\pwsh.exe"}) == (True, "g")
    finally:
        CONDITIONS.remove("tpglob")


def test_builtin_stream_formats_name_the_modules_that_register_them():
    """writer_class imports a built-in format's module alone: the map must list every
    built-in stream format and the module that registers it."""
    from sysmonx.sinks import BUILTIN_STREAM_FORMATS, stream_formats
    builtin = {name: cls.__module__ for name, cls in stream_formats().items()
               if cls.__module__.startswith("sysmonx.sinks.")}
    assert {k: f"sysmonx.sinks.{v}" for k, v in BUILTIN_STREAM_FORMATS.items()} == builtin


def test_replay_command_line_imports_only_the_writer_it_uses():
    """Building ``sysmonx replay``'s command line and taking ``--format jsonl`` imports no
    other sink (the network outputs, ssl, asyncio: ~0.1 s of CPU at every start) and reads
    no entry points; the help still lists every format."""
    code = ("import sys\nfrom sysmonx.core import registry\n"
            "from sysmonx.cli.replay import _replay_parser\n"
            "from sysmonx.sinks import writer_class\n"
            "p = _replay_parser()\nargs = p.parse_args(['--format', 'jsonl', 'x.evtx'])\n"
            "cls = writer_class(args.format)\n"
            "print(cls.__name__, args.input_format, registry._EP_GROUPS is None, "
            "sorted(m for m in sys.modules if m.startswith('sysmonx.sinks.')), "
            "'ssl' in sys.modules, 'asyncio' in sys.modules)\n"
            "print('HELP', 'csv,ecs,jsonl,linux-xml,xml' in p.format_help(), "
            "'evtx,xml,syslog' in p.format_help())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == ("JsonlWriter None True ['sysmonx.sinks.base', 'sysmonx.sinks.jsonl', "
                      "'sysmonx.sinks.wholeline'] False False")
    assert out[1] == "HELP True True"


def test_builtin_input_extensions_are_the_builtin_formats():
    """A folder walk without plugins takes the built-in formats' extensions from a table: it
    must be what the built-in formats register (the first by order wins)."""
    from sysmonx.sources import file_formats
    from sysmonx.sources.detect import BUILTIN_INPUT_EXTENSIONS
    out: dict = {}
    for cls in file_formats():
        if cls.__module__.startswith("sysmonx."):
            for ext in cls.extensions:
                out.setdefault(ext, cls.name)
    assert out == BUILTIN_INPUT_EXTENSIONS


def test_a_folder_walk_imports_no_live_or_windows_source(tmp_path):
    """Walking a folder of logs keeps the built-in formats' files without importing every
    source module (the live sensor, the Windows sources, asyncio, ssl: ~40 ms of CPU)."""
    for name in ("a.evtx", "b.json", "c.txt", "d.bin"):
        (tmp_path / name).write_bytes(b"x")
    code = ("import sys\nfrom sysmonx.sources import iter_input_files\n"
            f"print([p.rsplit('/', 1)[1] for p in iter_input_files([{str(tmp_path)!r}])], "
            "'sysmonx.sensor.live' in sys.modules, 'sysmonx.windows.sources' in sys.modules, "
            "'asyncio' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['a.evtx', 'b.json', 'c.txt'] False False False"


def test_a_plugin_format_extension_is_kept_by_a_folder_walk(tmp_path):
    from sysmonx.sources import iter_input_files
    from sysmonx.sources.base import FileFormat

    class Tp(FileFormat):
        name = "tp-logs"
        summary = "test plugin format"
        extensions = (".tplog",)
        order = 90

    (tmp_path / "x.tplog").write_bytes(b"x")
    (tmp_path / "y.bin").write_bytes(b"x")
    SOURCES.add(Tp, origin=__name__)
    try:
        assert [p.rsplit("/", 1)[1] for p in iter_input_files([str(tmp_path)])] == ["x.tplog"]
    finally:
        SOURCES.remove("tp-logs")
    assert list(iter_input_files([str(tmp_path)])) == []
