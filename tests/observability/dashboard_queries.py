#!/usr/bin/python3
"""The PromQL queries of a Grafana dashboard JSON, with its variables filled in.

    from dashboard_queries import panel_queries, validate_dashboard
    panel_queries("deploy/grafana/dashboards/logit.json")   # [(panel title, expr), ...]
    validate_dashboard("deploy/grafana/dashboards/logit.json")  # raises DashboardError

As a script (standard library only):

    python3 tests/observability/dashboard_queries.py DASHBOARD.json [--job REGEX]
        [--rate-interval 1m] [--validate] [--markdown]

prints the queries as a JSON list of {"panel": title, "expr": expr}; --validate checks the
dashboard first (exit 1 with the reason on failure); --markdown prints the table of
deploy/grafana/README.md (panel, row, exact query as written in the dashboard) instead.

Substitutions: $job / ${job} / ${job:regex} -> job_regex; $__rate_interval, $__interval and
$__range (also in ${...} form) -> rate_interval. Panels nested in collapsed rows are included.
"""

import argparse
import json
import re
import sys

DATASOURCE_UID = "logit-prometheus"

_JOB_VAR = re.compile(r"\$\{job(?::[a-z]+)?\}|\$job\b")
_TIME_VARS = re.compile(r"\$\{__(?:rate_interval|interval|range)\}"
                        r"|\$__(?:rate_interval|interval|range)\b")


class DashboardError(ValueError):
    """The dashboard is not usable: a panel without a query, an empty expr, ..."""


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_panels(dashboard):
    """Yields (row title or None, panel) for every non-row panel, in dashboard order.

    Expanded rows are followed by their panels at the top level; collapsed rows hold theirs
    in row["panels"]. Both are walked."""
    row_title = None
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            row_title = panel.get("title")
            for inner in panel.get("panels", []):
                yield row_title, inner
            continue
        yield row_title, panel
        # Old (schema < 16) and library layouts may nest panels in any panel.
        for inner in panel.get("panels", []):
            yield row_title, inner


def substitute(expr, job_regex=".*", rate_interval="1m"):
    expr = _JOB_VAR.sub(lambda _: job_regex, expr)
    return _TIME_VARS.sub(lambda _: rate_interval, expr)


def raw_queries(path_or_dashboard):
    """[(row title, panel title, target's expr as written), ...]."""
    dashboard = (path_or_dashboard if isinstance(path_or_dashboard, dict)
                 else load(path_or_dashboard))
    out = []
    for row, panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((row, panel.get("title", ""), target.get("expr", "")))
    return out


def panel_queries(path, job_regex=".*", rate_interval="1m"):
    """[(panel title, expr), ...] for every target of every panel, variables substituted."""
    return [(title, substitute(expr, job_regex, rate_interval))
            for _, title, expr in raw_queries(path)]


def validate_dashboard(path, datasource_uid=DATASOURCE_UID):
    """Raises DashboardError on the first problem found; returns the number of queries."""
    dashboard = load(path)
    problems = []
    if not dashboard.get("uid"):
        problems.append("the dashboard has no uid")
    ids = {}
    count = 0
    panels = list(iter_panels(dashboard))
    if not panels:
        problems.append("the dashboard has no panels")
    for row, panel in panels:
        title = panel.get("title") or "<untitled>"
        where = f"panel {title!r} (row {row!r}, id {panel.get('id')})"
        if not panel.get("title"):
            problems.append(f"{where}: no title")
        if panel.get("id") in ids:
            problems.append(f"{where}: id {panel.get('id')} repeats panel {ids[panel['id']]!r}")
        ids[panel.get("id")] = title
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for target in targets:
            ref = target.get("refId", "?")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where}, target {ref}: empty expr")
                continue
            count += 1
            rest = substitute(expr)
            if "$" in rest:
                problems.append(f"{where}, target {ref}: unknown variable left in {rest!r}")
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid != datasource_uid:
                problems.append(f"{where}, target {ref}: datasource uid {uid!r}, "
                                f"not {datasource_uid!r}")
    if problems:
        raise DashboardError(f"{path}:\n  " + "\n  ".join(problems))
    return count


def markdown_table(path):
    lines = ["| Row | Panel | PromQL |", "|---|---|---|"]
    for row, title, expr in raw_queries(path):
        cell = expr.replace("|", "\\|")
        lines.append(f"| {row or ''} | {title} | `{cell}` |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard")
    parser.add_argument("--job", default=".*", help="value for $job (default .*)")
    parser.add_argument("--rate-interval", default="1m",
                        help="value for $__rate_interval, $__interval, $__range (default 1m)")
    parser.add_argument("--validate", action="store_true", help="check the dashboard first")
    parser.add_argument("--markdown", action="store_true",
                        help="print a Markdown table of the queries as written")
    args = parser.parse_args(argv)
    try:
        if args.validate:
            validate_dashboard(args.dashboard)
    except (DashboardError, OSError, json.JSONDecodeError) as e:
        print(f"dashboard_queries: {e}", file=sys.stderr)
        return 1
    if args.markdown:
        print(markdown_table(args.dashboard))
    else:
        queries = panel_queries(args.dashboard, args.job, args.rate_interval)
        json.dump([{"panel": t, "expr": e} for t, e in queries], sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
