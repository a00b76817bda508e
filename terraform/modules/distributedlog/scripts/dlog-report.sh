#!/bin/bash
# dlog-report: run every minute by dlog-report.timer on every node.
#
#  * Ships the journal entries of the units in REPORT_UNITS to CloudWatch
#    Logs (group REPORT_LOG_GROUP, one stream per instance). The journal
#    cursor is saved only after every batch was accepted, so a failed run
#    ships the same entries again next minute and none are skipped.
#  * Puts metrics in the namespace REPORT_NAMESPACE, with the dimension
#    InstanceId: DiskUsedPercent of each mount in REPORT_MOUNTS (dimension
#    Mount too) and, on etcd members (REPORT_ETCD_QUOTA_BYTES set),
#    EtcdDbUsedPercent: the backend database size against its quota
#    (asked of REPORT_ETCD_ENDPOINT with the ETCDCTL_CACERT, ETCDCTL_CERT
#    and ETCDCTL_KEY of report.env); and TlsCertDaysLeft, the days until
#    the certificate REPORT_TLS_CERT expires, with the dimension Cluster
#    (REPORT_CLUSTER) only, so one alarm watches every node.
#
# Settings come from /etc/dlog/report.env, written by cloud-init.
set -euo pipefail
# shellcheck source=/dev/null
. /etc/dlog/report.env
: "${REPORT_REGION:?}" "${REPORT_LOG_GROUP:?}" "${REPORT_NAMESPACE:?}" "${REPORT_UNITS:?}" "${REPORT_MOUNTS:?}"
export AWS_DEFAULT_REGION="$REPORT_REGION"
state=/var/lib/dlog-report
mkdir -p "$state"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

imds() {
  local token
  token=$(curl -fsS --retry 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token)
  curl -fsS --retry 5 -H "X-aws-ec2-metadata-token: $token" \
    "http://169.254.169.254/latest/meta-data/$1"
}
instance_id=$(imds instance-id)

# ---- metrics
metrics=()
for mnt in $REPORT_MOUNTS; do
  if mountpoint -q "$mnt"; then
    pct=$(df --output=pcent "$mnt" | tail -n 1 | tr -dc '0-9')
    metrics+=("MetricName=DiskUsedPercent,Dimensions=[{Name=InstanceId,Value=$instance_id},{Name=Mount,Value=$mnt}],Value=$pct,Unit=Percent")
  fi
done
if [ -n "${REPORT_ETCD_QUOTA_BYTES:-}" ]; then
  export ETCDCTL_CACERT ETCDCTL_CERT ETCDCTL_KEY
  if db=$(ETCDCTL_API=3 etcdctl --endpoints "${REPORT_ETCD_ENDPOINT:-https://127.0.0.1:2379}" endpoint status -w json 2>/dev/null |
    jq -er '.[0].Status.dbSize'); then
    metrics+=("MetricName=EtcdDbUsedPercent,Dimensions=[{Name=InstanceId,Value=$instance_id}],Value=$((db * 100 / REPORT_ETCD_QUOTA_BYTES)),Unit=Percent")
  fi
fi
if [ -n "${REPORT_TLS_CERT:-}" ] && [ -s "$REPORT_TLS_CERT" ]; then
  if end=$(openssl x509 -noout -enddate -in "$REPORT_TLS_CERT" 2>/dev/null | cut -d= -f2-) &&
    end_s=$(date -d "$end" +%s 2>/dev/null); then
    metrics+=("MetricName=TlsCertDaysLeft,Dimensions=[{Name=Cluster,Value=$REPORT_CLUSTER}],Value=$(((end_s - $(date +%s)) / 86400)),Unit=Count")
  fi
fi
if [ "${#metrics[@]}" -gt 0 ]; then
  aws cloudwatch put-metric-data --namespace "$REPORT_NAMESPACE" --metric-data "${metrics[@]}" ||
    echo "dlog-report: put-metric-data failed; next minute tries again" >&2
fi

# ---- logs
units=()
for unit in $REPORT_UNITS; do
  units+=(-u "$unit")
done
if [ -s "$state/cursor" ]; then
  cp "$state/cursor" "$work/cursor"
fi
journalctl "${units[@]}" --cursor-file="$work/cursor" -o json --no-pager |
  jq -c '{timestamp: ((.__REALTIME_TIMESTAMP | tonumber) / 1000 | floor),
          message: (((._SYSTEMD_UNIT // .SYSLOG_IDENTIFIER // "") + ": " + (.MESSAGE | tostring))[0:8000])}' \
    >"$work/events"
if [ ! -s "$work/events" ]; then
  exit 0
fi
aws logs create-log-stream --log-group-name "$REPORT_LOG_GROUP" --log-stream-name "$instance_id" \
  >/dev/null 2>&1 || true
# At most 100 events of at most 8000 characters: under the 1 MiB batch limit.
split -l 100 "$work/events" "$work/batch."
for batch in "$work"/batch.*; do
  jq -s . "$batch" >"$batch.json"
  aws logs put-log-events --log-group-name "$REPORT_LOG_GROUP" --log-stream-name "$instance_id" \
    --log-events "file://$batch.json" >/dev/null
done
if [ -s "$work/cursor" ]; then
  mv "$work/cursor" "$state/cursor"
fi
