#!/usr/bin/env bash
# testcluster.sh - hpcgw's local Slurm test cluster: one node on loopback, from Debian packages,
# without systemd or cgroups.  Its own munged, MariaDB (unix socket only), slurmdbd, slurmctld,
# slurmd and a key-only sshd on 127.0.0.1, each with its pid file under its own run dir, its own
# config/state/log dirs and ports: it shares no file, pid or port with the Slurm lab
# (slurm-lab.sh) except the ssh port 2222 (HPCGW_TC_SSH_PORT to move it).
#
# Usage (as root): testcluster.sh [up|down|status|install|stop DAEMON|env]     (default: up)
#   up           install missing packages, write configs, start what is not running, create the
#                users and accounting objects, wait until the node takes jobs.  Idempotent.
#   down         stop every daemon of this script by its pid file, dependents first.
#   status       each daemon's pid file and whether it is alive, then sinfo; exit 1 if one is down.
#   install      only install the missing Debian packages.
#   stop DAEMON  stop one daemon (munged|mariadbd|slurmdbd|slurmctld|slurmd|sshd); `up` restarts it.
#   env          print KEY=VALUE lines (shell syntax) describing the cluster, for the test suite.
#
# Tunables (environment): HPCGW_TC_SSH_PORT=2222  HPCGW_TC_SLURM_PORT=6917 (slurmctld; slurmd +1,
#   slurmdbd +2)  HPCGW_TC_CPUS=4  HPCGW_TC_MEM_MB=4096  HPCGW_TC_GPUS=4 (>= 1; no real device)
# Checked on Debian 12 (Slurm 22.05.8) and in a Debian 13 chroot (Slurm 24.11.5).
set -euo pipefail

SSH_PORT=${HPCGW_TC_SSH_PORT:-2222}
CTLD_PORT=${HPCGW_TC_SLURM_PORT:-6917}; D_PORT=$((CTLD_PORT + 1)); DBD_PORT=$((CTLD_PORT + 2))
CPUS=${HPCGW_TC_CPUS:-4}
MEM_MB=${HPCGW_TC_MEM_MB:-4096}
# GPUs that Slurm schedules, hands out and accounts; each is /dev/null (see write_configs)
GPUS=${HPCGW_TC_GPUS:-4}
CLUSTER=hpcgwtest
DB_PASS=hpcgwtest
MEMBERS=(hpcm_alpha hpcm_beta)     # unix user = its group = its Slurm account
ADMIN=hpcgw_admin                  # the gateway's service identity (sacct, sacctmgr, squeue)
ADMIN_ACCOUNT=hpcgw_ops
PARTITIONS=(debug long)
# Slurm's billing TRES = max(gpus*1000, cpus*250, mem_GB*62.5): hpcgw's rate rule (1 SU per
# GPU-hour, 0.25 per CPU-hour, 0.0625 per GB-hour) in milli-SU per hour. Slurm truncates billing
# to an integer, so weights in SU would bill every job under 1 SU/h as 0 (measured); milli-SU
# keeps it exact to 0.001 SU/h.
BILLING_WEIGHTS="CPU=250,Mem=62.5G,GRES/gpu=1000"

STATE=/var/lib/hpcgw-testcluster
RUN=/run/hpcgw-testcluster
LOGS=/var/log/hpcgw-testcluster
ETC=$STATE/etc                     # slurm.conf, slurmdbd.conf, cgroup.conf, my.cnf, sshd_config
KEYS=$STATE/keys
# the accounts' authorized_keys, one file per user, root's (docs/cluster-accounts.md): a job of
# the member cannot add a key or a command= to its own login
AUTH_KEYS=$STATE/authorized_keys
KNOWN_HOSTS=$STATE/known_hosts
export SLURM_CONF=$ETC/slurm.conf  # every Slurm command below (and over ssh, via sshd SetEnv)
MUNGE_SOCKET=$RUN/munge/munge.socket
MYSQL_SOCKET=$RUN/mysqld/mysqld.sock
NODE=$(uname -n); NODE=${NODE%%.*}  # short hostname: what slurmd matches NodeName against

