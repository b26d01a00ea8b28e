"""``sysmonx -s`` and ``sysmonx -? config``: print schemas the way Sysmon prints them.

* :func:`render_manifest` - one ``<manifest ...>`` block of a :class:`~sysmonx.schema.Schema`, in
  the Windows form (target-filtered, pretty-printed) or the Linux form (raw SysmonCommon text).
* :func:`render_schema_output` - the whole ``-s [version|all]`` output and its exit code.
* :func:`render_config_help` - the ``-? config`` text.

Sources: spec/sysmon-semantics.md section 6.2 (``-s``, ``-? config``), 6.4 (exit codes), 1.2, 1.3
and 1.7; checked line by line against the Windows ``sysmon -s`` dumps (schemas 4.30-4.82), the
SysmonCommon manifest (4.0-4.81) and the Linux ``sysmon -s`` dump (4.81) by tests/test_schema.py.

Everything here is derived from the catalogue; no manifest text is embedded.
"""

from __future__ import annotations

import textwrap
from typing import Optional
from xml.sax.saxutils import quoteattr

from .catalogue import Version
from .snapshot import EventSchema, Schema, all_versions, format_version, get_schema

__all__ = [
    "STYLES", "WINDOWS_HIDDEN_OPTIONS", "NO_MATCH_MESSAGE", "NO_MATCH_EXIT_CODE",
    "manifest_version_text", "render_manifest", "render_schema_output", "render_config_help",
]

#: Output styles: ``windows`` (Windows ``sysmon -s``) and ``linux`` (Sysmon for Linux ``-s``).
STYLES = ("windows", "linux")

#: Options the Windows form never prints although the SysmonCommon manifest marks them
#: ``target="all"``: ``-btf`` exists on Linux only (spec 6.2 switch table, 1.7 "+ -btf (Linux)"),
#: and neither the Windows 4.81 (Sysmon 13.30) nor the 4.82 (Sysmon 14.0) dump lists it.
WINDOWS_HIDDEN_OPTIONS = frozenset({"BTF"})

#: Printed when no manifest's schemaversion starts with the requested string (printSchema.c).
NO_MATCH_MESSAGE = "There is no schema that matches that version."

#: Exit code of ``-s <version>`` when nothing matches. Sysmon's PrintSchema() returns nothing and
#: the message goes to stdout; spec 6.4 lists ``-s`` among the exit-0 paths, so SysmonX exits 0
#: too (not 87, which is reserved for command-line parse errors).
NO_MATCH_EXIT_CODE = 0

# The schemaversion attribute as the manifests spell it: the three oldest 4.x manifests write
# one decimal ("4.1", not "4.10"); ``-s`` prefix-matches against this text.
_SHORT_VERSION_TEXT = {(4, 0): "4.0", (4, 10): "4.1", (4, 20): "4.2"}

_CMDLINE_COMMENT = "<!-- Command-line only options -->"
_CONFIG_COMMENT = "<!-- Configuration file -->"
#: Before the events no Sysmon manifest defines, when they are listed (``sysmonx -s``).
_EXTENSION_COMMENT = "<!-- SysmonX: events not in Sysmon's manifest -->"
#: Before the configuration entries no Sysmon manifest defines, when they are listed.
_EXTENSION_OPTIONS_COMMENT = "<!-- SysmonX: configuration entries not in Sysmon's manifest -->"


def manifest_version_text(version: Version) -> str:
    """The ``schemaversion`` attribute of the manifest for ``version``.

    Args:
        version: ``(4, 10)``.
    Returns:
        ``"4.1"`` for (4, 10) (likewise ``"4.0"``, ``"4.2"``), else ``"4.50"``-style text, as the
        SysmonCommon manifest spells it (spec 1.7 table).
    """
    return _SHORT_VERSION_TEXT.get(version, format_version(version))


def _attrs(pairs) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in pairs if value is not None)


