#!/usr/bin/env bash
# Test hosts for the multi-engine tests: N Docker engines, each in its own
# network namespace, joined by a bridge in a hub namespace and reachable from
# the root namespace through one veth. No default route anywhere: nothing
# can leave the machine. Every engine lives under DIR; everything is torn
# down by PID and namespace.
#
#   fleet.sh up    TAG DIR NET N [TLS_HOSTS]   e.g. up ad42 /tmp/x 10.250.42 3 "3"
#   fleet.sh kill  TAG DIR NET I               kill -9 engine I and its containers
#   fleet.sh cut   TAG DIR NET I               take engine I's link down
#   fleet.sh mend  TAG DIR NET I               bring it back up
#   fleet.sh down  TAG DIR NET                 tear everything down
#
# With `up`, FLEET_DAEMON_JSON (default `{}`) is every engine's daemon.json,
# and FLEET_BARE lists hosts that get a namespace but no engine.
#
# Engine I listens on unix://DIR/hI/docker.sock and tcp://NET.(10+I):2375
# (2376 with mutual TLS; certificates in DIR/tls: ca.pem, cert.pem, key.pem
# for the client, and the same CA for the engines).
#
# Hazard (see SANDBOX-NOTES): a second dockerd in the root network namespace
# with --bridge none deletes the host's docker0; these engines never run there.
set -euo pipefail
cmd=$1 tag=$2 dir=$3 net=$4
# Teardown unmounts and deletes under DIR: it must be an absolute path of its own.
case $dir in /?*/?*) ;; *) echo "fleet.sh: DIR must be an absolute path below a folder: $dir" >&2; exit 2 ;; esac
hub=${tag}hub
rootif=${tag}r

ns() { echo "${tag}h$1"; }

# Runs a command in a namespace, cgroups mounted (tests/nsrun.sh).
nsrun() { bash "$(dirname "$0")/nsrun.sh" "$@"; }

# Kills every process of engine $1: those in its namespace, and the
# containers and shims, which live in namespaces of their own but under
# the engine's cgroup parent or exec root.
kill_engine() {
  local i=$1 n; n=$(ns "$i")
  local pids
  pids=$(ip netns pids "$n" 2>/dev/null || true)
  pids="$pids $(cat /sys/fs/cgroup/pids/"$n"/*/tasks /sys/fs/cgroup/pids/"$n"/tasks 2>/dev/null || true)"
  # Only the engine's own programs that name its folder: a client whose
  # command line names the engine's socket (the program under test) is not
  # the engine, and must not die with it.
  local p comm
  for p in $(pgrep -f "$dir/h$i/" 2>/dev/null || true); do
    comm=$(cat "/proc/$p/comm" 2>/dev/null || true)
    case "$comm" in
      dockerd | containerd | containerd-shim* | runc | docker-proxy | docker-init) pids="$pids $p" ;;
    esac
  done
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
}

certs() {
  local t=$dir/tls; mkdir -p "$t"; cd "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=autodev-test-ca \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout key.pem -out client.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile client.ext -out cert.pem 2>/dev/null
  for i in "$@"; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$net.$((10 + i))" \
      -keyout "server$i-key.pem" -out "server$i.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$net.$((10 + i))" > "server$i.ext"
    openssl x509 -req -in "server$i.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile "server$i.ext" -out "server$i-cert.pem" 2>/dev/null
  done
  cd - >/dev/null
}

case $cmd in
up)
  n=$5 tls=" ${6:-} "
  mkdir -p "$dir"
  ip netns add "$hub"
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  ip -n "$hub" link set lo up
  ip link add "$rootif" type veth peer name root0 netns "$hub"
  ip -n "$hub" link set root0 master br0 up
  ip addr add "$net.1/24" dev "$rootif"
  ip link set "$rootif" up
  [ "$tls" != "  " ] && certs $tls
  for i in $(seq 1 "$n"); do
    h=$(ns "$i") d=$dir/h$i ip=$net.$((10 + i))
    ip netns add "$h"
    ip -n "$h" link set lo up
    ip link add eth0 netns "$h" type veth peer name "h$i" netns "$hub"
    ip -n "$hub" link set "h$i" master br0 up
    ip -n "$h" addr add "$ip/24" dev eth0
    ip -n "$h" link set eth0 up
    mkdir -p "$d"
    [[ " ${FLEET_BARE:-} " == *" $i "* ]] && continue
    echo "${FLEET_DAEMON_JSON:-{\}}" > "$d/daemon.json"
    if [[ $tls == *" $i "* ]]; then
      listen="-H tcp://$ip:2376 --tlsverify --tlscacert $dir/tls/ca.pem --tlscert $dir/tls/server$i-cert.pem --tlskey $dir/tls/server$i-key.pem"
    else
      # --tls=false: dockerd 20.10 waits 15 s on a plain TCP listener otherwise.
      listen="-H tcp://$ip:2375 --tls=false"
    fi
    # shellcheck disable=SC2086
    (nsrun "$h" dockerd --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
      --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" $listen --storage-driver overlay2 \
      --cgroup-parent "/$h" --bip "172.31.$((200 + i)).1/24" \
      --default-address-pool "base=172.30.$((i * 16)).0/20,size=24" >"$d/dockerd.log" 2>&1 &)
  done
  for i in $(seq 1 "$n"); do
    d=$dir/h$i
    [[ " ${FLEET_BARE:-} " == *" $i "* ]] && continue
    for _ in $(seq 1 150); do
      docker -H "unix://$d/docker.sock" version >/dev/null 2>&1 && break
      sleep 0.2
    done
    docker -H "unix://$d/docker.sock" version >/dev/null 2>&1 \
      || { tail -n 20 "$d/dockerd.log" >&2; echo "fleet: engine $i did not start" >&2; exit 1; }
  done
  ;;
kill) kill_engine "$5" ;;
cut) ip -n "$hub" link set "h$5" down ;;
mend) ip -n "$hub" link set "h$5" up ;;
down)
  for n in $(ip netns list | awk '{print $1}' | grep "^${tag}h[0-9]*$" || true); do
    kill_engine "${n#"${tag}h"}"
  done
  sleep 0.3
  for n in $(ip netns list | awk '{print $1}' | grep "^${tag}h" || true); do
    ip netns del "$n" 2>/dev/null || true
  done
  ip link del "$rootif" 2>/dev/null || true
  for c in /sys/fs/cgroup/*/"${tag}"h*; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # Engines leave mounts (overlay, shm) under their data roots.
  { grep " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir"
  ;;
*) echo "fleet.sh: unknown command $cmd" >&2; exit 2 ;;
esac
