"""Sysmon's compiled rule blob: encoder (config -> blob), decoder (blob -> XML), ``.reg`` I/O.

The blob is what ``sysmon -i/-c`` stores in the registry value
``HKLM\\SYSTEM\\CurrentControlSet\\Services\\SysmonDrv\\Parameters\\Rules`` (Windows) or in
``/opt/sysmon/rules.bin`` (Linux). It holds only the ``<EventFiltering>`` rules plus the config's
schema version. The format, its quirks and the golden files are described in
``shared/spec/rule-blob.md`` (quoted below as "blob spec §N").

Public API:

* :func:`compile_blob` - :class:`~sysmonx.configmodel.Config` -> blob bytes, byte-identical to
  Sysmon (all 136 SysmonCommon golden blobs).
* :func:`decode_blob` - blob bytes -> :class:`DecodedBlob`; :func:`blob_to_xml` - blob bytes ->
  equivalent Sysmon XML config (``compile_blob(parse_config(blob_to_xml(b))) == b``).
* :func:`read_blob_file` - a raw blob or a ``regedit`` export (``.reg``) holding the ``Rules``
  value -> blob bytes; :func:`format_reg` - blob bytes -> ``.reg`` text.
* :func:`blob_schema` / :func:`blob_field_index` - the field lists the blob's ``FieldId`` indexes.

Field indices are positions in the **compiling binary's** manifest, not in the config's schema
(blob spec §7). The golden blobs were compiled by binary 15.0, whose newest manifest is schema
4.70, so :func:`blob_schema` maps a binary version to the newest schema of that binary and takes
the field lists from :func:`sysmonx.schema.get_schema` (fields are only ever appended, so the
indices of fields that exist in both equal those of :data:`sysmonx.schema.CURRENT`).

Decoding never trusts a length, count or offset: every one is checked against the bytes that are
actually there before it is used, chains must move strictly forward through the blob (so cycles
and overlapping records are impossible) and all work is linear in the blob size. Every problem is a
:class:`BlobError` carrying the byte offset of the offending field.
"""

from __future__ import annotations

import codecs
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..schema import CONDITIONS, Schema, format_version, get_schema, parse_version
from ..schema.catalogue import SCHEMA_VERSIONS, Version
from ..core.errors import BlobError as _BlobError
from ..configmodel import Config

__all__ = [
    "BlobError", "DecodedAggregation", "DecodedFilter", "DecodedRuleSet", "DecodedBlob",
    "compile_blob", "decode_blob", "blob_to_xml", "read_blob_file", "parse_reg", "format_reg",
    "blob_schema", "blob_field_index", "binary_version_for_schema",
    "GOLDEN_BINARY_VERSION", "SUPPORTED_BINARY_MAJORS", "MAX_BLOB_BYTES",
]

#: Binary version of the Sysmon that compiled the SysmonCommon golden blobs (blob spec §3.2).
GOLDEN_BINARY_VERSION: Version = (15, 0)
#: Binary majors whose layout and operator codes are known to be those of blob spec §3-§4
#: (13.0 numbers its 14 operators as §4.4; 14.0 froze the codes; 15-18 share the layout, §12).
SUPPORTED_BINARY_MAJORS = range(13, 19)
#: Largest blob :func:`read_blob_file` accepts (a ``.reg`` file may be 8 times as large).
MAX_BLOB_BYTES = 32 * 1024 * 1024

# Record sizes (blob spec §3.1, §4).
_HEADER = 24
_RULESET = 24
_FILTER_FIXED = 0x218          # fixed part before Data
_FILTER_STRUCT = 537           # sizeof(struct) the compiler copies: 536 + 1 placeholder byte
_AGG = 292                     # aggregation record as written
_AGG_ALIGNED = 296
_NAME_UNITS = 256              # filter Name buffer (UTF-16 units)
_AGG_NAME_UNITS = 128          # aggregation name buffer
_MAX_NAME_UTF8 = 255
_ENV_FLAG = 0x40000000         # runtime-only FilterType flag (blob spec §4.4)
_GROW = 4096                   # allocation step of the compiler's buffer (blob spec §8.2)

_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BlobError(_BlobError):
    """A rule blob (or ``.reg`` export) that cannot be decoded, or a config that cannot be encoded
    (a :class:`~sysmonx.core.errors.BlobError`, so a ``ValueError``).

    Attributes:
        message: what is wrong.
        offset: byte offset in the blob of the offending field, or ``None`` (encoding errors,
            ``.reg`` syntax errors, which name the line in ``message``).
    """

    def __init__(self, message: str, offset: Optional[int] = None):
        self.offset = offset
        super().__init__(message)

    def __str__(self) -> str:
        if self.offset is None:
            return self.message
        return f"rule blob offset {self.offset} (0x{self.offset:x}): {self.message}"

    def __reduce__(self) -> tuple:
        return (type(self), (self.message, self.offset))


# --------------------------------------------------------------------------------------------
# Binary version -> field lists (blob spec §3.2, §7, §12)

def _norm_binary(version: "str | Version | int") -> Version:
    if isinstance(version, int):
        return (version, 0)
    if isinstance(version, str):
        try:
            return parse_version(version)
        except ValueError as exc:
            raise BlobError(f"invalid binary version {version!r}: {exc}") from None
    major, minor = version
    return (int(major), int(minor))


