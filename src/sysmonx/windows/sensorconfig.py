"""The configuration SysmonX installs into the real Sysmon when Sysmon is its sensor.

Sysmon filters in the kernel-facing service before SysmonX sees anything, so the sensor
configuration must let through every event SysmonX's own configuration could include: Sysmon may
drop only what SysmonX would drop anyway. SysmonX then applies the user's configuration itself
(Sysmon's exact semantics plus extensions such as ``regex``). The 2019 prototype first derived the
backend configuration from the user's (stripping what Sysmon cannot evaluate), later gave the
backend a fixed log-everything configuration (shared/spec/sysmonx-2019.md, section 1.2 and the
install flow in 2.3); this module does the first, with guarantees per event tag:

=========  =================================================================================
mode       when, and what the sensor configuration holds for the tag
=========  =================================================================================
``off``    SysmonX can never include the tag's events (no rule set and the type is off by
           default, or only empty ``include`` sets): an empty ``onmatch="include"`` set, so
           Sysmon logs none of them whatever its own defaults are.
``rules``  the tag's rule sets, verbatim, when Sysmon provably decides exactly as SysmonX:
           a single-event tag, every filter uses a condition of the target schema other than
           ``less than``/``more than`` (their result depends on the case fold) and no value
           holds ``%`` (Sysmon expands environment variables with its service's environment),
           and not two or more ``exclude``-only sets (whose fallback is the one place Sysmon's
           behaviour is uncertain, spec 3.3). Sysmon then drops exactly what SysmonX drops.
``all``    anything else: an empty ``onmatch="exclude"`` set, so Sysmon logs every event of
           the tag (regex filters, multi-event tags such as RegistryEvent whose field binding
           depends on the binary's schema, uncertain fallbacks, events the pipeline needs).
=========  =================================================================================

Tags whose events make Sysmon *act* are never set to ``all``: ``FileDelete`` (23) archives every
file it logs, ``ClipboardChange`` (24) stores the clipboard text it logs, ``FileBlockExecutable``
(27) and ``FileBlockShredding`` (28) block what they match. Their rule sets go to Sysmon verbatim,
since Sysmon is the one enforcing them, and a rule Sysmon cannot evaluate there (``regex``) is an
error rather than a silent change of what gets blocked or archived.

Options go through unchanged (hash algorithms, DNS lookup, archive directory, revocation
checks...: they change what Sysmon records) except ``FieldSizes``: Sysmon would truncate fields
before SysmonX filters on them; SysmonX truncates after filtering, as Sysmon does for its own
output. SysmonX's own entries (``HeartbeatInterval``, ``YaraRules``: the schema's
``extension_entries``) are SysmonX's business and never reach Sysmon, which would refuse them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Optional

from ..config.cmdline import render_config_xml
from ..configmodel import Config, ConfigError, RuleSet
from ..config.parse import parse_config
from ..filtering.engine import EngineOptions
from ..schema import CURRENT, Schema, get_schema
from ..schema.catalogue import Version, format_version

__all__ = ["derive_sensor_config", "SensorConfig", "TagPlan", "SensorConfigError",
           "ACTION_TAGS", "DROPPED_OPTIONS"]

#: Tags whose events Sysmon acts on (archives, blocks), with what it does.
ACTION_TAGS = {
    "FileDelete": "Sysmon archives every deleted file it logs",
    "ClipboardChange": "Sysmon stores the clipboard contents it logs",
    "FileBlockExecutable": "Sysmon blocks every executable write it matches",
    "FileBlockShredding": "Sysmon blocks every file shredding it matches",
}
#: Options left out of the sensor configuration.
DROPPED_OPTIONS = frozenset({"FieldSizes"})
_FOLD_DEPENDENT = frozenset({"less than", "more than"})


class SensorConfigError(ConfigError):
    """The user's configuration cannot be served by a Sysmon sensor (a rule Sysmon must enforce
    that it cannot evaluate, a tag the target schema lacks); ``path``/``line`` locate it."""


@dataclass(frozen=True)
class TagPlan:
    """What the sensor configuration does for one tag: ``mode`` (``off``, ``rules``, ``all``)
    and ``reason`` (one line, for ``sysmonx -c`` output and logs)."""

    tag: str
    mode: str
    reason: str


@dataclass(frozen=True)
class SensorConfig:
    """The derived sensor configuration.

    Attributes:
        config: the model (``path`` ``<sensor>``).
        xml: its XML text, what ``Sysmon64.exe -c`` is given.
        plan: tag -> :class:`TagPlan`, in schema order.
    """

    config: Config
    xml: str
    plan: dict


def _default_include(eid: int, options: EngineOptions) -> bool:
    ev = CURRENT.events.get(eid)
    if ev is None:
        return False
    if options.no_rule_defaults == "community" and eid in (2, 6):
        return True
    return ev.default == "include"


def _unpassable(sets: list[RuleSet], schema: Schema) -> Optional[str]:
    """Why these rule sets cannot be handed to Sysmon verbatim, or ``None``."""
    for rs in sets:
        for f in rs.filters:
            if f.condition not in schema.conditions:
                return f"condition {f.condition!r} (line {f.line}) is not Sysmon's"
            if f.condition in _FOLD_DEPENDENT:
                return f"condition {f.condition!r} depends on the case fold"
            if "%" in f.value:
                return "a value holds '%' (environment expansion by Sysmon's service)"
    if len(sets) >= 2 and all(rs.onmatch == "exclude" for rs in sets):
        return "two or more exclude-only rule sets (uncertain fallback)"
    return None


def derive_sensor_config(user: Optional[Config], *,
                         options: Optional[EngineOptions] = None,
                         also_collect: Iterable[int] = (),
                         schema_version: Optional[Version] = None,
                         narrow: bool = True, comment: Optional[str] = None) -> SensorConfig:
    """Derive the Sysmon sensor configuration from the user's configuration (see the module
    docstring for the rules). A pure function of its arguments.

    Args:
        user: the user's configuration (``None``: Sysmon's defaults, as SysmonX with no config).
        options: the :class:`~sysmonx.filtering.engine.EngineOptions` SysmonX filters with
            (default ones; the ``community`` defaults make tags 2 and 6 collectable without
            rules).
        also_collect: event IDs the pipeline needs whatever the filter says (the process
            cache needs 1 and 5): their tags are ``all``.
        schema_version: schema of the installed Sysmon (default: the user's configuration's).
        narrow: False sets every collectable tag to ``all`` (the 2019 prototype's later,
            log-everything backend), keeping action tags verbatim.
        comment: text for an XML comment at the top.
    Returns:
        :class:`SensorConfig`; its XML loads with :func:`~sysmonx.config.parse.parse_config`
        against ``schema_version``.
    Raises:
        SensorConfigError: an action tag with a rule Sysmon cannot evaluate, a collectable tag
            missing from the target schema, or ``also_collect`` naming an action event.
    """
    options = options or EngineOptions()
    version = schema_version or (user.schema_version if user else CURRENT.version)
    schema = get_schema(version)
    path = user.path if user else "<defaults>"
    wanted = set(also_collect)
    plan: dict = {}
    sets_out: list[RuleSet] = []
    # SysmonX's own events (schema extension entries) are made by SysmonX, never by Sysmon: the
    # sensor config has no tag for them, and a user's rule set on one is SysmonX's business.
    tags = [t for t in schema.tags
            if not all(schema.events[i].extension for i in schema.tags[t])]
    if user:
        for rs in user.rule_sets:
            if rs.tag in schema.tags and rs.tag not in tags:
                continue
            if rs.tag not in schema.tags:
                raise SensorConfigError(f"Sysmon schema {format_version(version)} has no "
                                        f"<{rs.tag}>: the sensor cannot collect these events",
                                        path, rs.line)
    for tag in tags:
        ids = schema.tags[tag]
        sets = user.rule_sets_for_tag(tag) if user else []
        first = ids[0]
        if tag in ACTION_TAGS:
            if wanted.intersection(ids):
                raise SensorConfigError(f"cannot collect every <{tag}> event: "
                                        f"{ACTION_TAGS[tag]}", path)
            bad = _unpassable(sets, schema) if sets else None
            if bad and not bad.startswith("two or more"):
                line = next((f.line for rs in sets for f in rs.filters
                             if f.condition not in schema.conditions or "%" in f.value
                             or f.condition in _FOLD_DEPENDENT), sets[0].line)
                raise SensorConfigError(f"<{tag}> rules must be enforced by Sysmon "
                                        f"({ACTION_TAGS[tag]}), but {bad}", path, line)
            if sets:
                plan[tag] = TagPlan(tag, "rules", f"{ACTION_TAGS[tag]}: its rules go verbatim")
                sets_out.extend(copy.deepcopy(sets))
            else:
                plan[tag] = TagPlan(tag, "off", "no rule: Sysmon must not act on any event")
                sets_out.append(RuleSet(tag, first, "include", "or"))
            continue
        if wanted.intersection(ids):
            plan[tag] = TagPlan(tag, "all", "needed by the pipeline")
            sets_out.append(RuleSet(tag, first, "exclude", "or"))
            continue
        if not sets:
            if any(_default_include(eid, options) for eid in ids):
                plan[tag] = TagPlan(tag, "all", "no rule set, collected by default")
                sets_out.append(RuleSet(tag, first, "exclude", "or"))
            else:
                plan[tag] = TagPlan(tag, "off", "no rule set, off by default")
                sets_out.append(RuleSet(tag, first, "include", "or"))
            continue
        if all(rs.onmatch == "include" and not rs.filters for rs in sets):
            plan[tag] = TagPlan(tag, "off", "only empty include rule sets: nothing matches")
            sets_out.append(RuleSet(tag, first, "include", "or"))
            continue
        why = "log-everything backend requested" if not narrow else (
            "a multi-event tag (field binding follows the binary's schema)" if len(ids) > 1
            else _unpassable(sets, schema))
        if why is None:
            plan[tag] = TagPlan(tag, "rules", "Sysmon decides exactly as SysmonX")
            sets_out.extend(copy.deepcopy(sets))
        else:
            plan[tag] = TagPlan(tag, "all", why)
            sets_out.append(RuleSet(tag, first, "exclude", "or"))
    opts = {k: v for k, v in (user.options if user else {}).items()
            if k not in DROPPED_OPTIONS and k not in CURRENT.extension_entries}
    model = Config(path="<sensor>", sha256="", schema_version=version, schema=schema,
                   options=opts, hash_algorithms=list(user.hash_algorithms) if user else [],
                   rule_sets=sets_out)
    note = comment if comment is not None else (
        f"Sysmon sensor configuration generated by SysmonX from {path}; SysmonX applies that "
        "configuration itself. Do not edit: sysmonx -c regenerates it.")
    xml = render_config_xml(model, note)
    parsed = parse_config(xml, "<sensor>", extensions=False)  # Sysmon must accept it
    return SensorConfig(parsed, xml, plan)
