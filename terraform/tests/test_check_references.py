#!/usr/bin/env python3
"""Self-test of check_references.py: each case breaks one thing in a copy of
terraform/ (in a temporary folder) and expects the checker to report it.

Usage: test_check_references.py [TERRAFORM_DIR]. Exits 1 when the unbroken
copy has a problem or when a broken copy's problem goes unreported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import check_references  # noqa: E402

MOD = "modules/distributedlog"
EX = "examples/small-cluster"

# (what, file, text to replace, replacement, expected substring of a problem)
CASES = [
    (
        "undeclared variable",
        f"{MOD}/ingest.tf",
        "instance_type          = var.ingest_instance_type",
        "instance_type          = var.ingest_instance_typo",
        "var.ingest_instance_typo is not a declared variable",
    ),
    (
        "undefined local",
        f"{MOD}/etcd.tf",
        "peer_client_urls          = local.etcd_peer_endpoints[each.key]",
        "peer_client_urls          = local.etcd_peer_endpoint[each.key]",
        "local.etcd_peer_endpoint is not defined",
    ),
    (
        "reference inside an index",
        f"{MOD}/etcd.tf",
        "member_index              = index(local.etcd_names, each.key)",
        "member_index              = index(local.etcd_names, each.key)\n    idx_probe                 = var.etcd_members[local.etcd_namez[0]]",
        "local.etcd_namez is not defined",
    ),
    (
        "undeclared resource",
        f"{MOD}/ingest.tf",
        "load_balancer_arn = aws_lb.this.arn",
        "load_balancer_arn = aws_lb.main.arn",
        "aws_lb.main is not a resource declared",
    ),
    (
        "resource reference inside a string",
        f"{MOD}/s3.tf",
        'resources = [aws_s3_bucket.segments.arn, "${aws_s3_bucket.segments.arn}/*"]\n\n    principals {\n      type        = "*"\n      identifiers = ["*"]\n    }\n\n    condition {\n      test     = "Bool"',
        'resources = [aws_s3_bucket.segments.arn, "${aws_s3_bucket.segment.arn}/*"]\n\n    principals {\n      type        = "*"\n      identifiers = ["*"]\n    }\n\n    condition {\n      test     = "Bool"',
        "aws_s3_bucket.segment is not a resource declared",
    ),
    (
        "undeclared data source",
        f"{MOD}/main.tf",
        "node_ami_id      = data.aws_ami.node.id",
        "node_ami_id      = data.aws_ami.debian.id",
        "data.aws_ami.debian is not declared",
    ),
    (
        "unknown module output",
        f"{EX}/outputs.tf",
        "value       = module.distributedlog.metastore_url",
        "value       = module.distributedlog.metastore_urls",
        "declares no output 'metastore_urls'",
    ),
    (
        "unknown module argument",
        f"{EX}/main.tf",
        "  cache_nodes         = var.cache_nodes\n",
        "  cache_nodes         = var.cache_nodes\n  cache_count         = 3\n",
        "argument 'cache_count' is not a variable",
    ),
    (
        "required variable not passed",
        f"{EX}/main.tf",
        "  dlog_release_url    = var.dlog_release_url\n",
        "",
        "required variable 'dlog_release_url'",
    ),
    (
        "module source missing",
        f"{EX}/main.tf",
        'source = "../../modules/distributedlog"',
        'source = "../../modules/distributed-log"',
        "is not a folder with .tf files",
    ),
    (
        "template variable not passed",
        f"{MOD}/templates/etcd-member.tftpl",
        "bootstrap_state='${initial_cluster_state}'",
        "bootstrap_state='${initial_state}'",
        "uses template variable 'initial_state'",
    ),
    (
        "template file missing",
        f"{MOD}/cache.tf",
        'templatefile("${path.module}/templates/dlog-node.tftpl"',
        'templatefile("${path.module}/templates/dlog_node.tftpl"',
        "templates/dlog_node.tftpl does not exist",
    ),
    (
        "template variable missing from a merged local",
        f"{MOD}/main.tf",
        "    release_sha256       = var.dlog_release_sha256\n",
        "",
        "uses template variable 'release_sha256'",
    ),
    (
        "unused variable",
        f"{MOD}/variables.tf",
        'variable "vpc_id" {',
        'variable "unused_input" {\n  type    = string\n  default = ""\n}\n\nvariable "vpc_id" {',
        "variable 'unused_input' is declared but never used",
    ),
    (
        "guide default differs",
        "README.md",
        '| `etcd_quota_backend_gb` | `number` | `4` |',
        '| `etcd_quota_backend_gb` | `number` | `5` |',
        "variable 'etcd_quota_backend_gb': default is '4' in variables.tf, '5' in the guide",
    ),
    (
        "guide misses a variable",
        "README.md",
        "| `etcd_wal_volume_iops` |",
        "| `etcd_wal_volume_iop` |",
        "variable 'etcd_wal_volume_iops' of modules/distributedlog is missing",
    ),
    (
        "guide misses an output",
        "README.md",
        "| `metastore_url` |",
        "| `metastore` |",
        "output 'metastore_url' of modules/distributedlog is missing",
    ),
]


def problems_of(root: str) -> list[str]:
    checker = check_references.Checker(root)
    checker.run()
    return checker.problems


def main(argv: list[str]) -> int:
    source = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(HERE, ".."))
    failures = 0
    with tempfile.TemporaryDirectory(prefix="dlog-tf-selftest-") as tmp:
        root = os.path.join(tmp, "terraform")
        shutil.copytree(source, root, ignore=shutil.ignore_patterns(".terraform", "__pycache__"))
        baseline = problems_of(root)
        if baseline:
            print("checker self-test: the tree under test already has problems; fix them first:")
            for p in baseline:
                print("  " + p)
            return 1
        for what, rel, old, new, expected in CASES:
            path = os.path.join(root, rel)
            with open(path, encoding="utf-8") as fh:
                original = fh.read()
            if original.count(old) != 1:
                print(f"checker self-test: case {what!r}: {old!r} occurs {original.count(old)} times in {rel}")
                failures += 1
                continue
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(original.replace(old, new))
            try:
                found = problems_of(root)
            finally:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(original)
            if not any(expected in p for p in found):
                failures += 1
                print(f"checker self-test: MISSED {what}: expected a problem containing {expected!r}, got:")
                for p in found or ["(no problems)"]:
                    print("  " + p)
        # A tree with no .tf files at all is a failure, not a clean pass.
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        empty_refused = any("no .tf files found" in p for p in problems_of(empty))
        if not empty_refused:
            failures += 1
            print("checker self-test: MISSED an empty tree: it passed with no files checked")
    reported = len(CASES) + 1 - failures
    print(f"checker self-test: {reported} of {len(CASES) + 1} broken copies reported (the last: an empty tree)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