def _binary_major(text: str) -> int:
    return int(text.split(".")[0])


def blob_schema(binary_version: "str | Version | int" = GOLDEN_BINARY_VERSION) -> Schema:
    """The schema whose event field lists a Sysmon binary of ``binary_version`` compiles with.

    That is the newest schema whose manifest ``binaryversion`` has the same major (binary 15.0 ->
    schema 4.70, 16 -> 4.81, 17 -> 4.83, 18 -> 4.91; blob spec §3.2 and §7: "the field index is
    the position in the compiling binary's newest manifest").

    Args:
        binary_version: ``"15.0"``, ``(15, 0)`` or ``15``.
    Returns:
        a :class:`~sysmonx.schema.Schema`; ``schema.events[id].field_names[FieldId]`` is the field.
    Raises:
        BlobError: a major outside :data:`SUPPORTED_BINARY_MAJORS`.
    """
    major = _norm_binary(binary_version)[0]
    if major not in SUPPORTED_BINARY_MAJORS:
        raise BlobError(f"unsupported binary version major {major} (supported: "
                        f"{SUPPORTED_BINARY_MAJORS.start}-{SUPPORTED_BINARY_MAJORS.stop - 1})")
    versions = [v for v, b in SCHEMA_VERSIONS if _binary_major(b) == major]
    return get_schema(max(versions))


def binary_version_for_schema(schema_version: Version) -> Version:
    """The binary version :func:`compile_blob` writes by default for a config of ``schema_version``.

    15.0 (the golden files, blob spec §3.2) for schemas up to 4.70; for newer schemas the oldest
    binary that accepts them (4.80/4.81 -> 16, 4.82/4.83 -> 17, 4.90/4.91 -> 18), since an older
    Sysmon refuses such a config.
    """
    if schema_version <= blob_schema(GOLDEN_BINARY_VERSION).version:
        return GOLDEN_BINARY_VERSION
    for v, b in SCHEMA_VERSIONS:
        if v >= schema_version:
            return (_binary_major(b), 0)
    raise BlobError(f"no known Sysmon binary accepts schema {format_version(schema_version)}")


def blob_field_index(event_id: int, field_name: str,
                     binary_version: "str | Version | int" = GOLDEN_BINARY_VERSION) -> int:
    """``FieldId`` of ``field_name`` (case-sensitive) in event ``event_id`` for that binary.

    Raises:
        KeyError: the event or the field does not exist in that binary's manifest.
        BlobError: unsupported binary version.
    """
    return blob_schema(binary_version).events[event_id].index[field_name]


def _tag_series(schema: Schema) -> list[tuple[str, tuple[int, ...]]]:
    # Manifest order of tags and their id series (blob spec §6.2 step 1).
    return [(tag, ids) for tag, ids in schema.tags.items()]


# --------------------------------------------------------------------------------------------
# Encoder (blob spec §6, §8)

@dataclass
class _Member:
    field: str
    code: int
    value: bytes    # UTF-16LE + NUL
    name: bytes     # 512-byte buffer


@dataclass
class _RuleEl:
    name: bytes     # 256-byte buffer
    combine: int
    members: list


@dataclass
class _Element:
    tag: str
    rule_default: int
    combine: int
    children: list  # _Member | _RuleEl