PID_MUNGE=$RUN/munge/munged.pid
PID_MARIADB=$RUN/mysqld/mariadbd.pid
PID_SLURMDBD=$RUN/slurmdbd.pid
PID_SLURMCTLD=$RUN/slurmctld.pid
PID_SLURMD=$RUN/slurmd.pid
PID_SSHD=$RUN/sshd.pid
# start order; stop order is the reverse
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd sshd)
pidfile_of() {
  case $1 in
    munged) echo "$PID_MUNGE" ;; mariadbd) echo "$PID_MARIADB" ;; slurmdbd) echo "$PID_SLURMDBD" ;;
    slurmctld) echo "$PID_SLURMCTLD" ;; slurmd) echo "$PID_SLURMD" ;; sshd) echo "$PID_SSHD" ;;
    *) return 1 ;;
  esac
}

PKGS=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client openssh-server)

T0=${EPOCHREALTIME/./}
log() { local us=$(( ${EPOCHREALTIME/./} - T0 )); printf '[testcluster +%d.%01ds] %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# kv KEY VALUE: one line of `env`; every value is a plain word, so no quoting is needed
kv() { printf '%s=%s\n' "$1" "$2"; }

do_env() {
  local u U
  kv HPCGW_TC_CLUSTER "$CLUSTER"
  kv HPCGW_TC_SSH_HOST 127.0.0.1
  kv HPCGW_TC_SSH_PORT "$SSH_PORT"
  kv HPCGW_TC_KNOWN_HOSTS "$KNOWN_HOSTS"             # restored from .orig by every `up`
  kv HPCGW_TC_KNOWN_HOSTS_ORIG "$KNOWN_HOSTS.orig"   # the served host key; never edit it
  kv HPCGW_TC_KNOWN_HOSTS_WRONG "$STATE/known_hosts.wrong"  # same host, a key it never serves
  kv HPCGW_TC_PARTITIONS "$(IFS=,; echo "${PARTITIONS[*]}")"
  kv HPCGW_TC_DEFAULT_PARTITION "${PARTITIONS[0]}"
  for u in "${MEMBERS[@]}"; do
    U=${u#hpcm_}; U=${U^^}
    kv "HPCGW_TC_${U}_USER" "$u"
    kv "HPCGW_TC_${U}_GROUP" "$u"
    kv "HPCGW_TC_${U}_ACCOUNT" "$u"
    kv "HPCGW_TC_${U}_KEY" "$KEYS/${u}_ed25519"
    kv "HPCGW_TC_${U}_WORKDIR" "/home/$u/hpcgw"
  done
  kv HPCGW_TC_ADMIN_USER "$ADMIN"
  kv HPCGW_TC_ADMIN_ACCOUNT "$ADMIN_ACCOUNT"
  kv HPCGW_TC_ADMIN_KEY "$KEYS/${ADMIN}_ed25519"
  kv HPCGW_TC_WORK_ROOT '/home/{unix_user}/hpcgw'
  kv HPCGW_TC_SLURM_CONF "$SLURM_CONF"
  kv HPCGW_TC_NODE "$NODE"
  kv HPCGW_TC_CPUS "$CPUS"
  kv HPCGW_TC_MEM_MB "$MEM_MB"
  kv HPCGW_TC_GPUS "$GPUS"
  kv HPCGW_TC_STATE_DIR "$STATE"
  kv HPCGW_TC_RUN_DIR "$RUN"
  kv HPCGW_TC_LOG_DIR "$LOGS"
}

# ---------------------------------------------------------------- process helpers
# running PID: exists and is not a zombie (double-forked daemons are reaped late by pid 1)
running() { [[ -r /proc/$1/stat ]] && [[ $(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# alive DAEMON: the pid in its pid file is running and its /proc/PID/comm is the daemon's name
alive() {
  local f pid
  f=$(pidfile_of "$1")
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [[ -n $pid ]] && running "$pid" || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

# stop DAEMON: SIGTERM the pid of its pid file (only if it is that daemon), SIGKILL after 30 s
stop_daemon() {
  local d=$1 f pid deadline
  f=$(pidfile_of "$d")
  if ! alive "$d"; then rm -f "$f"; return 0; fi
  pid=$(tr -dc '0-9' <"$f")
  log "stopping $d (pid $pid)"
  kill -TERM "$pid"
  deadline=$(( ${EPOCHREALTIME/./} + 30000000 ))
  while running "$pid" && (( ${EPOCHREALTIME/./} < deadline )); do sleep 0.05; done
  if running "$pid"; then log "$d (pid $pid) still alive after 30 s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$f"
}

# wait_until SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds; die at the deadline
wait_until() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( ${EPOCHREALTIME/./} + secs * 1000000 ))
  while (( ${EPOCHREALTIME/./} < deadline )); do
    # `timeout` runs programs, not this script's functions (node_ready): those bound their own
    if declare -F "$1" >/dev/null; then
      if "$@" >/dev/null 2>&1; then return 0; fi
    elif timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

# put_file PATH MODE OWNER:GROUP <content; sets CHANGED=1 when the content differed
put_file() {
  local path=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then rm -f "$tmp"
  else install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"; rm -f "$tmp"; CHANGED=1; fi
  chmod "$mode" "$path"; chown "$owner" "$path"
}

# ---------------------------------------------------------------- down / status / stop
do_down() {
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
  log "all testcluster daemons stopped"
}

do_status() {
  local d f down=0
  for d in "${DAEMONS[@]}"; do
    f=$(pidfile_of "$d")
    if alive "$d"; then printf '%-10s running  pid %-7s %s\n' "$d" "$(cat "$f")" "$f"
    else printf '%-10s STOPPED               %s\n' "$d" "$f"; down=1; fi
  done
  if alive slurmctld; then timeout 10 sinfo 2>&1 || down=1; fi
  return $down
}

do_stop() {
  local d=${1:-}
  case $d in munge) d=munged ;; mariadb|mysqld) d=mariadbd ;; esac
  pidfile_of "$d" >/dev/null || die "stop: unknown daemon '${1:-}' (one of: ${DAEMONS[*]})"
  stop_daemon "$d"
}

# ---------------------------------------------------------------- up
install_packages() {
  local missing=() p installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null | sed -n 's/ install ok installed$//p') \
    || true   # dpkg-query fails when a package is unknown to dpkg
  for p in "${PKGS[@]}"; do grep -qx "$p" <<<"$installed" || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then return; fi
  log "installing: ${missing[*]}"
  # keep maintainer scripts from starting the packages' own daemons with default configs
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/hpcgw-testcluster-apt.log 2>&1; then
    timeout 120 apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/hpcgw-testcluster-apt.log 2>&1 \
      || { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/hpcgw-testcluster-apt.log; die "apt-get install failed"; }
  fi
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
}

write_configs() {
  install -d -m 755 "$STATE" "$ETC" "$RUN" "$LOGS"
  install -d -m 700 "$KEYS"
  install -d -m 755 -o root -g root "$AUTH_KEYS"
  install -d -m 755 -o slurm -g slurm "$STATE/slurmctld" "$STATE/slurmd" "$LOGS/slurm"
  install -d -m 755 -o munge -g munge "$RUN/munge" "$LOGS/munge"
  install -d -m 700 -o munge -g munge "$STATE/munge"
  install -d -m 755 -o mysql -g mysql "$RUN/mysqld" "$STATE/mysql" "$LOGS/mariadb"
  install -d -m 755 /run/sshd   # sshd's privilege separation directory

  [[ -s $STATE/munge/munge.key ]] \
    || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$STATE/munge/munge.key"; chmod 600 "$STATE/munge/munge.key"

  # this sshd's own host key; a second key, never served, gives the tests a wrong known_hosts
  local k
  for k in ssh_host_ed25519_key wrong_host_ed25519_key; do
    [[ -s $STATE/$k ]] || ssh-keygen -q -t ed25519 -N '' -C "hpcgw-testcluster" -f "$STATE/$k"
  done
  CHANGED=0
  put_file "$KNOWN_HOSTS.orig" 644 root:root \
    <<<"[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")"
  put_file "$STATE/known_hosts.wrong" 644 root:root \
    <<<"[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$STATE/wrong_host_ed25519_key.pub")"
  # known_hosts is what clients use; restored from .orig on every up in case a test edited it
  put_file "$KNOWN_HOSTS" 644 root:root <"$KNOWN_HOSTS.orig"

  CHANGED=0
  put_file "$ETC/my.cnf" 644 root:root <<EOF
# written by testcluster.sh: a MariaDB of its own for slurmdbd, unix socket only
[mysqld]
user=mysql
datadir=$STATE/mysql
socket=$MYSQL_SOCKET
pid-file=$PID_MARIADB
log-error=$LOGS/mariadb/mariadb.log
skip-networking
innodb_buffer_pool_size=1024M
innodb_lock_wait_timeout=900
[client]
socket=$MYSQL_SOCKET
EOF
  CH_MARIADB=$CHANGED

  CHANGED=0
  put_file "$ETC/slurmdbd.conf" 600 slurm:slurm <<EOF
# written by testcluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
DebugLevel=info
LogFile=$LOGS/slurm/slurmdbd.log
PidFile=$PID_SLURMDBD
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=hpcgwtest_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  CH_SLURMDBD=$CHANGED

  CHANGED=0
  local p parts=""
  for p in "${PARTITIONS[@]}"; do
    case $p in debug) parts+="PartitionName=debug Nodes=ALL Default=YES MaxTime=60" ;;
               long) parts+="PartitionName=long Nodes=ALL Default=NO MaxTime=1440" ;; esac
    parts+=" State=UP TRESBillingWeights=\"$BILLING_WEIGHTS\""$'\n'
  done
  put_file "$ETC/slurm.conf" 644 root:root <<EOF
