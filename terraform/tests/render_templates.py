#!/usr/bin/env python3
"""Renders the module's cloud-init templates offline and checks the result.

`terraform test` cannot run without a provider (and terraform 1.0.3, the
PyPI fallback, has no `terraform test` at all), but `terraform console` in a
folder whose configuration needs no provider evaluates templatefile() with
Terraform's own template engine. For each scenario below this script:

  * renders the template with `terraform console` (one run for all);
  * parses the result as YAML (cloud-init's #cloud-config);
  * writes every write_files entry that starts with #! to a folder and runs
    shellcheck over it (also over the module's scripts/ files), so the
    rendered shell, not the template, is what is checked;
  * asserts what the module promises: Restart=always with the back-off,
    HTTPS-only and always-checked release download, lifecycle hook
    completion on the node's own group, the etcd start guard, WAL on its
    own volume, snapshots and staggered defragmentation, the SSM agent only
    with enable_ssm, log shipping everywhere, the Iceberg catalog's URI
    fetched on compactors with the RDS catalog and nowhere else, the Glue
    catalog's URI given to compactors with iceberg_catalog_kind = "glue".

Usage: render_templates.py TERRAFORM_DIR TERRAFORM_BINARY [OUT_DIR]
OUT_DIR (default: a temporary folder) keeps the rendered files, which
tests/etcd_start_test.sh runs against a real etcd, and
tests/tls_fetch_test.sh and tests/catalog_fetch_test.sh run with a stand-in
`aws`. Exits 1 on a problem.
Needs PyYAML and shellcheck.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

MODULE = "modules/distributedlog"
USER_DATA_LIMIT = 16384
SHA = "ab" * 32
NODE_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo/tls/node-AbCdEf"
CATALOG_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-0123abcd-AbCdEf"
CATALOG_ENDPOINT = "demo-catalog.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/iceberg"
CATALOG_ARGS = f"eu-west-1 {CATALOG_SECRET} {CATALOG_ENDPOINT} /run/dlog/catalog.env /etc/dlog/rds-ca.pem dlog"

ETCD_COMMON = """
    cluster_name              = "demo"
    aws_region                = "eu-west-1"
    client_port               = 2379
    peer_port                 = 2380
    initial_cluster           = "etcd-a=https://10.0.1.10:2380,etcd-b=https://10.0.2.10:2380,etcd-c=https://10.0.3.10:2380"
    data_volume_id            = "vol-0123456789abcdef0"
    wal_volume_id             = "vol-0fedcba9876543210"
    quota_backend_bytes       = 4294967296
    snapshot_bucket           = "demo-segments-123"
    snapshot_prefix           = "etcd-snapshots/demo"
    snapshot_interval_minutes = 60
    ssm_agent_version         = "3.3.3270.0"
    log_group_prefix          = "/distributedlog/demo"
    metric_namespace          = "distributedlog"
    report_script             = file("${SCRIPTS}/dlog-report.sh")
    ssm_agent_script          = file("${SCRIPTS}/install-ssm-agent.sh")
    tls_fetch_script          = file("${SCRIPTS}/dlog-tls-fetch.sh")
    tls_dir                   = "/etc/dlog/tls"
    peer_cert_cn              = "etcd.demo.dlog.internal"
"""

NODE_COMMON = f"""
    cluster_name         = "demo"
    aws_region           = "eu-west-1"
    metastore_url        = "etcd://10.0.1.10:2379,10.0.2.10:2379,10.0.3.10:2379/demo"
    object_store_url     = "s3://demo-segments-123/dlog"
    release_url          = "https://releases.example.org/dlog-1.2.3.tar.gz"
    release_sha256       = "{SHA}"
    stop_timeout_seconds = 120
    metrics_port         = 9100
    client_tokens        = true
    ssm_agent_version    = "3.3.3270.0"
    log_group_prefix     = "/distributedlog/demo"
    metric_namespace     = "distributedlog"
    report_script        = file("${{SCRIPTS}}/dlog-report.sh")
    ssm_agent_script     = file("${{SCRIPTS}}/install-ssm-agent.sh")
    tls_fetch_script     = file("${{SCRIPTS}}/dlog-tls-fetch.sh")
    tls_secret_arn       = "{NODE_SECRET}"
    tls_dir              = "/etc/dlog/tls"
    tls_server_name      = "nodes.demo.dlog.internal"
    catalog_fetch_script = file("${{SCRIPTS}}/dlog-catalog-fetch.sh")
