#!/usr/bin/env bash
# Runs an isolated CrowdSec Local API (Debian's `crowdsec` package) on loopback
# for the decision-source tests. Everything lives under DIR: config, sqlite
# database (WAL), logs, an empty hub, and, with --tls, a throwaway CA.
# No agent (-no-cs), no Central API (-no-capi, no online_client), no
# prometheus listener, no network beyond 127.0.0.1.
#
#   scripts/lapi.sh start DIR PORT [--tls|--mtls]
#       --tls   serve HTTPS with a certificate from a CA generated in DIR/tls
#       --mtls  --tls, plus client-certificate auth for bouncers (OU
#               "bouncer-ou") and agents (OU "agent-ou"); API keys keep working
#   scripts/lapi.sh add-bouncer DIR NAME KEY
#   scripts/lapi.sh cscli DIR ARGS...     cscli against this instance
#   scripts/lapi.sh stop DIR
#
# Environment: CROWDSEC_BIN, CSCLI_BIN (defaults: crowdsec, cscli);
# LAPI_WATCH_PID: stop the LAPI when that process exits (test runners).
#
# The layout follows /etc/crowdsec/config.yaml of crowdsec 1.4.6; the TLS
# keys are those of `api.server.tls` (cert_file, key_file,
# client_verification, ca_cert_path, bouncers_allowed_ou, agents_allowed_ou),
# see https://docs.crowdsec.net/docs/local_api/tls_auth
set -euo pipefail

CROWDSEC_BIN=${CROWDSEC_BIN:-crowdsec}
CSCLI_BIN=${CSCLI_BIN:-cscli}

die() {
  echo "lapi.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed${2:+ ($2)}"
}

abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

cscli_in() {
  local dir=$1
  shift
  "$CSCLI_BIN" --error -c "$dir/config.yaml" "$@"
}

