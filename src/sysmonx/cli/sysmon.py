"""Sysmon's command line: ``sysmonx -i config.xml``, ``-c``, ``-u``, ``-s``, ``-? config``, ``-t``.

:func:`main` is called by :func:`sysmonx.cli.dispatch.main` when the first argument is a switch. Parsing
follows Sysmon's ``ParseCommandLine`` (spec/sysmon-semantics.md 6.1) exactly:

* a switch starts with ``-`` (on Windows also ``/``; SysmonX runs its service on Linux, where
  Sysmon accepts ``-`` only, so ``/`` is accepted only when ``os.name == "nt"`` or
  ``$SYSMONX_SWITCH_STYLE=windows``);
* switch names are matched case-insensitively as prefixes of the argument, against the manifest's
  switches in manifest order; multi-letter switches (``accepteula``, ``nologo``, ``dns``, ``btf``,
  ``service``) only at the start of an argument, and the rest of such an argument is ignored;
* one-letter switches may be concatenated, but only in manifest order (``-in`` is ``-i -n``;
  ``-ni`` fails); a switch that needs a value must be the last letter;
* values: *required* takes the next argument whatever it is; *optional* takes the next argument
  unless it starts with a switch character; *none* takes nothing; a value given twice fails;
* at most one of the exclusive switches ``-i -c -u -m -s -z``;
* ``-dns`` is shadowed by ``-d`` (DriverName needs a value, so ``-dns`` fails to parse) - Sysmon's
  own quirk, kept;
* any argument that is neither a switch nor a value is an error.

Then, in the order of Sysmon for Linux's ``main`` (spec 6.2, 6.4): the configuration file of
``-i``/``-c`` is loaded (errors with file and line); ``-s`` prints the schema; ``--`` without ``-c``
is refused; ``-d``, ``-a``, ``-r``, ``-z`` and the config options ``DriverName``,
``ArchiveDirectory``, ``CheckRevocation``, ``CaptureClipboard`` get ``Option not implemented on
Linux.``; ``-t`` accepts only ``verbose``; non-root is refused with ``You need to run Sysmon as
root.`` (exit 740); then ``-u``, ``-t``, ``-c``, ``-i``. Exit codes (as the shell sees them):
0 success; 87 (``ERROR_INVALID_PARAMETER``) for usage and option errors and for a request the
installation's state refuses ("not running", "not installed", "already installed"); 228 when not
root (Sysmon's ``exit(740)``, of which a Linux shell sees the low 8 bits: 740 & 0xff); 1 a
service step failed.

SysmonX options beside the switches (``--name value`` or ``--name=value``, anywhere):
``--install-root DIR`` (default ``$SYSMONX_INSTALL_ROOT`` or ``/``), ``--output-file FILE``
(the service writes events there instead of syslog), ``--backend NAME``, ``--no-dns``,
``--duration SECONDS`` (``-t`` only).

Where SysmonX differs from Sysmon for Linux: ``-t`` runs the sensor in the foreground and installs
nothing (Sysmon for Linux needs ``-i`` with it); help requested with ``-?`` goes to stdout (Sysmon
writes usage to stderr; parse failures still print it to stderr); a parse failure also prints one
line saying what was wrong; ``-nologo`` suppresses the banner.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional, TextIO

from ..version import __version__
from ..core.errors import UsageError
from ..schema import CURRENT, format_version

__all__ = ["Switch", "SWITCHES", "CommandLineError", "ParsedCommandLine", "parse_command_line",
           "split_sysmonx_options", "render_dump", "usage_text", "main", "EXIT_OK",
           "EXIT_INVALID_PARAMETER", "EXIT_ELEVATION_REQUIRED", "EXIT_FAILED",
           "configuration_name"]

EXIT_OK = 0
#: ``ERROR_INVALID_PARAMETER``: usage, option and "not running" errors (spec 6.4).
EXIT_INVALID_PARAMETER = 87
#: ``ERROR_ELEVATION_REQUIRED``: not root; Sysmon for Linux's ``exit(740)``, of which the shell
#: sees 228 (the status is 8 bits: 740 & 0xff); :data:`EXIT_ELEVATION_REQUIRED_SEEN`.
EXIT_ELEVATION_REQUIRED = 740
#: What ``$?`` is after :data:`EXIT_ELEVATION_REQUIRED`.
EXIT_ELEVATION_REQUIRED_SEEN = EXIT_ELEVATION_REQUIRED & 0xFF
#: A service step failed (Sysmon exits 1 when it cannot install its files).
EXIT_FAILED = 1

#: Options Sysmon for Linux refuses with "Option not implemented on Linux." (spec 5.2).
LINUX_NOT_IMPLEMENTED = ("ClipboardInstance", "DriverName", "ArchiveDirectory",
                         "CaptureClipboard", "CheckRevocation")


@dataclass(frozen=True)
class Switch:
    """One command-line switch of the manifest.

    Attributes:
        name: the switch text without prefix (``i``, ``accepteula``, ``-``).
        option: the manifest option name (``Install``, ``AcceptEula``, ``ConfigDefault``).
        value: ``none``, ``optional`` or ``required``.
        exclusive: one of the exclusive group ``-i -c -u -m -s -z``.
        config: also a configuration entry (not command-line only).
    """

    name: str
    option: str
    value: str
    exclusive: bool
    config: bool


def _switches() -> tuple[Switch, ...]:
    out = []
    for o in CURRENT.options:
        if o.switch is None or o.internal:
            continue
        out.append(Switch(o.switch, o.name, o.argument, bool(o.exclusive), not o.noconfig))
    return tuple(out)


#: Switches in manifest order (the order Sysmon tries them in).
SWITCHES: tuple[Switch, ...] = _switches()


class CommandLineError(UsageError):
    """The command line does not parse; Sysmon prints its usage and exits 87."""


@dataclass
class ParsedCommandLine:
    """The result of :func:`parse_command_line`.

    Attributes:
        set: option names given (manifest names, e.g. ``Install``), in the order seen.
        values: option name -> value, for options given with a value.
        argv: the arguments parsed.
    """

    set: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def has(self, option: str) -> bool:
        """True when the option's switch was given."""
        return option in self.set

    def value(self, option: str) -> Optional[str]:
        """The option's value, ``None`` when it had none (or was not given)."""
        return self.values.get(option)