# written by testcluster.sh - one node, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$PID_SLURMCTLD
SlurmdPidFile=$PID_SLURMD
SlurmctldLogFile=$LOGS/slurm/slurmctld.log
SlurmdLogFile=$LOGS/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
ReturnToService=2
# CPUs/RealMemory below are declared, not detected: keep the node usable anyway
SlurmdParameters=config_overrides
MailProg=/bin/true
SchedulerType=sched/backfill
# start batch jobs at submit time instead of batching them for up to 3 s (the default)
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# the munge socket for talking to slurmdbd (AuthInfo covers only the other daemons' traffic)
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations,limits,qos,safe
# keep --comment in the accounting database: the gateway finds a job by its marker there
AccountingStoreFlags=job_comment
# sacct's AllocTRES lists gres/gpu only for a GRES tracked here
AccountingStorageTRES=gres/gpu
GresTypes=gpu
JobCompType=jobcomp/none
# GrpTRESMins as a hard quota: usage never decays or resets
PriorityType=priority/multifactor
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityCalcPeriod=1
# billing = the largest weighted TRES, not their sum: hpcgw's rate = max(gpus*w, cpus*w, GB*w)
PriorityFlags=MAX_TRES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
$parts
EOF
  # slurmd drops a gpu GRES without File= ("file-less GPU", measured on 22.05 and 24.11: the node
  # then drains, 0 < 4 GPUs) and logs an error for a File= that is not a device: each GPU is a
  # link to /dev/null. No job opens it; with task/none and no cgroups nothing binds or hides it.
  local i
  install -d -m 755 "$STATE/gpus"
  for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$STATE/gpus/gpu$i"; done
  put_file "$ETC/gres.conf" 644 root:root <<<"NodeName=$NODE Name=gpu File=$STATE/gpus/gpu[0-$((GPUS - 1))]"
  # Slurm >= 23 slurmd dies without a mounted cgroup fs unless CgroupPlugin=disabled, which
  # 22.05 does not know (lab FINDINGS pitfall 5)
  local major
  major=$(slurmd -V | sed -n 's/^slurm[^ ]* \([0-9]*\)\..*/\1/p')
  if (( ${major:-0} >= 23 )); then put_file "$ETC/cgroup.conf" 644 root:root <<<'CgroupPlugin=disabled'; fi
  CH_SLURM=$CHANGED

  CHANGED=0
  put_file "$ETC/sshd_config" 644 root:root <<EOF
