#!/usr/bin/env python3
"""Runs checkov over terraform/ and compares its findings with the reviewed
baseline (tests/checkov-baseline.json: check, resource, reason).

Fails (exit 1) on a finding that the baseline does not accept, on a baseline
entry without a reason, and on a baseline entry that matches no finding any
more (fixed findings leave the list). Checkov runs offline
(--skip-download: no policy download from its platform).

Usage: run_checkov.py TERRAFORM_DIR CHECKOV_BINARY
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main() -> int:
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    tf_dir, checkov = os.path.abspath(sys.argv[1]), sys.argv[2]
    with open(os.path.join(tf_dir, "tests", "checkov-baseline.json"), encoding="utf-8") as fh:
        accepted = json.load(fh)["accepted"]
    proc = subprocess.run(
        [checkov, "-d", tf_dir, "--framework", "terraform", "--quiet", "--compact", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false"),
    )
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(f"run_checkov: checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n")
        return 1
    if isinstance(reports, dict):
        reports = [reports]
    problems = []
    passed = failed = unaccepted = 0
    used = [False] * len(accepted)
    for report in reports:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        if summary.get("parsing_errors"):
            problems.append(f"checkov could not parse {summary['parsing_errors']} file(s)")
        for finding in report.get("results", {}).get("failed_checks", []):
            failed += 1
            hits = [
                i
                for i, a in enumerate(accepted)
                if a["check_id"] == finding["check_id"] and finding["resource"].startswith(a["resource"])
            ]
            for i in hits:
                used[i] = True
            if not hits:
                unaccepted += 1
                problems.append(
                    f"{finding['check_id']} {finding['resource']} ({finding['file_path']}:"
                    f"{finding.get('file_line_range', ['?'])[0]}): {finding['check_name']}"
                )
    for i, a in enumerate(accepted):
        if not a.get("reason", "").strip():
            problems.append(f"baseline entry {a['check_id']} {a['resource']} has no reason")
        if not used[i]:
            problems.append(f"baseline entry {a['check_id']} {a['resource']} matches no finding any more: remove it")
    for p in problems:
        print(f"run_checkov: {p}")
    print(
        f"checkov: {passed} checks passed, {failed} findings, {failed - unaccepted} accepted by the baseline; "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