def switch_prefixes() -> tuple[str, ...]:
    """``("-",)`` on Linux, ``("-", "/")`` on Windows or with ``$SYSMONX_SWITCH_STYLE=windows``."""
    style = os.environ.get("SYSMONX_SWITCH_STYLE")
    if style == "windows" or (style is None and os.name == "nt"):
        return ("-", "/")
    return ("-",)


def parse_command_line(argv: list[str], prefixes: Optional[tuple[str, ...]] = None,
                       switches: tuple[Switch, ...] = SWITCHES) -> ParsedCommandLine:
    """Parse Sysmon switches exactly as Sysmon's ``ParseCommandLine`` does (module docstring,
    spec 6.1).

    Args:
        argv: the arguments (without the program name).
        prefixes: switch characters (default :func:`switch_prefixes`).
        switches: the switch table (default: the newest manifest's).
    Returns:
        the :class:`ParsedCommandLine`.
    Raises:
        CommandLineError: with a one-line reason (Sysmon itself gives none, only its usage).
    """
    prefixes = prefixes or switch_prefixes()
    out = ParsedCommandLine(argv=list(argv))
    exclusive_seen: Optional[str] = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg or arg[0] not in prefixes:
            raise CommandLineError(f"'{arg}' is not a switch (switches start with "
                                   f"{' or '.join(repr(p) for p in prefixes)})")
        j = 1
        done = False
        z = 0
        while not done and j < len(arg):
            matched = False
            while z < len(switches):
                sw = switches[z]
                z += 1
                n = len(sw.name)
                if j != 1 and n > 1:
                    continue  # long switches only at the start of an argument
                if arg[j:j + n].lower() != sw.name.lower():
                    continue
                matched = True
                if sw.exclusive:
                    if exclusive_seen is not None:
                        raise CommandLineError(
                            f"-{sw.name} cannot be combined with -{exclusive_seen} (only one of "
                            "-i, -c, -u, -m, -s, -z)")
                    exclusive_seen = sw.name
                if sw.option not in out.set:
                    out.set.append(sw.option)
                j += n
                last = j == len(arg)
                if sw.value in ("required", "optional"):
                    if sw.value == "required" and not last:
                        raise CommandLineError(f"-{sw.name} takes a value, as the next "
                                               f"argument (in '{arg}')")
                    if last:
                        if i + 1 >= len(argv):
                            if sw.value == "required":
                                raise CommandLineError(f"-{sw.name} needs a value")
                        elif not (sw.value == "optional" and argv[i + 1][:1] in prefixes):
                            if sw.option in out.values:
                                raise CommandLineError(f"-{sw.name} given twice with a value")
                            i += 1
                            out.values[sw.option] = argv[i]
                            done = True
                            break
                if n > 1 or last:
                    done = True
                    break
                matched = False  # one-letter switch followed by more letters: keep scanning
            if not done and not matched:
                raise CommandLineError(f"unknown switch '{arg[j:]}' in '{arg}' (one-letter "
                                       "switches combine only in Sysmon's order)" if j > 1 else
                                       f"unknown switch '{arg}'")
        i += 1
    return out


