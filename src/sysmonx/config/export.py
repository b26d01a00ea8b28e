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

The result validates as plain Sysmon (:func:`sysmonx.config.parse_config` with
``extensions=False``); :func:`export_sysmon` checks that before returning.
"""

from __future__ import annotations

from typing import Any, Union

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
    parse_config(raw, path)  # refuse what is not a valid config in the first place
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
            if tag.tag in _EXTENSION_TAGS:
                warn(f"<{tag.tag}> removed: a SysmonX event Sysmon does not have", tag)
                drop(tag)
                continue
            for el in tag.iter():
                if isinstance(el.tag, str) and el.get("scanners") is not None:
                    warn(f"scanners=\"{el.get('scanners')}\" on <{el.tag}> removed: SysmonX "
                         "scanners", el)
                    del el.attrib["scanners"]
            lost = 0
            for f in list(tag.iter()):
                if f is tag or not isinstance(f.tag, str) or f.tag == "Rule":
                    continue
                cond = (f.get("condition") or "is").lower()
                if f.tag in ENRICHMENT_FIELD_NAMES:
                    warn(f"<{f.tag}> filter in <{tag.tag}> removed: a SysmonX enrichment field",
                         f)
                elif cond in conds:
                    warn(f"<{f.tag} condition=\"{f.get('condition')}\"> in <{tag.tag}> removed:"
                         " a SysmonX condition", f)
                else:
                    continue
                drop(f)
                lost += 1
            for rule in list(tag.iter("Rule")):
                if not any(isinstance(x.tag, str) for x in rule):
                    warn(f"<Rule> in <{tag.tag}> removed: all its filters were SysmonX-only",
                         rule)
                    drop(rule)
            if lost and not any(isinstance(x.tag, str) for x in tag):
                what = "logs nothing" if tag.get("onmatch", "include") == "include" or \
                    tag.get("default") == "exclude" else "logs every event of the tag"
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
