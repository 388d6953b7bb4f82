#!/usr/bin/env bash
# Runs a throw-away one-node Kubernetes cluster as local processes, for the e2e
# tests: a control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) and one node (containerd, kubelet, kube-proxy) whose pods
# really run, on a Linux bridge of its own.
#
#   e2e/cluster.sh up             build if needed, generate a PKI, start, wait until the node is Ready
#   e2e/cluster.sh down           stop everything, remove every trace (processes, mounts, cgroups,
#                                 bridge, iptables rules, state)
#   e2e/cluster.sh status         say what runs and whether the apiserver and the node are ready
#   e2e/cluster.sh load FILE.tar  import image archives (docker-archive) into the node's containerd
#
# Everything lives in e2e/.cluster/ (admin kubeconfig: e2e/.cluster/kubeconfig).
# Network rule of this machine: every listener binds loopback or the node
# bridge's address, and all traffic stays on loopback, the bridge, its veths and
# the pods' network namespaces (see e2e/README.md).
#
# Only ONE node can run on a machine: containerd and the kubelet use fixed host
# paths (/run/containerd/{s,fifo}, /var/lib/kubelet/device-plugins), and the
# node's pods live in the kubepods cgroups, which `down` removes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="$here/.cluster"
node="$state/node"

# Fixed ports below the Linux ephemeral range (32768+), away from the usual
# defaults (2379, 6443, 10250, ...) so a real etcd started by other tests, or a
# developer's own cluster, does not collide with this one.
# Each can be moved through the environment, e.g. to run a second clone's
# control plane beside the first one.
etcd_client_port="${OTTAVA_E2E_ETCD_PORT:-26379}"
etcd_peer_port="${OTTAVA_E2E_ETCD_PEER_PORT:-26380}"
apiserver_port="${OTTAVA_E2E_APISERVER_PORT:-26443}"
kcm_port="${OTTAVA_E2E_KCM_PORT:-26257}"
scheduler_port="${OTTAVA_E2E_SCHEDULER_PORT:-26259}"
kubelet_port="${OTTAVA_E2E_KUBELET_PORT:-26250}"
kubelet_healthz_port="${OTTAVA_E2E_KUBELET_HEALTHZ_PORT:-26248}"
proxy_healthz_port="${OTTAVA_E2E_PROXY_HEALTHZ_PORT:-26256}"
proxy_metrics_port="${OTTAVA_E2E_PROXY_METRICS_PORT:-26249}"
stream_port="${OTTAVA_E2E_STREAM_PORT:-26010}"

# The node: a Linux bridge that this script creates and owns. Its address is
# the node's InternalIP, where the apiserver and the kubelet listen; pods get
# addresses from the same /24 (RFC 2544 benchmark range, which no real network
# uses; the tests' own hosts use 198.18.1-250.x).
node_name="${OTTAVA_E2E_NODE_NAME:-ottava-node}"
node_bridge="${OTTAVA_E2E_NODE_BRIDGE:-ottava-node0}"
node_ip=198.18.254.1
node_subnet=198.18.254.0/24
# ClusterIPs come from the next benchmark range. kube-proxy DNATs them on the
# node; the host routes the whole range to the bridge, so a ClusterIP that
# nothing serves never reaches the machine's real interface.
service_cidr=198.19.0.0/16
kubernetes_service_ip=198.19.0.1
# Images built here from our own static binaries (see image_archive) and
# imported at `up`; pods name them with imagePullPolicy: Never.
pause_image=localhost/ottava-e2e/pause:v1
podcheck_image=localhost/ottava-e2e/podcheck:v1
# containerd may never pull: its HTTP(S) proxy is a closed loopback port, so a
# pod naming an image that was not loaded fails at once, with no DNS lookup and
# no connection leaving the machine.
no_pull_proxy=http://127.0.0.1:9
containerd_sock="$node/containerd.sock"
# Test hosts that the e2e tests create (ip netns) carry this name prefix; `down`
# removes any that a crashed test run left behind.
netns_prefix=ottava-e2e-

# Start order; `down` stops them in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)
# Executables of ours that may outlive a killed run (with the state path in their arguments).
stray_exes=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd containerd-shim-runc-v2 kubelet kube-proxy)

log() { echo "[cluster] $*"; }
die() {
  echo "[cluster] ERROR: $*" >&2
  exit 1
}