# --- SysmonX options -----------------------------------------------------------------------------

#: SysmonX options beside the switches: name -> takes a value.
SYSMONX_OPTIONS = {"install-root": True, "output-file": True, "backend": True, "duration": True,
                   "no-dns": False,
                   # Windows (cli/windows.py)
                   "sysmon": True, "download-sysmon": False, "state-dir": True, "syslog": True,
                   "etw": False, "eventlog": False}


def split_sysmonx_options(argv: list[str]) -> tuple[dict, list[str]]:
    """Take SysmonX's own ``--name [value]`` options out of ``argv``.

    Returns:
        ``(options, rest)``: option name -> value (``True`` for flags) and the Sysmon arguments.
    Raises:
        CommandLineError: an option without its value.
    """
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, val = arg[2:].partition("=")
        if arg.startswith("--") and name in SYSMONX_OPTIONS:
            if SYSMONX_OPTIONS[name]:
                if not eq:
                    if i + 1 >= len(argv):
                        raise CommandLineError(f"--{name} needs a value")
                    i += 1
                    val = argv[i]
                opts[name] = val
            else:
                opts[name] = True
        else:
            rest.append(arg)
        i += 1
    return opts, rest


# --- texts ---------------------------------------------------------------------------------------

def banner() -> str:
    """The banner printed before ``-i``/``-c``/``-u``/``-t`` output (``-nologo`` drops it)."""
    return (f"\nSysmonX v{__version__} - Sysmon-compatible system monitor\n"
            "Drop-in command line of Sysinternals Sysmon (-i, -c, -u, -s, -t, -? config)\n\n")


def usage_text(program: str = "sysmonx") -> str:
    """The usage text (Sysmon for Linux's layout, spec 6.2), plus SysmonX's own commands."""
    p = program
    return (
        "Usage:\n"
        f"Install:                 {p} -i [<configfile>]\n"
        f"Update configuration:    {p} -c [<configfile>]\n"
        f"Print schema:            {p} -s\n"
        f"Uninstall:               {p} -u [force]\n"
        "  -c   Update configuration of an installed Sysmon service or dump the current\n"
        "       configuration if no other argument is provided. Optionally take a configuration\n"
        "       file. '-c --' resets the configuration to the defaults.\n"
        "  -i   Install the service. Optionally take a configuration file.\n"
        "  -s   Print configuration schema definition of the specified version.\n"
        "       Specify 'all' to dump all schema versions (default is latest).\n"
        "  -t   Run in the foreground, printing events and rule traces ('-t verbose': every\n"
        "       filter tested).\n"
        "  -u   Uninstall the service. Adding force causes uninstall to proceed even when some\n"
        "       components are not installed.\n"
        "  -h <algs>  Hash algorithms (md5, sha1, sha256, imphash, *). Configuration entry:\n"
        "       HashAlgorithms.\n"
        "  -n [procs] Log network connections, optionally only of the listed processes.\n"
        "  -l [procs] Log image loads, optionally only of the listed processes.\n"
        "  -btf Use the specified standalone BTF file.\n"
        "\n"
        "The service logs events to the Syslog (often /var/log/syslog) as Sysmon for Linux does.\n"
        "\n"
        "Use the '-? config' command for configuration file documentation.\n"
        "\n"
        "SysmonX options: --install-root DIR, --output-file FILE (events to a file instead of\n"
        "syslog), --backend ebpf|audit|cnproc, --no-dns, --duration SECONDS (with -t).\n"
        f"SysmonX commands: {p} replay, run, config check|explain|stats|diff|compile|decode|"
        "export,\ncoverage, scan, query, collect, plugins ('" + p + " --help' says what each "
        "does).\n"
        "\n"
        "Neither install nor uninstall requires a reboot.\n"
        "\n")


