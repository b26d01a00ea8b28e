"""Error messages said once, by SysmonX: RE2's own log line from pySigma's regex check is
silenced (our rejection of the rule stays), and lxml's position is not repeated in XML config
errors. Both fail on the code before ``quiet_sigma_regex`` and ``_xml_message``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.config import parse_config
from sysmonx.configmodel import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RULE = """title: lookbehind
id: 33333333-3333-3333-3333-333333333333
status: test
level: high
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        CommandLine|re: '(?<!x)abc'
    condition: sel
"""


def test_re2s_own_error_line_is_silenced_and_our_rejection_stays(tmp_path):
    rule = tmp_path / "lb.yml"
    rule.write_text(RULE)
    # a child: RE2 logs from C++ to file descriptor 2, and only before absl's log is set up
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", "--sample", "--rules",
                        str(rule), "--no-output", "--no-rule-cache"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    # its only rule rejected: no rule loaded, fatal (the last line says so)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert lines[-1] == f"error: --rules: no Sigma rule loaded from {rule} (1 rejected: see " \
        "above); nothing to detect with"
    assert not any("re2.cc" in x or "Error parsing" in x or "absl" in x for x in lines), lines[:3]
    # the first line after replay's config line is the rejection
    assert lines[0].startswith("config: built-in default-windows loaded: "), lines[0]
    assert lines[1].startswith(f"sigma: {rule}: rejected [sigma] 33333333-3333-3333-3333-"
                               "333333333333 (lookbehind): Regular expression '(?<!x)abc' is "
                               "invalid: invalid perl operator: (?<!")
    assert "RE2 has no lookaround" in lines[1]
    assert "sigma: 0 rules and 0 correlations loaded, 1 rejected, of 1 read" in r.stderr


def test_re2s_reason_is_text_not_a_bytes_repr(tmp_path):
    # pySigma puts str(re2.error) in its message: the bytes' repr (b'...') before the decode
    from sysmonx.detection.rules import load_rules
    rule = tmp_path / "lb.yml"
    rule.write_text(RULE)
    [issue] = load_rules([str(rule)]).issues
    assert issue.message == ("Regular expression '(?<!x)abc' is invalid: invalid perl operator: "
                             "(?<!")
    assert "b'" not in issue.message


@pytest.mark.parametrize("text, line, message", [
    ('<Sysmon schemaversion="4.90"\n<x/>', 2,
     "XML error: error parsing attribute name (column 1)"),
    ('<Sysmon schemaversion="4.90">\n<EventFiltering>\n</Sysmon>', 3,
     "XML error: Opening and ending tag mismatch: EventFiltering (opened on line 2) and Sysmon "
     "(column 10)"),
])
def test_xml_errors_give_the_position_once(text, line, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.xml")
    assert err.value.line == line
    assert str(err.value) == f"c.xml:{line}: {message}"
    assert ", line" not in str(err.value)