"""

# What every role but a compactor with iceberg_catalog gets (main.tf).
NO_CATALOG = """
    catalog_uri          = ""
    catalog_fetch        = false
    catalog_secret_arn   = ""
    catalog_endpoint     = ""
"""

# A compactor's part with iceberg_catalog (catalog.tf: local.catalog_node_vars).
WITH_CATALOG = f"""
    catalog_uri          = ""
    catalog_fetch        = true
    catalog_secret_arn   = "{CATALOG_SECRET}"
    catalog_endpoint     = "{CATALOG_ENDPOINT}"
"""

# A compactor's part with iceberg_catalog_kind = "glue": a fixed URI, no fetch.
GLUE_URI = "glue://?region=eu-west-1"
WITH_GLUE = f"""
    catalog_uri          = "{GLUE_URI}"
    catalog_fetch        = false
    catalog_secret_arn   = ""
    catalog_endpoint     = ""
"""

COMPACTOR = """
    role            = "compactor"
    port            = 7073
    nvme_journal    = false
    lifecycle_watch = true
    asg_name        = "demo-compactor"
    enable_ssm      = true
"""

TEST_ETCD = """
    cluster_name              = "t"
    aws_region                = "eu-west-1"
    member_name               = "{name}"
    member_index              = {index}
    private_ip                = "{ip}"
    client_port               = {port}
    peer_port                 = {pport}
    initial_cluster           = "{initial}"
    initial_cluster_state     = "{state}"
    peer_client_urls          = "{peers}"
    data_volume_id            = "vol-0123456789abcdef0"
    wal_volume_id             = "vol-0fedcba9876543210"
    quota_backend_bytes       = 1073741824
    snapshot_bucket           = "t"
    snapshot_prefix           = "etcd-snapshots/t"
    snapshot_interval_minutes = 60
    enable_ssm                = false
    ssm_agent_version         = "3.3.3270.0"
    log_group_prefix          = "/distributedlog/t"
    metric_namespace          = "distributedlog"
    report_script             = file("${{SCRIPTS}}/dlog-report.sh")
    ssm_agent_script          = file("${{SCRIPTS}}/install-ssm-agent.sh")
    tls_fetch_script          = file("${{SCRIPTS}}/dlog-tls-fetch.sh")
    tls_secret_arn            = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:t/tls/{name}"
    tls_dir                   = "/etc/dlog/tls"
    peer_cert_cn              = "etcd.t.dlog.internal"
"""

# name -> (template, HCL object body)
SCENARIOS = {
    "etcd-a": ("etcd-member.tftpl", ETCD_COMMON + """
    member_name           = "etcd-a"
    member_index          = 0
    private_ip            = "10.0.1.10"
    peer_client_urls      = "https://10.0.2.10:2379,https://10.0.3.10:2379"
    tls_secret_arn        = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo/tls/etcd-a-AbCdEf"
    initial_cluster_state = "new"
    enable_ssm            = true
"""),
    "etcd-b": ("etcd-member.tftpl", ETCD_COMMON + """
    member_name           = "etcd-b"
    member_index          = 1
    private_ip            = "10.0.2.10"
    peer_client_urls      = "https://10.0.1.10:2379,https://10.0.3.10:2379"
    tls_secret_arn        = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo/tls/etcd-b-AbCdEf"
    initial_cluster_state = "existing"
    enable_ssm            = false
