#!/bin/sh
# /init of the dom0 initramfs built by xtask's Xen harness (xtask/src/xen.rs).
#
# Starts the Xen toolstack daemons, runs every domU listed in /job/run.sh (the /job tree is a
# second cpio archive that xen.rs appends for each QEMU run), relays each domU's xl output and
# console log over the serial console between marker lines, then ends QEMU through the
# isa-debug-exit port. Marker lines start with "@@XH " and are parsed by xen.rs: keep both in
# sync. The @NAME@ placeholders are filled in by xen.rs when it builds the initramfs.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin:@XEN_BIN_DIR@
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
M="@@XH"

/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/lib/xenstored /var/log/xen/console /tmp
ln -s /run /var/run
# Keep dom0's own kernel messages off the serial line the relay uses.
echo 1 > /proc/sys/kernel/printk

# exit_qemu CODE: QEMU exits with status (CODE << 1) | 1. A Linux PV dom0 has I/O privilege.
exit_qemu() {
    printf "\\$(printf '%03o' "$1")" | dd of=/dev/port bs=1 seek=@DEBUG_EXIT_PORT@ count=1 2>/dev/null
    sleep 2
    poweroff -f
    while :; do sleep 1000; done
}

fatal() {
    echo "$M fatal $*"
    exit_qemu @EXIT_FATAL@
}

# now_cs: dom0 uptime in centiseconds.
now_cs() {
    read -r u _ < /proc/uptime
    echo "${u%.*}${u#*.}"
}

# step SECONDS WHAT COMMAND...: run a setup command under a timeout, fatal on failure.
step() {
    t=$1
    what=$2
    shift 2
    timeout "$t" "$@" || fatal "dom0 setup step '$what' failed (status $?)"
}

# settle FILE: wait (bounded) until xenconsoled has stopped appending to FILE.
settle() {
    prev=-1
    n=0
    while [ $n -lt 25 ]; do
        s=$(wc -c < "$1" 2>/dev/null || echo 0)
        [ "$s" = "$prev" ] && return
        prev=$s
        n=$((n + 1))
        sleep 0.2
    done
}

# run_domu INDEX NAME: xl create -F /job/INDEX/cfg under a per-domU time limit, then relay.
run_domu() {
    i=$1
    name=$2
    d=/job/$i
    if [ "$DOMU_LIMIT_CS" -gt 0 ]; then
        limit=$DOMU_LIMIT_CS
    else
        # Fair share of what is left of the run's budget, so one hung domU cannot starve the rest.
        limit=$(((DEADLINE_CS - $(now_cs)) / (COUNT - i)))
        [ "$limit" -lt @MIN_DOMU_CS@ ] && limit=@MIN_DOMU_CS@
    fi
    log=/var/log/xen/console/guest-$name.log
    rm -f "$log" "$d/status"
    : > "$d/destroy.out"
    echo "$M begin $i $name limit_cs=$limit"
    (
        s=$(now_cs)
        xl -v create -F "$d/cfg" < /dev/null > "$d/xl.out" 2>&1
        rc=$?
        echo "$rc $(($(now_cs) - s))" > "$d/status"
    ) &
    t0=$(now_cs)
    timed_out=0
    while [ ! -s "$d/status" ]; do
        if [ $(($(now_cs) - t0)) -ge "$limit" ]; then
            timed_out=1
            echo "xtask: $name did not shut down within $((limit / 100)) s: xl destroy $name" > "$d/destroy.out"
            timeout 30 xl destroy "$name" >> "$d/destroy.out" 2>&1
            break
        fi
        sleep 0.2
    done
    n=0
    while [ ! -s "$d/status" ] && [ $n -lt 100 ]; do
        sleep 0.2
        n=$((n + 1))
    done
    [ -s "$d/status" ] || echo "@XL_HUNG_STATUS@ 0" > "$d/status"
    read -r rc cs < "$d/status"
    settle "$log"
    awk -v p="$M xl $i " '{ print p $0 }' "$d/xl.out" "$d/destroy.out"
    if [ -f "$log" ]; then tr -d '\r' < "$log" > "$d/con"; else : > "$d/con"; fi
    awk -v p="$M con $i " '{ print p $0 }' "$d/con"
    bytes=$(wc -c < "$d/con")
    nl=1
    if [ "$bytes" -gt 0 ] && [ "$(tail -c 1 "$d/con" | wc -l)" -eq 0 ]; then nl=0; fi
    echo "$M end $i status=$rc cs=$cs timed_out=$timed_out bytes=$bytes nl=$nl"
}

[ -f /job/params.sh ] || fatal "no /job/params.sh in the initramfs"
. /job/params.sh
(
    sleep "$WATCHDOG_S"
    echo "$M fatal dom0 watchdog: jobs not finished after $WATCHDOG_S s of dom0 uptime"
    exit_qemu @EXIT_WATCHDOG@
) &

for m in @MODULES@; do
    insmod "/lib/modules/$m.ko" || fatal "insmod $m failed"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || fatal "mount -t xenfs failed"
step 60 xenstored xenstored --pid-file /run/xenstored.pid
step 60 xen-init-dom0 xen-init-dom0
[ "$(timeout 30 xenstore-read /local/domain/0/name)" = Domain-0 ] || fatal "xenstore does not name dom0 Domain-0"
step 60 xenconsoled xenconsoled --log=guest --log-dir=/var/log/xen/console
echo "$M ready uptime_cs=$(now_cs)"

. /job/run.sh
echo "$M done"
exit_qemu @EXIT_DONE@