def _option_line(o, linux: bool) -> str:
    pairs = [("switch", o.switch), ("name", o.name), ("argument", o.argument)]
    if linux:
        pairs.append(("target", "internal" if o.internal else "all"))
    pairs += [("noconfig", "true" if o.noconfig else None),
              ("exclusive", "true" if o.exclusive else None),
              ("rule", "true" if o.rule else None),
              ("forceconfig", "true" if o.forceconfig else None)]
    # SysmonCommon's PrintSchema line lacks the space before "/>" (every 4.x manifest); the
    # Windows pretty-printer normalises it.
    end = "/>" if linux and o.name == "PrintSchema" else " />"
    return f"<option{_attrs(pairs)}{end}"


def _event_value(event_id: int) -> str:
    return hex(event_id) if event_id >= 0xF000 else str(event_id)


def render_manifest(schema: Schema, style: str = "windows", extensions: bool = False) -> str:
    """Render one schema as the ``<manifest ...>`` block ``sysmon -s`` prints.

    ``windows``: the target-filtered manifest, 2-space indentation, no ``target`` attributes, no
    internal options (nor :data:`WINDOWS_HIDDEN_OPTIONS`), with the two option comments, as in the
    Windows dumps. ``linux``: the SysmonCommon text - ``target="all"``/``"internal"`` attributes,
    internal options kept, the same comments, 2-space indentation from column 0 (as the Linux
    ``sysmon -s`` dump shows it; blank separator lines of the source are not reproduced).

    Args:
        schema: a :class:`~sysmonx.schema.Schema` (e.g. ``get_schema("4.50")``).
        style: ``"windows"`` or ``"linux"``.
        extensions: also list what no Sysmon manifest defines, after Sysmon's, each kind
            under one XML comment and in Sysmon's form: SysmonX's configuration entries
            (``schema.extension_options``, ``<option>``) and the catalogue's ``extension=True``
            events (SysmonX's own, Sysmon for Linux's 100; ``<event>``). ``False``: Sysmon's
            manifest exactly.
    Returns:
        The lines from ``<manifest ...>`` to ``</manifest>`` joined with ``\\n``, no trailing
        newline.
    Raises:
        ValueError: unknown style.
    Source: spec section 6.2 (``-s``); manifest layout per the corpus dumps.
    """
    if style not in STYLES:
        raise ValueError(f"unknown schema output style {style!r} (expected one of {STYLES})")
    linux = style == "linux"
    out = [f"<manifest schemaversion=\"{manifest_version_text(schema.version)}\" "
           f"binaryversion={quoteattr(schema.binary_version)}>",
           "  <configuration>", "    <options>"]
    first, config_seen = True, False
    for o in schema.options:
        if not linux and (o.internal or o.name in WINDOWS_HIDDEN_OPTIONS):
            continue
        if first:
            out.append("      " + _CMDLINE_COMMENT)
            first = False
        if not o.noconfig and not config_seen:
            out.append("      " + _CONFIG_COMMENT)
            config_seen = True
        out.append("      " + _option_line(o, linux))
    if extensions and schema.extension_options:
        out.append("      " + _EXTENSION_OPTIONS_COMMENT)
        out += ["      " + _option_line(o, linux) for o in schema.extension_options]
    out += ["    </options>",
            f"    <filters default=\"is\">{','.join(schema.conditions)}</filters>",
            "  </configuration>", "  <events>"]
    events: list[Optional[EventSchema]] = [e for e in schema.events.values() if not e.extension]
    # SysmonX's own events (and Sysmon for Linux's 100) in EventID order
    extra = sorted((e for e in schema.events.values() if e.extension),
                   key=lambda e: e.event_id) if extensions else []
    if extra:
        events.append(None)  # where the comment goes
        events += extra
    for e in events:
        if e is None:
            out.append("    " + _EXTENSION_COMMENT)
            continue
        pairs = [("name", e.symbol), ("value", _event_value(e.event_id)), ("level", e.level),
                 ("template", e.template), ("rulename", e.tag),
                 # Sysmon's manifests leave ruledefault out where the event is off by
                 # default; an extension event always says it (README "default" column)
                 ("ruledefault", e.default if e.default_attr or (e.extension and e.tag)
                  else None),
                 ("version", str(e.version))]
        if linux:
            pairs.append(("target", "all"))
        out.append(f"    <event{_attrs(pairs)}>")
        for f in e.fields:
            fp = [("name", f.name), ("inType", f.in_type), ("outType", f.out_type)]
            out.append(f"      <data{_attrs(fp)} />")
        out.append("    </event>")
    out += ["  </events>", "</manifest>"]
    return "\n".join(out)