"""),
    # For tests/etcd_start_test.sh, which runs dlog-etcd-start against a
    # real etcd on loopback addresses: member tx alone first, then ty.
    "t-x-new": ("etcd-member.tftpl", TEST_ETCD.format(name="tx", index=0, ip="127.0.0.21", port=23791, pport=23801, peers="", state="new", initial="tx=https://127.0.0.21:23801")),
    "t-x-existing": ("etcd-member.tftpl", TEST_ETCD.format(name="tx", index=0, ip="127.0.0.21", port=23791, pport=23801, peers="", state="existing", initial="tx=https://127.0.0.21:23801")),
    "t-y": ("etcd-member.tftpl", TEST_ETCD.format(name="ty", index=1, ip="127.0.0.22", port=23792, pport=23802, peers="https://127.0.0.21:23791", state="existing", initial="tx=https://127.0.0.21:23801,ty=https://127.0.0.22:23802")),
    "ingest": ("dlog-node.tftpl", NODE_COMMON + NO_CATALOG + """
    role            = "ingest"
    port            = 7070
    nvme_journal    = false
    lifecycle_watch = true
    asg_name        = "demo-ingest"
    enable_ssm      = true
"""),
    "cache": ("dlog-node.tftpl", NODE_COMMON + NO_CATALOG + """
    role            = "cache"
    port            = 7072
    nvme_journal    = true
    lifecycle_watch = false
    asg_name        = ""
    enable_ssm      = false
