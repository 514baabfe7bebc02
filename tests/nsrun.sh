#!/usr/bin/env bash
# nsrun.sh NS CMD...: runs CMD in network namespace NS with the cgroup v1
# hierarchies mounted again (`ip netns exec` remounts /sys and loses them;
# dockerd and the kubelet need them). Used by fleet.sh and kube/cluster.sh.
n=$1; shift
exec ip netns exec "$n" sh -c '
  mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
  for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
    mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
  done
  mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
  exec "$@"' sh "$@"