def render_schema_output(version_arg: Optional[str] = None,
                         style: str = "windows", extensions: bool = True) -> tuple[str, int]:
    """The complete output of ``sysmon -s [version|all]`` (without the banner) and its exit code.

    Selection (Sysmon's printSchema.c): manifests are scanned newest first; no argument prints the
    newest; ``all`` (any case) prints every manifest, newest first; otherwise the first manifest
    whose ``schemaversion`` text *starts with* the argument is printed - so ``4.8`` selects the
    newest 4.8x, ``4.2`` selects 4.23 (not 4.20), ``4.1`` selects the manifest spelled ``4.1`` and
    ``4.10`` matches nothing (that manifest's text is ``4.1``). Each manifest is followed by a
    newline. Only the 4.x manifests SysmonX carries are searched (Sysmon itself also embeds the
    2.0-3.40 ones, so ``-s 3`` prints a manifest there and the no-match message here).

    Args:
        version_arg: the ``-s`` value, ``None`` when absent.
        style: ``"windows"`` or ``"linux"`` (see :func:`render_manifest`).
        extensions: list SysmonX's own events after Sysmon's in each manifest (default; ``False``
            prints Sysmon's manifests byte for byte).
    Returns:
        ``(text, exit_code)``: the manifest block(s), or :data:`NO_MATCH_MESSAGE` + newline with
        :data:`NO_MATCH_EXIT_CODE` (0, see there) when nothing matches; exit code 0 otherwise.
    Raises:
        ValueError: unknown style.
    Source: spec section 6.2 (``-s``) and 6.4 (exit codes).
    """
    if style not in STYLES:
        raise ValueError(f"unknown schema output style {style!r} (expected one of {STYLES})")
    newest_first = list(reversed(all_versions()))
    if version_arg is not None and version_arg.lower() == "all":
        chosen = newest_first
    elif version_arg is None:
        chosen = newest_first[:1]
    else:
        chosen = [v for v in newest_first if manifest_version_text(v).startswith(version_arg)][:1]
    if not chosen:
        return NO_MATCH_MESSAGE + "\n", NO_MATCH_EXIT_CODE
    return "".join(render_manifest(get_schema(v), style, extensions) + "\n" for v in chosen), 0


# ---------------------------------------------------------------------------------------------
# -? config

_WIDTH = 98  # Sysmon wraps its usage text for a default 98-column console

