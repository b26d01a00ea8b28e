"""The RE2 policy: how every user-supplied regular expression is compiled and bounded.

Config filters (``condition="regex"``) and Sigma rules (the ``re`` modifier, wildcard patterns
with ``?``) both compile through :func:`compile_pattern`, so a pattern behaves the same wherever
it is written and no pattern can take more than linear time or unbounded memory:

* RE2 syntax only (no backreferences or lookaround): matching time is linear in the input.
* a memory budget per compiled pattern (:data:`MAX_MEM`, 8 MiB); a configuration shares
  :data:`TOTAL_MEM` (256 MiB) between at most :data:`MAX_COUNT` (1024) regex filters.
* config filters look at the first :data:`SCAN_LIMIT` (64 KiB) characters of a value.
* errors are :class:`~sysmonx.core.errors.RegexError` with RE2's reason, followed by what to
  write instead when the pattern uses a PCRE construct RE2 does not have (:func:`re2_hint`).

Case: config filters are case-insensitive (every Sysmon condition is); Sigma's ``re`` is
case-sensitive unless the rule asks for ``i`` (Sigma specification), so the caller says which.
"""

from __future__ import annotations

from typing import Any, Callable

import re2

from .errors import RegexError

__all__ = ["MAX_MEM", "TOTAL_MEM", "MAX_COUNT", "SCAN_LIMIT", "compile_pattern", "searcher",
           "escape", "per_pattern_budget", "re2_hint"]

#: RE2 memory budget of one compiled pattern, bytes.
MAX_MEM = 8 << 20
#: Budget shared by the regex filters of one configuration, bytes.
TOTAL_MEM = 256 << 20
#: Most regex filters one configuration may hold.
MAX_COUNT = 1024
#: A config regex filter looks at the first this-many characters of a value.
SCAN_LIMIT = 65536
#: Smallest per-pattern budget whatever the count (RE2 needs some room for any pattern).
MIN_MEM = 256 << 10


def per_pattern_budget(count: int) -> int:
    """Memory budget of each of ``count`` patterns sharing :data:`TOTAL_MEM` (bytes)."""
    return max(MIN_MEM, min(MAX_MEM, TOTAL_MEM // max(1, count)))


def compile_pattern(pattern: str, *, case_sensitive: bool = True, dot_nl: bool = False,
                    max_mem: int = MAX_MEM) -> Any:
    """Compile ``pattern`` with RE2 under the policy above.

    Args:
        pattern: RE2 syntax (inline flags such as ``(?i)`` allowed).
        case_sensitive: False for a case-insensitive pattern.
        dot_nl: ``.`` also matches a line break.
        max_mem: memory budget, bytes.
    Returns:
        the compiled ``re2`` pattern (``search``, ``fullmatch`` ...).
    Raises:
        RegexError: RE2 rejects the pattern (with its reason).
    """
    opts = re2.Options()
    opts.case_sensitive = case_sensitive
    opts.dot_nl = dot_nl
    opts.log_errors = False
    opts.never_capture = True
    opts.max_mem = max_mem
    try:
        return re2.compile(pattern, opts)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        msg = str(msg)
        hint = re2_hint(msg)
        raise RegexError(f"{msg}; {hint}" if hint else msg) from None


#: RE2's message for a PCRE construct it lacks (its ``parse.cc`` wording) -> what to say.
_HINTS = (
    (("invalid perl operator: (?=", "invalid perl operator: (?!",
      "invalid perl operator: (?<=", "invalid perl operator: (?<!"),
     "RE2 has no lookaround (lookahead or lookbehind), which keeps its matching linear in "
     "time: match the wanted part alone and test what must or must not be next to it with "
     "another filter or selection, in an AND group or an exclude"),
    (("invalid perl operator: (?>",),
     "RE2 has no atomic groups: write the group without ?>, as RE2 never backtracks"),
    (("invalid perl operator: (?P",),
     "RE2 has no named backreferences or recursion, (?P=name) and (?P>name); (?P<name>...) "
     "is accepted"),
    (("bad repetition operator: *+", "bad repetition operator: ++",
      "bad repetition operator: ?+"),
     "RE2 has no possessive quantifiers: drop the last +, as RE2 never backtracks"),
)


def re2_hint(message: str) -> str:
    """What to write instead, for RE2's ``message`` about a PCRE construct RE2 lacks
    (lookaround, atomic groups, possessive quantifiers, backreferences); ``""`` for any other
    message. The constructs are the ones RE2's syntax page lists as not supported."""
    for starts, hint in _HINTS:
        if message.startswith(starts):
            return hint
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return "RE2 has no backreferences: a value that must repeat needs another filter"
    return ""


def searcher(rx: Any, limit: int = 0) -> Callable[[str], bool]:
    """``test(value) -> bool``: whether ``rx`` (from :func:`compile_pattern`) is found anywhere
    in ``value`` (unanchored), looking at the first ``limit`` characters when ``limit`` > 0.

    Uses the binding's native match call when it exists (the ``search`` wrapper decodes match
    offsets, which a yes/no does not need)."""
    native = getattr(rx, "_regexp", None)
    if native is None or not hasattr(native, "Match"):  # pragma: no cover - other re2 builds
        search = rx.search
        if limit:
            return lambda v: search(v if len(v) <= limit else v[:limit]) is not None
        return lambda v: search(v) is not None
    match = native.Match
    anchor = re2._Anchor.UNANCHORED
    null = re2._NULL_SPAN

    if limit:
        def search_limited(v: str) -> bool:
            b = (v if len(v) <= limit else v[:limit]).encode("utf-8", "surrogatepass")
            return bool(match(anchor, b, 0, len(b))[0] != null)
        search_limited.recipe = (searcher, (rx, limit))  # type: ignore[attr-defined]
        return search_limited

    def search_native(v: str) -> bool:
        b = v.encode("utf-8", "surrogatepass")
        return bool(match(anchor, b, 0, len(b))[0] != null)
    search_native.recipe = (searcher, (rx, limit))  # type: ignore[attr-defined]
    return search_native


def escape(text: str) -> str:
    """``text`` as an RE2 literal."""
    return str(re2.escape(text))


def quiet_sigma_regex() -> None:
    """Make pySigma's default regex check (its ``SafePolicy``: RE2) compile with RE2's error
    logging off, so a rule with a pattern RE2 refuses no longer prints RE2's own
    ``re2.cc ... Error parsing`` line on stderr before SysmonX's message about the rule (the
    refusal itself is unchanged: pySigma still raises, with RE2's reason). Leaves a policy
    that is not RE2's alone; idempotent. Call before loading Sigma rules."""
    try:
        from sigma.policy import default_policy
        from sigma.policy.regex_engine import RE2RegexEngine
    except ImportError:  # a pySigma without policies compiles with Python's re: nothing to do
        return
    engine = default_policy.regex_engine
    if type(engine) is not RE2RegexEngine:
        return

    class _QuietRE2(RE2RegexEngine):
        """pySigma's RE2 engine with RE2's error log off (:func:`quiet_sigma_regex`)."""

        def compile(self, pattern: str, flags: int = 0) -> Any:
            import re as _re
            prefix = "".join(v for k, v in ((_re.IGNORECASE, "i"), (_re.MULTILINE, "m"),
                                            (_re.DOTALL, "s")) if int(flags) & int(k))
            opts = re2.Options()
            opts.log_errors = False
            return re2.compile(f"(?{prefix})" + pattern if prefix else pattern, opts)

    default_policy.regex_engine = _QuietRE2()
