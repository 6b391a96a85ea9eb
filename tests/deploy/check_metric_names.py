#!/usr/bin/env python3
"""Every series the alert rules and the Grafana dashboard query is one the
scheduler exports, with the labels they group or filter by.

usage: check_metric_names.py ALERTS_YAML DASHBOARD_JSON METRICS_TEXT

METRICS_TEXT is a /metrics page scraped from a scheduler that ran a
pipeline with an LLM call, feedback and enough numeric outputs for drift
(tests/deploy/test_observability.sh), so every family has samples. Labels
Prometheus adds (namespace, job, instance) and the histogram's le are not
the scheduler's to export; `up` is Prometheus's own series.
"""
import json
import re
import sys

import yaml

ADDED = {"namespace", "job", "instance", "le"}
failed = 0


def check(cond, what):
    global failed
    print(("ok - " if cond else "FAIL: ") + what)
    if not cond:
        failed += 1


def exported(text):
    series = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if m:
            labels = set(re.findall(r'([a-zA-Z_]\w*)="', m.group(3) or ""))
            series.setdefault(m.group(1), set()).update(labels)
    return series


def check_expr(where, expr, series):
    names = re.findall(r"\b(trellis_[a-z_]+)\b", expr)
    check(bool(names) or "up" in expr or "etcd_" in expr, f"{where}: queries a series")
    for name, sel in re.findall(r"\b(trellis_[a-z_]+)(\{[^}]*\})?", expr):
        check(name in series, f"{where}: {name} is exported")
        for label in re.findall(r"(\w+)\s*=~?", sel or ""):
            if label not in ADDED:
                check(label in series.get(name, set()), f"{where}: {name} has label {label}")
    for grp in re.findall(r"\b(?:by|on) \(([^)]*)\)", expr):
        for label in (x.strip() for x in grp.split(",")):
            if label and label not in ADDED and names:
                check(any(label in series.get(n, set()) for n in names),
                      f"{where}: grouped by {label}, a label of its series")


def main():
    rules = yaml.safe_load(open(sys.argv[1]))["groups"]
    dash = json.load(open(sys.argv[2]))
    series = exported(open(sys.argv[3]).read())
    for group in rules:
        for rule in group["rules"]:
            if "etcd_" in rule["expr"]:
                continue  # etcd's own metrics (helm.chart_env scrapes etcd)
            check_expr(f"alert {rule['alert']}", rule["expr"], series)
    n = 0
    for panel in dash["panels"]:
        for tgt in panel.get("targets", []):
            if "etcd_" in tgt["expr"]:
                continue
            n += 1
            check_expr(f"panel '{panel['title']}'", tgt["expr"], series)
    check(n > 0, "the dashboard has queries")
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("definition", "")
        for name in re.findall(r"\b(trellis_[a-z_]+)\b", q):
            check(name in series, f"variable {var['name']}: {name} is exported")
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)


main()
