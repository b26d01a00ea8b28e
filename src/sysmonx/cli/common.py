"""What the commands share: exit codes, the built-in files, the stderr console, config error
printing, the ``--stage`` option, Sigma rule loading and ``--profile-rules``."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

#: Exit status of a fatal error (nothing, or not all, of what was asked could be done).
EXIT_FATAL = 1
#: Exit status of bad usage, Sysmon's ERROR_INVALID_PARAMETER (87): an unknown command, switch or
#: option, a bad option value (argparse's own errors included, which would exit 2).
EXIT_USAGE = 87

__all__ = ["EXIT_FATAL", "EXIT_USAGE", "builtin_config_path", "builtin_sample_path",
           "builtin_linux_config_path", "stderr_console", "print_config_errors",
           "unreachable_rules_note",
           "config_mistake_hint", "silence_stdout", "close_quietly", "output_formats",
           "add_format_option", "add_input_format_option",
           "add_stage_option", "extra_stages", "load_detection", "add_rule_cache_options",
           "add_engine_options", "engine_options", "load_config_reporting", "check_inputs",
           "write_report", "read_error_printer", "on_windows", "url_output_options",
           "BUILTIN_CONFIGS", "config_arg_path", "builtin_config_name", "config_name",
           "add_rule_profile_options", "check_rule_profile_options", "start_rule_profile",
           "report_rule_profile", "print_detection_summary", "sigma_summary", "triage_notes",
           "add_detections_option", "DETECTIONS_SHOWN", "UsageParser",
           "add_rule_issues_option"]


class UsageParser(argparse.ArgumentParser):
    """The commands' argument parser: argparse's, except that a command line with an unknown
    option *and* a missing positional argument names the unknown option (``unrecognized
    arguments: --bogus``), as it does when nothing is missing. argparse reports the missing
    positionals first (``the following arguments are required: LOGS`` for ``config stats
    --bogus anc.xml``: the option was skipped, ``anc.xml`` taken as the config), which hides the
    real mistake. Usage errors still exit through :meth:`error` (status 2, which
    :func:`sysmonx.cli.dispatch.main` turns into :data:`EXIT_USAGE`). Subparsers made with
    ``add_subparsers`` are of this class too (argparse uses the parent's class)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """argparse's, remembering the arguments for :meth:`error`."""
        self._argv_seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def unknown_options(self, argv: Iterable[str]) -> list[str]:
        """The arguments of ``argv`` that look like options (``-x``, ``--name``,
        ``--name=value``) and are none of this parser's, an unambiguous ``--prefix`` of one
        (argparse's abbreviations) or a known short option with its value attached (``-ofile``);
        a lone ``-`` (stdin/stdout), negative numbers and everything after ``--`` are values."""
        known = self._option_string_actions
        negative = getattr(self, "_negative_number_matcher", None)
        out: list[str] = []
        for tok in argv:
            if tok == "--":
                break
            if not tok.startswith("-") or tok == "-":
                continue
            if negative is not None and negative.match(tok) and \
                    not getattr(self, "_has_negative_number_optionals", []):
                continue
            name = tok.split("=", 1)[0]
            if name in known:
                continue
            if tok.startswith("--"):
                if self.allow_abbrev and any(o.startswith(name) for o in known
                                             if o.startswith("--")):
                    continue
            elif tok[:2] in known:
                continue
            out.append(tok)
        return out

    def error(self, message: str) -> Any:
        """argparse's, with the unknown options named first (class docstring)."""
        if message.startswith("the following arguments are required"):
            unknown = self.unknown_options(getattr(self, "_argv_seen", ()))
            if unknown:
                message = "unrecognized arguments: " + " ".join(unknown)
        super().error(message)


def on_windows() -> bool:
    """True when SysmonX runs on Windows (the commands that differ per OS ask this; tests
    replace it to run the Windows command line here)."""
    return sys.platform == "win32"


def _builtin(name: str) -> Path:
    return Path(str(resources.files("sysmonx") / "data" / name))


def builtin_config_path() -> Path:
    """Path of the built-in default configuration (``--config default``)."""
    return _builtin("default-config.xml")


def builtin_sample_path() -> Path:
    """Path of the built-in sample of Sysmon events (``replay --sample``)."""
    return _builtin("sample-events.xml")


def builtin_linux_config_path() -> Path:
    """Path of the built-in default configuration of the live Linux sensor."""
    return _builtin("default-linux-config.xml")


#: The built-in configurations a ``--config``/``FILE`` argument may name instead of a path.
BUILTIN_CONFIGS = {"default-windows": "default-config.xml",
                   "default-linux": "default-linux-config.xml"}


def config_arg_path(arg: str, default: str = "default-windows") -> Path:
    """The file a config argument names: ``default`` is the command's own built-in
    (``default``: ``default-windows`` for replay and the config tools, ``default-linux`` for
    the live Linux sensor), ``default-windows``/``default-linux`` name either built-in, anything
    else is a path (a file of that name is read with ``./default-linux``)."""
    name = default if arg == "default" else arg
    if name in BUILTIN_CONFIGS:
        return _builtin(BUILTIN_CONFIGS[name])
    return Path(arg)


def builtin_config_name(arg: str, default: str = "default-windows") -> Optional[str]:
    """``default-windows``/``default-linux`` when ``arg`` names a built-in config, else None."""
    name = default if arg == "default" else arg
    return name if name in BUILTIN_CONFIGS else None


def config_name(arg: str, default: str = "default-windows") -> str:
    """A config argument as the summaries and the config line name it: ``built-in NAME`` for a
    built-in (``default``: the command's own, see :func:`config_arg_path`), else the path as
    given."""
    builtin = builtin_config_name(arg, default)
    return f"built-in {builtin}" if builtin else str(arg)


def stderr_console():
    # every str printed is neutralised (no terminal escapes from paths or record text)
    from ..textsafe import safe_console
    return safe_console(stderr=True, highlight=False, soft_wrap=True)


def print_config_errors(console, exc, hint: str = "") -> None:
    """Every error of a refused configuration (``ConfigError.errors``), one ``error:`` line
    each, then the count (``1 error: the configuration is refused`` too), then ``hint``."""
    errors = getattr(exc, "errors", [exc])
    for e in errors:
        console.print(f"error: {e}", markup=False)
    n = len(errors)
    console.print(f"{n} error{'s' if n > 1 else ''}: the configuration is refused", markup=False)
    if hint:
        console.print(hint.lstrip("\n"), markup=False)


def config_mistake_hint(path: Path) -> str:
    """A hint when the "config" is really a rule blob or an event log."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return ""
    if head.startswith(b"ElfFile\0"):
        return "\n(this is an EVTX event log; give it as a PATH to replay, not as --config)"
    if b"<Event>" in head or b" sysmon" in head or head[:1] == b"{":
        return "\n(this looks like an event log; give it as a PATH to replay)"
    if head[:1] not in (b"<", b"\xef", b"\xff", b"\xfe", b" ", b"\t", b"\r", b"\n") and \
            b"\x00" in head:
        return ("\n(this looks like a compiled rule blob; turn it back into XML with "
                "'sysmonx config decode FILE')")
    return ""


def silence_stdout() -> None:
    """After EPIPE on stdout, point it at /dev/null so interpreter shutdown does not complain."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def close_quietly(sinks: list) -> None:
    for s in sinks:
        try:
            s.close()
        except OSError:
            pass


def output_formats() -> list[str]:
    """Every ``--format`` name, third-party ones included (imports every sink), sorted (the
    registration order depends on which writer was imported first)."""
    from ..sinks import stream_formats
    return sorted(stream_formats())


class _FormatChoices:
    """``--format``'s argparse choices: a built-in format is accepted without importing every
    sink (:data:`~sysmonx.sinks.BUILTIN_STREAM_FORMATS`; the network outputs, their ssl,
    asyncio and clients cost ~0.1 s of CPU at every start); another name, the help and a
    usage error list every registered format (:func:`output_formats`)."""

    def __contains__(self, name: object) -> bool:
        from ..sinks import BUILTIN_STREAM_FORMATS
        return name in BUILTIN_STREAM_FORMATS or name in output_formats()

    def __iter__(self) -> Iterator[str]:
        return iter(output_formats())


class _InputFormatChoices:
    """``--input-format``'s argparse choices, listed (every source module imported, ~40 ms of
    CPU) only when the option is given, for the help or a usage error."""

    def __contains__(self, name: object) -> bool:
        return name in list(self)

    def __iter__(self) -> Iterator[str]:
        from ..sources import file_formats
        return iter([c.name for c in file_formats()])


def add_format_option(p: argparse.ArgumentParser, default: Optional[str], help: str) -> None:
    """``--format/-f`` with the output formats as its choices (:class:`_FormatChoices`, set
    after ``add_argument``, which would list them to check a metavar)."""
    action = p.add_argument("--format", "-f", default=default, help=help)
    action.choices = _FormatChoices()


def add_input_format_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--input-format`` with the recorded-log formats as its choices
    (:class:`_InputFormatChoices`)."""
    action = p.add_argument("--input-format", help=help)
    action.choices = _InputFormatChoices()


def add_stage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", action="append", default=[], metavar="NAME",
                   help="run a registered stage after the filter (repeatable; a plugin's stage "
                        "that takes no arguments); 'sysmonx plugins' lists them")


def extra_stages(names: list[str], console) -> Optional[list]:
    """Instances of the ``--stage`` names, or ``None`` after printing why one cannot be made."""
    from ..core.errors import PluginError
    from ..core.registry import STAGES
    out = []
    for name in names:
        try:
            cls = STAGES.get(name)
            out.append(cls())
        except PluginError as exc:
            console.print(f"error: --stage: {exc}", markup=False)
            return None
        except TypeError:
            console.print(f"error: --stage {name}: this stage needs arguments; the pipeline "
                          "adds it itself when its option is given", markup=False)
            return None
    return out


def add_rule_cache_options(p: argparse.ArgumentParser) -> None:
    """``--rule-cache DIR`` and ``--no-rule-cache`` (the compiled Sigma rule cache)."""
    p.add_argument("--rule-cache", metavar="DIR",
                   help="where compiled Sigma rule sets are kept between runs (default "
                        "$SYSMONX_CACHE_DIR/sigma, else ~/.cache/sysmonx/sigma); an entry is used "
                        "only for the same rule files' bytes and names, options and SysmonX code")
    p.add_argument("--no-rule-cache", action="store_true",
                   help="compile the Sigma rules at every start; read and write no cache")


#: The beginnings of the rule cache's notes that say the compiled rules were not stored
#: (:meth:`~sysmonx.detection.cache.RuleCache.put`, :func:`~sysmonx.detection.cache.cached`).
_NOT_STORED = ("rule cache: cannot", "rule cache not used", "rule cache: rule files changed")
#: ``rule cache entry PATH ignored and rebuilt: WHY`` (:meth:`RuleCache.get`).
_REBUILT = " ignored and rebuilt: "


def add_rule_issues_option(p: argparse.ArgumentParser) -> None:
    """``--rule-issues``: list each Sigma rule's load issue (:func:`load_detection`)."""
    p.add_argument("--rule-issues", action="store_true",
                   help="with --rules: list each rule rejected or warned about, and the rules "
                        "the prefilter cannot index, one line each (default: one line of "
                        "counts by reason)")


def load_detection(paths: list[str], console, args: Optional[argparse.Namespace] = None,
                   platform: Optional[str] = None):
    """Load Sigma rules into a detection stage; print load issues. ``None`` on a fatal error,
    after an ``error:`` line: no rule could be read, or none loaded (every one rejected, or a
    folder without rules), since a run with ``--rules`` that detects nothing is not what was
    asked for.

    ``args`` with ``rule_cache``/``no_rule_cache`` (:func:`add_rule_cache_options`) chooses
    the compiled-rule cache; without them the default cache is used. The rules' load issues
    (rejected rules, warnings, the rules the prefilter cannot index) are one line of counts by
    reason that names ``--rule-issues`` (:func:`add_rule_issues_option`), the same line on
    every run, compiled or read from the rule cache; ``args.rule_issues`` lists them one per
    rule instead, and so does a load where no rule loaded (the run is refused: the reasons are
    what the user needs), unless ``args.quiet`` (``-q``), whose error line says how to see
    them. The one-line notes (YAML files skipped in a folder, the rule cache's notes: an
    entry ignored, a cache not writable) are printed either way.

    ``platform`` (``"lnx"``: the live Linux sensor) adds to the line of counts how many
    warnings concern rules only Windows Sysmon's events meet, which that sensor never writes.

    The last line says how the rules were loaded: from the rule cache, or compiled and stored
    there (with why, when an entry was ignored and rebuilt), or compiled and not stored (a
    note above says why, or no rule loaded: nothing is stored), or compiled with the cache
    off."""
    try:
        from ..detection import DetectionStage
        from ..detection.cache import RuleCache
    except ImportError as exc:
        console.print(f"error: Sigma detection unavailable: {exc}")
        return None
    cache: Optional[RuleCache] = None
    if not getattr(args, "no_rule_cache", False):
        cache = RuleCache(getattr(args, "rule_cache", None))
    try:
        stage = DetectionStage.from_paths(paths, cache=cache)
    except FileNotFoundError as exc:
        console.print(f"error: rules: {exc.filename or exc}: no such file or directory")
        return None
    # each rule's load issue is listed with --rule-issues, or when no rule loaded (the run is
    # refused: the reasons are what the user needs; -q holds them back and says how to see
    # them); else one line of counts, the same on every run whether the rules were compiled
    # or came from the rule cache
    quiet = bool(getattr(args, "quiet", False))
    detail = bool(getattr(args, "rule_issues", False)) or (not stage.rules_loaded and not quiet)
    # rules the prefilter cannot index cost time, not correctness: one line, not one per rule
    unindexed = [i for i in stage.issues if i.code == "unindexed" and not i.rejected]
    # a folder's YAML files that are not Sigma: already one line ("skipped"), printed either way
    summary_codes = ("unindexed", "skipped")
    listed = [i for i in stage.issues if i.code not in summary_codes or i.rejected]
    if not detail and (listed or unindexed):
        counts = Counter(("rejected " if i.rejected else "warning ") + i.code for i in listed)
        text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        if unindexed:
            n = len(unindexed)
            text += (", " if text else "") + (
                f"{n} rule{'s' if n > 1 else ''} evaluated on every event of "
                f"{'their' if n > 1 else 'its'} log source (nothing to prefilter on)")
        if platform is not None:
            foreign = _windows_only_warnings(stage, listed)
            if foreign:
                text += (f"; {foreign} of the warnings about rules only Windows Sysmon's "
                         "events meet, which this sensor does not write")
        console.print(f"sigma: load issues (listed with --rule-issues): {text}", markup=False)
        listed = []
    shown = {id(i) for i in listed}
    for issue in stage.issues:
        if id(issue) in shown or (issue.code == "skipped" and not issue.rejected):
            console.print(f"sigma: {issue}{_regex_hint(issue.message)}", markup=False)
    if unindexed and detail:
        names = ", ".join(i.title or i.rule_id or "-" for i in unindexed[:3])
        console.print(f"sigma: note: {len(unindexed)} rule{'s' if len(unindexed) > 1 else ''} "
                      "without a value the prefilter can look for, evaluated on every event of "
                      f"their log source ({names}{', ...' if len(unindexed) > 3 else ''})",
                      markup=False)
    rebuilt = [n for n in stage.cache_notes if _REBUILT in n]
    for note in stage.cache_notes:
        if note not in rebuilt:  # the loaded line says it, once
            console.print(f"sigma: note: {note}", markup=False)
    stored = not any(n.startswith(_NOT_STORED) for n in stage.cache_notes)
    if cache is None:
        how = "compiled; rule cache off"
    elif stage.cache_status == "cached":
        how = f"from the rule cache in {cache.directory}"
    elif not stage.rules_loaded:  # detection/stage.py stores no rule set without a rule
        how = "no rule compiled; nothing stored in the rule cache"
    elif stored:
        how = f"compiled and stored in the rule cache in {cache.directory}"
        if rebuilt:
            why = rebuilt[0].split(_REBUILT, 1)[1]
            how += f"; its entry was ignored and rebuilt: {why}"
    else:
        how = "compiled; not stored in the rule cache: see the note above"
        if rebuilt:
            how += f"; its entry was ignored: {rebuilt[0].split(_REBUILT, 1)[1]}"
    console.print(f"sigma: {rule_counts(stage)} ({how})", markup=False)
    if not stage.rules_loaded:  # fatal: the run would detect nothing, whatever it reads
        read = len(stage.rejected)
        console.print("error: --rules: no Sigma rule loaded from " + ", ".join(paths) + (
            f" ({read:,} rejected: " + ("see above)" if detail else "run without -q to see why)")
            if read else " (no rule found)")
            + "; nothing to detect with", markup=False)
        return None
    return stage


def _regex_hint(message: str) -> str:
    """``; what to write instead`` for a rule pySigma refused because RE2 lacks a PCRE construct
    (its message ends ``is invalid: b'RE2 MESSAGE'``), else ``""``."""
    head, sep, tail = message.rpartition("is invalid: ")
    if not sep:
        return ""
    from ..core.regex import re2_hint
    if tail[:2] in ("b'", 'b"') and tail[-1:] == tail[1]:
        tail = tail[2:-1].replace("\\\\", "\\")
    hint = re2_hint(tail)
    return f"; {hint}" if hint else ""


def _windows_only_warnings(stage, issues: list) -> int:
    """How many of ``issues`` are warnings about rules whose log source holds Windows Sysmon's
    events only (a sensor writing Sysmon for Linux's events never meets those rules)."""
    meets: dict = {}
    for r in stage.matcher.compiled:
        meets[r.key] = any(g[0] != "win" for g in r.target.groups)
    return sum(1 for i in issues if not i.rejected and not meets.get(i.rule_id, True))


#: rules listed in the Sigma detections table without ``--all-detections``
DETECTIONS_SHOWN = 20


def add_detections_option(p: argparse.ArgumentParser) -> None:
    """``--all-detections``: list every rule that fired in the Sigma detections table, not the
    :data:`DETECTIONS_SHOWN` most severe with the most alerts (:func:`print_detection_summary`)."""
    p.add_argument("--all-detections", action="store_true",
                   help=f"with --rules: list every rule that fired in the Sigma detections "
                        f"table at the end (default: {DETECTIONS_SHOWN}, the most severe level "
                        f"first and the most alerts within a level, and a line counting the "
                        f"others)")


def add_triage_options(p: argparse.ArgumentParser, replay: bool = False) -> None:
    """``--min-level``, ``--technique``, ``--tag``: which Sigma alerts are kept
    (:mod:`sysmonx.detection.triage`); ``replay``: also the SigmaAlert events read back."""
    g = p.add_argument_group(
        "alert triage (Sigma alerts, event 1000, only: Sysmon events go out as the config "
        "decides; correlations still see every detection)")
    also = (" (and the SigmaAlert events read back from the input)" if replay else "")
    g.add_argument("--min-level", metavar="LEVEL",
                   help="keep only alerts of rules of this Sigma level or above" + also
                        + ": informational < low < medium < high < critical; an alert of a "
                        "rule without a level is held back")
    g.add_argument("--technique", action="append", default=[], metavar="ID[,ID...]",
                   help="keep only alerts of rules tagged with one of these ATT&CK techniques "
                        "(T1003 selects T1003 and its sub-techniques T1003.001 ...; "
                        "repeatable)")
    g.add_argument("--tag", action="append", default=[], metavar="TAG[,TAG...]",
                   help="keep only alerts of rules with one of these Sigma tags or a tag below "
                        "it (attack.credential-access, attack.t1003, cve.2021-44228; "
                        "attack.credential_access is the same tactic; repeatable); with "
                        "--technique: either selects")


def triage_from_args(args: argparse.Namespace, console) -> tuple[bool, Any]:
    """The :class:`~sysmonx.detection.triage.AlertTriage` of ``--min-level``, ``--technique``
    and ``--tag``: ``(True, triage or None)``, or ``(False, None)`` after printing the error
    of a bad value (the caller exits :data:`EXIT_USAGE`). None of the three given: ``(True,
    None)`` without importing the detection package (a replay without alerts does not load it)."""
    if args.min_level is None and not args.technique and not args.tag:
        return True, None  # what AlertTriage.from_options returns for no selection
    from ..detection.triage import AlertTriage, TriageError
    try:
        return True, AlertTriage.from_options(args.min_level, args.technique, args.tag)
    except TriageError as exc:
        console.print(f"error: {exc}", markup=False)
        return False, None


def triage_notes(triage: Any, stage: Any = None) -> list[str]:
    """Notes on a ``--tag`` / ``--technique`` selection (``[]`` without one): a replaced ATT&CK
    tactic given (:data:`~sysmonx.detection.triage.TACTIC_SUCCESSORS`) and the successors it
    selects too; with loaded rules (``stage``: a :class:`~sysmonx.detection.stage.DetectionStage`),
    each selected tag or technique that no loaded rule or correlation has (nor one below it), so
    none of the run's alerts can be kept by it."""
    if triage is None or not triage.tags:
        return []
    from ..detection.alerts import TACTICS
    lines = []
    for old, release, new in triage.successors:
        names = [TACTICS.get(t[len("attack."):], t) for t in new]
        lines.append(f"note: --tag {old} also selects {', '.join(new)}: {release} split "
                     f"{TACTICS.get(old[len('attack.'):], old)} into {' and '.join(names)}, "
                     "and rules written since carry their tags")
    if stage is not None:
        tags = [r.tags for r in stage.matcher.compiled] + [c.tags for c in stage.correlations]
        n = len(tags)
        for tag in triage.unmatched(tags):
            name = tag[len("attack."):]
            opt = (f"--technique {name.upper()}" if tag.startswith("attack.")
                   and re.fullmatch(r"t\d{4}(?:\.\d{3})?", name) else f"--tag {tag}")
            lines.append(f"note: {opt} selects none of the {n:,} loaded rule"
                         f"{'' if n == 1 else 's'} (no rule has that tag or one below it): it "
                         "keeps no alert of this run")
    return lines


def held_back_line(triage: Any, held_back: int, rules: bool = True) -> str:
    """The summary line of the alerts ``--min-level`` / ``--technique`` / ``--tag`` held back
    (``""`` without a selection); ``rules``: the run had Sigma rules (their correlations saw
    every alert)."""
    if triage is None:
        return ""
    return (f"alerts held back by {triage.describe()}: {held_back:,} (not written"
            + ("; correlations saw them)" if rules else ")"))


def print_detection_summary(console, stage, top: Optional[int] = DETECTIONS_SHOWN,
                            triage: Any = None) -> None:
    """Hits per rule and level (a table) at the end of a replay or a live run.

    Columns: ``level``; ``matches``: the events the rule matched (for a correlation, the
    detection hits of its rules it counted); ``alerts``: the alerts the rule or correlation
    made (0 for a rule that only feeds a correlation without ``generate: true``; a correlation
    makes one per window that meets its condition); with ``triage`` (``--min-level`` /
    ``--technique`` / ``--tag``) ``written``: of those alerts, the ones the selection kept (0:
    all held back, the row stays, so a held-back rule that fired is still seen).

    ``top`` (``None``: all): the table lists that many rules, the most severe level first and
    within a level those with the most alerts (then matches), so a critical rule that fired once
    is never hidden behind busy low ones; a last line counts the rules and alerts left out and
    names the option that lists them all (a corpus pass fires ~140 rules: ~330 lines)."""
    from typing import Literal

    from rich.table import Table
    rows = stage.summary_rows()
    hidden = []
    if top is not None and len(rows) > top:
        from ..detection.alerts import LEVELS
        rank = {level: n for n, level in enumerate(LEVELS)}
        order = sorted(range(len(rows)), key=lambda i: (-rank.get(rows[i].level, -1),
                                                        -rows[i].alerts, -rows[i].matches, i))
        keep = set(order[:top])
        hidden = [r for i, r in enumerate(rows) if i not in keep]
        rows = [r for i, r in enumerate(rows) if i in keep]
    title = "Sigma detections" + (f": the {len(rows)} most severe rules with the most alerts"
                                  if hidden else "")
    table = Table(title=title, title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("level", "left"), ("matches", "right"), ("alerts", "right"),
        *((("written", "right"),) if triage is not None else ()), ("rule", "left"))
    for col, just in columns:
        table.add_column(col, justify=just)
    tags: dict = {}
    if triage is not None:
        for c in (*stage.matcher.compiled, *stage.correlations):
            tags.setdefault(c.key, c.tags)
    for r in rows:
        cells = [str(r.level), f"{r.matches:,}", f"{r.alerts:,}"]
        if triage is not None:
            kept = triage.keeps(r.level, tags.get(r.rule_id, ()))
            cells.append(f"{r.alerts:,}" if kept else "0")
        table.add_row(*cells, f"{r.title} ({r.rule_id})")
    if rows:
        console.print(table)
    else:
        console.print("Sigma detections: no rule matched")
    if hidden:
        n, alerts = len(hidden), sum(r.alerts for r in hidden)
        written = ""
        if triage is not None:
            w = sum(r.alerts for r in hidden if triage.keeps(r.level, tags.get(r.rule_id, ())))
            written = f", {w:,} written"
        console.print(f"... and {n:,} more rule{'s' if n > 1 else ''} ({alerts:,} "
                      f"alert{'' if alerts == 1 else 's'}{written}; all with "
                      "--all-detections)", markup=False)
    for line in stage.ungrouped_lines():
        console.print(f"warning: {line}", markup=False)


def sysmonx_own_event(event_id: int) -> bool:
    """True for SysmonX's own EventIDs (200 and up but Sysmon's 255: findings, heartbeats, the
    Linux visibility events, Sigma alerts), False for Sysmon's (1-29, 255) and Sysmon for
    Linux's (100)."""
    return event_id >= 200 and event_id != 255


def print_filter_table(console, included: Counter, excluded: Counter, title: str,
                       total_read: Optional[int] = None,
                       collected: Optional[Iterable[int]] = None) -> None:
    """Print what the config kept and dropped per EventID, the table of replay's summary and of
    the live sensor's exit: columns EventID, Event, read (included + excluded), included,
    excluded; one row per Sysmon EventID seen, then a ``total Sysmon`` row; then, when any was
    seen, one row per SysmonX EventID (:func:`sysmonx_own_event`: heartbeats, findings ...) and
    a ``total SysmonX`` row, so that Sysmon's total counts Sysmon's events only.
    ``included`` and ``excluded``: EventID -> events (the filter stage's counters, which count
    events of Sysmon's providers only); ``total_read``: the Sysmon total row's read (default
    included + excluded; replay gives the Sysmon events it read, before ``--from``/``--to``
    and duplicates); ``collected``: EventIDs collected (the live sensor's running backends,
    :meth:`~sysmonx.sensor.live.LiveSource.collected_events`), each listed, with 0 when none
    was seen, so that "none happened" reads apart from "not collected". With nothing counted
    the table has its total row only (all 0)."""
    from rich.table import Table
    from ..pipeline import event_name

    table = Table(title=title, title_justify="left")
    table.add_column("EventID", justify="right")
    table.add_column("Event")
    table.add_column("read", justify="right")
    table.add_column("included", justify="right")
    table.add_column("excluded", justify="right")
    ids = set(included) | set(excluded) | set(collected or ())
    own = sorted(e for e in ids if sysmonx_own_event(e))
    for section in (sorted(e for e in ids if not sysmonx_own_event(e)), own):
        if section is own and not own:
            break
        for eid in section:
            inc, exc = included[eid], excluded[eid]
            table.add_row(str(eid), event_name(eid), f"{inc + exc:,}", f"{inc:,}", f"{exc:,}")
        inc_t, exc_t = sum(included[e] for e in section), sum(excluded[e] for e in section)
        if section is own:
            table.add_row("", "total SysmonX", f"{inc_t + exc_t:,}", f"{inc_t:,}", f"{exc_t:,}",
                          end_section=True)
            continue
        read = inc_t + exc_t if total_read is None else total_read - sum(
            included[e] + excluded[e] for e in own)
        table.add_row("", "total Sysmon", f"{read:,}", f"{inc_t:,}", f"{exc_t:,}",
                      end_section=True)
    console.print(table)


def rule_counts(stage: Any) -> str:
    """What a rule set's load counts, in the words of the load line and the closing summary:
    ``1,999 rules and 0 correlations loaded, 8 rejected, of 2,007 read`` (read: every rule and
    correlation found, loaded or rejected)."""
    rules, corr, rej = len(stage.matcher.compiled), len(stage.correlations), len(stage.rejected)
    return (f"{rules:,} rule{'' if rules == 1 else 's'} and {corr:,} "
            f"correlation{'' if corr == 1 else 's'} loaded, {rej:,} rejected, of "
            f"{rules + corr + rej:,} read")


def unreachable_rules_note(stage: Any, provider: Optional[str], follow: bool) -> Optional[str]:
    """The note ``sysmonx run`` prints after loading rules when some can never see an event
    on this host, else ``None``: the live sensor writes its Sysmon events under ``provider``
    (``None``: Sysmon for Linux's ``Linux-Sysmon``), so a rule whose log source names only
    Windows Sysmon's events (``product: windows``) or only other channels (``service:
    security``, ``category: ps_script`` ...) never fires; with ``follow`` a followed log may
    hold other providers' records, so the channel rules are not counted. The figure: loaded
    detection rules, by :func:`~sysmonx.detection.logsource.unreachable`; the reasons counted
    by kind. A note, not an error: a shared rule set often holds such rules."""
    from ..detection.logsource import platform_of_provider, unreachable
    from ..event import LINUX_PROVIDER
    prov = provider or LINUX_PROVIDER
    plat = platform_of_provider(prov)
    compiled = stage.matcher.compiled
    idx = unreachable([r.target for r in compiled], frozenset([plat] if plat else ()),
                      None if follow else frozenset())
    if not idx:
        return None
    kinds: Counter = Counter()
    for i in idx:
        groups = compiled[i].target.groups
        if all(g[0] == "chan" for g in groups):
            kinds["another channel"] += 1
        elif all(g[0] == "win" for g in groups):
            kinds["Windows Sysmon"] += 1
        elif all(g[0] == "lnx" for g in groups):
            kinds["Sysmon for Linux"] += 1
        else:
            kinds["mixed"] += 1
    why = ", ".join(f"{k} only: {kinds[k]:,}" if k != "mixed" else f"mixed: {kinds[k]:,}"
                    for k in ("Windows Sysmon", "Sysmon for Linux", "another channel", "mixed")
                    if kinds[k])
    n, total = len(idx), len(compiled)
    writes = ("Sysmon for Linux events" if plat == "lnx" else
              "Windows Sysmon events" if plat == "win" else f"{prov} events")
    return (f"note: {n:,} of {total:,} loaded rule{'' if total == 1 else 's'} can never see an "
            f"event on this host ({why}): this sensor writes {writes} (provider {prov})"
            + ("" if follow else " and no other channel"))


def sigma_summary(stage: Any, alerts: Optional[str], stream: bool = True) -> str:
    """The closing Sigma line of a live run or a replay: rules loaded and rejected, events
    checked, alerts by level (``no level`` for rules without one) and where they went
    (``alerts``: the ``--alerts`` argument, ``None``
    for the event stream as event 1000; ``stream`` False: no event stream was written, as with
    ``replay --no-output``)."""
    from ..detection.alerts import LEVELS
    st = stage.stats
    rank = {lv: i for i, lv in enumerate(LEVELS)}
    # a rule without a level counts under "-" (Sigma makes level optional): said in words
    levels = ", ".join(f"{'no level' if lv == '-' else lv} {n:,}" for lv, n in sorted(
        st.alerts_by_level.items(), key=lambda kv: -rank.get(kv[0], -1)))
    where = ("to stdout" if alerts == "-" else f"to {alerts}" if alerts
             else "as event 1000 in the event stream" if stream else "nowhere (no output)")
    return (f"Sigma: {rule_counts(stage)}; events checked "
            f"{st.events:,}; alerts {st.alerts:,}" + (f" ({levels})" if levels else "")
            + (f", written {where}" if st.alerts else ""))


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The options for the Sysmon behaviours the spec marks uncertain (as ``sysmonx replay``
    takes them), so a workbench report decides exactly as the replay it is compared with."""
    g = p.add_argument_group("Sysmon behaviours the spec marks uncertain (defaults: code-derived)")
    g.add_argument("--fallback", choices=["code", "intent"], default="code")
    g.add_argument("--no-stale-rulename", action="store_true")
    g.add_argument("--compare-fold", choices=["lower", "upper"], default="lower")
    g.add_argument("--no-rule-defaults", choices=["manifest", "community"], default="manifest")
    p.add_argument("--no-extensions", action="store_true",
                   help="hold the config to Sysmon's grammar exactly (reject condition=\"regex\", "
                        "SysmonX event tags and enrichment fields)")


def engine_options(args: argparse.Namespace):
    """:class:`~sysmonx.filtering.EngineOptions` from :func:`add_engine_options`' arguments."""
    from ..filtering import EngineOptions
    return EngineOptions(compare_fold=args.compare_fold, fallback=args.fallback,
                         stale_rulename=not args.no_stale_rulename,
                         no_rule_defaults=args.no_rule_defaults)


def load_config_reporting(path: str, console, extensions: bool = True):
    """Load the config at ``path`` (``default``: the built-in one), printing its warnings;
    ``None`` after printing why it cannot be loaded."""
    from ..config import ConfigError, load_config
    cpath = config_arg_path(path)
    try:
        cfg = load_config(cpath, extensions=extensions)
    except ConfigError as exc:
        print_config_errors(console, exc, config_mistake_hint(cpath))
        return None
    except OSError as exc:
        console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}", markup=False)
        return None
    for w in cfg.warnings:
        console.print(str(w), markup=False)
    return cfg


def check_inputs(paths: list[str], console) -> bool:
    """True when every input path exists; else prints which one does not."""
    for pth in paths:
        if pth != "-" and not Path(pth).exists():
            console.print(f"error: {pth}: no such file or directory", markup=False)
            return False
    return True


def write_report(text: str, output: Optional[str], console) -> bool:
    """Write ``text`` to ``output`` (``None`` or ``-``: stdout). False after printing why it
    could not be written."""
    if output in (None, "-"):
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
        return True
    try:
        Path(output).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        console.print(f"error: cannot write {output}: {exc.strerror or exc}", markup=False)
        return False
    return True


def read_error_printer(console):
    """An ``on_error`` callback printing each read problem with its severity."""
    def on_error(err) -> None:
        console.print(f"{getattr(err, 'severity', 'error')}: {err}", markup=False)
    return on_error


def url_output_options(url: str) -> dict:
    """Options of an output URL's sink in a replay or collect (``fatal`` outputs): a network
    output whose spool is full makes the writer wait for the receiver (nothing is dropped)
    instead of refusing events as the live sensor does."""
    from ..sinks.network import SpooledSink
    from ..sinks.outputs import url_sink_class
    cls = url_sink_class(url)
    return {"when_full": "wait"} if cls is not None and issubclass(cls, SpooledSink) else {}


def add_rule_profile_options(p: argparse.ArgumentParser) -> None:
    """``--profile-rules`` and ``--profile-rules-out FILE`` (per-rule cost of Sigma detection,
    :mod:`sysmonx.detection.profile`)."""
    p.add_argument("--profile-rules", action="store_true",
                   help="with --rules: count and time every Sigma rule's evaluations; at the "
                        "end print the 10 most expensive rules, the correlations' cost and the "
                        "prefilter's figures (evaluations skipped and run, hit rate) to stderr")
    p.add_argument("--profile-rules-out", metavar="FILE",
                   help="with --profile-rules (implied): write every rule's figures as JSON to "
                        "FILE (shape: docs/PERFORMANCE.md, 'Per-rule cost')")


def check_rule_profile_options(args: argparse.Namespace, console) -> bool:
    """False after printing why ``--profile-rules``/``--profile-rules-out`` cannot be used
    with the other arguments (they need ``--rules``); ``--profile-rules-out`` implies
    ``--profile-rules``."""
    if args.profile_rules_out:
        args.profile_rules = True
    if args.profile_rules and not args.rules:
        console.print("error: --profile-rules profiles Sigma rules: give --rules", markup=False)
        return False
    return True


def check_output_options(args: argparse.Namespace, console, say) -> bool:
    """False after printing why an output option cannot apply to the others (``replay``: exit
    87, as :func:`check_rule_profile_options` does for ``--profile-rules`` without
    ``--rules``): ``--csv-bom`` without ``-f csv``; ``--alerts -`` with a ``-f`` other than
    ``jsonl`` (or the default ``xml``) and no ``-o``, where stdout carries the alerts as JSON
    lines and the events go nowhere. ``--alerts FILE`` with ``-f csv`` (or another format than
    JSON lines) is a ``note`` through ``say``: the alerts file is JSON lines, ``-f`` applies
    to the events."""
    fmt = getattr(args, "format", None)
    if getattr(args, "csv_bom", False) and fmt != "csv":
        console.print(f"error: --csv-bom marks a CSV output: give -f csv (the output is {fmt})",
                      markup=False)
        return False
    alerts = getattr(args, "alerts", None)
    if alerts and fmt not in ("jsonl", "xml"):
        outputs = [o for o in getattr(args, "output", []) if o != "-"]
        if alerts == "-" and not outputs:
            console.print(f"error: --alerts - writes the alerts to stdout as JSON lines and no "
                          f"event is written: -f {fmt} applies to the events (give -o FILE "
                          "for them)", markup=False)
            return False
        say("note", f"note: --alerts writes JSON lines; -f {fmt} applies to the event stream")
    return True


def start_rule_profile(stage, args: argparse.Namespace):
    """A :class:`~sysmonx.detection.profile.RuleProfile` attached to ``stage`` when
    ``--profile-rules`` was given (else ``None``)."""
    if stage is None or not getattr(args, "profile_rules", False):
        return None
    from ..detection.profile import RuleProfile
    return RuleProfile.attach(stage)


def report_rule_profile(console, profile, args: argparse.Namespace, top: int = 10) -> bool:
    """Detach ``profile``; print the ``top`` most expensive detection rules, the correlations'
    cost and the prefilter line to ``console`` (stderr); write the JSON of
    ``--profile-rules-out``. False after printing why the file could not be written."""
    if profile is None:
        return True
    profile.detach()
    from rich.table import Table
    from ..textsafe import safe_console, terminal_safe
    # not a terminal (a log file): wide enough for the ids and most titles on one line
    out = console if console.is_terminal else safe_console(
        file=console.file, width=max(console.width, 160), highlight=False, soft_wrap=True)
    rows = profile.top(top)
    ms = 1e6
    table = Table(title=f"Sigma rules: the {len(rows)} most expensive (of "
                        f"{len(profile.evaluations):,})", title_justify="left")
    for col, just in (("#", "right"), ("cost ms", "right"), ("evaluated", "right"),
                      ("skipped", "right"), ("matches", "right"), ("µs/eval", "right"),
                      ("level", "left"), ("id", "left")):
        table.add_column(col, justify=just, no_wrap=True,  # type: ignore[arg-type]
                         min_width={"#": 2, "level": 8, "id": 36}.get(col, len(col)))
    table.add_column("rule", no_wrap=True, overflow="ellipsis")
    for n, r in enumerate(rows, 1):
        per = f"{r['cost_ns'] / r['evaluations'] / 1e3:,.2f}" if r["evaluations"] else "-"
        table.add_row(str(n), f"{r['cost_ns'] / ms:,.2f}", f"{r['evaluations']:,}",
                      f"{r['skipped']:,}", f"{r['matches']:,}", per, r["level"] or "-",
                      terminal_safe(r["id"]),
                      terminal_safe(r["title"]) + ("" if r["indexed"] else " [unindexed]"))
    if rows:
        out.print(table)
    else:
        console.print("Sigma rules: none compiled, nothing to profile", markup=False)
    corr = profile.correlations()
    if corr:
        ct = Table(title="Sigma correlations: time in the correlation engine",
                   title_justify="left")
        for col, just in (("time ms", "right"), ("steps", "right"), ("hits", "right"),
                          ("alerts", "right"), ("type", "left"), ("id", "left")):
            ct.add_column(col, justify=just, no_wrap=True,  # type: ignore[arg-type]
                          min_width=36 if col == "id" else len(col))
        ct.add_column("rule", no_wrap=True, overflow="ellipsis")
        for c in corr[:top]:
            ct.add_row(f"{c['time_ns'] / ms:,.2f}", f"{c['calls']:,}", f"{c['hits']:,}",
                       f"{c['alerts']:,}", c["type"], terminal_safe(c["id"]),
                       terminal_safe(c["title"]))
        out.print(ct)
    console.print(profile.summary_line(), markup=False)
    from ..detection.profile import LEGEND
    console.print(LEGEND, markup=False)
    if args.profile_rules_out:
        from ..detection.profile import write_profile
        try:
            write_profile(profile, args.profile_rules_out)
        except OSError as exc:
            console.print(f"error: cannot write {args.profile_rules_out}: "
                          f"{exc.strerror or exc}", markup=False)
            return False
    return True


def config_loaded_line(name: str, config: Any, cache_info: dict) -> str:
    """The line that says what config was loaded and how (``replay`` and ``run`` at start), as
    the Sigma rules' loaded line does:
    ``config: NAME loaded: schema 4.90, 12 rule sets, 1,914 filters (HOW)``, HOW from the config
    cache's ``cache_info`` (:func:`~sysmonx.config.load_config`): ``from the config cache in
    DIR``, ``parsed and stored in the config cache in DIR``, ``parsed; the next run caches it
    in DIR`` (a config's first run, which only leaves a marker: the second run parses again and
    stores it, the third reads it; said in an admin's words, not the cache's), ``parsed; config
    cache off`` or ``parsed; not stored in the config cache: see the note above``."""
    status, where = cache_info.get("status", "off"), cache_info.get("directory")
    if status == "hit":
        how = f"from the config cache in {where}"
    elif status == "stored":
        how = f"parsed and stored in the config cache in {where}"
    elif status == "noted":
        how = f"parsed; the next run caches it in {where}"
    elif status == "off":
        how = "parsed; config cache off"
    else:
        how = "parsed; not stored in the config cache: see the note above"
    from ..configmodel import size_text
    return (f"config: {name} loaded: schema {config.schema_version_text}, "
            f"{size_text(config.rule_sets)} ({how})")
