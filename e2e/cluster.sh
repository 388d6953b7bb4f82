#!/usr/bin/env bash
# Runs a throw-away Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) as local processes on loopback, for the e2e tests.
#
#   e2e/cluster.sh up       build if needed, generate a PKI, start, wait until ready
#   e2e/cluster.sh down     stop every process it started, remove all state
#   e2e/cluster.sh status   say what runs and whether the apiserver is ready
#
# Everything lives in e2e/.cluster/ (admin kubeconfig: e2e/.cluster/kubeconfig).
# There is no kubelet and no scheduler: pods are admitted and stored, never run.
# Network rule of this machine: every listener binds 127.0.0.1, and nothing is
# configured to reach any other address (see e2e/README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="$here/.cluster"

# Fixed ports below the Linux ephemeral range (32768+), away from the usual
# defaults (2379, 6443, 10257) so a real etcd started by other tests, or a
# developer's own cluster, does not collide with this one.
# Each can be moved through the environment, e.g. to run a second clone's
# cluster beside the first one.
etcd_client_port="${OTTAVA_E2E_ETCD_PORT:-26379}"
etcd_peer_port="${OTTAVA_E2E_ETCD_PEER_PORT:-26380}"
apiserver_port="${OTTAVA_E2E_APISERVER_PORT:-26443}"
kcm_port="${OTTAVA_E2E_KCM_PORT:-26257}"
# ClusterIPs come from a benchmark range (RFC 2544) that no real network uses;
# nothing routes to them anyway (no kube-proxy): the apiserver resolves a
# Service to its EndpointSlice addresses (--enable-aggregator-routing).
service_cidr=198.19.0.0/16
kubernetes_service_ip=198.19.0.1
# Test hosts that the e2e tests create (ip netns) carry this name prefix; `down`
# removes any that a crashed test run left behind.
netns_prefix=ottava-e2e-

components=(etcd kube-apiserver kube-controller-manager)

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
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing tools (${missing[*]}) and no apt-get to install them"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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

apiserver_ready() {
  curl -fsS --max-time 5 --cacert "$state/pki/ca.crt" \
    --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
    "https://127.0.0.1:$apiserver_port/readyz" >/dev/null 2>&1
}

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
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$kubernetes_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign admin "/O=system:masters/CN=ottava-e2e-admin" "$client_ext"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
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
    server: https://127.0.0.1:$apiserver_port
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

# start NAME ARGS...: runs the binary detached from the caller's session (so a
# Ctrl-C in make or pytest does not take the cluster down with it), output to
# .cluster/logs/NAME.log, pid to .cluster/pids/NAME.
start() {
  local name="$1"
  shift
  # 9>&- : the daemon must not inherit the lock on .cluster/.lock, or the
  # next `up` or `down` would wait for it forever.
  setsid "$bin_dir/$name" "$@" >"$state/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$state/pids/$name"
  log "$name: started (pid $!), log $state/logs/$name.log"
}

stop_component() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if is_running "$name"; then
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while [[ -e "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.2; done
    if [[ -e "/proc/$pid" ]]; then
      log "$name: did not stop in 20s, killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$state/pids/$name"
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

cmd_up() {
  ensure_tools
  mkdir -p "$state"
  exec 9>"$state/.lock"
  flock 9
  if all_running && apiserver_ready; then
    log "already running and ready; nothing to do (kubeconfig: $state/kubeconfig)"
    return 0
  fi
  if [[ -d "$state/pids" ]]; then
    log "found a partial or stopped cluster; stopping it and starting afresh"
    stop_all
  fi

  bin_dir="$("$here/build.sh" --bin-dir)"
  "$here/build.sh"

  local p
  for p in $etcd_client_port $etcd_peer_port $apiserver_port $kcm_port; do
    port_free "$p" || die "127.0.0.1:$p is already in use by another process ($(ss -Hltnp "sport = :$p" | head -1))"
  done

  local start_all=$SECONDS
  # A start that fails half-way stops what it had started (the logs stay, for
  # the reader of the error), so no orphan etcd outlives a failed test run.
  trap 'if [[ $? != 0 ]]; then log "start failed; stopping what was started (logs kept in $state/logs)"; stop_all; fi' EXIT
  rm -rf "$state/pki" "$state/etcd" "$state/logs" "$state/pids"
  mkdir -p "$state/logs" "$state/pids" "$state/etcd"
  log "generating a throw-away PKI in $state/pki"
  make_pki
  write_kubeconfig "$state/kubeconfig" admin
  write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
  ln -sfn "$bin_dir" "$state/bin"

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
  # --advertise-address=127.0.0.1 keeps the apiserver from picking the
  # machine's interface address; the loopback address is invalid in an
  # EndpointSlice, so the `kubernetes` Service gets no endpoints
  # (--endpoint-reconciler-type=none) - nothing here would use them.
  # --allow-privileged=true so that Pod Security admission, not this flag, is
  # what rejects privileged pods in restricted namespaces.
  start kube-apiserver \
    --bind-address=127.0.0.1 \
    --secure-port="$apiserver_port" \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --etcd-servers="http://127.0.0.1:$etcd_client_port" \
    --service-cluster-ip-range="$service_cidr" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
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
    "$bin_dir/kubectl" --kubeconfig "$state/kubeconfig" get serviceaccount default -n default -o name --request-timeout=5s

  cat >"$state/env" <<EOF
export KUBECONFIG="$state/kubeconfig"
export PATH="$state/bin:\$PATH"
EOF
  trap - EXIT
  log "control plane up in $((SECONDS - start_all))s: https://127.0.0.1:$apiserver_port"
  log "use it with: source $state/env && kubectl get pods -A"
}

stop_all() {
  local i
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do stop_component "${components[i]}"; done
}

cmd_down() {
  if [[ -d "$state" ]]; then
    exec 9>"$state/.lock"
    flock 9
    stop_all
  fi
  remove_test_hosts
  rm -rf "$state"
  log "down: no process, no state left ($state removed)"
}

cmd_status() {
  local c rc=0
  for c in "${components[@]}"; do
    if is_running "$c"; then log "$c: running (pid $(pid_of "$c"))"; else
      log "$c: not running"
      rc=1
    fi
  done
  if [[ -f "$state/pki/ca.crt" ]] && apiserver_ready; then
    log "kube-apiserver: ready at https://127.0.0.1:$apiserver_port (kubeconfig $state/kubeconfig)"
  else
    log "kube-apiserver: not ready"
    rc=1
  fi
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
