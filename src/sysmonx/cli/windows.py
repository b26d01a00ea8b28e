"""SysmonX's command line on Windows: ``-accepteula -i CONFIG``, ``-c [CONFIG]``, ``-u``, ``run``
and the backends ``sysmonx`` can use.

``sysmonx -accepteula -i CONFIG [--sysmon PATH] [--download-sysmon]`` (elevated):

1. loads and validates CONFIG as Sysmon would (errors with file and line);
2. derives the sensor configuration Sysmon gets
   (:func:`~sysmonx.windows.sensorconfig.derive_sensor_config`: Sysmon drops only what SysmonX
   would drop anyway; SysmonX's own tags never reach Sysmon);
3. installs Sysmon with it, or, when a Sysmon is installed already, backs up its configuration
   and applies the sensor configuration (:class:`~sysmonx.windows.sysmon.SysmonManager`; a
   download from Sysinternals only with ``--download-sysmon``, Authenticode checked);
4. writes ``service.json`` and a copy of CONFIG into the state folder
   (``%ProgramData%\\SysmonX``, ``--state-dir``), creates and starts the SysmonX service
   (:class:`~sysmonx.windows.service.ServiceInstaller`). If the service cannot be set up, the
   Sysmon step is undone.

``-c CONFIG`` re-derives and applies Sysmon's configuration, replaces the copy and signals the
service (control 128) to reload; ``-c`` alone prints the configuration in force and what Sysmon
collects per tag. ``-u`` stops and deletes the service, then removes Sysmon if SysmonX installed
it, or restores the configuration it had.

Every OS call goes through injectable objects (a command runner, the Event Log API), so the
whole flow is tested on Linux against :mod:`sysmonx.windows.fakes`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from . import common
from .common import EXIT_FATAL, EXIT_USAGE, add_format_option

__all__ = ["windows_switches", "cmd_run_windows", "default_state_dir", "backends_text"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID_PARAMETER, EXIT_ELEVATION_REQUIRED = 0, 1, 87, 740


def default_state_dir() -> str:
    """``%ProgramData%\\SysmonX`` (bookmarks, service settings, sensor configuration)."""
    return os.path.join(os.environ.get("ProgramData", "C:\\ProgramData"), "SysmonX")


def backends_text() -> str:
    """The backends this host can use, one line each (``ok``/``no`` and why)."""
    from ..windows.capabilities import available_backends, describe_backends
    return "Backends on this host:\n" + describe_backends(available_backends()) + "\n"


def _elevated() -> Optional[bool]:
    from ..windows.capabilities import is_elevated
    return is_elevated()


def windows_switches(ctx: Any, parsed: Any, extra: dict[str, Any], *, runner: Any = None,
                     elevated: Optional[bool] = None) -> int:
    """``-i``/``-c``/``-u`` on Windows (module docstring).

    Args:
        ctx: the switch command's output context (``say``, ``err``, ``usage_error``).
        parsed: the parsed Sysmon command line.
        extra: SysmonX's ``--options`` (``sysmon``, ``download-sysmon``, ``state-dir``,
            ``output-file``, ``syslog``, ``etw``, ``eventlog``).
        runner: runs the OS commands (default: subprocess).
        elevated: whether the token is elevated (default: asked from Windows).
    Returns:
        0; 1 when a step failed; 87 for a bad configuration or usage; 740 when not elevated.
    """
    from ..windows.sensorconfig import SensorConfigError, derive_sensor_config
    from ..windows.service import ServiceInstaller, ServiceInstallError, ServiceSettings
    from ..windows.sysmon import SubprocessRunner, SysmonError, SysmonManager
    from .sysmon import _custom, _load
    if elevated is None:
        elevated = _elevated()
    if elevated is False:
        ctx.say("You need to run SysmonX from an elevated (administrator) prompt.\n")
        return EXIT_ELEVATION_REQUIRED
    runner = runner or SubprocessRunner()
    state_dir = str(extra.get("state-dir") or default_state_dir())
    manager = SysmonManager(runner, state_dir)
    installer = ServiceInstaller(runner, state_dir)
    copy_path = os.path.join(state_dir, "config.xml")

    if parsed.has("UnInstall"):
        try:
            removed = installer.uninstall()
            ctx.say("SysmonX service removed." if removed else "SysmonX service was not "
                    "installed.")
            done = manager.uninstall()
            ctx.say(done[:1].upper() + done[1:] + ".")
        except (ServiceInstallError, SysmonError, OSError) as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_FAILED
        for name in ("service.json", "config.xml"):
            try:
                os.unlink(os.path.join(state_dir, name))
            except FileNotFoundError:
                pass
        return EXIT_OK

    if parsed.has("Configuration") and parsed.value("Configuration") is None \
            and not parsed.has("ConfigDefault") and not _custom(parsed):
        try:
            settings = ServiceSettings.load(state_dir)
        except ServiceInstallError as exc:
            ctx.say(f"SysmonX is not installed ({exc}).")
            return EXIT_INVALID_PARAMETER
        ctx.say(f"Configuration in force: {settings.config or 'Sysmon defaults'}")
        loaded = _load(ctx, settings.config, parsed, linux=False)
        if isinstance(loaded, int):
            return loaded
        _print_plan(ctx, derive_sensor_config(loaded[0]))
        return EXIT_OK

    source = parsed.value("Install") if parsed.has("Install") else parsed.value("Configuration")
    if parsed.has("Install") and not parsed.has("AcceptEula"):
        ctx.say("Sysmon's license must be accepted to install it: add -accepteula (read "
                "https://learn.microsoft.com/sysinternals/license-terms).\n")
        return EXIT_FAILED
    if parsed.has("ConfigDefault"):        # -c --: back to Sysmon's defaults
        if source is not None or _custom(parsed):
            ctx.say("Cannot use specific settings with enforcing defaults.\n")
            return EXIT_INVALID_PARAMETER
        from ..config.cmdline import empty_config
        cfg, raw = empty_config(), None
    else:
        loaded = _load(ctx, source, parsed, linux=False)
        if isinstance(loaded, int):
            return loaded
        cfg, raw = loaded
    try:
        sensor = derive_sensor_config(cfg)
    except SensorConfigError as exc:
        ctx.say(f"Error: {exc}")
        return EXIT_INVALID_PARAMETER
    os.makedirs(state_dir, exist_ok=True)
    text = raw if raw is not None else _render(cfg, source)

    if parsed.has("Configuration"):
        try:
            ServiceSettings.load(state_dir)
            state = manager.update(sensor.xml)
        except (ServiceInstallError, SysmonError) as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_INVALID_PARAMETER if "not set up" in str(exc) or \
                "cannot read" in str(exc) else EXIT_FAILED
        _write(copy_path, text)
        _print_plan(ctx, sensor)
        ctx.say(f"{state.service} configuration updated.")
        try:
            if installer.reload():
                ctx.say("SysmonX service reloads the configuration.")
            else:
                ctx.say("SysmonX service is not running; it reads the configuration when it "
                        "starts.")
        except ServiceInstallError as exc:
            ctx.say(f"Error: {exc}")
            return EXIT_FAILED
        return EXIT_OK

    try:
        state = manager.install(sensor.xml, accept_eula=True, sysmon=extra.get("sysmon"),
                                download=bool(extra.get("download-sysmon")))
    except SysmonError as exc:
        ctx.say(f"Error: {exc}")
        return EXIT_FAILED
    ctx.say(f"Sysmon {'installed' if state.installed_by_sysmonx else 'kept'} "
            f"(service {state.service}"
            + ("" if state.installed_by_sysmonx else
               f"; its configuration was backed up to {state.backup}") + ").")
    _print_plan(ctx, sensor)
    _write(copy_path, text)
    output = extra.get("output-file")
    settings = ServiceSettings(
        config=copy_path,
        output=os.path.abspath(output) if output else os.path.join(state_dir, "events.xml"),
        syslog=extra.get("syslog"), etw=bool(extra.get("etw")),
        eventlog=bool(extra.get("eventlog")),
        sysmon_service=state.service, sysmon_driver=state.driver)
    try:
        settings.save(state_dir)
        from ..windows.evtoutput import render_manifest
        _write(os.path.join(state_dir, "sysmonx.man"), render_manifest().encode("utf-8"))
        installer.install()
    except (ServiceInstallError, OSError) as exc:
        ctx.say(f"Error: {exc}")
        try:
            installer.uninstall()
            ctx.say("Undone: " + manager.uninstall())
        except (ServiceInstallError, SysmonError, OSError) as undo:
            ctx.say(f"Error while undoing: {undo}")
        return EXIT_FAILED
    ctx.say(f"SysmonX service installed and started (state in {state_dir}; events to "
            f"{settings.output}).")
    return EXIT_OK


def _render(cfg: Any, source: Optional[str]) -> bytes:
    from ..config.cmdline import DEFAULTS_XML, render_config_xml
    if source is None and not cfg.options and not cfg.rule_sets:
        return DEFAULTS_XML.encode("utf-8")
    return render_config_xml(cfg, comment="SysmonX effective configuration").encode("utf-8")


def _write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _print_plan(ctx: Any, sensor: Any) -> None:
    ctx.say("What Sysmon collects for SysmonX, per tag:")
    for tag, plan in sensor.plan.items():
        ctx.say(f"  {tag:<24} {plan.mode:<5} {plan.reason}")


def _run_parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx run",
        description="Windows collector: read Sysmon's and other Event Log channels (and, with "
                    "--etw, process start/stop from ETW), filter with a Sysmon config and "
                    "write the events. Bookmarks make delivery at least once across restarts.")
    p.add_argument("--config", "-c", metavar="FILE", default="default",
                   help="Sysmon XML config (default: the built-in default config)")
    add_format_option(p, "xml",
                      help="output format (default: Windows event XML, one event per line)")
    p.add_argument("-o", "--output", metavar="OUT", help="write to a file (default: stdout)")
    p.add_argument("--syslog", metavar="udp://HOST:PORT",
                   help="also send events to a syslog receiver (udp:// or tcp://)")
    p.add_argument("--eventlog", action="store_true",
                   help="also write to the Windows Event Log (SysmonX/Operational when its "
                        "manifest is registered, else the Application log)")
    p.add_argument("--channel", action="append", default=[], metavar="CHANNEL",
                   help="Event Log channel to read (repeatable; default: Sysmon, PowerShell, "
                        "WMI-Activity, DNS-Client, Security)")
    p.add_argument("--etw", action="store_true",
                   help="also read process start/stop from the Kernel-Process ETW provider "
                        "(as Sysmon events 1/5; for hosts without Sysmon)")
    p.add_argument("--no-eventlog", action="store_true", help="do not read the Event Log")
    p.add_argument("--bookmarks", metavar="FILE",
                   help="where channel positions are kept (default: none, read each channel "
                        "from its oldest record)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules run on every written event (alerts as event 1000)")
    common.add_rule_issues_option(p)
    p.add_argument("--list-backends", action="store_true",
                   help="show which backends can run here and why not, then exit")
    common.add_stage_option(p)
    return p


def cmd_run_windows(argv: list[str], *, wevtapi: Any = None, etwapi: Any = None) -> int:
    """``sysmonx run`` on Windows (:func:`_run_parser`); ``wevtapi``/``etwapi`` are injected
    by tests."""
    from ..config import ConfigError, load_config
    from ..core.errors import OutputClosed, SinkError, SourceUnavailable
    from ..pipeline.windows import WindowsCollector, WindowsOptions
    from ..sinks import writer_class
    from ..windows.eventlog import ChannelSpec
    args = _run_parser().parse_args(argv)
    console = common.stderr_console()
    if args.list_backends:
        sys.stdout.write(backends_text())
        return 0
    if args.duration is not None and args.duration <= 0:
        console.print("error: --duration must be a positive number of seconds")
        return EXIT_USAGE
    cpath = common.config_arg_path(args.config)
    try:
        config = load_config(cpath)
    except ConfigError as exc:
        common.print_config_errors(console, exc)
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}")
        return EXIT_FATAL
    extra = common.extra_stages(args.stage, console)
    if extra is None:
        return EXIT_USAGE
    sinks: list[Any] = []
    try:
        out = writer_class(args.format).open(args.output or "-", append=bool(args.output),
                                             buffered=False)
        out.label = f"-o {args.output}" if args.output else "stdout"
        sinks.append(out)
        if args.syslog:
            from ..sinks.syslog import SyslogWriter
            sinks.append(SyslogWriter.open(args.syslog, require=False))
        if args.eventlog:
            from ..windows.evtoutput import EventLogSink
            sinks.append(EventLogSink())
    except SinkError as exc:
        common.close_quietly(sinks)
        console.print(f"error: {exc}", markup=False)
        return EXIT_FATAL
    detection = None
    if args.rules:
        detection = common.load_detection(args.rules, console,
                                          argparse.Namespace(rule_issues=args.rule_issues))
        if detection is None:
            common.close_quietly(sinks)
            return EXIT_FATAL
    options = WindowsOptions(
        channels=[ChannelSpec(c) for c in args.channel] or None, etw=args.etw,
        eventlog=not args.no_eventlog, bookmarks=args.bookmarks, duration=args.duration,
        wevtapi=wevtapi, etwapi=etwapi)

    def status(msg: str) -> None:
        console.print(f"sysmonx: {msg}", markup=False)

    try:
        collector = WindowsCollector(config, sinks, options, reloader=lambda: load_config(cpath),
                                     on_status=status, detection=detection, extra_stages=extra)
    except ValueError as exc:
        console.print(f"error: {exc}", markup=False)
        common.close_quietly(sinks)
        return EXIT_USAGE
    try:
        collector.run()
    except SourceUnavailable as exc:
        console.print(f"error: {exc}", markup=False)
        return EXIT_FATAL
    except OutputClosed:
        common.silence_stdout()
        return 0
    console.print(f"sysmonx: {collector.summary()}", markup=False)
    return 0