_ENTRY_HELP = {
    # name: (value kind, description) - semantics per spec section 1.2
    "ArchiveDirectory": ("String", "Name of the directory at volume roots into which "
                         "copy-on-delete and clipboard files are moved; a single path component, "
                         "protected with a System ACL. Default: Sysmon"),
    "CaptureClipboard": ("Boolean", "Captures clipboard changes (needed for ClipboardChange "
                         "events)."),
    "CheckRevocation": ("Boolean", "Controls signature revocation checks. Default: True"),
    "CopyOnDelete_PE": ("Boolean", "Preserves deleted executable image files. Default: False"),
    "CopyOnDelete_SIDs": ("Strings", "Comma-separated list of account SIDs for which file "
                          "deletes will be preserved."),
    "CopyOnDelete_Extensions": ("Strings", "Extensions for files that are preserved on delete."),
    "CopyOnDelete_Processes": ("Strings", "Process name(s) for which file deletes will be "
                               "preserved."),
    "DnsLookup": ("Boolean", "Controls reverse DNS lookup. Default: True"),
    "DriverName": ("String", "Uses the specified name for driver and service images."),
    "HashAlgorithms": ("Strings", "Hash algorithm(s) to apply for hashing: MD5, SHA1, SHA256, "
                       "IMPHASH or * (all)."),
    "FieldSizes": ("Strings", "Comma-separated list of FieldName:Size entries that specify the "
                   "maximum sizes for field output (example 'CommandLine:100,Image:20')."),
    "ProcessAccessConfig": ("Strings", "Legacy process access list image[:mask],...; enables "
                            "ProcessAccess events."),
    "PipeMonitoringConfig": ("Strings", "Legacy pipe monitoring list; enables pipe events."),
    "DriverQueueSize": ("String", "Driver queue size (schema 4.91)."),
    "SigningQueueSize": ("String", "Signing queue size (schema 4.91)."),
    "ServiceArchiveDirectory": ("String", "Service archive directory (schema 4.1 only)."),
    # SysmonX's own entries (catalogue options with extension=True)
    "HeartbeatInterval": ("Number", "SysmonX: seconds between Heartbeat events (202) of the "
                          "live sensor, 0 for none (1 to 86400). Default: 60; sysmonx run "
                          "--heartbeat overrides it."),
    "YaraRules": ("String", "SysmonX: YARA rule file or folder, relative to the configuration "
                  "file, for scanners=\"yara...\" rules; sysmonx run --yara overrides it."),
}

_CONDITION_HELP = {
    "is": "Default, values are equals.",
    "is not": "Values are different.",
    "contains": "The field contains this value.",
    "contains any": "The field contains any of the ; delimited values.",
    "is any": "The field is equal to any of the ; delimited values.",
    "contains all": "The field contains all of the ; delimited values.",
    "excludes": "The field does not contain this value.",
    "excludes any": "The field contains none of the ; delimited values.",
    "excludes all": "The field does not contain all of the ; delimited values.",
    "begin with": "The field begins with this value.",
    "not begin with": "The field does not begin with this value.",
    "end with": "The field ends with this value.",
    "not end with": "The field does not end with this value.",
    "less than": "Lexicographical comparison is less than zero.",
    "more than": "Lexicographical comparison is more than zero.",
    "image": "Match an image path (full path or only image name). For example: lsass.exe will "
             "match c:\\windows\\system32\\lsass.exe.",
}


def _para(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=indent, subsequent_indent=indent) + [""]


def _config_entries(schema: Schema) -> list[str]:
    """Configuration entry names of ``schema`` in manifest order (spec 1.2 rule)."""
    names = []
    for o in schema.options:
        if o.noconfig or o.internal:
            continue
        if o.rule:
            if o.forceconfig:
                names.append(o.name + "Config")
            continue
        names.append(o.name)
    return names