# --- -c dump ------------------------------------------------------------------------------------

def _dump_label(label: str) -> str:
    return f"{' - ' + label + ':':<34}"


def _cut32(name: str) -> str:
    """``%.32s`` of the UTF-8 name (Sysmon for Linux cuts bytes)."""
    return name.encode("utf-8")[:32].decode("utf-8", "ignore")


def render_dump(rules: Optional[bytes], field_sizes: Optional[str] = None) -> str:
    """``sysmon -c`` without arguments, Linux form (spec 6.3; SysmonCommon dumpConfiguration.c).

    Lines: `` - Field Sizes:`` (label padded to 34 columns, then the value) when set; for a
    missing or empty blob ``No rules installed``; otherwise a blank line, ``Rule configuration
    (version X.XX):`` and per rule set in blob order `` - <Tag padded to 34> onmatch:
    include|exclude   combine rules using 'And'|'Or'``, each filter as
    ``\\t<Field padded to 30> filter: <condition padded to 12> value: '<value>'``, and compound
    rules as ``\\tCompound Rule <name %.32s, or id %04d>   combine using And|Or`` with their filters
    indented four more spaces. Quirk kept: a rule set right after one of the same tag and the same
    onmatch is not printed at all.

    Args:
        rules: the ``rules.bin`` bytes (``None``: no file).
        field_sizes: the FieldSizes option, if any.
    Returns:
        the text, ending with a newline.
    Raises:
        BlobError: a corrupt blob.
    """
    from ..config.blob import decode_blob
    lines: list[str] = []
    if field_sizes:
        lines.append(_dump_label("Field Sizes") + field_sizes)
    if not rules:
        lines.append("No rules installed")
        return "\n".join(lines) + "\n"
    blob = decode_blob(rules)
    lines.append("")
    lines.append(f"Rule configuration (version {format_version(blob.schema_version)}):")
    prev = None
    current_agg = 0
    for rs in blob.rule_sets:
        tag = CURRENT.events[rs.event_id].tag or rs.tag
        if prev == (tag, rs.onmatch):
            continue
        prev = (tag, rs.onmatch)
        lines.append(f" - {tag:<34} onmatch: {rs.onmatch}   combine rules using "
                     f"'{'And' if rs.relation == 'and' else 'Or'}'")
        for f in rs.filters:
            a = f.aggregation
            if a is not None:
                if a.id != current_agg:
                    label = _cut32(a.name) if a.name else f"{a.id:04d}"
                    lines.append(f"\tCompound Rule {label}   combine using "
                                 f"{'And' if a.relation == 'and' else 'Or'}")
                    current_agg = a.id
                lines.append(f"\t    {f.field:<30} filter: {f.condition:<12} value: '{f.value}'")
            else:
                lines.append(f"\t{f.field:<30} filter: {f.condition:<12} value: '{f.value}'")
    return "\n".join(lines) + "\n"


# --- -t console mode ----------------------------------------------------------------------------

def run_console(config, *, verbose: bool, backend: Optional[str], duration: Optional[float],
                no_dns: bool, out: TextIO, err: TextIO) -> int:
    """``-t [verbose]``: run the live sensor in the foreground, printing every logged event and
    a rule trace for every filtered one, until Ctrl-C (or ``duration`` seconds): the live
    pipeline with the console sink and the filter stage's trace."""
    from ..core.errors import OutputClosed, SourceUnavailable
    from ..pipeline.live import Sensor, SensorOptions
    from ..sinks.console import ConsoleSink
    options = SensorOptions(backend=backend, dns=not no_dns, duration=duration)
    def status(msg: str) -> None:
        err.write(f"sysmonx: {msg}\n")

    sensor = Sensor(config, [ConsoleSink(out)], options, config_path=None, on_status=status,
                    trace="verbose" if verbose else "summary")
    try:
        sensor.run()
    except SourceUnavailable as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILED
    except OutputClosed:
        if out is sys.stdout:
            try:  # nothing more can be written; keep interpreter shutdown quiet
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
    return EXIT_OK


# --- dispatch -----------------------------------------------------------------------------------

def is_root() -> bool:
    """True when running as root (Sysmon for Linux's ``CheckRootPrivs``)."""
    return os.geteuid() == 0