# written by testcluster.sh: loopback only, key only, the test cluster's accounts only
Port $SSH_PORT
ListenAddress 127.0.0.1
PidFile $PID_SSHD
HostKey $STATE/ssh_host_ed25519_key
PubkeyAuthentication yes
# Hardening (docs/cluster-accounts.md): the members' jobs run as these accounts and can write
# their homes, so nothing there may act on the gateway's logins: keys root's, outside the home;
# no ~/.ssh/rc, no ~/.ssh/environment; the accounts' shell /bin/sh reads no file for sh -c.
AuthorizedKeysFile $AUTH_KEYS/%u
PermitUserRC no
PermitUserEnvironment no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers ${MEMBERS[*]} $ADMIN
UsePAM no
StrictModes yes
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 50
SetEnv SLURM_CONF=$SLURM_CONF
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
EOF
  CH_SSHD=$CHANGED
  # a config this sshd refuses must not stop the running one
  /usr/sbin/sshd -t -f "$ETC/sshd_config" || die "sshd refuses $ETC/sshd_config"
}

# setup_user NAME: unix user in its own group, home and ~/hpcgw 0700, key pair; login shell
# /bin/sh (dash reads no startup file for `sh -c`; bash started by sshd reads ~/.bashrc) and
# authorized_keys root's in $AUTH_KEYS (see write_configs' sshd_config)
setup_user() {
  local u=$1 home key
  if ! id "$u" >/dev/null 2>&1; then
    useradd --create-home --user-group --shell /bin/sh "$u"
    log "created user $u"
  fi
  [[ $(getent passwd "$u" | cut -d: -f7) == /bin/sh ]] || usermod --shell /bin/sh "$u"
  # '!' (useradd's locked password) makes sshd without PAM refuse even keys; '*' = no password
  [[ $(getent shadow "$u" | cut -d: -f2) == '*' ]] || usermod -p '*' "$u"
  home=$(getent passwd "$u" | cut -d: -f6)
  install -d -m 700 -o "$u" -g "$u" "$home" "$home/.ssh" "$home/hpcgw"
  key=$KEYS/${u}_ed25519
  [[ -s $key ]] || ssh-keygen -q -t ed25519 -N '' -C "$u@hpcgw-testcluster" -f "$key"
  chmod 600 "$key"
  put_file "$AUTH_KEYS/$u" 644 root:root <"$key.pub"
  rm -f "$home/.ssh/authorized_keys"   # where earlier versions put it; sshd no longer reads it
}

