#!/usr/bin/env bash
# Idempotent install of every system and Python dependency of the WISV testbed.
# Usage: scripts/install.sh  (as root on Debian 12; re-running is cheap)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mininet iproute2 iptables nftables ethtool libnetfilter-queue-dev tcpdump
              iperf3 bridge-utils build-essential python3-dev)
VENV=${WISV_VENV:-.venv}
PYTHON=${WISV_PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[install] apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: mininet recommends openvswitch, useless without the OVS kernel datapath.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] venv: $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.wisv-installed"
want="$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[install] pip: requirements.txt"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, alone, so that nothing below can pull a CUDA build.
  "$VENV/bin/python" -m pip install -q "$(grep '^torch==' requirements.txt)"
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q --no-deps -e . --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
echo "[install] ok: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