class _Ctx:
    def __init__(self, out: TextIO, err: TextIO, program: str):
        self.out, self.err, self.program = out, err, program

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def usage_error(self, reason: Optional[str] = None) -> int:
        if reason:
            self.err.write(f"{reason}\n\n")
        self.err.write(usage_text(self.program))
        return EXIT_INVALID_PARAMETER


def _switch_options(parsed: ParsedCommandLine):
    from ..config.cmdline import SwitchOptions

    def val(opt: str) -> Optional[str]:
        if not parsed.has(opt):
            return None
        return parsed.value(opt) or ""
    return SwitchOptions(hash_algorithms=val("HashAlgorithms"), network=val("NetworkConnect"),
                         image_load=val("ImageLoad"), dns=val("DnsQuery"),
                         process_access=val("ProcessAccess"), pipe_monitoring=val("PipeMonitoring"))


def _custom(parsed: ParsedCommandLine) -> bool:
    """Sysmon's ``HasCustomConfiguration``: a configuration option was given as a switch."""
    config_opts = {s.option for s in SWITCHES if s.config}
    return any(o in config_opts for o in parsed.set)


def _load(ctx: _Ctx, path: Optional[str], parsed: ParsedCommandLine, linux: bool = True):
    """Load the file (if any) and merge the switches: ``(config, text or None)`` or an exit code.
    With ``linux`` (the default), options Sysmon for Linux does not implement are refused; on
    Windows (``linux=False``) they are Sysmon's, and Sysmon applies them.

    ``text`` is the file's bytes when the switches changed nothing, else ``None`` (the merged
    configuration is rendered)."""
    from ..config import ConfigError, parse_config
    from ..config.cmdline import merge_command_line
    from ..config.parse import MAX_CONFIG_BYTES
    base = None
    raw = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise ConfigError(f"configuration is larger than {MAX_CONFIG_BYTES} bytes", path)
            base = parse_config(raw, path)
        except ConfigError as exc:
            for e in exc.errors:  # every validation error, as Sysmon lists them
                ctx.err.write(f"{e}\n")
            rc = ctx.usage_error()
            # after Sysmon's usage text, where an admin scrolling back sees it first
            n = len(exc.errors)
            ctx.err.write(f"\nConfiguration {path} refused ({n} error{'' if n == 1 else 's'} "
                          "above): nothing was installed or changed; a running service keeps "
                          "its configuration.\n")
            return rc
        except OSError as exc:
            ctx.err.write(f"Error: cannot read configuration file {path}: "
                          f"{exc.strerror or exc}\n")
            return ctx.usage_error()
        ctx.say(f"Loading configuration file with schema version {base.schema_version_text}")
        if base.schema_version != CURRENT.version:
            ctx.say(f"Sysmon schema version: {CURRENT.version_text}")
    switches = _switch_options(parsed)
    try:
        cfg = merge_command_line(base, switches)
    except ConfigError as exc:
        ctx.err.write(f"{exc}\n")
        return ctx.usage_error()
    if linux and any(o in cfg.options for o in LINUX_NOT_IMPLEMENTED):
        ctx.say("\nOption not implemented on Linux.\n")
        return EXIT_INVALID_PARAMETER
    for w in cfg.warnings:
        ctx.err.write(f"{w}\n")
    if path is not None:
        ctx.say("Configuration file validated.")
    return cfg, (raw if not switches.any() else None)


def _payload(ctx: _Ctx, cfg, raw: Optional[bytes], argv: list[str], source: Optional[str]):
    from ..config.blob import BlobError, compile_blob
    from ..config.cmdline import DEFAULTS_XML, render_config_xml
    from ..service import Payload
    if raw is None:
        if source is None and not cfg.options and not cfg.rule_sets:
            text = DEFAULTS_XML
        else:
            text = render_config_xml(cfg, comment=(
                "SysmonX effective configuration: "
                + (f"{source} merged with " if source else "")
                + "command-line switches " + " ".join(argv)))
        raw = text.encode("utf-8")
    try:
        rules = compile_blob(cfg) if cfg.rule_sets else b""
    except BlobError as exc:
        ctx.err.write(f"warning: rules.bin left empty: {exc}\n")
        rules = b""
    return Payload(raw, rules, cfg.options.get("FieldSizes"), list(argv))