start_munge() {
  if alive munged; then return; fi
  # --force: start even if a stale socket is left from an unclean stop
  runuser -u munge -- /usr/sbin/munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$PID_MUNGE" --log-file="$LOGS/munge/munged.log" --seed-file="$STATE/munge/munged.seed" \
    </dev/null >/dev/null 2>&1 9>&- || die "munged failed: see $LOGS/munge/munged.log"
  wait_until 10 munged bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
  log "munged up (pid $(cat "$PID_MUNGE"))"
}

mysql_cli() { mariadb --defaults-file="$ETC/my.cnf" "$@"; }

start_mariadb() {
  if alive mariadbd; then return; fi
  if [[ ! -d $STATE/mysql/mysql ]]; then
    mariadb-install-db --defaults-file="$ETC/my.cnf" --auth-root-authentication-method=socket \
      >"$LOGS/mariadb/install.log" 2>&1 || die "mariadb-install-db failed: see $LOGS/mariadb/install.log"
    rm -f "$STATE/accounting.done"
  fi
  setsid /usr/sbin/mariadbd --defaults-file="$ETC/my.cnf" </dev/null >>"$LOGS/mariadb/mariadb.log" 2>&1 9>&- &
  wait_until 60 mariadbd mariadb-admin --defaults-file="$ETC/my.cnf" ping
  mysql_cli -e "CREATE DATABASE IF NOT EXISTS hpcgwtest_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON hpcgwtest_acct_db.* TO 'slurm'@'localhost';"
  log "mariadbd up (pid $(cat "$PID_MARIADB"))"
}