def _utf16(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise BlobError(f"{what} {text!r} is not valid Unicode (lone surrogate at character "
                        f"{exc.start})") from None


def _name_buffer(name: str) -> bytes:
    # blob spec §6.5: > 255 UTF-8 bytes fails; stored NUL-terminated in 256 units, zero filled.
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_UTF8:
        raise BlobError(f"Rule name is larger than {_MAX_NAME_UTF8} characters: {name}")
    raw = _utf16(name, "rule name")
    return raw.ljust(_NAME_UNITS * 2, b"\0")


def _agg_name_buffer(name: Optional[str]) -> bytes:
    # blob spec §4.3 / §11: cut to 127 units; a surrogate pair that would be split is dropped
    # whole (SysmonForLinux's converter; valid UTF-16, so the blob decodes back).
    raw = _utf16(name or "", "Rule name")[:(_AGG_NAME_UNITS - 1) * 2]
    if len(raw) >= 2 and 0xD800 <= struct.unpack_from("<H", raw, len(raw) - 2)[0] <= 0xDBFF:
        raw = raw[:-2]
    return raw.ljust(_AGG_NAME_UNITS * 2, b"\0")


def _condition_code(condition: str, binary: Version) -> int:
    try:
        code = CONDITIONS.index(condition)
    except ValueError:
        raise BlobError(f"condition {condition!r} has no rule-blob encoding (SysmonX extension "
                        "or unknown operator)") from None
    if code >= 14 and binary[0] < 15:
        raise BlobError(f"condition {condition!r} needs binary version 15 or later")
    return code


def _elements_from_config(config: Config, binary: Version) -> list[_Element]:
    out = []
    for rs in config.rule_sets:
        if getattr(config.schema.events.get(rs.event_id), "extension", False):
            raise BlobError(f"<{rs.tag}> (line {rs.line}) filters SysmonX event {rs.event_id}, "
                            "which Sysmon's rule blob cannot hold")
        children: list = []
        current: Optional[_RuleEl] = None
        current_id = 0
        for f in rs.filters:
            m = _Member(f.field, _condition_code(f.condition, binary),
                        _utf16(f.value, f"value of {f.field}") + b"\0\0", _name_buffer(f.name))
            if not f.aggregate:
                children.append(m)
                current, current_id = None, 0
                continue
            if current is None or f.aggregate != current_id:
                agg = rs.aggregates.get(f.aggregate)
                current = _RuleEl(_agg_name_buffer(agg.name if agg else None),
                                  1 if agg is not None and agg.relation == "and" else 0, [])
                children.append(current)
                current_id = f.aggregate
            current.members.append(m)
        out.append(_Element(rs.tag, 1 if rs.onmatch == "include" else 0,
                            1 if rs.relation == "and" else 0, children))
    return out


class _Compiler:
    """Sysmon's RuleBuilder with its exact memory behaviour (blob spec §6.6 and §8.2).

    ``buf`` is the allocation (``len(buf)`` = alloc), ``end`` the logical size. Padding is never
    written; growth zeroes ``buf[end:]``; an undone first rule set drops the allocation.
    """

    def __init__(self, binary: Version, schema_version: Version, schema: Schema):
        self.binary = binary
        self.schema_version = schema_version
        self.schema = schema
        self.buf = bytearray()
        self.end = 0
        self.rule_count = 0
        self.last_event = 0
        self.last_filter = 0
        self.last_agg = 0
        self.agg_counter = 0

    # memory primitives
    def _write(self, record: bytes, aligned: int) -> int:
        if aligned > len(self.buf) - self.end:
            self.buf.extend(bytes(max(aligned, _GROW)))
            self.buf[self.end:] = bytes(len(self.buf) - self.end)
        off = self.end
        self.buf[off:off + len(record)] = record
        self.end += aligned
        return off

    def _put(self, off: int, value: int) -> None:
        # A patch outside the allocation would hit freed/foreign memory in Sysmon; it can only
        # happen through a stale pointer and is then overwritten by the next record, so drop it.
        if 0 <= off and off + 4 <= len(self.buf):
            struct.pack_into("<I", self.buf, off, value)

    def _get(self, off: int) -> int:
        return struct.unpack_from("<I", self.buf, off)[0]

    # records
    def _add_rule_set(self, event_id: int, el: _Element) -> int:
        if self.end == 0:
            self._write(struct.pack("<6I", (self.binary[0] << 16) | self.binary[1], 0, _HEADER,
                                    (self.schema_version[0] << 16) | self.schema_version[1],
                                    _HEADER, 0), _HEADER)
        else:
            self._put(self.last_event + 0x0C, self.end)
        off = self._write(struct.pack("<6I", event_id, el.rule_default, el.combine, 0, 0, 0),
                          _RULESET)
        self.rule_count += 1
        self._put(4, self.rule_count)
        self.last_event = off
        self.last_filter = 0
        return off

    def _add_aggregation(self, rule: _RuleEl) -> tuple[int, int]:
        self.agg_counter += 1
        if self.last_agg:
            self._put(self.last_agg + 0x110, self.end)
        else:
            self._put(0x14, self.end)
        rec = rule.name + struct.pack("<Q7I", 0, self.agg_counter, 0, 0, 0, rule.combine, 0, 0)
        off = self._write(rec, _AGG_ALIGNED)
        self.last_agg = off
        return self.agg_counter, off

    def _add_filter(self, rs_off: int, fields: dict, m: _Member, agg_id: int,
                    agg_off: int) -> bool:
        index = fields.get(m.field)
        if index is None:
            return False
        if self.last_filter:
            self._put(self.last_filter + 0x208, self.end)
        self.last_filter = self.end
        if agg_id:
            if self._get(agg_off + 0x10C) == 0:
                self._put(agg_off + 0x10C, self.end)
            self._put(agg_off + 0x114, self._get(agg_off + 0x114) + 1)
        if self._get(rs_off + 0x14) == 0:
            self._put(rs_off + 0x14, self.end)
        rec = (struct.pack("<I", index) + m.name
               + struct.pack("<5I", m.code, 0, len(m.value), agg_id, self.last_agg if agg_id else 0)
               + m.value + b"\0")
        self._write(rec, (len(rec) + 7) & ~7)
        self._put(rs_off + 0x10, self._get(rs_off + 0x10) + 1)
        return True

    def attempt(self, event_id: int, el: _Element) -> bool:
        """Write ``el`` bound to ``event_id``; on a missing field undo it (blob spec §8.2)."""
        saved = (self.end, self.rule_count, self.last_event, self.last_filter)
        first = self.end == 0
        rs_off = self._add_rule_set(event_id, el)
        fields = self.schema.events[event_id].index
        ok = True
        for child in el.children:
            if isinstance(child, _RuleEl):
                agg_id, agg_off = self._add_aggregation(child)
                for m in child.members:
                    if not self._add_filter(rs_off, fields, m, agg_id, agg_off):
                        ok = False
                        break
            elif not self._add_filter(rs_off, fields, child, 0, 0):
                ok = False
            if not ok:
                break
        if ok:
            return True
        if first:
            self.buf, self.end = bytearray(), 0
            self.rule_count, self.last_event, self.last_filter = 0, 0, 0
        else:
            self.end, self.rule_count, self.last_event, self.last_filter = saved
            self._put(4, self.rule_count)
        return False

    def run(self, elements: list[_Element]) -> bytes:
        by_tag: dict[str, list[_Element]] = {}
        for el in elements:
            if el.tag not in self.schema.tags:
                raise BlobError(f"event tag <{el.tag}> does not exist in binary "
                                f"{self.binary[0]}.{self.binary[1]}")
            by_tag.setdefault(el.tag, []).append(el)
        for tag, ids in _tag_series(self.schema):
            for el in by_tag.get(tag, ()):
                if not any(self.attempt(eid, el) for eid in ids):
                    break  # "Incorrect field": the remaining elements of the tag are skipped
        return bytes(self.buf[:self.end])


def compile_blob(config: Config,
                 binary_version: "str | Version | int | None" = None) -> bytes:
    """Compile a loaded config into Sysmon's rule blob, byte for byte as Sysmon writes it.

    Implements blob spec §6 (rule sets grouped by tag in manifest order, document order within a
    tag; multi-id binding by trial and undo; name inheritance as already resolved by the parser;
    aggregation records before their Rule's first filter) and the exact memory model of §8.2
    (aggregation ids used up by undone attempts, header ``FirstAggregationOffset`` left 0 after an
    undone first rule set, never-written padding).

    Args:
        config: from :func:`sysmonx.config.load_config` / ``parse_config``.
        binary_version: the compiling Sysmon's binary version, written in the header and deciding
            the field indices (§7). ``None``: :func:`binary_version_for_schema` of the config's
            schema (15.0, as in the golden files, for schemas up to 4.70).
    Returns:
        the blob (``b""`` when no rule set survives, as Sysmon writes no blob then, §1).
    Raises:
        BlobError: the config cannot be encoded: a ``regex`` condition or a SysmonX event tag
            (``<ScannerFinding>``; SysmonX only), a RuleName
            above 255 UTF-8 bytes (Sysmon's own check), a schema newer than the binary, an
            unsupported binary version.

    ``scanners="..."`` attributes are SysmonX's and have no place in a blob: they are left out
    (Sysmon filters the same; it does not scan).

    Limits (what :class:`Config` does not keep, so Sysmon's bytes cannot be rebuilt from it):
    ``<Rule>`` elements without element children (Sysmon writes an empty aggregation record,
    §6.4) and tag elements the parser dropped with an "Incorrect field" warning (Sysmon also
    skips the later elements of that tag and leaves stale bytes, §8.2 item 4). Elements that fail
    only against the binary's older field lists are handled exactly.
    """
    binary = (binary_version_for_schema(config.schema_version) if binary_version is None
              else _norm_binary(binary_version))
    schema = blob_schema(binary)
    if config.schema_version > schema.version:
        raise BlobError(f"schema {format_version(config.schema_version)} is newer than binary "
                        f"{binary[0]}.{binary[1]} (schema {schema.version_text}) accepts")
    if not (0 <= config.schema_version[0] <= 0xFFFF and 0 <= config.schema_version[1] <= 99):
        raise BlobError(f"schema version {config.schema_version} cannot be encoded")
    compiler = _Compiler(binary, config.schema_version, schema)
    return compiler.run(_elements_from_config(config, binary))


# --------------------------------------------------------------------------------------------
# Decoder (blob spec §10)

@dataclass(frozen=True)
class DecodedAggregation:
    """An aggregation record (``<Rule>``, blob spec §4.3).

    ``relation`` is ``"and"``/``"or"``; ``name`` the stored name (≤ 127 UTF-16 units, ``""`` when
    none); ``rule_count``/``root_offset``/``next_offset`` as stored (not needed to rebuild XML).
    """

    offset: int
    id: int
    name: str
    relation: str
    rule_count: int
    root_offset: int
    next_offset: int


@dataclass(frozen=True)
class DecodedFilter:
    """A filter record (blob spec §4.2).

    ``field`` is the name of ``field_id`` in the bound event for the blob's binary;
    ``condition`` the operator name of ``code`` (§4.4); ``name`` the stored RuleName (inherited
    names are explicit here); ``aggregation`` the ``<Rule>`` it belongs to, or ``None``.
    """

    offset: int
    field_id: int
    field: str
    code: int
    condition: str
    name: str
    value: str
    aggregation: Optional[DecodedAggregation] = None


@dataclass
class DecodedRuleSet:
    """A rule-set record (one event-tag element, blob spec §4.1) with its filters in chain order.

    ``onmatch`` is ``include`` (``RuleDefault`` 1) or ``exclude`` (0); ``relation`` the top-level
    combine type ``and``/``or``.
    """

    offset: int
    event_id: int
    tag: str
    onmatch: str
    relation: str
    filters: list[DecodedFilter] = field(default_factory=list)

    def groups(self) -> list[tuple[Optional[DecodedAggregation], list[DecodedFilter]]]:
        """Filters split into runs: ``(None, [f])`` for a top-level filter, ``(agg, [f, ...])``
        for each maximal run of consecutive filters of one ``<Rule>`` (blob spec §10.2)."""
        out: list = []
        for f in self.filters:
            agg = f.aggregation
            if agg is not None and out and out[-1][0] is not None and out[-1][0].id == agg.id:
                out[-1][1].append(f)
            else:
                out.append((agg, [f]))
        return out


@dataclass
class DecodedBlob:
    """A decoded rule blob.

    Attributes:
        binary_version: ``(15, 0)``; schema_version: ``(4, 70)``.
        rule_sets: in blob order.
        first_aggregation_offset: header value as stored (may be 0 although Rules exist, §8.2).
        size: blob length in bytes.
    """

    binary_version: Version
    schema_version: Version
    rule_sets: list[DecodedRuleSet]
    first_aggregation_offset: int
    size: int

    @property
    def aggregations(self) -> list[DecodedAggregation]:
        """Aggregation records referenced by filters, in first-reference order."""
        seen: dict[int, DecodedAggregation] = {}
        for rs in self.rule_sets:
            for f in rs.filters:
                if f.aggregation is not None:
                    seen.setdefault(f.aggregation.offset, f.aggregation)
        return list(seen.values())

    def to_xml(self) -> str:
        """Equivalent Sysmon XML config (see :func:`blob_to_xml`)."""
        return _render_xml(self)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def need(self, off: int, length: int, what: str, ptr_at: Optional[int] = None) -> None:
        """Check ``[off, off + length)`` lies in the blob. A record that starts outside the blob
        is reported at the pointer that led there (``ptr_at``), one that is cut short at ``off``."""
        if off < 0 or length < 0 or off + length > self.size:
            where = ptr_at if ptr_at is not None and off >= self.size else off
            raise BlobError(f"{what} needs {length} bytes at offset {off} but the blob is "
                            f"{self.size} bytes (truncated or bad offset)", where)

    def u32(self, off: int, what: str) -> int:
        self.need(off, 4, what)
        return struct.unpack_from("<I", self.data, off)[0]

    def text(self, off: int, nbytes: int, what: str) -> str:
        raw = self.data[off:off + nbytes]
        try:
            s = raw.decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise BlobError(f"{what} is not valid UTF-16 (unpaired surrogate)",
                            off + exc.start) from None
        bad = _XML_BAD.search(s)
        if bad:
            pos = off + len(s[:bad.start()].encode("utf-16-le"))
            raise BlobError(f"{what} contains U+{ord(bad.group()):04X}, which no XML config can "
                            "hold", pos)
        return s

    def zstring(self, off: int, units: int, what: str, *, drop_split_pair: bool = False) -> str:
        self.need(off, units * 2, what)
        buf = self.data
        end = None
        for i in range(off, off + units * 2, 2):
            if buf[i] == 0 and buf[i + 1] == 0:
                end = i
                break
        if end is None:
            raise BlobError(f"{what} is not NUL-terminated within its {units}-unit buffer", off)
        if drop_split_pair and end - off >= 2:
            last = struct.unpack_from("<H", buf, end - 2)[0]
            if 0xD800 <= last <= 0xDBFF:
                end -= 2  # Windows cuts a 127-unit aggregation name inside a surrogate pair
        return self.text(off, end - off, what)


def decode_blob(data: Union[bytes, bytearray, memoryview]) -> DecodedBlob:
    """Decode a rule blob (blob spec §3, §4, §10.1).

    Walks the rule-set chain (``RuleCount`` sets from ``FirstEventOffset``) and each set's filter
    chain (``FilterCount`` filters from ``FirstFilterOffset``), reading each filter's aggregation
    record through ``AggregationOffset`` (the global aggregation chain and the header's
    ``FirstAggregationOffset`` are not relied on, §8.2). Checks, each failing with the offset:
    header present, supported binary major (13-18), ``RuleCount`` ≥ 1, every offset and size
    inside the blob, records in forward order without overlap, ``RuleDefault``/``CombineType``
    0 or 1, a known filterable event id, a field index inside the event's field list, an operator
    code 0-15 (the runtime flag ``0x40000000`` is ignored), even ``DataSize`` ≥ 2 ending in a NUL
    unit, names NUL-terminated inside their buffers, aggregation ids that match, text that is
    valid UTF-16 and representable in XML.

    Args:
        data: the blob bytes.
    Returns:
        a :class:`DecodedBlob`.
    Raises:
        BlobError: with ``offset`` set, for any truncated, corrupt or unsupported blob.
    """
    r = _Reader(bytes(data))
    if r.size == 0:
        raise BlobError("empty blob (Sysmon writes no blob for a config without rules)", 0)
    if r.size < _HEADER:
        raise BlobError(f"truncated header: {r.size} of {_HEADER} bytes", r.size)
    version = r.u32(0, "Version")
    binary = (version >> 16, version & 0xFFFF)
    if binary[0] not in SUPPORTED_BINARY_MAJORS:
        raise BlobError(f"unsupported binary version {binary[0]}.{binary[1]} (supported majors "
                        f"{SUPPORTED_BINARY_MAJORS.start}-{SUPPORTED_BINARY_MAJORS.stop - 1})", 0)
    schema = blob_schema(binary)
    rule_count = r.u32(4, "RuleCount")
    if rule_count == 0:
        raise BlobError("RuleCount is 0 (Sysmon refuses such a blob)", 4)
    if rule_count > (r.size - _HEADER) // _RULESET:
        raise BlobError(f"RuleCount {rule_count} cannot fit in {r.size} bytes", 4)
    sv = r.u32(0x0C, "SchemaVersion")
    schema_version = (sv >> 16, sv & 0xFFFF)
    if schema_version[1] > 99:
        raise BlobError(f"SchemaVersion minor {schema_version[1]} is not a two-digit fraction",
                        0x0C)
    first_agg = r.u32(0x14, "FirstAggregationOffset")
    aggs: dict[int, DecodedAggregation] = {}
    rule_sets: list[DecodedRuleSet] = []
    floor = _HEADER                      # records must start at or after this offset
    off, ptr_at = r.u32(0x10, "FirstEventOffset"), 0x10
    for _ in range(rule_count):
        if off == 0:
            raise BlobError(f"rule-set chain ends after {len(rule_sets)} of {rule_count} sets",
                            ptr_at)
        if off < floor:
            raise BlobError(f"rule-set offset {off} points backwards or into a previous record",
                            ptr_at)
        r.need(off, _RULESET, "rule-set record", ptr_at)
        event_id, rdefault, combine, nxt, fcount, ffirst = struct.unpack_from("<6I", r.data, off)
        ev = schema.events.get(event_id)
        if ev is None or ev.tag is None:
            raise BlobError(f"unknown or unfilterable event id {event_id}", off)
        if rdefault > 1:
            raise BlobError(f"RuleDefault {rdefault} is neither 0 nor 1", off + 4)
        if combine > 1:
            raise BlobError(f"CombineType {combine} is neither 0 nor 1", off + 8)
        rs = DecodedRuleSet(off, event_id, ev.tag, "include" if rdefault else "exclude",
                            "and" if combine else "or")
        floor = off + _RULESET
        if fcount > (r.size - floor) // (_FILTER_STRUCT + 2):
            raise BlobError(f"FilterCount {fcount} cannot fit in the rest of the blob", off + 0x10)
        foff, fptr = ffirst, off + 0x14
        for _ in range(fcount):
            if foff == 0:
                raise BlobError(f"filter chain ends after {len(rs.filters)} of {fcount} filters",
                                fptr)
            if foff < floor:
                raise BlobError(f"filter offset {foff} points backwards or into a previous "
                                "record", fptr)
            flt, floor = _read_filter(r, foff, fptr, ev, aggs)
            rs.filters.append(flt)
            fptr = foff + 0x208
            foff = r.u32(fptr, "filter NextOffset")
        rule_sets.append(rs)
        off, ptr_at = nxt, off + 0x0C
    return DecodedBlob(binary, schema_version, rule_sets, first_agg, r.size)


def _read_filter(r: _Reader, off: int, ptr_at: int, ev,
                 aggs: dict) -> tuple[DecodedFilter, int]:
    r.need(off, _FILTER_FIXED, "filter record", ptr_at)
    field_id = r.u32(off, "FieldId")
    if field_id >= len(ev.field_names):
        raise BlobError(f"FieldId {field_id} is beyond the {len(ev.field_names)} fields of event "
                        f"{ev.event_id}", off)
    name = r.zstring(off + 4, _NAME_UNITS, "filter Name")
    ftype, _nxt, dsize, agg_id, agg_off = struct.unpack_from("<5I", r.data, off + 0x204)
    code = ftype & ~_ENV_FLAG
    if code >= len(CONDITIONS):
        raise BlobError(f"unknown operator code {ftype}", off + 0x204)
    if dsize < 2 or dsize % 2:
        raise BlobError(f"DataSize {dsize} is not an even size of at least 2", off + 0x20C)
    r.need(off, _FILTER_STRUCT + dsize, "filter record with its data")
    data_off = off + _FILTER_FIXED
    if r.data[data_off + dsize - 2:data_off + dsize] != b"\0\0":
        raise BlobError("filter Data does not end with a NUL unit", data_off + dsize - 2)
    value = r.text(data_off, dsize - 2, "filter Data")
    agg = None
    if agg_id:
        agg = aggs.get(agg_off)
        if agg is None:
            agg = _read_aggregation(r, agg_off, off + 0x214)
            aggs[agg_off] = agg
        if agg.id != agg_id:
            raise BlobError(f"AggregationId {agg_id} but the record at {agg_off} has id {agg.id}",
                            off + 0x210)
    elif agg_off:
        raise BlobError("AggregationOffset set on a filter with AggregationId 0", off + 0x214)
    flt = DecodedFilter(off, field_id, ev.field_names[field_id], code, CONDITIONS[code], name,
                        value, agg)
    return flt, off + _FILTER_STRUCT + dsize


def _read_aggregation(r: _Reader, off: int, ptr_at: int) -> DecodedAggregation:
    if off < _HEADER or off + _AGG > r.size:
        raise BlobError(f"AggregationOffset {off} does not point at a record inside the blob",
                        ptr_at)
    name = r.zstring(off, _AGG_NAME_UNITS, "Rule name", drop_split_pair=True)
    _msg, agg_id, root, nxt, count, combine = struct.unpack_from("<Q5I", r.data, off + 0x100)
    if combine > 1:
        raise BlobError(f"Rule combineType {combine} is neither 0 nor 1", off + 0x118)
    return DecodedAggregation(off, agg_id, name, "and" if combine else "or", count, root, nxt)


# --------------------------------------------------------------------------------------------
# Blob -> XML (blob spec §10.2)

def _esc_text(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _esc_attr(s: str) -> str:
    return (_esc_text(s).replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;"))


def _filter_xml(f: DecodedFilter, inherited: str) -> str:
    attrs = f' condition="{_esc_attr(f.condition)}"'
    if f.name or inherited:
        attrs += f' name="{_esc_attr(f.name)}"'
    return f"<{f.field}{attrs}>{_esc_text(f.value)}</{f.field}>"


def _render_xml(blob: DecodedBlob) -> str:
    lines = [f'<Sysmon schemaversion="{format_version(blob.schema_version)}">',
             ("  <!-- Decoded by SysmonX from a Sysmon rule blob (binary version "
              f"{blob.binary_version[0]}.{blob.binary_version[1]}). -->"),
             "  <EventFiltering>"]
    for rs in blob.rule_sets:
        lines.append(f'    <RuleGroup groupRelation="{rs.relation}">')
        lines.append(f'      <{rs.tag} onmatch="{rs.onmatch}">')
        for agg, filters in rs.groups():
            if agg is None:
                lines.append("        " + _filter_xml(filters[0], ""))
                continue
            name = f' name="{_esc_attr(agg.name)}"' if agg.name else ""
            lines.append(f'        <Rule groupRelation="{agg.relation}"{name}>')
            for f in filters:
                lines.append("          " + _filter_xml(f, agg.name))
            lines.append("        </Rule>")
        lines.append(f"      </{rs.tag}>")
        lines.append("    </RuleGroup>")
    lines += ["  </EventFiltering>", "</Sysmon>", ""]
    return "\n".join(lines)


def blob_to_xml(data: Union[bytes, bytearray, DecodedBlob]) -> str:
    """Turn a rule blob back into an equivalent Sysmon XML configuration (blob spec §10.2).

    Shape: ``<Sysmon schemaversion="M.mm">`` with one ``<EventFiltering>``; per rule set, in blob
    order, a ``<RuleGroup groupRelation="and|or">`` around ``<Tag onmatch="include|exclude">``;
    filters in chain order as ``<Field condition="op" name="...">value</Field>``, each run of one
    ``<Rule>`` wrapped in ``<Rule groupRelation="and|or" name="...">``. Every name is explicit
    (``name=""`` where a filter inside a named Rule has an empty RuleName, so it does not inherit).
    Options (hashing, DNS lookup, ...) are not in a blob (§9) and are not produced.

    ``compile_blob(parse_config(blob_to_xml(b)), binary_version=...) == b`` for blobs Sysmon
    compiled (all 136 golden blobs; the default binary version already matches for them).

    Args:
        data: blob bytes, or an already decoded :class:`DecodedBlob`.
    Returns:
        the XML text (no XML declaration; write it as UTF-8).
    Raises:
        BlobError: as :func:`decode_blob`.
    """
    blob = data if isinstance(data, DecodedBlob) else decode_blob(data)
    return _render_xml(blob)


# --------------------------------------------------------------------------------------------
# .reg files

_REG_HEADERS = ("REGEDIT4", "Windows Registry Editor Version 5.00")
_REG_VALUE = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*=\s*(.*)$', re.S)
_HEX_BYTE = re.compile(r"^[0-9A-Fa-f]{1,2}$")
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?:,[0-9A-Fa-f]{2})*")
_HEX_LIST = re.compile(r"\s*[0-9A-Fa-f]{1,2}\s*(?:,\s*[0-9A-Fa-f]{1,2}\s*)*")


def _reg_text(raw: bytes) -> Optional[str]:
    """The text of a ``.reg`` export, or ``None`` when ``raw`` is not one."""
    if raw.startswith(codecs.BOM_UTF16_LE):
        enc, body = "utf-16-le", raw[2:]
    elif raw.startswith(codecs.BOM_UTF8):
        enc, body = "utf-8", raw[3:]
    elif len(raw) >= 2 and raw[0] != 0 and raw[1] == 0:
        enc, body = "utf-16-le", raw
    else:
        enc, body = "latin-1", raw          # REGEDIT4 is ANSI; the hex part is ASCII anyway
    head = body[:200].decode(enc, "replace").lstrip()
    if not head.startswith(_REG_HEADERS):
        return None
    try:
        return body.decode(enc)
    except UnicodeDecodeError as exc:
        raise BlobError(f"registry export is not valid {enc} at byte {exc.start}") from None


def parse_reg(text: str, value_name: str = "Rules") -> bytes:
    """Extract a REG_BINARY value from the text of a ``regedit`` export.

    Accepts ``REGEDIT4`` and ``Windows Registry Editor Version 5.00`` files, ``;`` comments,
    ``"Rules"=hex:..`` or ``hex(3):..`` with ``\\`` line continuations. When several keys hold the
    value, the one under a ``...\\Parameters`` key (``Services\\SysmonDrv\\Parameters``) wins,
    else the first.

    Returns:
        the value's bytes.
    Raises:
        BlobError: no such value, not a binary value, or a malformed hex list (message names the
            line).
    """
    lines = text.lstrip("\ufeff \t\r\n").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines[0].strip().startswith(_REG_HEADERS):
        raise BlobError("not a registry export (no REGEDIT4 / Windows Registry Editor header)")
    found: list[tuple[bool, int, str]] = []
    key = ""
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i].strip()
        i += 1
        if line.endswith("\\"):   # join continuation lines (linear: collect, then join once)
            parts = [line[:-1]]
            while i < len(lines):
                nxt = lines[i].strip()
                i += 1
                if nxt.endswith("\\"):
                    parts.append(nxt[:-1])
                else:
                    parts.append(nxt)
                    break
            line = "".join(parts)
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            key = line.strip("[]")
            continue
        m = _REG_VALUE.match(line)
        if m and m.group(1).replace('\\"', '"').replace("\\\\", "\\").lower() == value_name.lower():
            in_params = key.lower().rstrip("\\").endswith("\\parameters")
            found.append((in_params, start, m.group(2).strip()))
    if not found:
        raise BlobError(f'no "{value_name}" value in the registry export')
    chosen = next((f for f in found if f[0]), found[0])
    _, line_no, spec = chosen
    low = spec.lower()
    if low.startswith("hex:"):
        body = spec[4:]
    elif low.startswith("hex(3):"):
        body = spec[7:]
    else:
        raise BlobError(f'line {line_no}: "{value_name}" is not a binary (hex:) value')
    body = body.strip().rstrip(",")
    if not body:
        return b""
    compact = body.replace(" ", "").replace("\t", "")
    if _HEX_PAIRS.fullmatch(compact):                       # what regedit writes: fast path
        return bytes.fromhex(compact.replace(",", ""))
    if _HEX_LIST.fullmatch(body):
        return bytes.fromhex("".join(item.strip().zfill(2) for item in body.split(",")))
    for n, item in enumerate(body.split(",")):
        if not _HEX_BYTE.match(item.strip()):
            raise BlobError(f'line {line_no}: "{value_name}" byte {n} is not hex: '
                            f'{item.strip()[:20]!r}')
    raise BlobError(f'line {line_no}: "{value_name}" is not a hex byte list')  # not reached


def read_blob_file(path: Union[str, Path], value_name: str = "Rules") -> bytes:
    """Read a rule blob from a raw file (``rules.bin``, a dumped registry value) or a ``.reg``.

    A file is taken as a ``.reg`` export when, after an optional UTF-16LE or UTF-8 BOM (or in
    BOM-less UTF-16LE), it starts with ``REGEDIT4`` or ``Windows Registry Editor Version 5.00``;
    the ``Rules`` value is then extracted with :func:`parse_reg`. Anything else is the raw blob.

    Returns:
        the blob bytes (not validated; pass them to :func:`decode_blob`).
    Raises:
        BlobError: file larger than :data:`MAX_BLOB_BYTES` (8x for ``.reg``), or a bad ``.reg``.
        OSError: the file cannot be read.
    """
    p = Path(path)
    size = p.stat().st_size
    if size > 8 * MAX_BLOB_BYTES:
        raise BlobError(f"{p}: {size} bytes is too large for a rule blob")
    raw = p.read_bytes()
    text = _reg_text(raw)
    if text is None:
        if len(raw) > MAX_BLOB_BYTES:
            raise BlobError(f"{p}: {len(raw)} bytes is too large for a rule blob")
        return raw
    try:
        data = parse_reg(text, value_name)
    except BlobError as exc:
        raise BlobError(f"{p}: {exc.message}") from None
    if len(data) > MAX_BLOB_BYTES:
        raise BlobError(f"{p}: {len(data)} bytes is too large for a rule blob")
    return data


def format_reg(data: bytes, driver: str = "SysmonDrv", *, regedit4: bool = False) -> str:
    """Render a blob as a ``regedit`` export of ``HKLM\\...\\Services\\<driver>\\Parameters``.

    ``Rules`` is written as ``"Rules"=hex:xx,xx,...`` wrapped with ``\\`` continuations the way
    regedit does (lines of at most 80 characters, continuation lines indented by two spaces).
    Encode the result as UTF-16LE with BOM (Version 5.00, the default) or as ASCII (``regedit4``).
    """
    header = _REG_HEADERS[0] if regedit4 else _REG_HEADERS[1]
    key = f"HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\{driver}\\Parameters"
    out = [header, "", f"[{key}]"]
    # regedit's wrapping: 22 bytes on the first line after the 12-character '"Rules"=hex:', then
    # 25 per line after a two-space indent; every line but the last ends with ',\'.
    first, per = 22, 25
    chunks = [data[:first]] + [data[i:i + per] for i in range(first, len(data), per)]
    rows = [("\"Rules\"=hex:" if n == 0 else "  ") + chunk.hex(",")
            + (",\\" if n + 1 < len(chunks) else "") for n, chunk in enumerate(chunks)]
    out += rows + [""]
    return "\r\n".join(out) + "\r\n"