def configuration_name(argv_path: str) -> Optional[str]:
    """Event 16's ``Configuration`` for the service, from the stored command line of the last
    ``-i``/``-c`` (``argv``, NUL-ended arguments): the configuration file as it was given there
    (``sysmonx -i log_all_sysmon.xml`` gives ``log_all_sysmon.xml``, as Sysmon for Linux writes
    it: corpus linux/ syslog, its ``SendConfigEvent(configFile)``), ``Defaults`` after ``-c --``
    (Sysmon's word). ``None`` when no file was given (``-i`` alone, switches only: the service
    then names the installed copy it runs) or the file cannot be read or parsed."""
    try:
        with open(argv_path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return None
    args = [a.decode("utf-8", "surrogateescape") for a in data.split(b"\0")[:-1]]
    try:
        _extra, rest = split_sysmonx_options(args)
        parsed = parse_command_line(rest)
    except (CommandLineError, ValueError):
        return None
    if parsed.has("ConfigDefault"):
        return "Defaults"
    for option in ("Configuration", "Install"):
        value = parsed.value(option)
        if value:
            return value
    return None


def main(argv: list[str], out: Optional[TextIO] = None, err: Optional[TextIO] = None,
         program: str = "sysmonx") -> int:
    """Run a Sysmon-style command line (see the module docstring).

    Args:
        argv: the arguments, first one a switch (or a SysmonX ``--option``).
        out, err: streams (default ``sys.stdout``/``sys.stderr``).
    Returns:
        the exit status: 0, 87 (usage/options, not running, not installed, already
        installed), 740 (not root: the shell sees 228) or 1 (a service step failed).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    ctx = _Ctx(out, err, program)
    try:
        extra, args = split_sysmonx_options(list(argv))
    except CommandLineError as exc:
        return ctx.usage_error(str(exc))
    # Help: only as the first argument (so '-h <algs>' first is help, as on Linux).
    if args and args[0][:1] in switch_prefixes() and (
            args[0][1:2] == "?" or args[0][1:].lower() in ("h", "help")):
        if len(args) > 1 and args[1].lower() in ("config", "configuration"):
            from ..schema.printer import render_config_help
            out.write(render_config_help(CURRENT))
            return EXIT_OK
        out.write(usage_text(program))
        return EXIT_OK
    if not args:
        return ctx.usage_error("no switch given")
    try:
        parsed = parse_command_line(args)
    except CommandLineError as exc:
        if args[0].lower().startswith("-dns"):
            exc = CommandLineError(f"{exc} ('-dns' is read as -d <DriverName> by Sysmon too)")
        return ctx.usage_error(str(exc))

    if parsed.has("PrintSchema"):
        from ..schema.printer import render_schema_output
        text, code = render_schema_output(parsed.value("PrintSchema"), "windows")
        (out if code == 0 else err).write(text if text.endswith("\n") else text + "\n")
        return code
    from . import common
    if common.on_windows() and any(parsed.has(o) for o in ("Install", "Configuration",
                                                             "UnInstall", "DebugMode")):
        if parsed.has("DebugMode"):
            ctx.say("-t is not available on Windows yet: use 'sysmonx run' in a console.\n")
            return EXIT_INVALID_PARAMETER
        if not parsed.has("NoLogo"):
            out.write(banner())
        from .windows import windows_switches
        return windows_switches(ctx, parsed, extra)
    if parsed.has("ConfigDefault") and not parsed.has("Configuration"):
        ctx.say("The '--' switch must be used with -c switch (config update) to set defaults.\n")
        return EXIT_INVALID_PARAMETER
    if any(parsed.has(o) for o in LINUX_NOT_IMPLEMENTED):
        ctx.say("\nOption not implemented on Linux.\n")
        return EXIT_INVALID_PARAMETER
    debug = parsed.value("DebugMode")
    if debug is not None and debug.lower() != "verbose":
        ctx.say("Possible options for DebugMode: verbose\n")
        if os.path.exists(debug):  # Sysmon's message above, then where a config goes
            ctx.say(f"(-t takes 'verbose' or nothing; a config goes with -c or -i: "
                    f"'sysmonx -t -c {debug}')\n")
        return EXIT_INVALID_PARAMETER
    needs_root = any(parsed.has(o) for o in ("Install", "Configuration", "UnInstall",
                                             "DebugMode"))
    if needs_root and not is_root():
        ctx.say("You need to run Sysmon as root.\n")
        return EXIT_ELEVATION_REQUIRED
    if parsed.has("UnInstall"):
        u = parsed.value("UnInstall")
        if u is not None and u.lower() != "force":
            ctx.say("Invalid option for -u.\n")
            return ctx.usage_error()
    if needs_root and not parsed.has("NoLogo"):
        out.write(banner())

    from ..service import Layout, ServiceError, ServiceSettings
    layout = Layout.from_root(extra.get("install-root"))
    output_file = extra.get("output-file")
    settings = ServiceSettings(output_file=os.path.abspath(output_file) if output_file else None,
                               backend=extra.get("backend"), no_dns=bool(extra.get("no-dns")))

    if parsed.has("UnInstall"):
        from ..service import uninstall
        try:
            uninstall(layout, force=parsed.value("UnInstall") is not None, say=ctx.say)
        except ServiceError as exc:
            ctx.say(str(exc))
            return EXIT_INVALID_PARAMETER
        except OSError as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_FAILED
        return EXIT_OK

    if parsed.has("DebugMode"):
        source = parsed.value("Install") or parsed.value("Configuration")
        loaded = _load(ctx, source, parsed)
        if isinstance(loaded, int):
            return loaded
        cfg, _ = loaded
        duration = extra.get("duration")
        try:
            seconds = float(duration) if duration is not None else None
        except ValueError:
            return ctx.usage_error(f"--duration expects seconds, not {duration!r}")
        return run_console(cfg, verbose=debug is not None, backend=settings.backend,
                           duration=seconds, no_dns=settings.no_dns, out=out, err=err)

    if parsed.has("Configuration"):
        return _configuration(ctx, parsed, layout)

    if parsed.has("Install"):
        from ..service import install, is_installed
        if is_installed(layout):
            # Sysmon refuses to install over an installation; replacing it silently could leave
            # the host unmonitored if the new settings fail.
            ctx.say("Sysmon is already installed. Use -c to update the configuration or -u to "
                    "uninstall.")
            # a refused request, as "not installed" and "not running" are: 87, the one code
            # Sysmon for Linux refuses with (new-user report s13 #10: it was 1)
            return EXIT_INVALID_PARAMETER
        source = parsed.value("Install")
        loaded = _load(ctx, source, parsed)
        if isinstance(loaded, int):
            return loaded
        cfg, raw = loaded
        try:
            install(layout, _payload(ctx, cfg, raw, args, source), settings, say=ctx.say)
        except (ServiceError, OSError) as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_FAILED
        return EXIT_OK

    return ctx.usage_error("nothing to do: give -i, -c, -u, -s or -t")


def _configuration(ctx: _Ctx, parsed: ParsedCommandLine, layout) -> int:
    from ..service import ServiceError, is_installed, is_running, update
    value = parsed.value("Configuration")
    custom = _custom(parsed)
    if parsed.has("ConfigDefault"):
        if value is not None or custom:
            ctx.say("Cannot use specific settings with enforcing defaults.\n")
            return EXIT_INVALID_PARAMETER
        ctx.say("Updating configuration to use all defaults.")
    elif value is None and not custom:
        if not is_running(layout):
            ctx.say("Sysmon is not running")
            return EXIT_INVALID_PARAMETER
        if not layout.rules.exists():
            ctx.say("No config to display")
            return EXIT_OK
        from ..config.blob import BlobError
        try:
            fs = layout.field_sizes.read_text() if layout.field_sizes.exists() else None
            ctx.out.write(render_dump(layout.rules.read_bytes(), fs))
        except BlobError as exc:
            ctx.say(f"Failed to open rules configuration: {exc}")
            return EXIT_FAILED
        return EXIT_OK
    if not is_installed(layout):
        ctx.say("Error: Sysmon is not installed.")
        return EXIT_INVALID_PARAMETER
    if parsed.has("ConfigDefault"):
        from ..config.cmdline import empty_config
        cfg, raw = empty_config(), None
    else:
        loaded = _load(ctx, value, parsed)
        if isinstance(loaded, int):
            return loaded
        cfg, raw = loaded
    try:
        running = update(layout, _payload(ctx, cfg, raw, parsed.argv, value))
    except (ServiceError, OSError) as exc:
        ctx.say(f"Error: {exc}")
        return EXIT_FAILED
    ctx.say("Configuration updated.")
    if not running:
        # stopped behind our back (kill -9, a crash; a daemon has no supervisor): start it with
        # the new configuration, as -i would
        from ..service import start_service
        ctx.err.write("sysmonx: the service was not running; starting it\n")
        try:
            start_service(layout, say=ctx.say)
        except (ServiceError, OSError) as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_FAILED
    return EXIT_OK