start_slurmdbd() {
  if alive slurmdbd; then return; fi
  # slurmdbd's client library finds the socket through MYSQL_UNIX_PORT (StorageHost=localhost)
  MYSQL_UNIX_PORT=$MYSQL_SOCKET /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1 9>&-
  wait_until 60 slurmdbd sacctmgr -n show cluster
  log "slurmdbd up (pid $(cat "$PID_SLURMDBD"))"
}

# the associations `sacctmgr show user withassoc` must list (tests may add more: they are kept)
expected_assocs() {
  local u
  for u in "${MEMBERS[@]}"; do printf '%s|%s|None|%s|%s\n' "$u" "$u" "$CLUSTER" "$u"; done
  printf '%s|%s|Administrator|%s|%s\n' "$ADMIN" "$ADMIN_ACCOUNT" "$CLUSTER" "$ADMIN_ACCOUNT"
}
# the expected associations that are missing (none: all in place)
missing_assocs() {
  local have
  have=$(timeout 20 sacctmgr -n -P show user withassoc format=user,defaultaccount,adminlevel,cluster,account) \
    || die "sacctmgr show user failed"
  expected_assocs | grep -vxF -f <(printf '%s\n' "$have") || true
}

setup_accounting() {
  # one sacctmgr call when all is in place (each costs ~0.35 s on loopback)
  [[ -z $(missing_assocs) ]] && return
  # 'sacctmgr add' of an existing object prints 'Nothing new added' and exits 1: check first
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  local have a u
  have=$(sacctmgr -n -P show account format=account)
  for a in "${MEMBERS[@]}" "$ADMIN_ACCOUNT"; do
    grep -qx "$a" <<<"$have" || sacctmgr -i add account "$a" Cluster="$CLUSTER" Description="$a" Organization=hpcgw >/dev/null
  done
  have=$(sacctmgr -n -P show assoc format=user,account where cluster="$CLUSTER")
  for u in "${MEMBERS[@]}" "$ADMIN"; do
    a=$u; [[ $u == "$ADMIN" ]] && a=$ADMIN_ACCOUNT
    grep -qx "$u|$a" <<<"$have" || sacctmgr -i add user "$u" Account="$a" Cluster="$CLUSTER" >/dev/null
    # a test may have moved the default elsewhere: put it back
    [[ $(sacctmgr -n -P show user "$u" format=defaultaccount) == "$a" ]] \
      || sacctmgr -i modify user "$u" set DefaultAccount="$a" >/dev/null
  done
  [[ $(sacctmgr -n -P show user "$ADMIN" format=adminlevel) == Administrator ]] \
    || sacctmgr -i modify user "$ADMIN" set AdminLevel=Administrator >/dev/null
  local missing
  missing=$(missing_assocs)
  [[ -z $missing ]] || die "accounting objects still missing: $missing"
  log "accounting: cluster $CLUSTER, accounts ${MEMBERS[*]} $ADMIN_ACCOUNT, admin $ADMIN"
}

start_slurmctld() {
  if alive slurmctld; then return; fi
  /usr/sbin/slurmctld </dev/null >/dev/null 2>&1 9>&-
  wait_until 60 slurmctld scontrol ping
  log "slurmctld up (pid $(cat "$PID_SLURMCTLD"))"
  # A running slurmd registers again only at its next ping (SlurmdTimeout/3 = 100 s); 24.11 shows
  # the node as 'unknown' until then.  Restart it (running jobs' slurmstepd carry on).
  if alive slurmd; then stop_daemon slurmd; fi
}