def render_config_help(schema: Schema) -> str:
    """The ``sysmon -? config`` text for ``schema`` (normally the newest, :data:`CURRENT`).

    Layout (Sysmon's ConfigUsage): ``Configuration usage (current schema is version: X.XX):``, a
    sample configuration using that schemaversion, the table of configuration entries the schema
    accepts (manifest order; ``rule`` options with ``forceconfig`` as ``<NameConfig>``), the
    ``Id / Tag / Event`` table of every filterable event (``%-6d %-20s %s``, the event's template
    as description, manifest order), then every condition of the schema with its meaning.
    SysmonX's own configuration entries follow Sysmon's in the entry table, and its own events
    Sysmon's in the event table.
    Unlike Sysmon's fixed text, the entry and condition lists are generated from the schema (so
    ``is any`` is listed) and ``excludes any``/``excludes all`` are described as the filter engine
    implements them (spec 2.2), not with Sysmon's inaccurate wording.

    Args:
        schema: a :class:`~sysmonx.schema.Schema`.
    Returns:
        The text, lines joined with ``\\n``, ending with a newline (Sysmon writes it to stderr).
    Source: spec section 6.2 (``-? config``), 1.2 (entries), 1.3 (tags), 2.2 (conditions).
    """
    v = schema.version_text
    out = [f"Configuration usage (current schema is version: {v}):", ""]
    out += _para("Configuration files can be specified after the -i (installation) or -c "
                 "(configuration) switches. They make it easier to deploy a preset configuration "
                 "and to filter captured events.")
    out += ["A simple configuration xml file looks like this:", ""]
    out += [f"<Sysmon schemaversion=\"{v}\">",
            "  <!-- Capture all hashes -->",
            "  <HashAlgorithms>*</HashAlgorithms>",
            "  <EventFiltering>",
            "    <!-- Log all drivers except if the signature -->",
            "    <!-- contains Microsoft or Windows -->",
            "    <DriverLoad onmatch=\"exclude\">",
            "      <Signature condition=\"contains\">microsoft</Signature>",
            "      <Signature condition=\"contains\">windows</Signature>",
            "    </DriverLoad>",
            "    <!-- Do not log process termination -->",
            "    <ProcessTerminate onmatch=\"include\" />",
            "    <!-- Log network connection if the destination port equal 443 -->",
            "    <!-- or 80, and process isn't InternetExplorer -->",
            "    <NetworkConnect onmatch=\"include\">",
            "      <DestinationPort>443</DestinationPort>",
            "      <DestinationPort>80</DestinationPort>",
            "    </NetworkConnect>",
            "    <NetworkConnect onmatch=\"exclude\">",
            "      <Image condition=\"end with\">iexplore.exe</Image>",
            "    </NetworkConnect>",
            "  </EventFiltering>",
            "</Sysmon>", ""]
    out += _para("The configuration file contains a schemaversion attribute on the Sysmon tag. "
                 "This version is independent from the Sysmon binary version and allows the "
                 "parsing of older configuration files. The current schema version is shown in "
                 "the sample configuration.")
    out += _para("Configuration entries are directly under the Sysmon tag and filters are under "
                 "the EventFiltering tag. If a command line switch also enables an event, it "
                 "needs to be configured through its filter tag.")
    out += ["Configuration entries include the following:", ""]
    out.append(f"  {'Entry':<22} {'Value':<8} Description")
    for name in _config_entries(schema) + [o.name for o in schema.extension_options]:
        kind, desc = _ENTRY_HELP.get(name, ("String", ""))
        lead = f"  {name:<22} {kind:<8} "
        wrapped = textwrap.wrap(desc, _WIDTH - len(lead)) or [""]
        out.append((lead + wrapped[0]).rstrip())
        out += [" " * len(lead) + line for line in wrapped[1:]]
    out.append("")
    out += _para("Event filtering allows you to filter generated events. Each event has its own "
                 "filter tag under EventFiltering:")
    out.append("%-6s %-20s %s" % ("Id", "Tag", "Event"))
    for e in schema.events.values():
        if e.tag is not None:
            out.append("%-6d %-20s %s" % (e.event_id, e.tag, e.template))
    out.append("")
    out += _para("The onmatch attribute of a filter tag selects what a match means: 'include' "
                 "logs only matching events, 'exclude' logs every event except matching ones. "
                 "Each element under the filter tag is a field name of the event.")
    out += _para("Field entries can use other conditions to match the value. The conditions are "
                 "as follow (all are case insensitive):")
    for c in schema.conditions:
        lead = "%-13s " % c
        wrapped = textwrap.wrap(_CONDITION_HELP.get(c, ""), _WIDTH - len(lead)) or [""]
        out.append((lead + wrapped[0]).rstrip())
        out += [" " * 14 + line for line in wrapped[1:]]
    out.append("")
    return "\n".join(out)