# A CA, a server certificate for 127.0.0.1/localhost and client certificates
# whose OU tells the LAPI whether the holder is a bouncer or an agent.
gen_tls() {
  local t=$1
  need openssl
  mkdir -p "$t"
  [[ -s $t/ca.pem ]] && return 0
  local subj=/O=cloud-bouncer-test
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "$subj/CN=cloud-bouncer test CA" \
    -keyout "$t/ca-key.pem" -out "$t/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  leaf() { # name subject extensions
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$t/$1-key.pem" -out "$t/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$t/$1.ext"
    openssl x509 -req -in "$t/$1.csr" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" -CAcreateserial \
      -days 2 -extfile "$t/$1.ext" -out "$t/$1.pem" 2>/dev/null
    rm -f "$t/$1.csr" "$t/$1.ext"
  }
  leaf server "$subj/OU=lapi/CN=localhost" \
    $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost'
  leaf bouncer "$subj/OU=bouncer-ou/CN=cloud-bouncer-mtls" \
    $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  leaf agent "$subj/OU=agent-ou/CN=test-agent" \
    $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  # A client certificate from a CA the LAPI does not trust.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "$subj/OU=bouncer-ou/CN=rogue" \
    -keyout "$t/rogue-key.pem" -out "$t/rogue.pem" 2>/dev/null
  chmod 600 "$t"/*-key.pem
}

write_config() {
  local dir=$1 port=$2 tls=$3
  local tls_section=''
  if [[ $tls != off ]]; then
    tls_section="    tls:
      cert_file: $dir/tls/server.pem
      key_file: $dir/tls/server-key.pem"
    if [[ $tls == mtls ]]; then
      # VerifyClientCertIfGiven: a certificate, when presented, must chain to
      # ca_cert_path; requests without one still authenticate by API key.
      tls_section+="
      client_verification: VerifyClientCertIfGiven
      ca_cert_path: $dir/tls/ca.pem
      bouncers_allowed_ou:
        - bouncer-ou
      agents_allowed_ou:
        - agent-ou"
    fi
  fi
  cat >"$dir/config.yaml" <<EOF
# Isolated test LAPI, written by scripts/lapi.sh. Every path is under $dir.
common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: $dir/log/
  working_dir: $dir
config_paths:
  config_dir: $dir/
  data_dir: $dir/data/
  simulation_path: $dir/simulation.yaml
  hub_dir: $dir/hub/
  index_path: $dir/hub/.index.json
  notification_dir: $dir/notifications/
  plugin_dir: $dir/plugins/
cscli:
  output: human
  color: never
db_config:
  log_level: error
  type: sqlite
  db_path: $dir/data/crowdsec.db
  use_wal: true
  flush:
    # The default (5000) would flush bigger test loads.
    max_items: 5000000
    max_age: 30d
api:
  client:
    insecure_skip_verify: false
    credentials_path: $dir/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:$port
    profiles_path: $dir/profiles.yaml
    console_path: $dir/console.yaml
    trusted_ips:
      - 127.0.0.1
      - ::1
$tls_section
prometheus:
  enabled: false
  level: full
  listen_addr: 127.0.0.1
  listen_port: 0
EOF
  cat >"$dir/profiles.yaml" <<'EOF'
name: default_ip_remediation
filters:
  - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
  - type: ban
    duration: 4h
on_success: break
EOF
  printf 'simulation: off\n' >"$dir/simulation.yaml"
  cat >"$dir/console.yaml" <<'EOF'
share_manual_decisions: false
share_custom: false
share_tainted: false
EOF
}

health_url() {
  local dir=$1
  cat "$dir/url"
}

probe() {
  local dir=$1
  local args=(-fsS -o /dev/null --max-time 2)
  [[ -s $dir/tls/ca.pem && $(health_url "$dir") == https:* ]] && args+=(--cacert "$dir/tls/ca.pem")
  curl "${args[@]}" "$(health_url "$dir")health" 2>/dev/null
}

is_running() {
  local dir=$1
  [[ -s $dir/crowdsec.pid ]] && kill -0 "$(cat "$dir/crowdsec.pid")" 2>/dev/null
}

cmd_start() {
  [[ $# -ge 2 ]] || usage
  local dir port tls=off
  dir=$(abs_dir "$1")
  port=$2
  shift 2
  for a in "$@"; do
    case $a in
      --tls) [[ $tls == mtls ]] || tls=tls ;;
      --mtls) tls=mtls ;;
      *) die "unknown option $a" ;;
    esac
  done
  [[ $port =~ ^[0-9]+$ && $port -gt 0 && $port -lt 65536 ]] || die "PORT must be 1-65535, got '$port'"
  need "$CROWDSEC_BIN" "apt-get install crowdsec; see README.md"
  need "$CSCLI_BIN" "apt-get install crowdsec"
  need curl
  is_running "$dir" && die "a LAPI is already running from $dir (pid $(cat "$dir/crowdsec.pid"))"

  mkdir -p "$dir/data" "$dir/hub" "$dir/log" "$dir/notifications" "$dir/plugins"
  [[ $tls != off ]] && gen_tls "$dir/tls"
  write_config "$dir" "$port" "$tls"
  local scheme=http
  [[ $tls != off ]] && scheme=https
  printf '%s://127.0.0.1:%s/\n' "$scheme" "$port" >"$dir/url"

  # The machine cscli uses for `decisions add/delete/import`. machines add
  # writes the database directly, so it works before the LAPI starts.
  local pw
  pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cscli_in "$dir" machines add test-machine --password "$pw" \
    -f "$dir/local_api_credentials.yaml" -u "$scheme://127.0.0.1:$port/" --force >/dev/null
  if [[ $tls != off ]]; then
    printf 'ca_cert_path: %s\n' "$dir/tls/ca.pem" >>"$dir/local_api_credentials.yaml"
  fi
  chmod 600 "$dir/local_api_credentials.yaml"

  "$CROWDSEC_BIN" -c "$dir/config.yaml" -t >"$dir/log/config-test.log" 2>&1 ||
    { cat "$dir/log/config-test.log" >&2; die "config test failed"; }

  nohup "$CROWDSEC_BIN" -c "$dir/config.yaml" -no-cs -no-capi >"$dir/log/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/crowdsec.pid"
  if [[ -n ${LAPI_WATCH_PID:-} ]]; then
    # Do not outlive the test runner, even when it is killed.
    (
      while kill -0 "$LAPI_WATCH_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
      kill "$pid" 2>/dev/null || true
    ) >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/watchdog.pid"
  fi

  local i
  for ((i = 0; i < 150; i++)); do
    if probe "$dir"; then
      echo "LAPI up at $(health_url "$dir") (pid $pid, dir $dir)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/log/stdout.log" "$dir/log/crowdsec_api.log" 2>/dev/null >&2 || true
      die "crowdsec exited during startup"
    fi
    sleep 0.1
  done
  tail -n 30 "$dir/log/stdout.log" "$dir/log/crowdsec_api.log" 2>/dev/null >&2 || true
  cmd_stop "$dir" >/dev/null 2>&1 || true
  die "LAPI did not answer /health within 15 s"
}

cmd_add_bouncer() {
  [[ $# -eq 3 ]] || usage
  local dir
  dir=$(abs_dir "$1")
  [[ -s $dir/config.yaml ]] || die "no LAPI config in $dir (run start first)"
  cscli_in "$dir" bouncers add "$2" -k "$3" >/dev/null
}

cmd_cscli() {
  [[ $# -ge 1 ]] || usage
  local dir
  dir=$(abs_dir "$1")
  shift
  cscli_in "$dir" "$@"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local dir=$1
  [[ -d $dir ]] || return 0
  if [[ -s $dir/watchdog.pid ]]; then
    kill "$(cat "$dir/watchdog.pid")" 2>/dev/null || true
    rm -f "$dir/watchdog.pid"
  fi
  [[ -s $dir/crowdsec.pid ]] || return 0
  local pid i
  pid=$(cat "$dir/crowdsec.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/crowdsec.pid"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
  start) cmd_start "$@" ;;
  add-bouncer) cmd_add_bouncer "$@" ;;
  cscli) cmd_cscli "$@" ;;
  stop) cmd_stop "$@" ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$cmd' (start, add-bouncer, cscli, stop)" ;;
esac
