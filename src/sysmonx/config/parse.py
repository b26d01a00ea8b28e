"""Sysmon XML configuration -> :class:`~sysmonx.configmodel.Config`.

Implements spec/sysmon-semantics.md section 1: encoding sniffing (1.1), validation equivalent to
the DTD Sysmon synthesises from the manifest of the requested schema version (1.1, 1.7), the
configuration entries (1.2), event tags and rule sets (1.3), field filters and ``<Rule>`` (1.4),
multi-id binding (1.5) and Sysmon's load-time errors (1.6).

The XML is parsed with lxml with entity resolution, DTD loading and network access off; a document
that carries its own DOCTYPE is refused, so neither external entities nor entity-expansion bombs
can be used against the sensor.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, Union

from lxml import etree

from ..configmodel import Aggregate, Config, ConfigError, ConfigWarning, Filter, RuleSet
from ..core.registry import CONDITIONS as CONDITION_REGISTRY
from ..textsafe import split_comma_list
from ..schema import (CONDITIONS, CURRENT, Schema, SchemaVersionError, extended, get_schema,
                      parse_version, sysmon_only)
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
from ..version import __version__

__all__ = ["load_config", "parse_config", "decode_config_bytes", "extension_conditions",
           "split_comma_list", "parse_scanner_list",
           "MAX_RULE_NAME", "parse_hash_algorithms", "parse_field_sizes",
           "parse_heartbeat_interval", "MAX_HEARTBEAT_INTERVAL"]


def extension_conditions(entry_points: bool = True) -> dict:
    """Conditions SysmonX adds to Sysmon's 16 (accepted only when extensions are enabled): name
    -> the registered condition (:data:`~sysmonx.core.registry.CONDITIONS`; ``regex`` and any
    plugin's). ``entry_points=False``: without reading the installed distributions' entry
    points (the built-in conditions and those registered by code already imported; see
    :meth:`~sysmonx.core.registry.Registry.known_entries`)."""
    entries = CONDITION_REGISTRY.entries() if entry_points else CONDITION_REGISTRY.known_entries()
    return {e.name: e.obj for e in entries
            if getattr(e.obj, "extension", False) and e.name not in CONDITIONS}

#: Longest RuleName Sysmon accepts, in UTF-8 bytes (spec 1.4; rule-blob.md 6.5).
MAX_RULE_NAME = 255
#: Largest configuration file accepted, bytes (Sysmon's own limit is the registry value size).
MAX_CONFIG_BYTES = 64 * 1024 * 1024

_FALSE_FLAGS = {"false", "0", "NULL", "disabled"}
_HASHES = {"sha1": "SHA1", "sha-1": "SHA1", "md5": "MD5", "md-5": "MD5", "sha256": "SHA256",
           "sha-256": "SHA256", "imphash": "IMPHASH", "imp-hash": "IMPHASH"}
_HASH_ORDER = ("SHA1", "MD5", "SHA256", "IMPHASH")
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>", re.S)
_XML_DECL_TEXT = re.compile(r"^\s*<\?xml[^>]*\?>", re.S)
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


def decode_config_bytes(raw: bytes, path: str = "<string>") -> str:
    """Decode a configuration file the way Sysmon sniffs it (spec 1.1).

    A first byte that is neither whitespace nor ``<`` means a BOM: ``FF FE`` is UTF-16LE (``FE FF``
    UTF-16BE is also accepted); any other BOM (``EF BB BF``) means an 8-bit file. Without a BOM,
    a zero second byte means UTF-16LE. An 8-bit file is read in the ``encoding=`` of its XML
    declaration, even after a UTF-8 BOM (as Sysmon does), UTF-8 by default.

    Returns:
        the text with any BOM removed (the XML declaration is left in place).
    Raises:
        ConfigError: undecodable bytes (with the byte offset) or an unknown declared encoding.
    """
    if raw.startswith(codecs.BOM_UTF16_LE):
        enc, body = "utf-16-le", raw[2:]
    elif raw.startswith(codecs.BOM_UTF16_BE):
        enc, body = "utf-16-be", raw[2:]
    elif len(raw) > 1 and raw[1] == 0 and not raw.startswith(codecs.BOM_UTF8):
        enc, body = "utf-16-le", raw
    else:
        # 8-bit: a UTF-8 BOM is skipped and the declared encoding still wins (the compiled
        # blob of SysmonCommon's iso8859-utf8bom-iso8859enc.xml holds the Latin-1 reading).
        body = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        enc = "utf-8"
        m = _XML_DECL.match(body)
        if m:
            e = _ENCODING.search(m.group(0))
            if e:
                enc = e.group(1).decode("ascii").lower()
                try:
                    codecs.lookup(enc)
                except LookupError:
                    raise ConfigError(f"unsupported encoding {enc!r} in XML declaration",
                                      path, 1) from None
                if enc.replace("-", "").replace("_", "") in ("utf16", "utf16le", "ucs2"):
                    enc = "utf-8"  # an 8-bit file that claims UTF-16: Sysmon reads it as 8-bit
    try:
        return body.decode(enc)
    except UnicodeDecodeError as exc:
        nl = "\n".encode(enc) if enc.startswith("utf-16") else b"\n"
        line = body[:exc.start].count(nl) + 1
        raise ConfigError(f"file is not valid {enc} at byte offset {exc.start + len(raw) - len(body)}",
                          path, line) from None


def parse_hash_algorithms(text: str) -> list[str]:
    """Parse a HashAlgorithms value (spec 1.2): comma list of sha1/sha-1, md5/md-5,
    sha256/sha-256, imphash/imp-hash (case-insensitive) or ``*``/``all``; ``,,`` is a literal comma.

    Returns:
        canonical upper-case names in Sysmon's output order (SHA1, MD5, SHA256, IMPHASH).
    Raises:
        ValueError: ``Invalid hashing algorithm: X``.
    """
    found: set[str] = set()
    for item in split_comma_list(text):
        key = item.strip().lower()
        if key in ("*", "all"):
            found.update(_HASH_ORDER)
        elif key in _HASHES:
            found.add(_HASHES[key])
        else:
            raise ValueError(f"Invalid hashing algorithm: {item}")
    return [h for h in _HASH_ORDER if h in found]


#: Longest heartbeat interval accepted (seconds): one day.
MAX_HEARTBEAT_INTERVAL = 86400.0
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_heartbeat_interval(text: str) -> float:
    """Parse a heartbeat interval: the SysmonX ``<HeartbeatInterval>`` entry and ``sysmonx run
    --heartbeat`` take the same value.

    Args:
        text: seconds as a decimal number (``60``, ``2.5``; white space around it ignored);
            ``0`` means no heartbeats.
    Source: SysmonX's own option (Sysmon has no heartbeat); the range keeps a heartbeat
    meaningful (``SecondsSincePrevious`` counts whole seconds) and at least daily.
    Returns:
        the seconds, ``0.0`` or 1 to :data:`MAX_HEARTBEAT_INTERVAL`.
    Raises:
        ValueError: not a plain decimal number (signs, exponents, ``inf``/``nan`` included), or
            between 0 and 1 second, or above one day; the message names the value and the range.
    """
    t = text.strip()
    if not t.isascii() or not _SECONDS.fullmatch(t):
        raise ValueError(f"{text!r} is not a number of seconds (0 for none, or 1 to "
                         f"{MAX_HEARTBEAT_INTERVAL:.0f})")
    seconds = float(t)
    if seconds != 0 and not 1 <= seconds <= MAX_HEARTBEAT_INTERVAL:
        raise ValueError(f"{t} s is out of range (0 for none, or 1 to "
                         f"{MAX_HEARTBEAT_INTERVAL:.0f} seconds)")
    return seconds


def parse_scanner_list(text: str) -> tuple:
    """Parse a SysmonX ``scanners`` attribute: scanner names separated by commas (white space
    around them ignored), ``all`` for every built-in scanner, ``yara`` for every loaded YARA rule
    or ``yara:RULE`` for one.

    Returns:
        the names in order, duplicates removed, e.g. ``("memfd_exec", "yara:Marker")``.
    Raises:
        ValueError: an empty list or a name no registered scanner has (the message lists the
            known names).
    """
    from ..core.registry import SCANNERS
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise ValueError('empty scanners="" (name scanners, or "all")')
    known = SCANNERS.names()
    out: list = []
    for n in names:
        if not n:
            continue
        ok = n == "all" or n in known or n == "yara" or (n.startswith("yara:") and len(n) > 5)
        if not ok:
            raise ValueError(f"unknown scanner {n!r} in scanners=\"{text}\" (known: all, "
                             f"{', '.join(known)}, yara, yara:RULE)")
        if n not in out:
            out.append(n)
    return tuple(out)


def parse_field_sizes(text: str) -> dict[str, int]:
    """Parse FieldSizes ``Field:N,Field:N`` (spec 3.9).

    Only alphanumerics, ``,`` and ``:`` are allowed; field names are case-sensitive and must
    exist in some event; N must be > 0; entries without ``:`` are ignored.

    Raises:
        ValueError: with Sysmon's message for the first problem.
    """
    for c in text:
        if not (c.isascii() and c.isalnum()) and c not in ",:":
            raise ValueError(f"FieldSizes option ('{text}') has invalid character: '{c}'.")
    known = {n for e in CURRENT.events.values() for n in e.field_names}
    sizes: dict[str, int] = {}
    for entry in text.split(","):
        if ":" not in entry:
            continue
        name, _, num = entry.partition(":")
        if name not in known:
            raise ValueError(f"FieldSizes field '{name}' is invalid.")
        n = int(num) if num.isdigit() else 0
        if n <= 0:
            raise ValueError(f"FieldSizes field '{name}' has max size of {num}.")
        sizes[name] = n
    return sizes


def load_config(path: Union[str, Path], *, extensions: bool = True,
                empty_option_quirk: bool = False, cache: Any = True,
                cache_info: Optional[dict] = None) -> Config:
    """Load and validate a Sysmon configuration file.

    A configuration that loaded before (same bytes, path, options and reader code) is taken
    from the config cache (:mod:`~sysmonx.config.cache`) instead of being parsed again; one the
    reader refuses is never stored, so its errors are raised at every load exactly as without
    the cache. The default cache stores a config at its second run: a file's first run (by its
    first look, :func:`~sysmonx.core.cachelook.first_look`: path and ``stat`` only) computes
    no content key and imports no cache module; only then are the content keys computed, and
    an entry is only ever found by its content key. Notes about the cache (an entry ignored and
    rebuilt, a directory that cannot be used) are written to stderr as ``sysmonx: note:
    ...``, unless ``cache_info`` is given.

    Args:
        path: the XML file.
        extensions: accept SysmonX extensions (``condition="regex"``, the tags of SysmonX's own
            events, enrichment fields such as ``GrandparentImage``). With False the config is
            held to Sysmon's exact grammar.
        empty_option_quirk: reproduce the libxml2 code path where an empty option element
            (``<CheckRevocation/>``) stops option processing (spec 1.2, uncertain). Default: the
            documented intent, an empty element means "set, no value".
        cache: ``True`` (default): the default :class:`~sysmonx.config.cache.ConfigCache`
            (stores at a config's second run) unless ``$SYSMONX_CONFIG_CACHE`` is
            ``0``/``off``; ``False``/``None``: no cache; or a
            :class:`~sysmonx.config.cache.ConfigCache` (one made with ``admit_on_second_miss``
            stores at the second run too, by the first look).
        cache_info: a dict filled with ``status`` (``off``; ``noted``: a first run, stored at
            the next; ``hit``; ``stored``; ``ignored`` or ``unwritable``: see the notes),
            ``directory`` (the cache's folder, or ``None``) and ``notes`` (for a person); the
            notes are then the caller's to show, not written to stderr.
    Returns:
        the :class:`Config` (a cached one equals, field by field, what parsing gives).
    Raises:
        ConfigError: with file and line, for everything Sysmon refuses to load.
        OSError: the file cannot be read.
    """
    from ..core import cachelook
    p = Path(path)
    with open(p, "rb") as f:  # bounded read: /dev/zero, FIFOs and /proc files report size 0
        raw = f.read(MAX_CONFIG_BYTES + 1)
        st = os.fstat(f.fileno())
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration is larger than {MAX_CONFIG_BYTES} bytes", str(p))
    info: dict = {"status": "off", "directory": None, "notes": []}
    if cache is True:
        cache = "default" if cachelook.config_caches_enabled() else None
    if not cache:
        cfg = parse_config(raw, str(p), extensions=extensions,
                           empty_option_quirk=empty_option_quirk)
        return _reported(cfg, info, cache_info)
    default = cache == "default"
    directory = cachelook.cache_dir("config") if default else cache.directory
    info["directory"] = directory
    if default or cache.admit_on_second_miss:
        # stored at a config file's second run: a first run costs a stat-keyed marker only
        seen, status, notes = cachelook.first_look(
            directory, cachelook.look_key(str(p), st, __version__),
            cachelook.MAX_MARKERS if default else cache.max_entries())
        if not seen:
            cfg = parse_config(raw, str(p), extensions=extensions,
                               empty_option_quirk=empty_option_quirk)
            if status == "noted":
                setattr(cfg, cachelook.ORIGIN, ("first",))
            info.update(status=status, notes=notes)
            if not default:
                cache.record(status, notes)
            return _reported(cfg, info, cache_info)
    from .cache import ConfigCache, config_key
    if default:
        cache = ConfigCache(directory)
    # the extension conditions registered without reading the installed distributions'
    # entry points (~1.2 ms per process): what the reader starts with. A config is the same
    # whatever other names are registered as long as every condition it uses is accepted, so
    # a cached one is checked for that (:func:`_conditions_accepted`), reading the entry
    # points only when it uses a condition they may provide (a plugin's)
    known = extension_conditions(entry_points=False) if extensions else {}
    options = (extensions, empty_option_quirk, tuple(sorted(known)) if extensions else ())
    key = config_key(raw, str(p), options)
    cached: Optional[Config] = cache.get(key)
    if cached is not None and extensions and not _conditions_accepted(cached, known):
        cached = None  # a plugin's condition no longer registered: parsed (and refused) again
    notes = list(cache.notes)
    if cached is not None:
        cfg = cached
    else:
        cfg = parse_config(raw, str(p), extensions=extensions,
                           empty_option_quirk=empty_option_quirk)  # errors: raised, not stored
        cache.put(key, cfg, admitted=True)
        notes += [n for n in cache.notes if n not in notes]
    setattr(cfg, cachelook.ORIGIN, ("key", key, cachelook.model_snapshot(cfg)))
    info.update(status=cache.status, notes=notes)
    return _reported(cfg, info, cache_info)


def _conditions_accepted(cfg: Config, known: dict) -> bool:
    """Whether every condition ``cfg``'s filters use is accepted now: Sysmon's, one of
    ``known`` (:func:`extension_conditions` without the entry points) or, read only when a
    filter uses another name, one an installed distribution's entry point registers. The
    reader's result depends on no other registered name (an entry point never replaces a
    built-in name), so a cached config passing this is what parsing gives."""
    used = {f.condition for rs in cfg.rule_sets for f in rs.filters}
    used.difference_update(CONDITIONS)
    used.difference_update(known)
    return not used or used <= extension_conditions().keys()


def _reported(cfg: Config, info: dict, cache_info: Optional[dict]) -> Config:
    """``cfg``, with ``info`` copied into ``cache_info`` when given, else its notes written
    to stderr (:func:`load_config`)."""
    if cache_info is not None:
        cache_info.update(info)
    else:
        for note in info["notes"]:
            sys.stderr.write(f"sysmonx: note: {note}\n")
    return cfg


def _new_filter(field: str, condition: str, value: str, name: str, aggregate: int,
                line: Optional[int], scanners: tuple) -> Filter:
    """``Filter(field, condition, value, name, aggregate, line, scanners)`` without the frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field, about half the cost of a
    config's filter): the same attributes, so the same object for equality, hashing, pickling
    and :func:`dataclasses.fields`."""
    f = _object_new(Filter)
    f.__dict__.update(field=field, condition=condition, value=value, name=name,
                      aggregate=aggregate, line=line, scanners=scanners)
    return f


_object_new = object.__new__

#: True: the reader builds a common filter element itself (see ``_Builder._tag``); False:
#: every filter goes through ``_Builder._filter`` (the reference the tests compare with).
_COMMON_FILTERS_INLINE = True


def _text_of(el) -> str:
    # xmlNodeListGetString: text and entity values, comments skipped, pieces concatenated.
    if not len(el):
        return el.text or ""
    parts = [el.text or ""]
    for child in el:
        parts.append(child.tail or "")
    return "".join(parts)


def _only_whitespace(el, path: str) -> None:
    if el.text and el.text.strip():
        raise ConfigError(f"Element {el.tag} has text content {el.text.strip()[:40]!r}, "
                          "which the schema does not allow", path, el.sourceline)
    for child in el:
        if child.tail and child.tail.strip():
            raise ConfigError(f"Element {el.tag} has text content {child.tail.strip()[:40]!r}, "
                              "which the schema does not allow", path, child.sourceline)


def _check_attrs(el, allowed: tuple, path: str) -> None:
    for name in el.keys():
        if name not in allowed:
            raise ConfigError(f"No declaration for attribute {name} of element {el.tag}",
                              path, el.sourceline)


def _elements(el):
    return [c for c in el if isinstance(c.tag, str)] if len(el) else []


def _xml_message(exc: Any) -> str:
    """lxml's message said once: without the position lxml appends (``, line 3, column 59``;
    the error's ``path:line:`` prefix gives the line, the column is kept as ``(column 59)``),
    and libxml2's ``TAG line 2`` (where an unclosed element opened) as ``TAG (opened on line
    2)``: ``Opening and ending tag mismatch: EventFiltering (opened on line 2) and Sysmon
    (column 10)``."""
    msg = str(exc.msg)
    m = re.search(r",? line (\d+), column (\d+)\s*$", msg)
    col = ""
    if m is not None:
        msg, col = msg[:m.start()], f" (column {m.group(2)})"
    return re.sub(r"(\S) line (\d+)\b", r"\1 (opened on line \2)", msg) + col


def parse_config(raw: Union[bytes, str], path: str = "<string>", *, extensions: bool = True,
                 empty_option_quirk: bool = False) -> Config:
    """Parse configuration bytes (or text) already in memory; see :func:`load_config`.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    if isinstance(raw, str):
        raw_bytes = raw.encode("utf-8")
        text = raw
    else:
        raw_bytes = raw
        text = decode_config_bytes(raw, path)
    sha256 = hashlib.sha256(raw_bytes).hexdigest()
    # Strip the XML declaration (Sysmon does before prepending its DTD) but keep line numbers.
    text = text.lstrip("\ufeff")
    m = _XML_DECL_TEXT.match(text)
    if m:
        text = "\n" * m.group(0).count("\n") + text[m.end():]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_pis=True)
    try:
        root = etree.fromstring(text, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        raise ConfigError(f"XML error: {_xml_message(exc)}", path, line) from None
    if root.getroottree().docinfo.doctype:
        line = text[:max(text.find("<!DOCTYPE"), 0)].count("\n") + 1
        raise ConfigError("a DOCTYPE (DTD or entity declarations) is not allowed in a Sysmon "
                          "configuration", path, line)
    for node in root.iter(etree.Entity):  # the first entity reference, if any
        raise ConfigError(f"undefined entity {node.text}", path, node.sourceline)
    return _Builder(path, sha256, extensions, empty_option_quirk).build(root)


class _Builder:
    def __init__(self, path: str, sha256: str, extensions: bool, empty_option_quirk: bool):
        self.path = path
        self.sha256 = sha256
        self.extensions = extensions
        self.empty_option_quirk = empty_option_quirk
        self.conditions = {c: c for c in CONDITIONS}
        # the entry points (plugins' conditions) are read only when a condition is not among
        # Sysmon's and the built-in ones (:meth:`_condition`): most configs never need them
        self.extensions_in_use = extension_conditions(entry_points=False) if extensions else {}
        self.all_conditions = not extensions
        self.conditions.update({c: c for c in self.extensions_in_use})
        self.next_aggregate = 1
        #: the SysmonX ``scanners`` attribute is legal on tags, <Rule> and filters
        self.scan_attr: tuple = ("scanners",) if extensions else ()
        self.filter_attrs = ("condition", "name") + self.scan_attr
        self.skipped_tags: set = set()
        self.counts: dict = {}
        self.errors: list[ConfigError] = []

    def _children(self, el) -> list:
        """The element children of ``el``, in order (:func:`_elements`), with
        :func:`_only_whitespace`'s check made in the same pass over the child nodes: its error
        (the first text content of ``el``) is kept as :meth:`collect` keeps it."""
        text = el.text
        if text and text.strip():
            self.collect(_only_whitespace, el, self.path)
            return _elements(el)
        kids = []
        bad = False
        for child in el:
            if not bad:
                tail = child.tail
                if tail and tail.strip():
                    bad = True
            if child.tag.__class__ is str:
                kids.append(child)
        if bad:
            self.collect(_only_whitespace, el, self.path)
        return kids

    def err(self, message: str, el=None) -> ConfigError:
        return ConfigError(message, self.path, el.sourceline if el is not None else None)

    def collect(self, fn, *args) -> bool:
        """Run ``fn(*args)`` for one element; a ConfigError it raises is kept (the element is
        left out) and validation goes on with the next element, so that every error of the
        file is reported. True when it succeeded."""
        try:
            fn(*args)
            return True
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return False

    def build(self, root) -> Config:
        if root.tag != "Sysmon":
            raise self.err(f"root element must be <Sysmon>, found <{root.tag}>", root)
        _check_attrs(root, ("schemaversion",), self.path)
        sv = root.get("schemaversion")
        if sv is None:
            raise self.err("attribute schemaversion of element Sysmon is required", root)
        try:
            version = parse_version(sv)
            schema = get_schema(version)
        except (ValueError, SchemaVersionError) as exc:
            msg = str(exc)
            if "Invalid schema version" in msg:
                msg = f"Invalid schema version number ({sv})  for configuration: {self.path}"
            raise self.err(msg, root) from None
        # extensions on: every catalogue event and the enrichment fields; off: Sysmon's own
        schema = extended(schema) if self.extensions else sysmon_only(schema)
        cfg = Config(self.path, self.sha256, version, schema)
        self.collect(_only_whitespace, root, self.path)
        state = {"options_stopped": False}
        for child in _elements(root):
            self.collect(self._top, child, cfg, schema, state)
        if self.errors:
            first, *others = sorted(self.errors, key=lambda e: e.line or 0)
            raise ConfigError(first.message, first.path, first.line, others)
        return cfg

    def _top(self, child, cfg: Config, schema: Schema, state: dict) -> None:
        """One child of ``<Sysmon>``: EventFiltering or a configuration entry."""
        if child.tag == "EventFiltering":
            _check_attrs(child, (), self.path)
            self.collect(_only_whitespace, child, self.path)
            self._event_filtering(child, cfg, schema)
        elif child.tag in schema.extension_entries:
            self._extension_option(child, cfg)
        elif child.tag in schema.config_entries:
            _check_attrs(child, (), self.path)
            if _elements(child):
                raise self.err(f"Element {child.tag} may only contain text", child)
            if state["options_stopped"]:
                return
            value = _text_of(child)
            if value == "" and self.empty_option_quirk:
                state["options_stopped"] = True
                cfg.warnings.append(ConfigWarning(
                    f"empty <{child.tag}/> stops option processing (libxml2 quirk mode)",
                    self.path, child.sourceline))
                return
            self._option(child, value, cfg)
        else:
            allowed = ", ".join(sorted(schema.config_entries | {"EventFiltering"}))
            raise self.err(f"Element Sysmon content does not follow the DTD: unknown element "
                           f"<{child.tag}> for schema {schema.version_text} (expecting one "
                           f"of {allowed})", child)

    def _extension_option(self, el, cfg: Config) -> None:
        """One SysmonX configuration entry (``Schema.extension_entries``): refused with
        extensions off, its value validated, kept in ``cfg.options`` (last one wins, as for
        Sysmon's options). Raises ConfigError with the element's line."""
        name = el.tag
        if not self.extensions:
            raise self.err(f"<{name}> is a SysmonX option, not Sysmon's; SysmonX extensions are "
                           "disabled", el)
        _check_attrs(el, (), self.path)
        if _elements(el):
            raise self.err(f"Element {name} may only contain text", el)
        value = _text_of(el).strip()
        try:
            if name == "HeartbeatInterval":
                cfg.heartbeat_interval = parse_heartbeat_interval(value)
            elif name == "YaraRules":
                if not value:
                    raise ValueError("empty: name a YARA rule file or folder")
                if self.path != "<string>":
                    value = str(Path(self.path).parent / Path(value).expanduser())
        except ValueError as exc:
            raise self.err(f"<{name}>: {exc}", el) from None
        cfg.options[name] = value

    def _option(self, el, value: str, cfg: Config) -> None:
        name = el.tag
        opt = next((o for o in cfg.schema.options if o.name == name or o.name + "Config" == name),
                   None)
        if opt is not None and opt.argument == "none" and value in _FALSE_FLAGS:
            return  # "not set" (exact strings, as Sysmon's strcmp); an earlier setting stays
        try:
            if name == "HashAlgorithms":
                cfg.hash_algorithms = parse_hash_algorithms(value)
            elif name == "FieldSizes":
                cfg.field_sizes = parse_field_sizes(value)
            elif name == "ArchiveDirectory" and "\\" in value:
                raise ValueError("Archive directory must be a single path component.")
        except ValueError as exc:
            raise self.err(str(exc), el) from None
        cfg.options[name] = value

    def _event_filtering(self, ef, cfg: Config, schema: Schema) -> None:
        for child in _elements(ef):
            if child.tag == "RuleGroup":
                self.collect(self._rule_group, child, cfg, schema)
            else:
                self.collect(self._tag, child, cfg, schema, None, None)

    def _rule_group(self, child, cfg: Config, schema: Schema) -> None:
        _check_attrs(child, ("name", "groupRelation"), self.path)
        rel = child.get("groupRelation")
        if rel is None:
            raise self.err("attribute groupRelation of element RuleGroup is required", child)
        if rel not in ("and", "or"):
            raise self.err(f'Value "{rel}" for attribute groupRelation of RuleGroup is '
                           "not among the enumerated set (and|or)", child)
        gname = child.get("name")
        self.collect(_only_whitespace, child, self.path)
        for tag_el in _elements(child):
            self.collect(self._tag, tag_el, cfg, schema, rel, gname)

    def _scanners(self, el, onmatch: Optional[str]) -> tuple:
        """The SysmonX ``scanners="NAME,NAME"`` attribute of ``el`` as a tuple of names (``()``
        when absent). ``onmatch`` is the enclosing set's for a filter or ``<Rule>`` (``None`` for
        the tag itself). Raises ConfigError: an unknown scanner, an empty list, or scanners on
        a rule of an exclude set (an exclude rule never includes an event)."""
        raw = el.get("scanners")
        if raw is None:
            return ()
        if onmatch == "exclude":
            raise self.err(f'scanners="{raw}" on <{el.tag}> of an onmatch="exclude" set: an '
                           "exclude rule never includes an event (put it on the tag, or on a "
                           "rule of an include set)", el)
        try:
            return parse_scanner_list(raw)
        except ValueError as exc:
            raise self.err(f"<{el.tag}>: {exc}", el) from None

    def _rule_scanners(self, el, onmatch: str, into: list) -> None:
        into.extend(self._scanners(el, onmatch))

    def _check_name(self, name: Optional[str], el) -> None:
        # Sysmon measures the name in UTF-8 bytes (spec/rule-blob.md section 6.5); a character
        # takes at most 4 of them
        if name is not None and len(name) * 4 > MAX_RULE_NAME \
                and len(name.encode("utf-8", "surrogatepass")) > MAX_RULE_NAME:
            raise self.err(f"Rule name is larger than {MAX_RULE_NAME} characters: {name}", el)

    def _condition(self, el) -> str:
        raw = el.get("condition")
        if raw is None or raw == "":
            return "is"
        key = raw.lower()
        if key not in self.conditions and not self.all_conditions:
            # not Sysmon's nor a built-in one: a plugin's (an entry point) or none
            self.all_conditions = True
            self.extensions_in_use = extension_conditions()
            self.conditions.update({c: c for c in self.extensions_in_use})
        if key in self.conditions:
            return self.conditions[key]
        expected = ", ".join(CONDITIONS)
        msg = f"Unknown condition: {raw}\nExpected values are {expected}"  # Sysmon's words
        # SysmonX's own conditions, from the registry (regex and any plugin's)
        if self.extensions_in_use:
            msg += "\nSysmonX extensions also accepted: " + ", ".join(self.extensions_in_use)
        elif key in extension_conditions():
            msg += (f"\n{key} is a SysmonX extension, refused while extensions are off "
                    "(--no-extensions)")
        close = difflib.get_close_matches(key, [*CONDITIONS, *self.extensions_in_use], n=1,
                                          cutoff=0.75)
        if close and key not in extension_conditions():
            msg += f'\nDid you mean condition="{close[0]}"?'
        raise self.err(msg, el)

    def _filter(self, el, allowed: frozenset, tag_label: str, inherited: Optional[str],
                aggregate: int, onmatch: Optional[str] = None) -> Filter:
        # checks in this order (the first that fails is the error): field, attributes,
        # element content, scanners, name, condition; attributes read once
        tag = el.tag
        if tag not in allowed:
            msg = (f"Element {tag} is not a field of {tag_label} in schema "
                   f"(No declaration for element {tag})")
            if not self.extensions and tag in ENRICHMENT_FIELD_NAMES:  # as for regex
                msg += (f"\n{tag} is a SysmonX extension (an enrichment field), refused while "
                        "extensions are off (--no-extensions)")
            elif isinstance(tag, str):  # as for conditions: the nearest field of this event
                folded = {a.lower(): a for a in allowed}
                close = difflib.get_close_matches(tag.lower(), sorted(folded), n=1,
                                                  cutoff=0.75)
                if close:
                    msg += f"\nDid you mean <{folded[close[0]]}>?"
            raise self.err(msg, el)
        keys = el.keys()
        own = raw_cond = None
        if keys:
            filter_attrs = self.filter_attrs
            for key in keys:
                if key not in filter_attrs:
                    _check_attrs(el, filter_attrs, self.path)  # raises, as for any element
            own, raw_cond = el.get("name"), el.get("condition")
        if len(el):
            if _elements(el):
                raise self.err(f"Field element {tag} may only contain text", el)
            value = _text_of(el)
        else:
            value = el.text or ""  # _text_of of an element without children
        scanners = self._scanners(el, onmatch) if "scanners" in keys else ()
        name = own if own is not None else (inherited if inherited is not None else "")
        # Sysmon checks the name each filter ends up with (own or inherited), not the
        # RuleGroup/Rule attributes themselves (xml.cpp; spec 1.4).
        if name and len(name) * 4 > MAX_RULE_NAME:
            self._check_name(name, el)
        if raw_cond is None or raw_cond == "":
            cond = "is"
        else:
            cond = self.conditions.get(raw_cond.lower()) or self._condition(el)
        ext = self.extensions_in_use.get(cond)
        if ext is not None:
            n = self.counts[cond] = self.counts.get(cond, 0) + 1
            if ext.max_per_config is not None and n > ext.max_per_config:
                raise self.err(f"more than {ext.max_per_config} {cond} filters in one "
                               "configuration", el)
            if ext.validate is not None:
                try:
                    ext.validate(value)
                except ValueError as exc:
                    parent = el.getparent()
                    if parent is not None and parent.tag == "Rule":
                        parent = parent.getparent()
                    where = f"<{parent.tag if parent is not None else tag_label}"
                    where += f' onmatch="{onmatch}">' if onmatch else ">"
                    if name:
                        where += f" rule {name!r}"
                    raise self.err(f"invalid {cond} for {el.tag} in {where}: {exc}",
                                   el) from None
        return _new_filter(tag, cond, value, name, aggregate, el.sourceline, scanners)

    def _tag(self, el, cfg: Config, schema: Schema, group_rel: Optional[str],
             group_name: Optional[str]) -> None:
        tag = el.tag
        if tag not in schema.tags:
            full = get_schema(cfg.schema_version)  # with the extension events
            if not self.extensions and tag in full.tags:  # schema is sysmon_only(full)
                raise self.err(f"<{tag}> filters a SysmonX event (EventID "
                               f"{full.tags[tag][0]}); SysmonX extensions are disabled", el)
            known = ", ".join(sorted(schema.tags))
            msg = (f"Unknown event tag <{tag}> for schema {schema.version_text} "
                   f"(expecting one of {known})")
            if isinstance(tag, str):  # as for fields: the nearest event tag of this schema
                folded = {t.lower(): t for t in schema.tags}
                close = difflib.get_close_matches(tag.lower(), sorted(folded), n=1,
                                                  cutoff=0.75)
                if close:
                    msg += f"\nDid you mean <{folded[close[0]]}>?"
            raise self.err(msg, el)
        _check_attrs(el, ("onmatch", "default") + self.scan_attr, self.path)
        onmatch, default = el.get("onmatch"), el.get("default")
        for attr, v in (("onmatch", onmatch), ("default", default)):
            if v is not None and v not in ("include", "exclude"):
                raise self.err(f'Value "{v}" for attribute {attr} of {tag} is not among the '
                               "enumerated set (include|exclude)", el)
        if onmatch is not None and default is not None:
            cfg.warnings.append(ConfigWarning(
                f"Error: Can't specify onmatch and default on <{tag}> (pick only one); "
                "element skipped as Sysmon does", self.path, el.sourceline))
            return
        if onmatch is None and default is None:
            cfg.warnings.append(ConfigWarning(
                f"Error: You need to specifiy the onmatch attribute on <{tag}>; element skipped "
                "as Sysmon does", self.path, el.sourceline))
            return
        if tag in self.skipped_tags:
            cfg.warnings.append(ConfigWarning(
                f"<{tag}> skipped: an earlier <{tag}> had an incorrect field, and Sysmon skips "
                "the remaining elements of that tag", self.path, el.sourceline))
            return
        if onmatch is None:
            onmatch = "include" if default == "exclude" else "exclude"
        set_scanners = self._scanners(el, None)
        if group_rel is not None:
            relation = "or" if group_rel.lower() == "or" else "and"
        else:
            relation = "and" if cfg.schema_version > (4, 10) else "or"
        kids = self._children(el)
        tag_fields = schema.tag_fields[tag]
        filters: list[Filter] = []
        aggregates: dict[int, Aggregate] = {}
        before = len(self.errors)

        inline = _COMMON_FILTERS_INLINE
        conditions = self.conditions  # updated in place when plugins' conditions are read
        new_filter = _new_filter

        def slow(f, allowed, label, inherited, agg_id, into) -> None:
            # self.collect(self._filter, ...) inlined: an error is kept, the filter left out
            try:
                into.append(self._filter(f, allowed, label, inherited, agg_id, onmatch))
            except ConfigError as exc:
                self.errors.extend(exc.errors)

        def run(elements, allowed, label, inherited, agg_id, into) -> None:
            # The common filter (a field of the event, no child nodes, no attribute but
            # condition and name, a condition known and not an extension's, a short name) is
            # built here; anything else goes through _filter, which checks and reports it.
            # Both give the same Filter.
            for f in elements:
                if inline and f.tag in allowed and not len(f):
                    raw_cond = own = None
                    for key, v in f.items():
                        if key == "condition":
                            raw_cond = v
                        elif key == "name":
                            own = v
                        else:
                            break
                    else:
                        cond = conditions.get(raw_cond.lower()) if raw_cond else "is"
                        name = own if own is not None else (inherited if inherited is not None
                                                            else "")
                        # the name's UTF-8 length is at most 4 per character, its length if
                        # ASCII
                        if cond is not None and cond not in self.extensions_in_use and (
                                len(name) * 4 <= MAX_RULE_NAME
                                or (len(name) <= MAX_RULE_NAME and name.isascii())):
                            into.append(new_filter(f.tag, cond, f.text or "", name, agg_id,
                                                   f.sourceline, ()))
                            continue
                slow(f, allowed, label, inherited, agg_id, into)

        top: list = []  # consecutive top-level filters, read in one run
        for child in kids:
            if child.tag == "Rule":
                if top:
                    run(top, tag_fields, tag, group_name, 0, filters)
                    top = []
                if not self.collect(_check_attrs, child, ("name", "groupRelation") + self.scan_attr,
                                    self.path):
                    continue
                rule_scanners: list = []
                if not self.collect(self._rule_scanners, child, onmatch, rule_scanners):
                    continue
                rule_kids = self._children(child)
                rname = child.get("name")
                rrel = child.get("groupRelation")
                rrel = "or" if rrel is None or rrel.lower() == "or" else "and"
                agg = Aggregate(self.next_aggregate, rrel, rname, child.sourceline,
                                tuple(rule_scanners))
                self.next_aggregate += 1
                inherited = rname if rname is not None else group_name
                members: list = []
                run(rule_kids, schema.all_fields, "Rule", inherited, agg.id, members)
                if members:
                    aggregates[agg.id] = agg
                    filters.extend(members)
            else:
                top.append(child)
        if top:
            run(top, tag_fields, tag, group_name, 0, filters)
        if len(self.errors) > before:
            return  # the file is refused anyway; the rest of the tag was still checked
        # Bind multi-id tags to the first id whose fields contain every field used (spec 1.5).
        used = {f.field for f in filters} - ENRICHMENT_FIELD_NAMES
        bound = None
        for eid in CURRENT.tags.get(tag, ()):
            if used <= set(CURRENT.events[eid].field_names):
                bound = eid
                break
        if bound is None:
            ids = CURRENT.tags.get(tag, ())
            missing = sorted(used - set(CURRENT.events[ids[0]].field_names)) if ids else used
            cfg.warnings.append(ConfigWarning(
                f"Incorrect field {', '.join(missing)} for <{tag}>: no single event of the tag has "
                "all the fields used; this and the remaining elements of the tag are skipped as "
                "Sysmon does", self.path, el.sourceline))
            self.skipped_tags.add(tag)
            return
        cfg.rule_sets.append(RuleSet(tag, bound, onmatch, relation, filters, aggregates,
                                     group_name, el.sourceline, set_scanners))
