#!/usr/bin/env bash
# A real Kubernetes 1.20 cluster for the Kubernetes tests, on this machine
# only: the control plane (etcd, apiserver, scheduler, controller-manager)
# in one network namespace, and two nodes, each a kubelet on its own Docker
# engine (dockershim) in a namespace of its own, all joined by the test
# fleet's bridge (tests/fleet.sh). No default route: nothing leaves the machine.
#
#   cluster.sh up   TAG DIR NET BIN [IMAGE...]   BIN holds the binaries of
#                                                tests/kube/build.sh; each IMAGE
#                                                is copied from the system
#                                                engine to every node
#   cluster.sh kill TAG DIR NET I                kill -9 node I (kubelet, engine, pods)
#   cluster.sh down TAG DIR NET                  tear everything down
#
# Up writes DIR/kubeconfig (namespace `autodev`, token auth, the test CA).
# Node I is `node-I` at NET.(10+I); the apiserver is https://NET.13:6443.
# A registry (Debian's docker-registry, HTTPS with the test CA) listens on
# NET.13:5000, its access log in DIR/k8s/registry.log; every engine here
# trusts it through /etc/docker/certs.d/NET.13:5000/ca.crt (removed by down).
#
# Two workarounds for this VM (../shared/reviews/scaleout-feasibility-2026-11.md):
# root lacks CAP_SYS_RESOURCE, so the negative oom_score_adj kubelet gives
# pods is clamped to 0 by a runc wrapper; and `ip netns exec` drops the
# cgroup v1 mounts, which fleet.sh's nsrun puts back.
set -euo pipefail
cmd=$1 tag=$2 dir=$3 net=$4
here=$(cd "$(dirname "$0")" && pwd)
fleet=$here/../fleet.sh
cp=$net.13
k=$dir/k8s
token=autodev-test-token

nsrun() { bash "$here/../nsrun.sh" "$@"; }

api() {
  curl -sf --max-time 5 --cacert "$k/ca.pem" -H "Authorization: Bearer $token" "https://$cp:6443$1"
}

ready_nodes() {
  api /api/v1/nodes 2>/dev/null | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(1 for n in items for c in n["status"].get("conditions", [])
          if c["type"] == "Ready" and c["status"] == "True"))' 2>/dev/null || echo 0
}

kubeconfig() { # FILE
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://$cp:6443
    certificate-authority: $k/ca.pem
users:
- name: admin
  user:
    token: $token
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: autodev
current-context: test
KC
}

wait_for() { # WHAT TRIES COMMAND...
  local what=$1 tries=$2; shift 2
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.5; done
  echo "cluster: $what not ready" >&2
  tail -n 20 "$k"/*.log "$dir"/h*/kubelet.log 2>/dev/null >&2 || true
  return 1
}

case $cmd in
up)
  bin=$(realpath "$5"); shift 5
  mkdir -p "$k"
  # Clamps the negative oom_score_adj kubelet asks for (refused on this VM).
  cat > "$dir/runc-nooom" <<'SH'
