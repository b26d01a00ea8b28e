"""``sysmonx config export --sysmon``: a SysmonX config made loadable by real Sysmon.

What only SysmonX understands is removed from the document itself (comments, order and every
other element stay as written), each removal reported as a :class:`ConfigWarning` with its line:

* SysmonX's configuration entries under ``<Sysmon>`` (the catalogue's ``extension=True``
  options: ``HeartbeatInterval``, ``YaraRules``);
* event tags of the catalogue's extension events (``ShellCommand``, ``TamperFinding``,
  ``BpfEvent`` ...: no Sysmon manifest has them);
* filters on enrichment fields (``GrandparentImage``, ``AncestorImages`` ...);
* filters with extension conditions (``regex``);
* ``scanners="..."`` attributes (on tags, ``<Rule>`` and filters: what the element selects
  stays, only the scan request goes);
* ``<Rule>`` groups, event tags and ``<RuleGroup>`` elements left empty by the above (an
  empty ``onmatch="include"`` tag would log nothing and an empty ``exclude`` tag everything:
  the warning of a tag that lost filters says which).

Removing a filter changes what its rule matches: a member of an AND ``<Rule>`` (or the only
filter on its field in an AND tag) leaves a *wider* rule, a member of an OR ``<Rule>`` or of an
OR tag a *narrower* one (spec/sysmon-semantics.md 3.4). Each changed rule gets a warning that
says which, and what that does to the events logged. An exclude rule must never get wider (it
would drop events the original keeps), so it goes whole instead: a ``<Rule>`` that would be
widened is removed with all its members, and an AND exclude tag that would still be widened
loses all its filters (a rule set without filters never matches). The exported config then logs
every event the original logs as far as exclude rules go; what include rules lose (a narrowed
include rule logs less) is said in their warning.

The result validates as plain Sysmon (:func:`sysmonx.config.parse_config` with
``extensions=False``); :func:`export_sysmon` checks that before returning.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from lxml import etree

from ..configmodel import ConfigWarning
from ..core.errors import ConfigError
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES, EVENTS, OPTIONS

__all__ = ["export_sysmon"]

#: Tags of the catalogue's extension events (SysmonX's own, and 100): Sysmon has none of them.
_EXTENSION_TAGS = frozenset(e.tag for e in EVENTS if e.extension and e.tag)
#: SysmonX's configuration entries (catalogue options with ``extension=True``).
_EXTENSION_ENTRIES = frozenset(o.name for o in OPTIONS if o.extension)


def _extension_conditions() -> frozenset[str]:
    from .parse import extension_conditions
    return frozenset(extension_conditions())


def export_sysmon(raw: Union[bytes, str], path: str = "<string>"
                  ) -> tuple[bytes, list[ConfigWarning]]:
    """Strip the SysmonX-only parts of a config (module docstring).

    Args:
        raw: the config file's bytes (or text).
        path: for messages.
    Returns:
        ``(UTF-8 XML bytes with a declaration, warnings)``.
    Raises:
        ConfigError: the input is not a valid SysmonX config, or (a defect) the result does
            not validate as plain Sysmon.
    """
    from .parse import decode_config_bytes, parse_config
    schema_version = parse_config(raw, path).schema_version  # refuse an invalid config
    text = raw if isinstance(raw, str) else decode_config_bytes(raw, path)
    text = text.lstrip("\ufeff")
    if text.startswith("<?xml"):
        text = text[text.index("?>") + 2:]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_blank_text=False)
    root = etree.fromstring(text, parser)
    warnings: list[ConfigWarning] = []
    conds = _extension_conditions()

    def warn(msg: str, el) -> None:
        warnings.append(ConfigWarning(msg, path, el.sourceline))

    def drop(el) -> None:
        parent = el.getparent()
        if el.tail and el.tail.strip() == "":  # keep the indentation of what follows
            prev = el.getprevious()
            if prev is not None:
                prev.tail = el.tail
            else:
                parent.text = el.tail
        parent.remove(el)

    for child in list(root):
        if isinstance(child.tag, str) and child.tag in _EXTENSION_ENTRIES:
            warn(f"<{child.tag}> removed: a SysmonX option Sysmon does not have", child)
            drop(child)
    tag_counts: dict[str, int] = {}  # rule sets per tag (what an emptied tag then does)
    for ef in root.iter("EventFiltering"):
        tags: list[Any] = []
        for child in list(ef):
            if not isinstance(child.tag, str):
                continue
            if child.tag == "RuleGroup":
                tags.extend(t for t in child if isinstance(t.tag, str))
            else:
                tags.append(child)
        for tag in tags:
            if tag.tag not in _EXTENSION_TAGS:
                tag_counts[tag.tag] = tag_counts.get(tag.tag, 0) + 1
        for tag in tags:
            if tag.tag in _EXTENSION_TAGS:
                warn(f"<{tag.tag}> removed: a SysmonX event Sysmon does not have", tag)
                drop(tag)
                continue
            for el in tag.iter():
                if isinstance(el.tag, str) and el.get("scanners") is not None:
                    warn(f"scanners=\"{el.get('scanners')}\" on <{el.tag}> removed: SysmonX "
                         "scanners", el)
                    del el.attrib["scanners"]
            lost = _strip_filters(tag, conds, warn, drop, schema_version)
            if lost and not any(isinstance(x.tag, str) for x in tag):
                what = "logs nothing" if _onmatch(tag) == "include" else \
                    ("logs every event of the tag" if tag_counts.get(tag.tag, 0) == 1 else
                     "never matches (the tag's other rule sets decide)")
                warn(f"<{tag.tag}> has no filter left: as exported it {what}", tag)
        for group in list(ef.iter("RuleGroup")):
            if not any(isinstance(x.tag, str) for x in group):
                warn("<RuleGroup> removed: it held only SysmonX-only tags", group)
                drop(group)
    out = etree.tostring(root, encoding="utf-8", xml_declaration=True)
    try:
        parse_config(out, path, extensions=False)
    except ConfigError as exc:  # a defect of this function, not of the input
        raise ConfigError(f"exported config does not validate as plain Sysmon: {exc}",
                          path) from None
    return out + b"\n", warnings


def _onmatch(tag: Any) -> str:
    """The set's ``onmatch``: the attribute, else the opposite of ``default``."""
    om = tag.get("onmatch")
    if om is not None:
        return om
    return "include" if tag.get("default") == "exclude" else "exclude"