# Installs the few system tools this script needs when they are missing, so a
# fresh machine works without manual steps. apt-get update runs at most once.
ensure_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v flock >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v setsid >/dev/null || missing+=(util-linux)
  command -v runc >/dev/null || missing+=(runc)
  command -v containerd >/dev/null || missing+=(containerd)
  [[ -n "$(cni_bin_dir)" ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v skopeo >/dev/null || missing+=(skopeo)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing tools (${missing[*]}) and no apt-get to install them"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # containerd's package ships only a systemd unit, which nothing starts here:
  # the node runs its own containerd.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The folder of the CNI plugins (Debian's containernetworking-plugins).
cni_bin_dir() {
  local d
  for d in /usr/lib/cni /opt/cni/bin; do
    [[ -x "$d/bridge" && -x "$d/host-local" && -x "$d/loopback" ]] && {
      echo "$d"
      return 0
    }
  done
  if command -v dpkg >/dev/null; then
    d="$(dpkg -L containernetworking-plugins 2>/dev/null | grep '/bridge$' | head -1 || true)"
    [[ -n "$d" ]] && dirname "$d"
  fi
  return 0
}

pid_of() { cat "$state/pids/$1" 2>/dev/null || true; }

# True when the component's recorded pid is alive and is still our binary (a
# recycled pid belonging to something else must never be signalled).
is_running() {
  local pid
  pid="$(pid_of "$1")"
  [[ -n "$pid" ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "/$1 " || return 1
}

# True while the started process exists and is not a zombie. Unlike
# is_running it does not look at the command line, which is still the forking
# shell's for a moment after `start` (before exec), on a busy machine.
process_alive() {
  local pid
  pid="$(pid_of "$1")"
  [[ -n "$pid" && -e "/proc/$pid" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]
}

apiserver_url="https://$node_ip:$apiserver_port"

apiserver_ready() {
  curl -fsS --max-time 5 --cacert "$state/pki/ca.crt" \
    --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
    "$apiserver_url/readyz" >/dev/null 2>&1
}

kubectl_() { "$bin_dir/kubectl" --kubeconfig "$state/kubeconfig" --request-timeout=10s "$@"; }

node_ready() {
  [[ "$(kubectl_ get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

ctr_() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

log_tail() {
  local f="$state/logs/$1.log"
  if [[ -f "$f" ]]; then
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
    echo "-----" >&2
  fi
}

# Polls a readiness command until it succeeds or the deadline passes; fails
# early, with the log tail, when the component's process has died.
wait_for() {
  local component="$1" what="$2" deadline=$((SECONDS + $3))
  shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ! process_alive "$component"; then
      log_tail "$component"
      die "$component exited while waiting for $what"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$component"
      die "$component: $what not reached within $((SECONDS - start))s"
    fi
    sleep 0.5
  done
  log "$component: $what after $((SECONDS - start))s"
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# --- PKI ---------------------------------------------------------------------

# sign NAME SUBJECT EXTENSIONS: an EC P-256 key and a certificate signed by the
# throw-away CA. EC keys keep generation instant.
sign() {
  local name="$1" subject="$2" ext="$3" dir="$state/pki"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

make_pki() {
  local dir="$state/pki"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 -subj "/CN=ottava-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  local server_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
  # Pods reach the apiserver at the `kubernetes` Service's ClusterIP, which
  # kube-proxy translates to the node address; clients on the machine use the
  # node address directly.
  sign apiserver "/CN=kube-apiserver" "$server_ext
subjectAltName=IP:$node_ip,IP:$kubernetes_service_ip,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # The kubelet's serving certificate, which the apiserver verifies when it
  # calls the kubelet (logs, exec, port-forward).
  sign kubelet-serving "/CN=$node_name" "$server_ext
subjectAltName=IP:$node_ip,DNS:$node_name"
  local client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign admin "/O=system:masters/CN=ottava-e2e-admin" "$client_ext"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  sign kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
  # The Node authorizer and NodeRestriction admission know the kubelet by this name.
  sign kubelet "/O=system:nodes/CN=system:node:$node_name" "$client_ext"
  # Bound to the system:node-proxier role by the bootstrap RBAC policy.
  sign kube-proxy "/CN=system:kube-proxy" "$client_ext"
  # The apiserver's identity towards the kubelet (which authorises it by a
  # SubjectAccessReview: system:masters may do anything).
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
  # Service-account tokens are signed with RSA, the algorithm every client and
  # token reviewer supports.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/sa.key" 2>/dev/null
  openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  chmod 600 "$dir"/*.key
}

# write_kubeconfig FILE USER: a self-contained kubeconfig (data embedded, so
# the file can be copied anywhere) for the given client certificate.
write_kubeconfig() {
  local file="$1" user="$2" b64="base64 -w0"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ottava-e2e
  cluster:
    server: $apiserver_url
    certificate-authority-data: $($b64 <"$state/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $($b64 <"$state/pki/$user.crt")
    client-key-data: $($b64 <"$state/pki/$user.key")
contexts:
- name: ottava-e2e
  context: {cluster: ottava-e2e, user: $user}
current-context: ottava-e2e
EOF
  chmod 600 "$file"
}

# --- processes ---------------------------------------------------------------

# start NAME ARGS...: runs the binary NAME from the build cache detached from
# the caller's session (so a Ctrl-C in make or pytest does not take the
# cluster down with it), output to .cluster/logs/NAME.log, pid to
# .cluster/pids/NAME.
start() {
  local name="$1"
  shift
  start_exe "$name" "$bin_dir/$name" "$@"
}

# start_exe NAME EXECUTABLE ARGS...: the same for any executable (containerd
# comes from the system, and is started through `env` to set its environment).
start_exe() {
  local name="$1" exe="$2"
  shift 2
  # 9>&- : the daemon must not inherit the lock on .cluster/.lock, or the
  # next `up` or `down` would wait for it forever.
  setsid "$exe" "$@" >"$state/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$state/pids/$name"
  log "$name: started (pid $!), log $state/logs/$name.log"
}

# stop_components NAME...: SIGTERM to each (in parallel: each takes a second
# or more to shut down cleanly), SIGKILL to any still there after 20s.
stop_components() {
  local name pid pids=()
  for name in "$@"; do
    pid="$(pid_of "$name")"
    if is_running "$name"; then
      log "$name: stopping (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$state/pids/$name"
  done
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while [[ -e "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.1; done
    if [[ -e "/proc/$pid" ]]; then
      log "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60)) did not stop in 20s, killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

remove_test_hosts() {
  command -v ip >/dev/null || return 0
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$netns_prefix" || true); do
    log "removing leftover test network namespace $ns"
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns delete "$ns" || true
  done
}

all_running() {
  local c
  for c in "${components[@]}"; do is_running "$c" || return 1; done
}

# --- the node ------------------------------------------------------------------

# The bridge exists before the apiserver starts: the apiserver binds its address.
pods_stay_rule=(-i "$node_bridge" ! -o "$node_bridge" -m comment --comment "ottava-e2e: pods stay on the node" -j DROP)
create_bridge() {
  ip link add "$node_bridge" type bridge
  ip addr add "$node_ip/24" dev "$node_bridge"
  ip link set "$node_bridge" up
  # Host-side traffic to any ClusterIP goes to the bridge (kube-proxy's DNAT
  # turns the served ones into the node address), never to the default route.
  ip route add "$service_cidr" dev "$node_bridge" src "$node_ip"
  # A pod reaches another pod through a ClusterIP (the operator's signing endpoint, say)
  # only if the node forwards what kube-proxy DNATs back onto the bridge. Forwarding is
  # switched on for packets that arrive on this bridge alone (the machine's ip_forward is
  # left as it is), and a rule of our own drops whatever would leave the bridge for any
  # other interface, so pods still reach nothing beyond the node.
  sysctl -qw "net.ipv4.conf.$node_bridge.forwarding=1"
  iptables -w -I FORWARD "${pods_stay_rule[@]}"
  log "bridge $node_bridge: $node_ip/24, route $service_cidr, forwarding bridge to bridge only"
}

remove_pods_stay_rule() {
  while iptables -w -D FORWARD "${pods_stay_rule[@]}" 2>/dev/null; do :; done
}

# image_archive REF OUT ENTRYPOINT USER FILE...: a one-layer image holding the
# given static binaries at /, written as a docker-archive (what `ctr images
# import` and `docker load` accept), tagged REF. Built with the packaged umoci
# and skopeo, no registry involved. This is the one place to switch to the
# project's shared image tooling once it exists.
image_archive() {
  local ref="$1" out="$2" entrypoint="$3" user="$4"
  shift 4
  local work f
  work="$(mktemp -d "$node/images/build.XXXXXX")"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:img"
  for f in "$@"; do umoci insert --image "$work/oci:img" "$f" "/$(basename "$f")" >/dev/null; done
  umoci config --image "$work/oci:img" --config.entrypoint "$entrypoint" --config.user "$user" \
    --config.workingdir / --author ottava-e2e
  rm -f "$out"
  skopeo --insecure-policy copy --quiet "oci:$work/oci:img" "docker-archive:$out:$ref"
  rm -rf "$work"
}

load_images() {
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || die "no such image archive: $f"
    ctr_ images import --snapshotter overlayfs "$f" | sed 's/^/[cluster]   /'
  done
}

write_node_config() {
  local cni_bin
  cni_bin="$(cni_bin_dir)"
  [[ -n "$cni_bin" ]] || die "the CNI plugins (containernetworking-plugins) are not installed"
  mkdir -p "$node/containerd/root" "$node/containerd/state" "$node/containerd/opt" "$node/runc" \
    "$node/cni/net.d" "$node/cni/ipam" "$node/kubelet/root" "$node/kubelet/pki" \
    "$node/kubelet/pod-logs" "$node/kubelet/volume-plugins" "$node/images"

  # containerd: its own root, state and socket (the Debian service is never
  # used). restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so runc
  # cannot lower oom_score_adj for the pause container. netns under the state
  # dir: the tests' `ip netns add` would otherwise bind-mount /run/netns over
  # the pods' namespaces. runc keeps its state here too (Root).
  cat >"$node/containerd.toml" <<EOF
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  stream_server_address = "127.0.0.1"
  stream_server_port = "$stream_port"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$node/cni/net.d"
    max_conf_num = 1
EOF

  # Pods on the bridge, addresses from the node's /24. isGateway false: the
  # bridge already has the node address (true would switch ip_forward on);
  # ipMasq false: no NAT rules. The only route besides the /24 is the service
  # range via the node, where kube-proxy translates ClusterIPs: no default
  # route, so a pod can reach nothing beyond the node.
  cat >"$node/cni/net.d/10-ottava-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ottava-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$node_bridge",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node/cni/ipam",
        "ranges": [[{"subnet": "$node_subnet", "rangeStart": "198.18.254.10", "rangeEnd": "198.18.254.250", "gateway": "$node_ip"}]],
        "routes": [{"dst": "$service_cidr", "gw": "$node_ip"}]
      }
    }
  ]
}
EOF

  write_kubeconfig "$node/kubelet.kubeconfig" kubelet
  write_kubeconfig "$node/kube-proxy.kubeconfig" kube-proxy
  local pki="$state/pki"
  # cgroup v1 and containerd 1.6 (no RuntimeConfig CRI call): the cgroup
  # driver comes from here. resolvConf "": pods get no nameserver, so nothing
  # in a pod sends a DNS query anywhere. The apiserver authenticates to the
  # kubelet with a client certificate of the cluster CA, and is authorised by
  # a SubjectAccessReview (webhook), as in a kubeadm cluster.
  cat >"$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_sock
imageServiceEndpoint: unix://$containerd_sock
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
oomScoreAdj: 0
podLogsDir: $node/kubelet/pod-logs
volumePluginDir: $node/kubelet/volume-plugins
localStorageCapacityIsolation: false
makeIPTablesUtilChains: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
resolvConf: ""
clusterDomain: cluster.local
maxPods: 60
EOF

  # kube-proxy touches only what Services need: its KUBE-* chains for the
  # service range and NodePorts on the node address. Every sysctl it would set
  # by default is switched off (conntrack sizes and timeouts, route_localnet
  # for localhost NodePorts), and so is its oom_score_adj.
  cat >"$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $node/kube-proxy.kubeconfig
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
mode: iptables
clusterCIDR: $node_subnet
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$node_ip/32"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

start_node() {
  write_node_config
  start_exe containerd env HTTP_PROXY="$no_pull_proxy" HTTPS_PROXY="$no_pull_proxy" NO_PROXY= \
    http_proxy="$no_pull_proxy" https_proxy="$no_pull_proxy" no_proxy= \
    "$(command -v containerd)" --config "$node/containerd.toml"
  wait_for containerd "serving on $containerd_sock" 60 ctr_ version

  local start=$SECONDS
  image_archive "$pause_image" "$node/images/pause.tar" /pause 65535:65535 "$bin_dir/pause"
  image_archive "$podcheck_image" "$node/images/podcheck.tar" /podcheck 65532:65532 "$bin_dir/podcheck"
  log "images built from our binaries in $((SECONDS - start))s; importing"
  load_images "$node/images/pause.tar" "$node/images/podcheck.tar"

  start kubelet \
    --config="$node/kubelet.yaml" \
    --kubeconfig="$node/kubelet.kubeconfig" \
    --root-dir="$node/kubelet/root" \
    --cert-dir="$node/kubelet/pki" \
    --hostname-override="$node_name" \
    --node-ip="$node_ip"
  wait_for kubelet "node $node_name Ready" 120 node_ready

  start kube-proxy --config="$node/kube-proxy.yaml"
  wait_for kube-proxy "syncing Services (/healthz)" 60 \
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$proxy_healthz_port/healthz"
}

# Kills what a previous node left running: the node's container processes
# (every pid in the kubepods cgroups: only one node runs on a machine) and any
# process of ours whose arguments name this state folder (shims, a kubelet or
# containerd that lost its pid file).
kill_node_processes() {
  local round pids
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids="$(kubepods_pids) $(stray_pids)"
    pids="$(echo $pids)" # one line
    [[ -n "$pids" ]] || return 0
    ((round == 1)) && log "killing leftover node processes: $pids"
    kill -KILL $pids 2>/dev/null || true
    sleep 0.3
  done
  log "WARNING: processes still alive after SIGKILL: $pids"
}

kubepods_pids() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$d" ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
  return 0
}

stray_pids() {
  local p exe cmd name
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    exe="${exe% (deleted)}"
    name="${exe##*/}"
    [[ " ${stray_exes[*]} " == *" $name "* ]] || continue
    cmd="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
    [[ "$cmd" == *"$state/"* ]] && echo "${p#/proc/}"
  done
  return 0
}

# Pids of a kubelet that is not ours: another clone's node, which owns the
# machine-wide parts (kubepods cgroups, kube-proxy's rules, /run/containerd).
other_kubelets() {
  local p exe
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    [[ "${exe% (deleted)}" == */kubelet ]] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$state/" || echo "${p#/proc/}"
  done
  return 0
}

# The mount points at or under DIR, newest first (the order to unmount them).
mounts_under() {
  awk -v dir="$1" '{
    m = $5
    # mountinfo escapes space, tab, newline and backslash as octal.
    gsub(/\\040/, " ", m); gsub(/\\011/, "\t", m); gsub(/\\012/, "\n", m); gsub(/\\134/, "\\", m)
    if (m == dir || index(m, dir "/") == 1) print m
  }' /proc/self/mountinfo | tac
}

unmount_under() {
  local dir="$1" round m left
  for round in 1 2 3 4 5; do
    left="$(mounts_under "$dir")"
    [[ -n "$left" ]] || return 0
    while IFS= read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done <<<"$left"
  done
  [[ -z "$(mounts_under "$dir")" ]]
}

remove_kubepods_cgroups() {
  local d round
  for round in 1 2 3 4 5 6 7 8 9 10; do
    local left=0
    for d in /sys/fs/cgroup/*/kubepods; do
      [[ -d "$d" ]] || continue
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$d" ]] && left=1
    done
    ((left == 0)) && return 0
    sleep 0.3
  done
  log "WARNING: could not remove $(ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null | tr '\n' ' ')"
}

iptables_has_kube_rules() {
  local save
  for save in iptables-save ip6tables-save; do
    command -v "$save" >/dev/null || continue
    "$save" 2>/dev/null | grep -q -- 'KUBE-' && return 0
  done
  return 1
}

# Removes every KUBE-* chain, and the jumps to them, from every table: what
# `kube-proxy --cleanup` does, for what it leaves (KUBE-FIREWALL in filter,
# with jumps from INPUT and OUTPUT) or when its binary is gone.
remove_kube_chains() {
  local cmd table chain rule
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in raw mangle nat filter; do
      "$cmd-save" -t "$table" 2>/dev/null | grep -q -- 'KUBE-' || continue
      # Rules of other chains that jump to a KUBE-* chain.
      "$cmd-save" -t "$table" | grep -E -- '^-A [^ ]+ .*-j KUBE-' | grep -v -E '^-A KUBE-' |
        while IFS= read -r rule; do
          eval "set -- ${rule#-A }"
          "$cmd" -w -t "$table" -D "$@" 2>/dev/null || true
        done
      for chain in $("$cmd-save" -t "$table" | awk '/^:KUBE-/ {print substr($1, 2)}'); do
        "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$table" | awk '/^:KUBE-/ {print substr($1, 2)}'); do
        "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

remove_kube_proxy_rules() {
  iptables_has_kube_rules || return 0
  if [[ -x "${bin_dir:-}/kube-proxy" ]]; then
    log "removing kube-proxy's rules (kube-proxy --cleanup)"
    local out
    out="$("$bin_dir/kube-proxy" --cleanup 2>&1)" || log "kube-proxy --cleanup failed: $(tail -n 3 <<<"$out")"
  fi
  if iptables_has_kube_rules; then
    log "removing the remaining KUBE-* chains"
    remove_kube_chains
  fi
  iptables_has_kube_rules && log "WARNING: KUBE-* iptables rules remain"
  return 0
}

# The paths that containerd and the kubelet use whatever their configuration
# says (ours only: the kubelet's are fixed, and only one node runs).
remove_fixed_paths() {
  local f
  if [[ -d /var/log/containers ]]; then
    for f in /var/log/containers/*; do
      [[ -L "$f" && "$(readlink "$f")" == "$node/"* ]] && rm -f "$f"
    done
    rmdir /var/log/containers 2>/dev/null || true
  fi
  # libcni caches each pod's network result there, named after the network.
  if [[ -d /var/lib/cni ]]; then
    rm -f /var/lib/cni/results/ottava-node-* /var/lib/cni/results/cni-loopback-*
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  fi
  rm -rf /var/lib/kubelet/device-plugins
  rmdir /var/lib/kubelet 2>/dev/null || true
}

# A shim's socket is /run/containerd/s/<sha256 of "ADDRESS/NAMESPACE/ID">
# (ADDRESS: containerd's socket, ID: the pod sandbox's). A shim that exits
# cleanly removes it; one that was killed leaves it. The task folders in
# containerd's state name the ids, so exactly our sockets go.
remove_shim_sockets() {
  local d id
  for d in "$node/containerd/state/io.containerd.runtime.v2.task/k8s.io"/*/; do
    [[ -d "$d" ]] || continue
    id="$(basename "$d")"
    rm -f "/run/containerd/s/$(printf '%s' "$containerd_sock/k8s.io/$id" | sha256sum | cut -c1-64)"
  done
}

# Removes every trace of the node (of this run, or of one that was killed):
# processes, mounts, cgroups, the bridge and its veths, kube-proxy's rules,
# the fixed host paths. Safe to run when there is nothing to remove.
clean_node() {
  local others
  others="$(other_kubelets)"
  if [[ -n "$others" ]]; then
    # Only what is ours by path; the machine-wide parts belong to that node.
    log "WARNING: another node's kubelet runs on this machine (pid $(echo $others)); leaving its cgroups, bridge, rules and host paths alone"
    local pids
    pids="$(stray_pids)"
    [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
    unmount_under "$node" || true
  else
    clean_machine
  fi
  remove_shim_sockets
  # Another containerd's sockets stay, and so do these folders then.
  rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null || true
  # State can only go once nothing is mounted in it (rm -rf would otherwise
  # reach into a mount).
  if [[ -d "$node" ]]; then
    [[ -z "$(mounts_under "$node")" ]] || die "mounts remain under $node; not removing it"
    rm -rf "$node"
  fi
}

clean_machine() {
  kill_node_processes
  if ! unmount_under "$node"; then
    log "WARNING: mounts remain under $node:"
    mounts_under "$node" | sed 's/^/[cluster]   /'
  fi
  remove_kubepods_cgroups
  if ip link show "$node_bridge" >/dev/null 2>&1; then
    local veth
    for veth in $(ip -o link show master "$node_bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link delete "$veth" 2>/dev/null || true
    done
    ip link delete "$node_bridge"
    log "bridge $node_bridge removed"
  fi
  remove_pods_stay_rule
  remove_kube_proxy_rules
  remove_fixed_paths
}

# Deletes the node's pods with a short grace period, so the kubelet stops
# their containers and releases their network before the node goes away.
drain_node() {
  is_running kubelet && apiserver_ready || return 0
  # Nothing new lands on the node meanwhile: no scheduler, no controllers.
  stop_components kube-scheduler kube-controller-manager
  local pods
  pods="$(kubectl_ get pods -A --field-selector "spec.nodeName=$node_name" -o name 2>/dev/null | wc -l)"
  ((pods > 0)) || return 0
  log "deleting the node's $pods pods (grace period 1s)"
  kubectl_ delete pods -A --field-selector "spec.nodeName=$node_name" \
    --grace-period=1 --wait=false >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    pods="$(kubectl_ get pods -A --field-selector "spec.nodeName=$node_name" -o name 2>/dev/null | wc -l)"
    ((pods == 0)) && {
      log "pods gone"
      return 0
    }
    sleep 0.5
  done
  log "WARNING: $pods pods still on the node after 30s; their processes are killed"
}

cmd_up() {
  ensure_tools
  mkdir -p "$state"
  exec 9>"$state/.lock"
  flock 9
  bin_dir="$("$here/build.sh" --bin-dir)"
  if all_running && apiserver_ready && node_ready; then
    log "already running and ready; nothing to do (kubeconfig: $state/kubeconfig)"
    return 0
  fi
  if [[ -d "$state/pids" || -d "$node" ]] || ip link show "$node_bridge" >/dev/null 2>&1; then
    log "found a partial, stopped or killed cluster; removing it and starting afresh"
    stop_all
  fi
  local others
  others="$(other_kubelets)"
  [[ -z "$others" ]] || die "another node runs on this machine (kubelet pid $(echo $others): $(tr '\0' ' ' <"/proc/${others%%$'\n'*}/cmdline" | cut -c1-120)...); only one node can run on a machine: stop that cluster first (its e2e/cluster.sh down)"
  # Leftovers of a run that was killed outright (kubepods cgroups, mounts,
  # kube-proxy's chains, /run/containerd) whatever the state folder says.
  clean_node

  "$here/build.sh"

  local p
  for p in $etcd_client_port $etcd_peer_port $apiserver_port $kcm_port $scheduler_port $kubelet_port \
    $kubelet_healthz_port $proxy_healthz_port $proxy_metrics_port $stream_port; do
    port_free "$p" || die "port $p is already in use by another process ($(ss -Hltnp "sport = :$p" | head -1))"
  done

  local start_all=$SECONDS
  # A start that fails half-way stops what it had started (the logs stay, for
  # the reader of the error), so no orphan etcd outlives a failed test run.
  # An interrupted start (Ctrl-C, a closed pipe, a kill) counts as failed too.
  trap 'if [[ $? != 0 ]]; then trap "" PIPE; log "start failed; stopping what was started (logs kept in $state/logs)"; stop_all; clean_node; fi' EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 141' PIPE
  trap 'exit 143' TERM
  rm -rf "$state/pki" "$state/etcd" "$state/logs" "$state/pids"
  mkdir -p "$state/logs" "$state/pids" "$state/etcd"
  log "generating a throw-away PKI in $state/pki"
  make_pki
  write_kubeconfig "$state/kubeconfig" admin
  write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$state/kube-scheduler.kubeconfig" kube-scheduler
  ln -sfn "$bin_dir" "$state/bin"
  create_bridge

  start etcd \
    --name ottava-e2e \
    --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "ottava-e2e=http://127.0.0.1:$etcd_peer_port" \
    --quota-backend-bytes 2147483648 \
    --unsafe-no-fsync
  wait_for etcd "healthy" 60 curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$etcd_client_port/health"

  local pki="$state/pki"
  # The apiserver listens on, and advertises, the node address: pods reach it
  # through the `kubernetes` Service, whose endpoint (published by the
  # apiserver's lease reconciler) is that address; an EndpointSlice cannot
  # hold a loopback address. InternalIP first: a node name is never looked up
  # in the machine's DNS (which would leave the machine).
  # --allow-privileged=true so that Pod Security admission, not this flag, is
  # what rejects privileged pods in restricted namespaces.
  start kube-apiserver \
    --bind-address="$node_ip" \
    --secure-port="$apiserver_port" \
    --advertise-address="$node_ip" \
    --etcd-servers="http://127.0.0.1:$etcd_client_port" \
    --service-cluster-ip-range="$service_cidr" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,PodSecurity,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota \
    --enable-aggregator-routing=true \
    --allow-privileged=true \
    --profiling=false \
    --cert-dir="$pki/kube-apiserver"
  wait_for kube-apiserver "ready (/readyz)" 180 apiserver_ready

  local kcm_kubeconfig="$state/kube-controller-manager.kubeconfig"
  start kube-controller-manager \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --kubeconfig="$kcm_kubeconfig" \
    --authentication-kubeconfig="$kcm_kubeconfig" \
    --authorization-kubeconfig="$kcm_kubeconfig" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$service_cidr" \
    --profiling=false \
    --cert-dir="$pki/kube-controller-manager"
  wait_for kube-controller-manager "healthy (/healthz)" 60 \
    curl -fsSk --max-time 2 -o /dev/null "https://127.0.0.1:$kcm_port/healthz"
  # The ServiceAccount controller creating `default` in `default` shows the
  # controllers are actually reconciling, not merely serving /healthz.
  wait_for kube-controller-manager "reconciling (ServiceAccount default/default exists)" 60 \
    kubectl_ get serviceaccount default -n default -o name

  local sched_kubeconfig="$state/kube-scheduler.kubeconfig"
  start kube-scheduler \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --secure-port="$scheduler_port" \
    --kubeconfig="$sched_kubeconfig" \
    --authentication-kubeconfig="$sched_kubeconfig" \
    --authorization-kubeconfig="$sched_kubeconfig" \
    --leader-elect=false \
    --profiling=false \
    --cert-dir="$pki/kube-scheduler"
  wait_for kube-scheduler "healthy (/healthz)" 60 \
    curl -fsSk --max-time 2 -o /dev/null "https://127.0.0.1:$scheduler_port/healthz"

  start_node

  cat >"$state/env" <<EOF
export KUBECONFIG="$state/kubeconfig"
export PATH="$state/bin:\$PATH"
EOF
  trap - EXIT HUP INT PIPE TERM
  log "cluster up in $((SECONDS - start_all))s: $apiserver_url, node $node_name ($node_ip) Ready"
  log "use it with: source $state/env && kubectl get pods -A"
}

# The node first (kube-proxy, kubelet, containerd), then the control plane,
# etcd last; each group in parallel.
stop_all() {
  stop_components kube-proxy kubelet containerd
  stop_components kube-scheduler kube-controller-manager kube-apiserver
  stop_components etcd
}

cmd_down() {
  local start=$SECONDS
  bin_dir="$("$here/build.sh" --bin-dir)"
  if [[ -d "$state" ]]; then
    exec 9>"$state/.lock"
    flock 9
    drain_node
    stop_all
  fi
  clean_node
  remove_test_hosts
  rm -rf "$state"
  if [[ -n "$(other_kubelets)" ]]; then
    log "down in $((SECONDS - start))s: this cluster's processes and state removed ($state); another node runs, so the machine-wide parts were left to it"
  else
    log "down in $((SECONDS - start))s: no process, mount, cgroup, bridge or rule left ($state removed)"
  fi
}

cmd_status() {
  local c rc=0
  bin_dir="$("$here/build.sh" --bin-dir)"
  for c in "${components[@]}"; do
    if is_running "$c"; then log "$c: running (pid $(pid_of "$c"))"; else
      log "$c: not running"
      rc=1
    fi
  done
  if [[ -f "$state/pki/ca.crt" ]] && apiserver_ready; then
    log "kube-apiserver: ready at $apiserver_url (kubeconfig $state/kubeconfig)"
    if node_ready; then log "node $node_name: Ready ($node_ip)"; else
      log "node $node_name: not Ready"
      rc=1
    fi
  else
    log "kube-apiserver: not ready"
    rc=1
  fi
  return $rc
}

cmd_load() {
  (($# > 0)) || die "usage: $0 load IMAGE.tar..."
  [[ -d "$state" ]] || die "the cluster is not running (start it with: $0 up)"
  exec 9>"$state/.lock"
  flock 9
  is_running containerd || die "the node's containerd is not running (start the cluster with: $0 up)"
  local f
  for f in "$@"; do
    log "loading $f into the node's containerd"
    load_images "$f"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  load)
    shift
    cmd_load "$@"
    ;;
  *)
    echo "usage: $0 up|down|status|load FILE.tar..." >&2
    exit 2
    ;;
esac
