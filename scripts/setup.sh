#!/usr/bin/env bash
# Installs everything the project needs, idempotently: Debian packages, the virtualenv with the
# pinned Python dependencies (torch 2.13.0 CPU), the model zoo, and starts Open vSwitch.
# Usage: sudo ./scripts/setup.sh        (safe to run again; skips what is already in place)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: must run as root (it installs Debian packages and starts Open vSwitch): sudo $0" >&2
  exit 1
fi

# 1. Debian packages. The testbed builds namespaces, veths and switches itself (iproute2, ethtool,
#    Open vSwitch, which runs with the userspace datapath where the kernel lacks its module); npm fetches
#    the detectors' weights; tcpdump writes the run's pcap files; util-linux's setpriv runs a test as non-root;
#    Mininet (Debian's 2.3.0: its Python package and mnexec) builds the emulated network; python-is-python3
#    gives `python` (a fresh Debian 12 has none) for `sudo python run_testbed.py`, which re-executes with the venv;
#    openssh-server (and its client) reach the other servers of a multi-host run, and its sshd binary runs the
#    private sshds of the multi-host tests (tests/servers.py). The system's sshd is not started here (policy-rc.d
#    below): a machine that serves ssh starts it as it always has.
APT_PACKAGES=(python3 python3-venv python3-dev gcc iproute2 iputils-ping ethtool tcpdump procps psmisc
              util-linux openvswitch-switch mininet nodejs npm python-is-python3 openssh-client openssh-server)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A machine that already has node/npm outside Debian keeps them.
if command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done; missing=("${tmp[@]}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps dpkg from starting services (there may be no init system; the system sshd stays off);
  # we start OVS below. A policy-rc.d the machine already had is put back as it was.
  POLICY=/usr/sbin/policy-rc.d
  restore_policy() { if [ -e "$POLICY.setup-saved" ]; then mv -f "$POLICY.setup-saved" "$POLICY"; else rm -f "$POLICY"; fi; }
  if [ -e "$POLICY" ]; then mv "$POLICY" "$POLICY.setup-saved"; fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod +x "$POLICY"
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  restore_policy; trap - EXIT
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    # Installed here, the system sshd stays off at boot too (the package enables it); a server of a multi-host
    # run enables its sshd itself: systemctl enable --now ssh (docs/multihost.md).
    if command -v deb-systemd-helper >/dev/null; then deb-systemd-helper disable ssh.service >/dev/null 2>&1 || true; fi
    if command -v update-rc.d >/dev/null; then update-rc.d ssh disable >/dev/null 2>&1 || true; fi
  fi
else
  log "Debian packages present"
fi

# 2. The virtualenv, from Debian's python3.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
# The editable install maps the packages that exist when it runs: a new package reinstalls it.
stamp=$VENV/.installed-$( (cat pyproject.toml; ls -d -- */__init__.py) | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies (pinned in pyproject.toml)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  rm -f "$VENV"/.installed-*; touch "$stamp"
else
  log "Python dependencies present"
fi

# 2b. Mininet's Python package, linked into the virtualenv: only that package (a .pth naming Debian's
#     dist-packages would expose 40+ other modules of the system Python). PyPI's mininet is older and has no mnexec.
MININET_PKG=/usr/lib/python3/dist-packages/mininet
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -d "$MININET_PKG" ]; then
  echo "setup.sh: $MININET_PKG is missing although the Debian package mininet is installed" >&2
  exit 1
fi
if [ "$(readlink "$SITE/mininet" 2>/dev/null)" != "$MININET_PKG" ]; then
  log "linking Mininet ($MININET_PKG) into $SITE"
  rm -rf "${SITE:?}/mininet"
  ln -s "$MININET_PKG" "$SITE/mininet"
else
  log "Mininet linked"
fi

# 3. Open vSwitch: started here, kernel datapath if the module loads, userspace otherwise.
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
  log "starting Open vSwitch"
  # Through subprocess, which closes inherited descriptors: started straight from this shell, the daemons
  # would hold for ever whatever the caller had open (a lock taken around this script, a pipe of CI's).
  "$VENV/bin/python" -c 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))' \
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-mlockall >/dev/null
fi
ovs-vsctl --timeout=5 show >/dev/null && log "Open vSwitch running"

# 4. The model zoo (built once, cached under models/).
if "$VENV/bin/python" -c "import workers.zoo" 2>/dev/null; then
  "$VENV/bin/python" -m workers.zoo build
fi
log "ready: $VENV/bin/python run_testbed.py --help"