def _relation(tag: Any, schema_version: Any) -> str:
    """How the tag's filters combine: its ``<RuleGroup>``'s ``groupRelation``, else ``and``
    from schema 4.11 on (the parser's rule)."""
    parent = tag.getparent()
    if parent is not None and parent.tag == "RuleGroup" and parent.get("groupRelation"):
        return "or" if parent.get("groupRelation").lower() == "or" else "and"
    return "and" if schema_version > (4, 10) else "or"


def _strip_filters(tag: Any, conds: frozenset[str], warn: Callable[[str, Any], None],
                   drop: Callable[[Any], None], schema_version: Any) -> int:
    """Remove the SysmonX-only filters of one event tag (enrichment fields, extension
    conditions), widening no exclude rule (module docstring). Returns the filters removed."""
    onmatch = _onmatch(tag)
    relation = _relation(tag, schema_version)
    label = f'<{tag.tag} onmatch="{onmatch}">'

    def reason(f: Any) -> Optional[str]:
        if f.tag in ENRICHMENT_FIELD_NAMES:
            return f"<{f.tag}> filter in <{tag.tag}> removed: a SysmonX enrichment field"
        if (f.get("condition") or "is").lower() in conds:
            return (f"<{f.tag} condition=\"{f.get('condition')}\"> in <{tag.tag}> removed: "
                    "a SysmonX condition")
        return None

    def kids(el: Any) -> list[Any]:
        return [x for x in el if isinstance(x.tag, str)]

    def names(fs: list[Any]) -> str:
        return ", ".join(f"<{f.tag}>" for f in fs)

    top = [x for x in kids(tag) if x.tag != "Rule"]
    rules = [x for x in kids(tag) if x.tag == "Rule"]
    top_gone = [f for f in top if reason(f)]
    removed = 0
    wider = False      # the tag's rule set would match more events
    narrower = False   # ... or fewer
    for f in top_gone:
        warn(reason(f) or "", f)
        drop(f)
        removed += 1
    kept_fields = {f.tag for f in top if f not in top_gone}
    for f in top_gone:
        if relation == "and" and f.tag not in kept_fields:
            wider = True   # that field is no longer required
        else:
            narrower = True
    for rule in rules:
        members = kids(rule)
        gone = [f for f in members if reason(f)]
        if not gone:
            continue
        rname = f"<Rule name='{rule.get('name')}'>" if rule.get("name") is not None \
            else "<Rule>"
        for f in gone:
            warn(reason(f) or "", f)
        rrel = "or" if (rule.get("groupRelation") or "or").lower() == "or" else "and"
        if len(gone) == len(members):
            for f in gone:
                drop(f)
            removed += len(gone)
            warn(f"{rname} in <{tag.tag}> removed: all its filters were SysmonX-only", rule)
            drop(rule)
            wider, narrower = (wider or relation == "and"), (narrower or relation == "or")
            continue
        if rrel == "and" and onmatch == "exclude":
            removed += len(gone)
            warn(f"{rname} in {label} removed whole ({len(members)} filters): without "
                 f"{names(gone)} it would match more events and so drop events the original "
                 "keeps; as exported, the events it dropped are kept (unless another exclude "
                 "rule drops them)", rule)
            drop(rule)
            wider, narrower = (wider or relation == "and"), (narrower or relation == "or")
            continue
        for f in gone:
            drop(f)
        removed += len(gone)
        if rrel == "and":
            warn(f"{rname} in {label} now matches more events (without {names(gone)}): as "
                 "exported it logs events the original dropped", rule)
            wider = True
        else:
            warn(f"{rname} in {label} now matches fewer events (without {names(gone)}): as "
                 + ("exported it keeps events the original dropped" if onmatch == "exclude"
                    else "exported the events only those filters matched are no longer "
                         "logged by it"), rule)
            narrower = True
    left = kids(tag)
    if not removed or not left:
        return removed  # an emptied tag is reported by the caller
    if wider and onmatch == "exclude":
        for f in left:
            drop(f)
        removed += len(left)
        warn(f"{label} (groupRelation and) lost all its {len(left)} remaining filters: "
             "without its SysmonX-only filters it would match more events and so drop events "
             "the original keeps; a rule set without filters never matches, so as exported "
             "the events it dropped are kept (unless another rule set drops them)", tag)
    elif wider and narrower:
        warn(f"{label} now matches more events for some and fewer for others: as exported it "
             "logs some events the original dropped and drops some it logged", tag)
    elif wider:
        warn(f"{label} now matches more events: as exported it logs events the original "
             "dropped", tag)
    elif narrower and top_gone:  # (a narrowed <Rule> alone has said so already)
        warn(f"{label} now matches fewer events: as exported " +
             ("it keeps events the original dropped" if onmatch == "exclude" else
              "the events only its removed filters matched are no longer logged"), tag)
    return removed
