"""Loading Sigma rules: YAML files, folders and ``.tar.gz``/``.tar``/``.zip`` bundles.

Parsing is pySigma's (:class:`sigma.collection.SigmaCollection`, Sigma rules specification,
correlation rules specification and filters specification): detection rules, correlation rules
and Sigma filters, multi-document files, ``action: global/repeat/reset`` collections. Every
problem is collected, never raised, and none is dropped silently: a file that is not YAML, a rule
pySigma rejects, a correlation whose referenced rule is missing, each becomes a
:class:`LoadIssue` naming the file (``bundle.tar.gz!member.yml`` for a bundle member) and the
reason. The matcher and correlation engine add their own issues later (log source without
events, unsupported value), see :class:`~sysmonx.detection.stage.DetectionStage`.
"""

from __future__ import annotations

import difflib

import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Union

from . import _pysigma

if TYPE_CHECKING:
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError, SigmaRuleLocation
    from sigma.rule import SigmaRule

__all__ = ["LoadIssue", "LoadedRules", "load_rules", "load_rules_text", "RULE_EXTENSIONS",
           "BUNDLE_SUFFIXES", "MAX_RULE_FILE_BYTES", "SIGMA_KEYS"]

#: Extensions of rule files inside folders and bundles.
RULE_EXTENSIONS = (".yml", ".yaml")
#: Names read as rule bundles.
BUNDLE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
#: A rule file larger than this is refused (a rule is a few KiB; this bounds a hostile bundle).
MAX_RULE_FILE_BYTES = 4 << 20

#: pySigma's names this module uses, bound on first use (:func:`_need_sigma`).
_SIGMA = {"sigma.collection": ("SigmaCollection",),
          "sigma.correlations": ("SigmaCorrelationRule",),
          "sigma.exceptions": ("SigmaError", "SigmaRuleLocation"),
          "sigma.rule": ("SigmaRule",)}


def _need_sigma() -> None:
    """Bind pySigma's names (:data:`_SIGMA`) into this module and register the Sigma
    specification's modifier names on first use (:mod:`._pysigma`): a run from the rule cache
    parses no rule and does not import pySigma (nor PyYAML: :func:`_yaml`)."""
    if "SigmaRule" not in globals():
        _register_spec_modifiers()
        _pysigma.bind(globals(), _SIGMA)


def _register_spec_modifiers() -> None:
    """``utf16le`` is the Sigma modifiers appendix's name for what pySigma calls ``wide``;
    pySigma 2.0 lacks the name, so rules using it would be rejected as unknown. Also silences
    RE2's own error log in pySigma's regex check (:func:`~..core.regex.quiet_sigma_regex`)."""
    from sigma import modifiers

    from ..core.regex import quiet_sigma_regex
    quiet_sigma_regex()
    if "utf16le" not in modifiers.modifier_mapping:
        modifiers.modifier_mapping["utf16le"] = modifiers.SigmaWideModifier


def _yaml() -> tuple[Any, Any]:
    """``(the yaml module, its safe loader: the C one where built)``, imported on first use."""
    import yaml
    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadIssue:
    """One problem found while loading or compiling rules.

    Attributes:
        source: file (``bundle.tar.gz!member.yml`` inside a bundle), or ``""``.
        rule_id: the rule's id (or name) when known.
        title: the rule's title when known.
        code: short group name for the summary: ``yaml``, ``sigma``, ``logsource``,
            ``placeholder``, ``regex``, ``value``, ``keyword``, ``condition``, ``reference``,
            ``correlation``, ``duplicate`` (rejections); ``field``, ``unindexed``,
            ``duplicate-id``, ``taxonomy`` (a correlation in another taxonomy), ``skipped``
            (files that are not Sigma rules, special files) (warnings).
        message: the reason, for a person.
        rejected: True when the rule (or file) is not evaluated at all; False for a warning.
    """

    source: str
    rule_id: str
    title: str
    code: str
    message: str
    rejected: bool = True

    def __str__(self) -> str:
        who = " ".join(x for x in (self.rule_id, f"({self.title})" if self.title else "") if x)
        kind = "rejected" if self.rejected else "warning"
        where = f"{self.source}: " if self.source else ""  # no file: a summary of several
        return f"{where}{kind} [{self.code}] {who + ': ' if who else ''}{self.message}"


