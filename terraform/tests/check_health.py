#!/usr/bin/env python3
"""Checks what the module promises about health: every NLB target group
asks each node's HTTP health (GET /health on metrics_port, 503 while the
node drains) rather than only its TCP port, and the NLB's security group
may reach that port on the nodes it checks.

Usage: check_health.py TERRAFORM_DIR. Prints each broken promise; exits 1
if there is one.
"""
import os
import sys

import hcl2
from hcl2.utils import SerializationOptions


def load(path):
    with open(path, encoding="utf-8") as fh:
        options = SerializationOptions(with_comments=False, preserve_heredocs=False)
        return hcl2.loads(fh.read(), serialization_options=options)


def unquote(value):
    return value.strip('"') if isinstance(value, str) else value


def main(argv):
    module = os.path.join(argv[1], "modules", "distributedlog")
    problems = []
    groups = {}
    network_text = ""
    for name in sorted(os.listdir(module)):
        if not name.endswith(".tf"):
            continue
        path = os.path.join(module, name)
        if name == "network.tf":
            with open(path, encoding="utf-8") as fh:
                network_text = fh.read()
        for entry in load(path).get("resource", []):
            for rtype, named in entry.items():
                if unquote(rtype) != "aws_lb_target_group":
                    continue
                for rname, body in named.items():
                    groups[unquote(rname)] = body
    if not groups:
        problems.append("no aws_lb_target_group found")
    for name, body in sorted(groups.items()):
        checks = body.get("health_check", [])
        check = checks[0] if checks else {}
        want = {
            "protocol": "HTTP",
            "path": "/health",
            "port": "${tostring(var.metrics_port)}",
            "matcher": "200",
        }
        for key, value in want.items():
            if unquote(check.get(key)) != value:
                problems.append(
                    f"target group {name}: health_check {key} is {check.get(key)!r}, want {value!r}"
                )
        flow = f'nlb-health-{name}'
        if f'{flow}' not in network_text or "var.metrics_port" not in network_text.split(flow, 1)[1].split("\n", 1)[0]:
            problems.append(f"network.tf: no {flow} flow from the NLB to {name} on metrics_port")
    for problem in problems:
        print(problem)
    print(f"health checks: {len(groups)} target groups, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
