#!/bin/bash
# Installs the SSM agent (Debian images do not carry it) from AWS's regional
# distribution bucket over HTTPS, at the version given.
# Usage: dlog-install-ssm-agent REGION VERSION
set -euo pipefail
region=$1
version=$2
if systemctl is-active --quiet amazon-ssm-agent; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --proto '=https' --tlsv1.2 --retry 10 --retry-delay 5 -o "$tmp/amazon-ssm-agent.deb" \
  "https://s3.$region.amazonaws.com/amazon-ssm-$region/$version/debian_amd64/amazon-ssm-agent.deb"
dpkg -i "$tmp/amazon-ssm-agent.deb"
systemctl enable --now amazon-ssm-agent
