"""``sysmonx coverage``: techniques named by sysmon-modular's RuleNames and SigmaHQ's tags, what
fired over the public EVTX, and an ATT&CK Navigator layer valid in layer format 4.5."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from sysmonx.cli import main
from sysmonx.config import parse_config
from sysmonx.workbench.coverage import Coverage, navigator_layer

MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"
SWIFT = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
SIGMA = "sigma/sigmahq_rules_sysmon_categories.tar.gz"
SCHEMA = json.loads((Path(__file__).parent / "data" / "navigator_layer_4.5.schema.json")
                    .read_text())


def _validate(layer: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(layer)
    assert layer["gradient"]["maxValue"] > layer["gradient"]["minValue"]  # the format's rule


@pytest.fixture(scope="module")
def full(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cov")
    out, layer = tmp / "cov.json", tmp / "layer.json"
    assert main(["coverage", "-c", str(corpus / MODULAR), "--rules", str(corpus / SIGMA),
                 "--logs", str(corpus / "evtx"), "-f", "json", "-o", str(out),
                 "--navigator", str(layer)]) == 0
    return json.loads(out.read_text()), json.loads(layer.read_text())


def test_config_only_counts(corpus, capsys, tmp_path):
    layer = tmp_path / "modular.json"
    assert main(["coverage", "-c", str(corpus / MODULAR), "-f", "json",
                 "--navigator", str(layer)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"] == {"techniques": 113, "config": 113, "sigma": 0, "both": 0}
    t = {r["id"]: r for r in d["techniques"]}
    # sysmon-modular names T1036 on 66 include filters (65 "Masquerading", 1 "Process Evasion")
    assert t["T1036"]["config_filters"] == 66
    assert t["T1059.001"]["config_filters"] == 28
    assert d["logs"] is None and t["T1036"]["fired_config"] is None
    lay = json.loads(layer.read_text())
    _validate(lay)
    assert len(lay["techniques"]) == 113
    by_id = {x["techniqueID"]: x for x in lay["techniques"]}
    assert by_id["T1036"]["score"] == 66
    assert lay["gradient"]["maxValue"] == max(x["score"] for x in lay["techniques"])
    # SwiftOnSecurity writes 'T1089,Tamper-Defender' and the like
    assert main(["coverage", "-c", str(corpus / SWIFT), "-f", "json"]) == 0
    swift = json.loads(capsys.readouterr().out)
    assert swift["totals"]["config"] == 22
    assert any(r["id"] == "T1089" for r in swift["techniques"])


def test_with_sigma_and_logs(full):
    d, layer = full
    assert d["sigma"]["rules"] == 1999 and d["sigma"]["rejected"] == 8
    assert d["totals"] == {"techniques": 312, "config": 113, "sigma": 296, "both": 97,
                           "fired": 78, "fired_config": d["totals"]["fired_config"],
                           "fired_sigma": d["totals"]["fired_sigma"]}
    t = {r["id"]: r for r in d["techniques"]}
    # cmd.exe's include rule (T1059.003) kept 146 events: all fired it (no other named filter
    # decided them)
    assert t["T1059.003"]["fired_config"] >= 146
    assert t["T1003.001"]["fired_sigma"] == 13
    _validate(layer)
    scores = {x["techniqueID"]: x["score"] for x in layer["techniques"]}
    assert scores["T1003.001"] == t["T1003.001"]["fired_config"] + 13
    assert sum(1 for s in scores.values() if s > 0) == 78


def test_fired_config_equals_replay_rulenames(corpus, full, tmp_path):
    """What fired for the config = techniques of RuleNames in `sysmonx replay`'s output."""
    from collections import Counter

    from sysmonx.workbench.common import techniques_in
    d, _ = full
    out = tmp_path / "kept.jsonl"
    assert main(["replay", "-q", "-c", str(corpus / MODULAR), str(corpus / "evtx"),
                 "-f", "jsonl", "-o", str(out)]) == 0
    fired: Counter = Counter()
    for line in out.read_text().splitlines():
        for tid in techniques_in(json.loads(line).get("RuleName")):
            fired[tid] += 1
    got = {r["id"]: r["fired_config"] for r in d["techniques"] if r["fired_config"]}
    assert got == dict(fired) and len(got) > 20


def test_layer_schema_refuses_what_the_format_refuses(full):
    _, layer = full
    for bad in ({**layer, "versions": {"navigator": "5.1.0", "layer": "4.4"}},
                {k: v for k, v in layer.items() if k != "domain"},
                {**layer, "techniques": [{"techniqueID": "T59"}]},
                {**layer, "gradient": {"colors": ["#fff"], "minValue": 0, "maxValue": 1}},
                {**layer, "domain": "mitre-enterprise"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SCHEMA).validate(bad)


def test_exclude_names_do_not_count_and_sub_techniques_sort():
    cfg = parse_config("""<Sysmon schemaversion="4.90"><EventFiltering>
      <ProcessCreate onmatch="include">
        <Image condition="end with" name="technique_id=T1059.001,technique_name=PowerShell">
          powershell.exe</Image>
        <Image condition="end with" name="MitreRef=T1059">cmd.exe</Image>
      </ProcessCreate>
      <ProcessCreate onmatch="exclude">
        <Image condition="is" name="T1105">C:\\x.exe</Image>
      </ProcessCreate></EventFiltering></Sysmon>""")
    cov = Coverage(cfg)
    d = cov.to_dict()
    assert [r["id"] for r in d["techniques"]] == ["T1059", "T1059.001"]
    layer = navigator_layer(d)
    _validate(layer)
    assert [t["score"] for t in layer["techniques"]] == [1, 1]


def test_usage_errors(capsys):
    assert main(["coverage"]) == 87
    assert "--config" in capsys.readouterr().err


def test_text_says_what_the_technique_total_counts(full, corpus, capsys):
    """A new user read "78 of the 312" with 312 defined nowhere: the text form names it the
    distinct techniques named by the config or the rules (113 + 296 - 97)."""
    d, _ = full
    assert d["totals"]["techniques"] == d["totals"]["config"] + d["totals"]["sigma"] - \
        d["totals"]["both"] == 312
    from sysmonx.workbench.coverage import format_text
    first = [x for x in format_text(d).splitlines() if x.startswith("Techniques:")]
    assert first == ["Techniques: 312 distinct ATT&CK techniques named by the config or the "
                     "Sigma rules (113 by the config, 296 by Sigma, 97 by both); 78 of the 312 "
                     "fired over the logs (a kept event named one, or a rule tagged with one "
                     "matched)"]
    # new-user report s14 #7: "compiled" while the rules came from the cache, "1999" beside
    # stderr's "1,999"
    sigma = [x for x in format_text(d).splitlines() if x.startswith("Sigma:")]
    assert len(sigma) == 1 and sigma[0].startswith("Sigma: 1,999 rules in use, 8 rejected (")