start_slurmd() {
  if alive slurmd; then return; fi
  SLURMD_STARTED=$(date +%s)
  /usr/sbin/slurmd </dev/null >/dev/null 2>&1 9>&-
  wait_until 30 "slurmd pid file" test -s "$PID_SLURMD"
  log "slurmd up (pid $(cat "$PID_SLURMD"))"
}

# the node takes jobs (idle, or busy with the tests' jobs) and registered since slurmd (re)started
node_ready() {
  local line t
  line=$(timeout 10 scontrol -o show node "$NODE") || return 1
  [[ $(timeout 10 sinfo -h -n "$NODE" -o %T) =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
  ((SLURMD_STARTED == 0)) && return 0
  t=$(sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' <<<"$line")
  [[ -n $t && $t != None ]] || return 1
  (( $(date -d "$t" +%s) >= SLURMD_STARTED - 1 ))
}

# Slurm drains a node whose slurmd registers less than slurm.conf declares (a GPU count under
# an older gres.conf: `gres/gpu count reported lower than configured`), and the drain outlives
# restarts.  Resume a node drained by Slurm itself, once the configs are rewritten; an admin's
# drain ([root@...]) is kept.  A config still wrong drains it again and node_ready times out.
resume_if_drained_by_slurm() {
  local line
  line=$(timeout 10 scontrol -o show node "$NODE") || return 0
  [[ $line =~ \ State=[A-Z_+]*DRAIN && $line =~ \ Reason=.*\[slurm@ ]] || return 0
  log "node $NODE drained by Slurm (${line##* Reason=}): resuming it"
  timeout 10 scontrol update nodename="$NODE" state=resume
}

start_sshd() {
  if alive sshd; then return; fi
  /usr/sbin/sshd -f "$ETC/sshd_config" -E "$LOGS/sshd.log" </dev/null >/dev/null 2>&1 9>&-
  wait_until 10 sshd test -s "$PID_SSHD"
  log "sshd up on 127.0.0.1:$SSH_PORT (pid $(cat "$PID_SSHD"))"
}

# stop the running daemons whose config write_configs just changed, dependents first
restart_changed() {
  if ((CH_SSHD)); then stop_daemon sshd; fi
  if ((CH_SLURM)); then stop_daemon slurmd; stop_daemon slurmctld; fi
  if ((CH_SLURMDBD || CH_MARIADB)); then stop_daemon slurmdbd; fi
  if ((CH_MARIADB)); then stop_daemon mariadbd; fi
}

do_up() {
  local u
  SLURMD_STARTED=0
  install_packages
  write_configs
  for u in "${MEMBERS[@]}" "$ADMIN"; do setup_user "$u"; done
  restart_changed
  start_munge
  start_mariadb
  start_slurmdbd
  setup_accounting
  start_slurmctld
  start_slurmd
  resume_if_drained_by_slurm
  if ! node_ready; then
    wait_until 60 "node $NODE to take jobs (sinfo: $(sinfo -h -n "$NODE" -o %T 2>&1))" node_ready
  fi
  start_sshd
  log "ready: $(sinfo -h -n "$NODE" -o '%P %T' | tr '\n' ' ')- ssh -p $SSH_PORT on 127.0.0.1"
}

case ${1:-up} in
  env) do_env; exit 0 ;;
esac
[[ $(id -u) -eq 0 ]] || die "run as root"
# one up/down/stop/install at a time (several test runs may call `up` at once).  Every daemon is
# started with 9>&-: one that inherited the descriptor would hold the lock for as long as it runs.
if [[ ${1:-up} != status ]]; then
  exec 9>/run/hpcgw-testcluster.flock
  flock -w 300 9 || die "another testcluster.sh held /run/hpcgw-testcluster.flock for 300 s"
fi
case ${1:-up} in
  up) do_up ;;
  install) install_packages ;;
  down) do_down ;;
  status) do_status ;;
  stop) do_stop "${2:-}" ;;
  *) echo "usage: $0 [up|down|status|install|stop DAEMON|env]" >&2; exit 2 ;;
esac
