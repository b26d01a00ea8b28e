"""Command-line switches that carry configuration (``-h``, ``-n``, ``-l``, ``-dns``, ``-k``, ``-g``)
merged into a :class:`~sysmonx.configmodel.Config`, and a Config rendered back as XML.

Sysmon treats these switches as configuration options (spec/sysmon-semantics.md 1.2, 3.1, 6.2;
spec/rule-blob.md 6.7):

* ``-h <algs>`` is ``HashAlgorithms``. A ``<HashAlgorithms>`` element in the file wins over the
  switch (``Warning: Command-line switch 'h' was overwritten by configuration node
  'HashAlgorithms' value``).
* ``-n [procs]`` / ``-l [procs]`` enable NetworkConnect / ImageLoad. With a comma-separated process
  list each process becomes a filter ``Image`` ``image`` ``<proc>`` (no name). The filters are
  **prepended** to the first ``onmatch="include"`` element of that tag (and take its combine type);
  any ``onmatch="exclude"`` element of that tag is an error, ``Incompatible configuration and
  command-line rule on <Tag>``; without an element for the tag a separate include rule set with
  OR is appended after every rule set of the file (ImageLoad before NetworkConnect).
* ``-n`` / ``-l`` / ``-dns`` without a list switch collection of that event on. For a tag that has
  no rule set this is modelled as an empty ``onmatch="exclude"`` rule set (log everything: what
  the flipped type default does); for a tag that has rule sets the switch changes nothing.
* ``-k <list>`` / ``-g <list>`` are the legacy ``ProcessAccessConfig`` / ``PipeMonitoringConfig``
  lists: recorded as those options (SysmonX does not use them to collect).

Everything happens on the model, so the filter engine needs no change.
:func:`render_config_xml` writes a model back as a Sysmon XML configuration that parses to the
same rule sets (names made explicit, every rule set in its own ``RuleGroup`` carrying its combine
type), which is how the effective configuration of a service installed with such switches is
stored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional
from xml.sax.saxutils import escape

from ..schema import CURRENT
from ..configmodel import Config, ConfigError, ConfigWarning, Filter, RuleSet
from .parse import parse_config, parse_hash_algorithms, split_comma_list

__all__ = ["SwitchOptions", "merge_command_line", "split_switch_list", "render_config_xml",
           "empty_config", "DEFAULTS_XML"]

#: Text of the configuration SysmonX installs when no file is given (``-i`` alone, ``-c --``):
#: no option and no rule set, i.e. Sysmon's defaults (spec 3.7).
DEFAULTS_XML = f'<Sysmon schemaversion="{CURRENT.version_text}">\n</Sysmon>\n'


@dataclass(frozen=True)
class SwitchOptions:
    """The configuration-bearing switches of one command line.

    Each attribute is ``None`` when the switch is absent. For ``-n``/``-l``/``-dns`` the value is
    ``""`` when the switch was given without a value, else its text; ``-h``/``-k``/``-g`` always
    carry their value.
    """

    hash_algorithms: Optional[str] = None
    network: Optional[str] = None
    image_load: Optional[str] = None
    dns: Optional[str] = None
    process_access: Optional[str] = None
    pipe_monitoring: Optional[str] = None

    def any(self) -> bool:
        """True when at least one switch is present (Sysmon's "custom configuration")."""
        return any(v is not None for v in (self.hash_algorithms, self.network, self.image_load,
                                           self.dns, self.process_access, self.pipe_monitoring))


def split_switch_list(text: str) -> list[str]:
    """Split a command-line process list: Sysmon's ``StringListDup`` rules, see
    :func:`sysmonx.config.parse.split_comma_list`."""
    return split_comma_list(text)


def empty_config(path: str = "Defaults") -> Config:
    """A configuration with no option and no rule set (Sysmon's defaults), schema
    :data:`~sysmonx.schema.CURRENT`. ``path`` labels it (event 16's ``Configuration``)."""
    cfg = parse_config(DEFAULTS_XML, path)
    return cfg


def _rule_list(cfg: Config, tag: str, procs: list[str], warnings: list,
               switch: str) -> None:
    eid = CURRENT.tags[tag][0]
    filters = [Filter("Image", "image", p, "", 0, None) for p in procs]
    sets = cfg.rule_sets_for_tag(tag)
    for rs in sets:
        if rs.onmatch == "exclude":
            raise ConfigError(f"Error: Incompatible configuration and command-line rule on {tag} "
                              f"(-{switch} adds include filters; the file has an "
                              f"onmatch=\"exclude\" {tag} element)", cfg.path, rs.line)
    includes = [rs for rs in sets if rs.onmatch == "include"]
    if includes:
        first = includes[0]
        first.filters[:0] = filters
        if len(includes) > 1:
            warnings.append(ConfigWarning(
                f"-{switch} process list added to the first <{tag} onmatch=\"include\"> only",
                cfg.path, first.line))
        if first.relation == "and" and len(first.filters) > len(filters):
            warnings.append(ConfigWarning(
                f"-{switch} filters are ANDed with the other fields of <{tag}> (it combines with "
                "'and'), as Sysmon does", cfg.path, first.line))
    else:
        cfg.rule_sets.append(RuleSet(tag, eid, "include", "or", filters, {}, None, None))


def _enable(cfg: Config, tag: str) -> None:
    if not cfg.rule_sets_for_tag(tag):
        cfg.rule_sets.append(RuleSet(tag, CURRENT.tags[tag][0], "exclude", "or", [], {}, None,
                                     None))


def merge_command_line(config: Optional[Config], switches: SwitchOptions) -> Config:
    """Merge configuration switches into a configuration, as Sysmon's ``ApplyConfigurationFile``
    and ``GetAdditionalRules`` do (see the module docstring; spec 1.2, 3.1, rule-blob 6.7).

    Args:
        config: the loaded file, or ``None`` for no file (:func:`empty_config`).
        switches: the switches given.
    Returns:
        a new :class:`Config` (the input is not modified); its ``warnings`` gain the notes of the
        merge, and ``sha256`` is that of the input file (``None`` input: of :data:`DEFAULTS_XML`).
    Raises:
        ConfigError: ``Incompatible configuration and command-line rule on <Tag>``; ``Invalid
            hashing algorithm: X`` for a bad ``-h``.
    """
    cfg = copy.deepcopy(config) if config is not None else empty_config()
    warnings = cfg.warnings
    if switches.hash_algorithms is not None:
        if "HashAlgorithms" in cfg.options:
            warnings.append(ConfigWarning(
                "Warning: Command-line switch 'h' was overwritten by configuration node "
                "'HashAlgorithms' value", cfg.path))
        else:
            try:
                cfg.hash_algorithms = parse_hash_algorithms(switches.hash_algorithms)
            except ValueError as exc:
                raise ConfigError(str(exc), "command line") from None
            cfg.options["HashAlgorithms"] = switches.hash_algorithms
    for value, name, switch in ((switches.process_access, "ProcessAccessConfig", "k"),
                                (switches.pipe_monitoring, "PipeMonitoringConfig", "g")):
        if value is None:
            continue
        if name in cfg.options:
            warnings.append(ConfigWarning(
                f"Warning: Command-line switch '{switch}' was overwritten by configuration node "
                f"'{name}' value", cfg.path))
        else:
            cfg.options[name] = value
    # Sysmon appends the command-line rule sets ImageLoad first, then NetworkConnect.
    for value, tag, switch in ((switches.image_load, "ImageLoad", "l"),
                               (switches.network, "NetworkConnect", "n")):
        if value is None:
            continue
        procs = split_switch_list(value) if value else []
        if procs:
            _rule_list(cfg, tag, procs, warnings, switch)
        else:
            _enable(cfg, tag)
    if switches.dns is not None:
        _enable(cfg, "DnsQuery")
    return cfg


# ---------------------------------------------------------------------------------------------
# Config -> XML

def _attr(s: str) -> str:
    return escape(s, {'"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})


def _text(s: str) -> str:
    return escape(s, {"\r": "&#13;"})


def render_config_xml(cfg: Config, comment: Optional[str] = None) -> str:
    """Write a configuration model as Sysmon XML that loads back to the same model.

    Every rule set is wrapped in its own ``<RuleGroup groupRelation="and|or">`` (so the combine
    type is explicit), every filter whose name is not empty carries ``name`` (so no inheritance
    is needed; a filter with an empty name inside a named ``<Rule>`` gets ``name=""``), options
    are written in the order they were set, values verbatim (only XML-escaped).

    Args:
        cfg: the model.
        comment: optional text put in an XML comment at the top (``--`` is made safe).
    Returns:
        the XML text (UTF-8 when encoded; no XML declaration).
    """
    out = []
    if comment:
        out.append("<!-- " + comment.replace("--", "- -") + " -->")
    out.append(f'<Sysmon schemaversion="{cfg.schema_version_text}">')
    for name, value in cfg.options.items():
        out.append(f"  <{name}>{_text(value)}</{name}>")
    if cfg.rule_sets:
        out.append("  <EventFiltering>")
        for rs in cfg.rule_sets:
            out.append(f'    <RuleGroup groupRelation="{rs.relation}">')
            if not rs.filters:
                out.append(f'      <{rs.tag} onmatch="{rs.onmatch}"/>')
            else:
                out.append(f'      <{rs.tag} onmatch="{rs.onmatch}">')
                current = 0
                for f in rs.filters:
                    if f.aggregate != current:
                        if current:
                            out.append("        </Rule>")
                        if f.aggregate:
                            agg = rs.aggregates[f.aggregate]
                            nm = f' name="{_attr(agg.name)}"' if agg.name is not None else ""
                            out.append(f'        <Rule groupRelation="{agg.relation}"{nm}>')
                        current = f.aggregate
                    indent = "          " if f.aggregate else "        "
                    named_rule = bool(f.aggregate and rs.aggregates[f.aggregate].name)
                    nm = f' name="{_attr(f.name)}"' if f.name or named_rule else ""
                    out.append(f'{indent}<{f.field} condition="{_attr(f.condition)}"{nm}>'
                               f"{_text(f.value)}</{f.field}>")
                if current:
                    out.append("        </Rule>")
                out.append(f"      </{rs.tag}>")
            out.append("    </RuleGroup>")
        out.append("  </EventFiltering>")
    out.append("</Sysmon>")
    return "\n".join(out) + "\n"