"""),
    # A compactor with the Iceberg catalog (also for tests/catalog_fetch_test.sh)
    # and without it.
    "compactor": ("dlog-node.tftpl", NODE_COMMON + WITH_CATALOG + COMPACTOR),
    "compactor-no-catalog": ("dlog-node.tftpl", NODE_COMMON + NO_CATALOG + COMPACTOR),
    "compactor-glue": ("dlog-node.tftpl", NODE_COMMON + WITH_GLUE + COMPACTOR),
}


class Checks:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.count = 0

    def check(self, ok: bool, what: str) -> None:
        self.count += 1
        if not ok:
            self.problems.append(what)


def render(tf_dir: str, terraform: str) -> dict[str, str]:
    templates = os.path.join(tf_dir, MODULE, "templates")
    scripts = os.path.join(tf_dir, MODULE, "scripts")
    body = []
    for name, (template, args) in SCENARIOS.items():
        args = args.replace("${SCRIPTS}", scripts)
        body.append(f'    "{name}" = templatefile("{templates}/{template}", {{{args}    }})')
    config = "locals {\n  rendered = {\n" + "\n".join(body) + "\n  }\n}\n"
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "main.tf"), "w", encoding="utf-8") as fh:
            fh.write(config)
        env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
        env.pop("TF_CLI_CONFIG_FILE", None)
        # base64: the console prints a plain quoted string, whatever the text.
        proc = subprocess.run(
            [terraform, "console"],
            input="base64encode(jsonencode(local.rendered))\n",
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"render_templates: terraform console failed:\n{proc.stdout}\n{proc.stderr}")
    match = re.search(r'"([A-Za-z0-9+/=]+)"', proc.stdout)
    if not match:
        raise SystemExit(f"render_templates: no output from terraform console:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(base64.b64decode(match.group(1)))


def files_of(doc: dict) -> dict[str, str]:
    return {entry["path"]: entry["content"] for entry in doc.get("write_files", [])}


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def check_node(c: Checks, name: str, doc: dict, catalog: bool = False) -> None:
    f = files_of(doc)
    unit = f.get("/etc/systemd/system/dlog.service", "")
    c.check(unit_values(unit, "Restart") == ["always"], f"{name}: dlog.service must have Restart=always")
    pre = ["+/usr/local/sbin/dlog-backoff", f"+/usr/local/sbin/dlog-tls-fetch eu-west-1 {NODE_SECRET} /etc/dlog/tls dlog"]
    if catalog:
        pre.append(f"+/usr/local/sbin/dlog-catalog-fetch {CATALOG_ARGS}")
    c.check(
        unit_values(unit, "ExecStartPre") == pre,
        f"{name}: dlog.service must wait in dlog-backoff, then fetch its certificate"
        + (" and the catalog's URI" if catalog else "")
        + " (as root) before a start",
    )
    c.check("StartLimitIntervalSec=0" in unit, f"{name}: dlog.service must never stop restarting")
    exec_start = " ".join(unit_values(unit, "ExecStart"))
    c.check("--metrics-listen 0.0.0.0:9100" in exec_start, f"{name}: dlog serve must serve metrics on metrics_port")
    c.check("--zone ${DLOG_ZONE}" in exec_start, f"{name}: dlog serve must be given the instance's zone (--zone)")
    c.check(exec_start.endswith(" --auth-tokens"), f"{name}: dlog serve must require client tokens (client_tokens)")
    c.check(
        "--tls-cert /etc/dlog/tls/cert.pem --tls-key /etc/dlog/tls/key.pem --tls-ca /etc/dlog/tls/ca.pem" in exec_start,
        f"{name}: dlog serve must run with TLS (--tls-cert, --tls-key, --tls-ca)",
    )
    env = f.get("/etc/dlog/dlog.env", "")
    for line in (
        "DLOG_TLS__SERVER_NAME=nodes.demo.dlog.internal",
        "DLOG_TLS__ETCD_CA=/etc/dlog/tls/ca.pem",
        "DLOG_TLS__ETCD_CERT=/etc/dlog/tls/cert.pem",
        "DLOG_TLS__ETCD_KEY=/etc/dlog/tls/key.pem",
    ):
        c.check(line in env.splitlines(), f"{name}: dlog.env must set {line} (TLS to etcd, peers' name)")
    fetch = f.get("/etc/systemd/system/dlog-tls-fetch.service", "")
    c.check(
        unit_values(fetch, "ExecStart") == [f"/usr/local/sbin/dlog-tls-fetch eu-west-1 {NODE_SECRET} /etc/dlog/tls dlog"],
        f"{name}: dlog-tls-fetch.service must fetch the node secret",
    )
    install = f.get("/usr/local/sbin/dlog-install", "")
    c.check("--proto '=https' --proto-redir '=https'" in install, f"{name}: dlog-install must download over HTTPS only")
    c.check(f"want='{SHA}'" in install, f"{name}: dlog-install must carry the SHA-256")
    c.check(
        re.search(r"^echo \"\$want  \$tmp/artifact\" \| sha256sum --check --strict -$", install, re.M) is not None,
        f"{name}: dlog-install must always check the SHA-256 (not under a condition)",
    )
    c.check("/usr/local/sbin/dlog-report" in f and "/etc/systemd/system/dlog-report.timer" in f, f"{name}: log shipping missing")
    c.check("DLOG_ZONE=" in f.get("/usr/local/sbin/dlog-prepare", ""), f"{name}: dlog-prepare must record the zone")
    runcmd = [" ".join(map(str, cmd)) for cmd in doc.get("runcmd", [])]
    c.check(any("dlog-report.timer" in cmd for cmd in runcmd), f"{name}: dlog-report.timer is not enabled")
    c.check(any("dlog-tls-fetch.timer" in cmd for cmd in runcmd), f"{name}: dlog-tls-fetch.timer is not enabled")
    c.check(any("awscli" in cmd and "jq" in cmd for cmd in runcmd), f"{name}: awscli and jq are not installed")


def check_catalog(c: Checks, doc: dict) -> None:
    """A compactor with iceberg_catalog: the URI fetched before every start
    and every 15 minutes, with a restart when the password was rotated."""
    f = files_of(doc)
    unit = f.get("/etc/systemd/system/dlog.service", "")
    c.check(
        unit_values(unit, "EnvironmentFile") == ["/etc/dlog/dlog.env", "/run/dlog/node.env", "-/run/dlog/catalog.env"],
        "compactor: dlog.service must read the catalog URI from /run/dlog/catalog.env",
    )
    c.check(f.get("/usr/local/sbin/dlog-catalog-fetch", "").startswith("#!/bin/bash\n"), "compactor: dlog-catalog-fetch missing")
    fetch = f.get("/etc/systemd/system/dlog-catalog-fetch.service", "")
    c.check(
        unit_values(fetch, "ExecStart") == [f"/usr/local/sbin/dlog-catalog-fetch --restart dlog.service {CATALOG_ARGS}"],
        "compactor: dlog-catalog-fetch.service must fetch the catalog's secret and restart dlog.service on a change",
    )
    timer = f.get("/etc/systemd/system/dlog-catalog-fetch.timer", "")
    c.check(
        unit_values(timer, "OnUnitActiveSec") == ["15min"] and unit_values(timer, "WantedBy") == ["timers.target"],
        "compactor: dlog-catalog-fetch.timer must run every 15 minutes",
    )
    runcmd = [" ".join(map(str, cmd)) for cmd in doc.get("runcmd", [])]
    c.check("systemctl enable --now dlog-catalog-fetch.timer" in runcmd, "compactor: dlog-catalog-fetch.timer is not enabled")
    c.check(
        "dlog-catalog-fetch.service" in " ".join(unit_values(f.get("/etc/dlog/report.env", ""), "REPORT_UNITS")),
        "compactor: dlog-catalog-fetch's journal must be shipped",
    )


def check_ssm(c: Checks, name: str, doc: dict, enabled: bool) -> None:
    f = files_of(doc)
    runcmd = [" ".join(map(str, cmd)) for cmd in doc.get("runcmd", [])]
    has = "/usr/local/sbin/dlog-install-ssm-agent" in f and any("dlog-install-ssm-agent" in cmd for cmd in runcmd)
    c.check(has == enabled, f"{name}: SSM agent install must be there exactly when enable_ssm is set")


def check_all(c: Checks, rendered: dict[str, str]) -> dict[str, dict]:
    docs = {}
    for name, text in rendered.items():
        c.check(text.startswith("#cloud-config\n"), f"{name}: does not start with #cloud-config")
        try:
            docs[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            c.check(False, f"{name}: not valid YAML: {exc}")
            docs[name] = {}
    ingest, cache = docs["ingest"], docs["cache"]
    check_node(c, "ingest", ingest)
    check_node(c, "cache", cache)
    watch = files_of(ingest).get("/usr/local/sbin/dlog-lifecycle-watch", "")
    c.check("asg='demo-ingest'" in watch, "ingest: the lifecycle watcher must name its own group")
    c.check("complete-lifecycle-action" in watch, "ingest: the lifecycle watcher must complete the hook")
    c.check(
        watch.find("systemctl stop dlog.service") < watch.find("Result --value") < watch.find("complete-lifecycle-action"),
        "ingest: the hook must be completed only after dlog stopped and its result was read",
    )
    c.check("/usr/local/sbin/dlog-lifecycle-watch" not in files_of(cache), "cache: no lifecycle watcher expected")
    c.check("mount_journal" in files_of(cache).get("/usr/local/sbin/dlog-prepare", ""), "cache: NVMe journal mount missing")
    check_ssm(c, "ingest", ingest, True)
    check_ssm(c, "cache", cache, False)
    check_node(c, "compactor", docs["compactor"], catalog=True)
    check_node(c, "compactor-no-catalog", docs["compactor-no-catalog"])
    check_catalog(c, docs["compactor"])
    check_node(c, "compactor-glue", docs["compactor-glue"])
    glue_unit = files_of(docs["compactor-glue"]).get("/etc/systemd/system/dlog.service", "")
    c.check(
        unit_values(glue_unit, "Environment") == [f'"DLOG_COMPACTOR__ICEBERG_CATALOG={GLUE_URI}"'],
        "compactor-glue: dlog.service must be given the Glue catalog's URI",
    )
    c.check(
        "dlog-catalog-fetch" not in rendered["compactor-glue"] and "/run/dlog/catalog.env" not in rendered["compactor-glue"],
        "compactor-glue: no catalog secret to fetch with Glue",
    )
    c.check(
        unit_values(files_of(docs["compactor"]).get("/etc/systemd/system/dlog.service", ""), "Environment") == [],
        "compactor: the RDS catalog's URI comes from dlog-catalog-fetch only",
    )
    for name in ("ingest", "cache", "compactor-no-catalog"):
        c.check("catalog" not in rendered[name].lower(), f"{name}: the Iceberg catalog belongs to compactors with iceberg_catalog only")

    for name, ssm in (("etcd-a", True), ("etcd-b", False)):
        doc = docs[name]
        f = files_of(doc)
        unit = f.get("/etc/systemd/system/dlog-etcd.service", "")
        c.check(unit_values(unit, "Restart") == ["always"], f"{name}: dlog-etcd.service must have Restart=always")
        c.check(unit_values(unit, "ExecStart") == ["/usr/local/sbin/dlog-etcd-start"], f"{name}: etcd must start through the guard")
        secret = f"arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo/tls/{name}-AbCdEf"
        c.check(
            unit_values(unit, "ExecStartPre") == [f"+/usr/local/sbin/dlog-tls-fetch eu-west-1 {secret} /etc/dlog/tls etcd"],
            f"{name}: etcd must fetch its own certificate (as root) before it starts",
        )
        c.check("Requires=dlog-etcd-volumes.service" in unit, f"{name}: etcd must wait for its volumes")
        start = f.get("/usr/local/sbin/dlog-etcd-start", "")
        c.check('--wal-dir "$ETCD_WAL_DIR"' in start, f"{name}: the WAL must be on its own directory")
        c.check("ETCD_WAL_DIR=/var/lib/dlog-etcd-wal/wal" in f.get("/etc/dlog/etcd.env", ""), f"{name}: WAL dir is not on the WAL volume")
        c.check("--quota-backend-bytes 4294967296" in start, f"{name}: quota flag missing")
        for flag in (
            "--client-cert-auth",
            "--peer-client-cert-auth",
            '--cert-file "$ETCDCTL_CERT"',
            '--trusted-ca-file "$ETCDCTL_CACERT"',
            '--peer-cert-file "$ETCDCTL_CERT"',
            '--peer-trusted-ca-file "$ETCDCTL_CACERT"',
            "--peer-cert-allowed-cn 'etcd.demo.dlog.internal'",
        ):
            c.check(flag in start, f"{name}: etcd must run with {flag} (TLS and client-certificate auth)")
        c.check("http://" not in start, f"{name}: every etcd URL must be https://")
        etcd_env = f.get("/etc/dlog/etcd.env", "").splitlines()
        c.check(
            all(f"ETCDCTL_{k}=/etc/dlog/tls/{v}" in etcd_env for k, v in (("CACERT", "ca.pem"), ("CERT", "cert.pem"), ("KEY", "key.pem"))),
            f"{name}: etcd.env must give etcdctl the member's client certificate",
        )
        for script in ("dlog-etcd-snapshot", "dlog-etcd-defrag"):
            text = f.get(f"/usr/local/sbin/{script}", "")
            c.check("https://127.0.0.1:2379" in text and "ETCDCTL_CERT" in text, f"{script}: must reach etcd over TLS with the client certificate")
        volumes = f.get("/usr/local/sbin/dlog-etcd-volumes", "")
        c.check(
            "'vol-0123456789abcdef0' /dev/xvdf /var/lib/dlog-etcd " in volumes
            and "'vol-0fedcba9876543210' /dev/xvdg /var/lib/dlog-etcd-wal " in volumes,
            f"{name}: data and WAL volumes must be mounted by volume ID",
        )
        c.check("aws s3 cp" in f.get("/usr/local/sbin/dlog-etcd-snapshot", ""), f"{name}: snapshot upload missing")
        c.check("--sse" not in f.get("/usr/local/sbin/dlog-etcd-snapshot", ""), f"{name}: snapshots must use the bucket's key")
        c.check("defrag" in f.get("/usr/local/sbin/dlog-etcd-defrag", ""), f"{name}: defragmentation missing")
        c.check("REPORT_ETCD_QUOTA_BYTES=4294967296" in f.get("/etc/dlog/report.env", ""), f"{name}: quota metric missing")
        runcmd = [" ".join(map(str, cmd)) for cmd in doc.get("runcmd", [])]
        c.check(
            any("dlog-etcd-snapshot.timer" in cmd and "dlog-etcd-defrag.timer" in cmd for cmd in runcmd),
            f"{name}: snapshot and defrag timers are not enabled",
        )
        check_ssm(c, name, doc, ssm)
    calendars = [
        unit_values(files_of(docs[n]).get("/etc/systemd/system/dlog-etcd-defrag.timer", ""), "OnCalendar") for n in ("etcd-a", "etcd-b")
    ]
    c.check(calendars == [["*-*-* *:20:00"], ["*-*-* *:30:00"]], f"defrag must be staggered per member: {calendars}")
    return docs


def shellcheck(c: Checks, docs: dict[str, dict], out_dir: str, scripts_dir: str) -> int:
    paths = []
    for name, doc in docs.items():
        for path, content in files_of(doc).items():
            if content.startswith("#!"):
                dest = os.path.join(out_dir, name, path.lstrip("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "w", encoding="utf-8") as fh:
                    fh.write(content)
                paths.append(dest)
    paths += [os.path.join(scripts_dir, n) for n in sorted(os.listdir(scripts_dir)) if n.endswith(".sh")]
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", *paths], capture_output=True, text=True, check=False)
    c.check(proc.returncode == 0, "shellcheck:\n" + proc.stdout + proc.stderr)
    return len(paths)


def main() -> int:
    if len(sys.argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    tf_dir, terraform = os.path.abspath(sys.argv[1]), sys.argv[2]
    out_dir = sys.argv[3] if len(sys.argv) == 4 else tempfile.mkdtemp(prefix="dlog-rendered-")
    c = Checks()
    rendered = render(tf_dir, terraform)
    for name, text in rendered.items():
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        with open(os.path.join(out_dir, name, "user-data.yaml"), "w", encoding="utf-8") as fh:
            fh.write(text)
    docs = check_all(c, rendered)
    # EC2 takes at most 16 KB of user data; the module sends it gzipped
    # (base64gzip), which cloud-init unpacks.
    largest = 0
    for name, text in rendered.items():
        size = len(gzip.compress(text.encode("utf-8")))
        largest = max(largest, size)
        c.check(size <= USER_DATA_LIMIT, f"{name}: gzipped user data is {size} bytes, over EC2's {USER_DATA_LIMIT}")
    module_dir = os.path.join(tf_dir, MODULE)
    for tf in sorted(n for n in os.listdir(module_dir) if n.endswith(".tf")):
        with open(os.path.join(module_dir, tf), encoding="utf-8") as fh:
            for line in fh:
                if re.match(r"\s*user_data(_base64)?\s*=", line):
                    c.check("base64gzip(templatefile(" in line, f"{tf}: user data must be sent gzipped (base64gzip): {line.strip()}")
    scripts = shellcheck(c, docs, out_dir, os.path.join(tf_dir, MODULE, "scripts"))
    for problem in c.problems:
        print(f"render_templates: {problem}")
    print(
        f"rendered templates: {len(rendered)} scenarios (largest gzipped: {largest} bytes), {scripts} scripts shellchecked, "
        f"{c.count - len(c.problems)} passed, {len(c.problems)} failed"
    )
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
