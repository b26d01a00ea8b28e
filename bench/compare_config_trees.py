#!/usr/bin/env python3
"""Compare what two source trees make of every corpus config: the parsed model (or the errors),
and the filter plans of every EventID.

    python bench/compare_config_trees.py --old OLD/src [--new NEW/src] [--corpus DIR]
    python bench/compare_config_trees.py --dump OUT      # one tree (the one on sys.path)

For each tree (a child process with ``PYTHONPATH`` set to it, the venv's python, and
``SYSMONX_CONFIG_CACHE=0``) and every file under ``CORPUS/configs`` (279 files: accepted and
refused ones), ``load_config(path, cache=None)`` with extensions on and off gives either
``("error", [(message, line), ...])`` or the model's parts (rule sets with their filters and
``<Rule>`` groups, options, hash algorithms, field sizes, warnings, schema version, sha256,
heartbeat interval), written as their ``repr``. For every ``.xml`` config that loads
with extensions on (the 143 of ``tests/test_filter_index.py``) the plan of every EventID
of the catalogue is taken from a fresh ``FilterEngine(config, plan_cache=False)`` (the plan
handed to ``decider_from_plan``, as :func:`~sysmonx.filtering.index.storable_plan` writes it),
with no environment and with an environment given.

Prints the number of files, models and plans compared and each difference (first 20); exit
status 0 when the two trees agree on everything, 1 on any difference or a child that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_corpus

ENVIRONMENT = {"SystemRoot": "C:\\Windows", "ProgramFiles": "C:\\Program Files",
               "USERNAME": "alice", "windir": "C:\\Windows"}


def _model(path: Path, extensions: bool) -> str:
    from sysmonx.config import ConfigError, load_config
    try:
        cfg = load_config(str(path), cache=None, extensions=extensions)
    except ConfigError as exc:
        return repr(("error", [(str(e), e.line) for e in exc.errors]))
    return repr((cfg.rule_sets, cfg.options, cfg.hash_algorithms, cfg.field_sizes,
                 cfg.warnings, cfg.schema_version, cfg.sha256, cfg.heartbeat_interval))


def _plans(path: Path, environment) -> dict:
    """EventID -> repr of its plan (``"-"``: a decider without a plan)."""
    from sysmonx.config import load_config
    from sysmonx.filtering import EngineOptions, FilterEngine
    from sysmonx.filtering import engine as engine_mod
    from sysmonx.filtering.index import storable_plan
    from sysmonx.schema import CURRENT
    cfg = load_config(str(path), cache=None)
    got: dict = {}
    current = [None]
    original = engine_mod.decider_from_plan

    def recording(plan, *args, **kwargs):
        got[current[0]] = repr(storable_plan(plan))
        return original(plan, *args, **kwargs)
    engine_mod.decider_from_plan = recording
    try:
        engine = FilterEngine(cfg, EngineOptions(environment=environment), plan_cache=False)
        for eid in CURRENT.events:
            current[0] = eid
            engine.decider_for(eid)
            got.setdefault(eid, "-")
    finally:
        engine_mod.decider_from_plan = original
    return {str(k): v for k, v in got.items()}


def dump(corpus: Path, out: str) -> int:
    from sysmonx.config import ConfigError, load_config
    files = sorted(p for p in (corpus / "configs").rglob("*") if p.is_file())
    result: dict = {"models": {}, "plans": {}}
    for path in files:
        rel = str(path.relative_to(corpus))
        for ext in (True, False):
            result["models"][f"{rel} extensions={ext}"] = _model(path, ext)
        if path.suffix != ".xml":
            continue
        try:
            load_config(str(path), cache=None)
        except ConfigError:
            continue
        for env_name, env in (("none", None), ("given", ENVIRONMENT)):
            result["plans"][f"{rel} environment={env_name}"] = _plans(path, env)
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


def _child(src: str, corpus: Path, out: str) -> None:
    env = dict(os.environ, PYTHONPATH=src, SYSMONX_CONFIG_CACHE="0", PYTHONHASHSEED="0")
    r = subprocess.run([sys.executable, __file__, "--corpus", str(corpus), "--dump", out],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"child for {src} failed ({r.returncode}): {r.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--old", help="the reference tree's src directory")
    ap.add_argument("--new", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.corpus or not (Path(args.corpus) / "configs").is_dir():
        print(f"no corpus configs under {args.corpus!r}", file=sys.stderr)
        return 1
    corpus = Path(args.corpus)
    if args.dump:
        return dump(corpus, args.dump)
    if not args.old:
        ap.error("--old is required (the reference tree's src directory)")
    with tempfile.TemporaryDirectory() as tmp:
        outs = []
        for name, src in (("old", args.old), ("new", args.new)):
            out = os.path.join(tmp, name + ".json")
            try:
                _child(src, corpus, out)
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
            with open(out) as f:
                outs.append(json.load(f))
    old, new = outs
    diffs = []
    for part in ("models", "plans"):
        for key in sorted(set(old[part]) | set(new[part])):
            if old[part].get(key) != new[part].get(key):
                diffs.append(f"{part}: {key}")
    n_plans = sum(len(p) for p in new["plans"].values())
    print(f"{len(new['models'])} file readings (files x extensions on/off), "
          f"{len(new['plans'])} config x environment plan sets ({n_plans} EventID plans) "
          f"compared: {len(diffs)} differences")
    for d in diffs[:20]:
        print("  " + d)
    if not new["models"] or not new["plans"]:
        print("nothing compared", file=sys.stderr)
        return 1
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