@dataclass
class LoadedRules:
    """Rules read from files, before compilation.

    Attributes:
        rules: detection rules pySigma parsed without error (Sigma filters already applied).
        correlations: correlation rules whose references all resolved.
        issues: every problem found (see :class:`LoadIssue`).
        files: rule files read (not counting ``skipped``).
        skipped: YAML files found in folders or bundles that are not Sigma rules (reported
            in ``issues`` as one ``skipped`` warning).
    """

    rules: list = field(default_factory=list)
    correlations: list = field(default_factory=list)
    issues: list = field(default_factory=list)
    files: int = 0
    skipped: list = field(default_factory=list)

    def summary(self) -> Counter:
        """Rejections counted by ``code``."""
        return Counter(i.code for i in self.issues if i.rejected)


def rule_ref(rule) -> tuple[str, str]:
    """``(id or name, title)`` of a pySigma rule for messages."""
    rid = str(rule.id) if getattr(rule, "id", None) else (getattr(rule, "name", None) or "")
    return rid, getattr(rule, "title", None) or ""


def _source_name(rule) -> str:
    src = getattr(rule, "source", None)
    return str(src.path) if src is not None and getattr(src, "path", None) else ""


def _iter_files(paths: Iterable[Union[str, Path]], issues: list
                ) -> Iterator[tuple[str, bytes, bool]]:
    """``(name, bytes, named)`` of every rule file under ``paths`` (folders sorted, bundles
    opened); ``named`` is True for a file given by name (not found in a folder or bundle)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                low = sub.name.lower()
                if not low.endswith(RULE_EXTENSIONS + BUNDLE_SUFFIXES) or sub.is_dir():
                    continue
                if not sub.is_file():  # a FIFO, socket or device would hang or mislead a read
                    issues.append(LoadIssue(str(sub), "", "", "skipped", "not a regular file; "
                                            "skipped", rejected=False))
                elif low.endswith(RULE_EXTENSIONS):
                    yield from _read_file(sub, issues, False)
                else:
                    yield from ((n, d, False) for n, d in _iter_bundle(sub, issues))
        elif path.exists():
            if path.name.lower().endswith(BUNDLE_SUFFIXES):
                yield from ((n, d, False) for n, d in _iter_bundle(path, issues))
            else:
                yield from _read_file(path, issues, True)
        else:
            raise FileNotFoundError(f"no such rule file or folder: {p}")


def _read_file(path: Path, issues: list, named: bool) -> Iterator[tuple[str, bytes, bool]]:
    try:
        with open(path, "rb") as f:  # bounded: a FIFO or /dev/zero named explicitly
            data = f.read(MAX_RULE_FILE_BYTES + 1)
        if len(data) > MAX_RULE_FILE_BYTES:
            issues.append(LoadIssue(str(path), "", "", "yaml",
                                    f"file larger than {MAX_RULE_FILE_BYTES} bytes"))
            return
    except OSError as exc:
        issues.append(LoadIssue(str(path), "", "", "yaml", f"cannot read: {exc}"))
        return
    yield str(path), data, named


def _iter_bundle(path: Path, issues: list) -> Iterator[tuple[str, bytes]]:
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if info.is_dir() or not info.filename.lower().endswith(RULE_EXTENSIONS):
                        continue
                    name = f"{path}!{info.filename}"
                    if info.file_size > MAX_RULE_FILE_BYTES:
                        issues.append(LoadIssue(name, "", "", "yaml", "member too large"))
                        continue
                    yield name, zf.read(info)
            return
        with tarfile.open(path, "r:*") as tf:
            members = sorted((m for m in tf.getmembers()
                              if m.isfile() and m.name.lower().endswith(RULE_EXTENSIONS)),
                             key=lambda m: m.name)
            for m in members:
                name = f"{path}!{m.name}"
                if m.size > MAX_RULE_FILE_BYTES:
                    issues.append(LoadIssue(name, "", "", "yaml", "member too large"))
                    continue
                f = tf.extractfile(m)
                if f is not None:
                    yield name, f.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        issues.append(LoadIssue(str(path), "", "", "yaml", f"cannot read bundle: {exc}"))


#: Top-level keys of which a Sigma document has at least one (a detection rule, a correlation
#: rule, a Sigma filter, or a collection's ``action`` document).
SIGMA_KEYS = frozenset({"detection", "correlation", "filter", "action"})


def _parse_file(name: str, data: Union[bytes, str], issues: list,
                skipped: Optional[list] = None) -> Optional[SigmaCollection]:
    """One file's documents as a pySigma collection (``None`` when nothing to load). With
    ``skipped`` (a file found in a folder or bundle), a file none of whose documents has a
    :data:`SIGMA_KEYS` key is not a Sigma rule (SigmaHQ's ``info.yml``, a CI config): its name
    goes to ``skipped`` instead of three rejections."""
    _need_sigma()
    yaml, loader = _yaml()
    try:
        docs = list(yaml.load_all(data, Loader=loader))
    except yaml.YAMLError as exc:
        issues.append(LoadIssue(name, "", "", "yaml", f"not YAML: {exc}".replace("\n", " ")))
        return None
    if skipped is not None and not any(isinstance(d, dict) and SIGMA_KEYS & d.keys()
                                       for d in docs):
        skipped.append(name)
        return None
    if not all(d is None or isinstance(d, dict) for d in docs):
        issues.append(LoadIssue(name, "", "", "yaml", "a YAML document is not a mapping"))
        docs = [d for d in docs if isinstance(d, dict)]
    try:
        return SigmaCollection.from_dicts(docs, collect_errors=True,
                                          source=SigmaRuleLocation(Path(name)),
                                          collect_filters=True, resolve_references=False)
    except (SigmaError, ValueError, TypeError, AttributeError, KeyError) as exc:
        issues.append(LoadIssue(name, "", "", "sigma", str(exc)))
        return None


def _sigma_message(exc: Exception) -> str:
    """pySigma's message of ``exc``; an unknown modifier's also lists the modifiers that are
    known (pySigma's registry, ``sigma.modifiers.modifier_mapping``, with SysmonX's
    ``utf16le``), so the user sees that ``re`` and the others exist, and the nearest one when
    the name looks like a typo (``endswithh``: did you mean 'endswith'?). A reason pySigma took from
    an error raised with bytes (google-re2's ``re2.error``: ``b'invalid perl operator: (?<'``)
    is given as its text, decoded as UTF-8 (undecodable bytes as U+FFFD)."""
    _need_sigma()
    from sigma import modifiers
    msg = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and len(cause.args) == 1 and isinstance(cause.args[0], bytes):
        raw = str(cause)  # the bytes' repr, as pySigma's f-string put it in the message
        msg = msg.replace(raw, cause.args[0].decode("utf-8", "replace"))
    if msg.startswith("Unknown modifier"):
        known = sorted(modifiers.modifier_mapping)
        msg += " (known modifiers: " + ", ".join(known) + ")"
        typo = msg.split("'", 2)[1] if msg.count("'") >= 2 else ""
        close = difflib.get_close_matches(typo, known, n=1, cutoff=0.75)
        if close:
            msg += f"; did you mean '{close[0]}'?"
    return msg


def _collect(collections: list, issues: list) -> LoadedRules:
    """Merge per-file collections, drop rules with errors, resolve correlation references."""
    _need_sigma()
    out = LoadedRules(issues=issues)
    good = []
    filters = []
    for name, col in collections:
        rule_errors = set()
        for r in col.rules:
            if r.errors:
                rid, title = rule_ref(r)
                for e in r.errors:
                    rule_errors.add(id(e))
                    issues.append(LoadIssue(name, rid, title, "sigma", _sigma_message(e)))
            else:
                good.append(r)
        for f in col.filters:
            if f.errors:
                rid, title = rule_ref(f)
                for e in f.errors:
                    rule_errors.add(id(e))
                    issues.append(LoadIssue(name, rid, title, "sigma", f"filter: {e}"))
            else:
                filters.append(f)
        for e in col.errors:
            if id(e) not in rule_errors:
                issues.append(LoadIssue(name, "", "", "sigma", str(e)))
    # One rule per id/name: a later duplicate would silently shadow the first in references.
    seen: dict = {}
    unique = []
    for r in good:
        keys = [k for k in (str(r.id) if r.id else None, r.name) if k]
        dup = next((k for k in keys if k in seen), None)
        if dup is not None:
            rid, title = rule_ref(r)
            issues.append(LoadIssue(_source_name(r), rid, title, "duplicate",
                                    f"id/name {dup} already loaded from {seen[dup]}"))
            continue
        for k in keys:
            seen[k] = _source_name(r)
        unique.append(r)
    try:
        merged = SigmaCollection(unique + filters, resolve_references=False)
    except (SigmaError, ValueError, TypeError, AttributeError, KeyError) as exc:
        issues.append(LoadIssue("", "", "", "sigma", f"applying Sigma filters failed: {exc}"))
        merged = SigmaCollection(unique, resolve_references=False)
    # Resolve correlation references one correlation at a time so one bad reference does not
    # take every rule with it; a correlation referring to a rejected one is rejected in turn.
    pending = [r for r in merged.rules if isinstance(r, SigmaCorrelationRule)]
    bad: set = set()
    changed = True
    while changed:
        changed = False
        for c in pending:
            if id(c) in bad:
                continue
            try:
                c.resolve_rule_references(merged)
                refs = [ref.rule for ref in c.referenced_rules]
                broken = [r for r in refs if id(r) in bad]
                if broken:
                    raise SigmaError("refers to rejected correlation "
                                     + ", ".join(rule_ref(b)[0] or rule_ref(b)[1] for b in broken))
                for alias in c.aliases:
                    alias.resolve_rule_references(merged)
            except SigmaError as exc:
                rid, title = rule_ref(c)
                issues.append(LoadIssue(_source_name(c), rid, title, "reference", str(exc)))
                bad.add(id(c))
                changed = True
    out.correlations = [c for c in pending if id(c) not in bad]
    out.rules = [r for r in merged.rules if isinstance(r, SigmaRule)]
    return out


def load_rules(paths: Iterable[Union[str, Path]]) -> LoadedRules:
    """Read Sigma rules from files, folders (recursively: ``*.yml``, ``*.yaml`` and bundles)
    and bundles (``.tar.gz``, ``.tgz``, ``.tar``, ``.tar.bz2``, ``.tar.xz``, ``.zip``).
    YAML files in folders and bundles that are not Sigma documents are skipped with one
    summary warning; a file given by name is always parsed (and rejected with reasons if it is
    not a rule).

    Returns:
        :class:`LoadedRules` with every problem in ``issues``.
    Raises:
        FileNotFoundError: a path that does not exist.
    """
    issues: list = []
    collections = []
    skipped: list = []
    files = 0
    for name, data, named in _iter_files(list(paths), issues):
        files += 1
        col = _parse_file(name, data, issues, None if named else skipped)
        if col is not None:
            collections.append((name, col))
    if skipped:
        issues.append(LoadIssue("", "", "", "skipped", f"{len(skipped)} YAML file(s) in the "
                                "rule folders are not Sigma rules (no detection, correlation or "
                                f"filter key) and were skipped, e.g. {skipped[0]}",
                                rejected=False))
    out = _collect(collections, issues)
    out.files = files - len(skipped)
    out.skipped = skipped
    return out


def load_rules_text(text: str, name: str = "<text>") -> LoadedRules:
    """Like :func:`load_rules` for YAML text (one or more documents), e.g. in tests."""
    issues: list = []
    col = _parse_file(name, text, issues)
    out = _collect([(name, col)] if col is not None else [], issues)
    out.files = 1
    return out