#!/bin/sh
bundle=""; prev=""
for a in "$@"; do
  if [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; then bundle=$a; fi
  case "$a" in --bundle=*) bundle=${a#--bundle=} ;; esac
  prev=$a
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec runc "$@"
SH
  chmod +x "$dir/runc-nooom"
  FLEET_BARE=3 FLEET_DAEMON_JSON="{\"runtimes\":{\"nooom\":{\"path\":\"$dir/runc-nooom\"}},\"default-runtime\":\"nooom\"}" \
    bash "$fleet" up "$tag" "$dir" "$net" 3

  cd "$k"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=autodev-k8s-ca \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver-key.pem \
    -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:%s,IP:10.252.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' "$cp" > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile apiserver.ext -out apiserver.pem 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  echo "$token,admin,admin,system:masters" > tokens.csv
  kubeconfig "$k/admin.kubeconfig"
  kubeconfig "$dir/kubeconfig"
  openssl req -newkey rsa:2048 -nodes -subj /CN=registry -keyout registry-key.pem \
    -out registry.csr 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$cp" > registry.ext
  openssl x509 -req -in registry.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile registry.ext -out registry.pem 2>/dev/null
  cat > registry.yml <<YML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $k/registry
  delete:
    enabled: true
http:
  addr: $cp:5000
  tls:
    certificate: $k/registry.pem
    key: $k/registry-key.pem
YML
  # Engines read a registry's CA from here at each push and pull (no restart).
  mkdir -p "/etc/docker/certs.d/$cp:5000"
  cp ca.pem "/etc/docker/certs.d/$cp:5000/ca.crt"
  cd - >/dev/null

  # Images the pods need, on every node: the pause container and the run images.
  for i in 1 2; do
    e="unix://$dir/h$i/docker.sock"
    tar -C "$bin" -c pause | docker -H "$e" import --change 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null
    for img in "$@"; do docker save "$img" | docker -H "$e" load >/dev/null & done
  done
  wait

  cns=${tag}h3
  (ip netns exec "$cns" etcd --data-dir "$k/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    >"$k/etcd.log" 2>&1 &)
  (ip netns exec "$cns" "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$cp" --advertise-address="$cp" --secure-port=6443 --insecure-port=0 \
    --tls-cert-file="$k/apiserver.pem" --tls-private-key-file="$k/apiserver-key.pem" \
    --cert-dir="$k/certs" --token-auth-file="$k/tokens.csv" --authorization-mode=AlwaysAllow \
    --allow-privileged=false --service-account-key-file="$k/sa.pub" \
    --service-account-signing-key-file="$k/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --api-audiences=https://kubernetes.default.svc --service-cluster-ip-range=10.252.0.0/24 \
    --kubelet-preferred-address-types=InternalIP >"$k/apiserver.log" 2>&1 &)
  (ip netns exec "$cns" docker-registry serve "$k/registry.yml" >"$k/registry.log" 2>&1 &)
  wait_for apiserver 120 api /readyz >/dev/null
  registry() { curl -sf --max-time 5 --cacert "$k/ca.pem" "https://$cp:5000/v2/" >/dev/null; }
  wait_for registry 60 registry
  (ip netns exec "$cns" "$bin/kube-controller-manager" --kubeconfig="$k/admin.kubeconfig" \
    --leader-elect=false --service-account-private-key-file="$k/sa.key" --root-ca-file="$k/ca.pem" \
    --node-monitor-grace-period=10s --node-monitor-period=2s --pod-eviction-timeout=10s \
    --port=0 >"$k/controller-manager.log" 2>&1 &)
  (ip netns exec "$cns" "$bin/kube-scheduler" --kubeconfig="$k/admin.kubeconfig" \
    --leader-elect=false --port=0 >"$k/scheduler.log" 2>&1 &)
  for i in 1 2; do
    d=$dir/h$i
    mkdir -p "$d/kubelet"
    (nsrun "${tag}h$i" "$bin/kubelet" --kubeconfig="$k/admin.kubeconfig" \
      --hostname-override="node-$i" --node-ip="$net.$((10 + i))" --address="$net.$((10 + i))" \
      --container-runtime=docker --docker-endpoint="unix://$d/docker.sock" \
      --container-runtime-endpoint="unix://$d/dockershim.sock" \
      --image-service-endpoint="unix://$d/dockershim.sock" \
      --experimental-dockershim-root-directory="$d/dockershim" \
      --pod-infra-container-image=k8s.gcr.io/pause:3.2 --fail-swap-on=false \
      --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
      --authentication-token-webhook=false --anonymous-auth=true --authorization-mode=AlwaysAllow \
      --read-only-port=0 --root-dir="$d/kubelet" --cert-dir="$d/kubelet/pki" \
      --volume-plugin-dir="$d/kubelet/plugins" --pod-max-pids=1024 \
      --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
      --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
      >"$d/kubelet.log" 2>&1 &)
  done
  two() { [ "$(ready_nodes)" = 2 ]; }
  wait_for "two nodes" 240 two
  ;;
kill) bash "$fleet" kill "$tag" "$dir" "$net" "$5" ;;
down)
  # Every process of the cluster runs in one of the fleet's namespaces or
  # names a path under DIR; the fleet's teardown ends them all.
  for p in $(ip netns pids "${tag}h3" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
  bash "$fleet" down "$tag" "$dir" "$net"
  rm -rf "/etc/docker/certs.d/$cp:5000"
  # kubelet writes pod logs under /var/log whatever its root dir.
  rm -rf /var/log/pods/autodev*_* 2>/dev/null || true
  find /var/log/containers -name '*_autodev*_*' -delete 2>/dev/null || true
  ;;
*) echo "cluster.sh: unknown command $cmd" >&2; exit 2 ;;
esac
