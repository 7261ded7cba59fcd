# shellcheck shell=sh disable=SC2034,SC2154 # t0, RUN_HOOK, ... are shared with l1-checks.sh
# The virtio device checks, L1 half (issue 15); sourced by l1-checks.sh, which defines say,
# run_sevm, sev_args, digest_check, l2_fact, logtail, logfull. L2's half is l2-devices.sh.
# Check names: dev-<kind>-<plain|sev>, kind one of
#   blk    an 80 MiB raw image, 64 MiB of random data then 16 MiB of zeros: L2's SHA-256 of the
#          first 64 MiB equals L1's; L2 writes 16 MiB at 64 MiB and syncs; after sevm exits the
#          image holds exactly what L2 says it wrote
#   blkro  the same image with readonly=on: L2 reads the same SHA-256, sees ro=1, its write
#          fails, and the image is unchanged afterwards
#   net    a TAP nt0 (10.0.2.1/24): L2 pings it, sends 32 MiB to `nc -l -p 5001` and receives
#          32 MiB from `nc -l -p 5002`, SHA-256 equal on both ends
#   vsock  `--vsock cid=3,uds=U`: L2 connects to CID 2 port 5000 and `nestio unix-echo U_5000`
#          echoes 1 MiB; L1 connects to U with `CONNECT 5001` and L2's listener echoes 1 MiB
# Under soft SEV (policy 0x1) also: `Memory Encryption Features active: AMD SEV`, the owner's
# launch digest (of the command line with sevm's virtio_mmio.device= entry), every virtio
# device with feature bit 33 (VIRTIO_F_ACCESS_PLATFORM) negotiated, a "software IO TLB" line in
# dmesg, and SWIOTLB's high-water mark above 0 after the I/O (when debugfs has it).
# Plan variables (run.sh): DEV_TIMEOUT, DEVCMD_<kind> (the command line before sevm's entries).

dsha() { sha256sum | cut -d' ' -f1; }
# seconds since boot, whole
usecs() { cut -d. -f1 /proc/uptime; }

# Called by run_sevm every 0.3 s: a heartbeat on the result channel (the host takes a silent
# channel for a frozen L1) and, for vsock, the host-to-guest connection once L2 listens.
dev_hook() {
    if [ $(($(usecs) - DEV_BEAT)) -ge 30 ]; then
        DEV_BEAT=$(usecs)
        say "NESTED-PROGRESS name=$name secs=$(since "$t0")"
    fi
    if [ "$kind" = vsock ] && [ "$UC_STARTED" = 0 ] && grep -q 'NESTED-L2: vsock-listening' "$LOG"; then
        UC_STARTED=1
        nestio unix-connect "$uds" 5001 1048576 30 >"/tmp/$name.uc" 2>&1 &
        UC_PID=$!
    fi
}

# Waits up to SECS for PID to end, then kills it.
dev_reap() { # PID SECS
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$(($2 * 5))" ]; do
        sleep 0.2
        i=$((i + 1))
    done
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

check_dev() { # NAME: dev-<kind>-<plain|sev>
    name=$1
    rest=${name#dev-}
    kind=${rest%-*}
    mode=${rest##*-}
    cmd=""
    eval "cmd=\${DEVCMD_$kind:-}"
    extra=""
    [ "$mode" = sev ] && extra=$(sev_args 0x1)
    reason=""
    devarg=""
    setup_ok=1
    UC_STARTED=0
    UC_PID=""
    DEV_BEAT=$(usecs)
    case $kind in
    blk | blkro)
        img=/tmp/$name.img
        dd if=/dev/urandom of="$img" bs=1M count=64 2>/dev/null
        dd if=/dev/zero of="$img" bs=1M seek=64 count=16 2>/dev/null
        pat_sha=$(dd if="$img" bs=1M count=64 2>/dev/null | dsha)
        img_sha0=$(dsha <"$img")
        devarg="--disk path=$img"
        [ "$kind" = blkro ] && devarg="$devarg,readonly=on"
        ;;
    net)
        if ! tunctl -t nt0 >/tmp/tunctl.out 2>&1; then
            setup_ok=0
            reason="tunctl -t nt0 failed: $(tr '\n' ' ' </tmp/tunctl.out)"
        fi
        ip addr add 10.0.2.1/24 dev nt0
        ip link set nt0 up
        dd if=/dev/urandom of="/tmp/$name.tx" bs=1M count=32 2>/dev/null
        tx_sha=$(dsha <"/tmp/$name.tx")
        rm -f "/tmp/$name.hold"
        mkfifo "/tmp/$name.hold"
        # The receiving nc's stdin must never reach EOF (busybox nc then stops): a FIFO held open.
        nc -l -p 5001 <>"/tmp/$name.hold" >"/tmp/$name.rx" &
        rx_pid=$!
        nc -l -p 5002 <"/tmp/$name.tx" >/dev/null &
        tx_pid=$!
        devarg="--net tap=nt0"
        ;;
    vsock)
        uds=/tmp/$name.vsock
        rm -f "$uds" "${uds}_5000"
        nestio unix-echo "${uds}_5000" >"/tmp/$name.echo" 2>&1 &
        echo_pid=$!
        devarg="--vsock cid=3,uds=$uds"
        ;;
    *)
        setup_ok=0
        reason="unknown device kind $kind"
        ;;
    esac
    RC=-
    SECS=0
    if [ "$setup_ok" = 1 ]; then
        RUN_HOOK=dev_hook
        # shellcheck disable=SC2086 # devarg and extra are lists of words
        run_sevm "$name" "$DEV_TIMEOUT" 0 --kernel "$L2K" --initrd "$L2I" --cmdline "$cmd" \
            --memory "$MEM" --cpus 1 --on-reset shutdown $devarg $extra
        RUN_HOOK=""
    else
        LOG=/tmp/$name.log
        : >"$LOG"
    fi
    grep -E 'NESTED-L2: (blk|net|vsock|features|swiotlb|dev-)|NESTED-L2: dmesg: .*(virtio|vda)|Memory Encryption Features|sevm: |error: ' "$LOG" |
        clean | while IFS= read -r l; do say "NESTED-LOG name=$name | $l"; done
    init=0 done=0 sevline=0
    grep -q 'NESTED-L2: init reached' "$LOG" && init=1
    grep -q 'NESTED-L2: dev-done' "$LOG" && done=1
    grep -q 'Memory Encryption Features active: AMD SEV' "$LOG" && sevline=1
    if [ "$setup_ok" = 1 ]; then
        if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
            reason="hang: stopped after ${DEV_TIMEOUT}s (exit $RC);"
        elif [ "$RC" != 0 ]; then
            reason="exit $RC;"
        fi
        [ "$init" = 1 ] || reason="$reason /init not reached;"
        [ "$done" = 1 ] || reason="$reason no dev-done marker;"
        grep -q 'NESTED-L2: dev-insmod-failed' "$LOG" && reason="$reason $(l2_fact dev-insmod-failed | cut -c1-80): insmod failed;"
    fi
    # What each kind must show.
    facts=""
    case $kind in
    blk | blkro)
        rsha=$(l2_fact blk-read-sha)
        wrc=$(l2_fact blk-write-rc)
        wrc=${wrc%% *}
        facts="read=$([ "$rsha" = "$pat_sha" ] && echo ok || echo bad)"
        [ "$rsha" = "$pat_sha" ] || reason="$reason read SHA-256 ${rsha:-none} not L1's $pat_sha;"
        if [ "$kind" = blk ]; then
            wsha=$(l2_fact blk-write-sha)
            back=$(dd if="$img" bs=1M skip=64 count=16 2>/dev/null | dsha)
            [ "$wrc" = 0 ] || reason="$reason L2's write failed (rc ${wrc:-none});"
            [ -n "$wsha" ] && [ "$back" = "$wsha" ] || reason="$reason bytes read back in L1 $back not what L2 wrote ${wsha:-none};"
            facts="$facts write_rc=${wrc:-?} readback=$([ -n "$wsha" ] && [ "$back" = "$wsha" ] && echo ok || echo bad)"
        else
            after=$(dsha <"$img")
            ro=$(l2_fact blk-ro)
            [ "$ro" = 1 ] || reason="$reason L2 sees ro=${ro:-none}, not 1;"
            case $wrc in '' | 0) reason="$reason L2's write to the read-only disk did not fail (rc ${wrc:-none});" ;; esac
            [ "$after" = "$img_sha0" ] || reason="$reason the image changed;"
            facts="$facts ro=${ro:-?} write_rc=${wrc:-?} unchanged=$([ "$after" = "$img_sha0" ] && echo yes || echo NO)"
        fi
        rm -f "$img"
        ;;
    net)
        dev_reap "$rx_pid" 20
        dev_reap "$tx_pid" 1
        rx_sha=$(dsha <"/tmp/$name.rx")
        rx_bytes=$(wc -c <"/tmp/$name.rx")
        ping=$(l2_fact net-ping)
        ssha=$(l2_fact net-send-sha)
        rsha=$(l2_fact net-recv-sha)
        case $ping in ok*) ;; *) reason="$reason ping: ${ping:-no result};" ;; esac
        [ -n "$ssha" ] && [ "$rx_sha" = "$ssha" ] || reason="$reason L2->L1: L1 got $rx_bytes bytes, SHA-256 $rx_sha, L2 sent ${ssha:-none};"
        [ "$rsha" = "$tx_sha" ] || reason="$reason L1->L2: L2 got SHA-256 ${rsha:-none}, L1 sent $tx_sha;"
        facts="ping=${ping%% *} to_l1=$([ "$rx_sha" = "$ssha" ] && echo ok || echo bad) to_l2=$([ "$rsha" = "$tx_sha" ] && echo ok || echo bad)"
        ip link set nt0 down 2>/dev/null
        tunctl -d nt0 >/dev/null 2>&1
        rm -f "/tmp/$name.tx" "/tmp/$name.rx" "/tmp/$name.hold"
        ;;
    vsock)
        [ -n "$UC_PID" ] && dev_reap "$UC_PID" 5
        kill "$echo_pid" 2>/dev/null
        wait "$echo_pid" 2>/dev/null
        vc=$(l2_fact vsock-connect)
        vl=$(l2_fact vsock-listen)
        uc=$(tail -n 1 "/tmp/$name.uc" 2>/dev/null)
        sed 's/^/L1 unix-echo: /' "/tmp/$name.echo" | clean | while IFS= read -r l; do say "NESTED-LOG name=$name | $l"; done
        clean <"/tmp/$name.uc" 2>/dev/null | sed 's/^/L1 unix-connect: /' | while IFS= read -r l; do say "NESTED-LOG name=$name | $l"; done
        case $vc in *"vsock-connect ok bytes=1048576"*) g2h=ok ;; *) g2h=bad && reason="$reason guest->host: ${vc:-no result};" ;; esac
        case "$uc $vl" in *"unix-connect ok bytes=1048576"*"vsock-listen ok bytes=1048576"*) h2g=ok ;; *) h2g=bad && reason="$reason host->guest: L1 '${uc:-no result}', L2 '${vl:-no result}';" ;; esac
        facts="guest_to_host=$g2h host_to_guest=$h2g"
        rm -f "$uds" "${uds}_5000" "/tmp/$name.uc" "/tmp/$name.echo"
        ;;
    esac
    # DMA: ACCESS_PLATFORM and SWIOTLB.
    ap=$(grep -o 'NESTED-L2: features=[^ ]*' "$LOG" | sed 's/.*=//' | tr '\n' ' ' | sed 's/ $//')
    sw=$(l2_fact swiotlb-dmesg)
    hw=$(l2_fact swiotlb-hiwater)
    hw=${hw%% *}
    DIG=-
    if [ "$mode" = sev ]; then
        digest_check "dev_${kind}_sev_1"
        [ "$sevline" = 1 ] || reason="$reason no 'Memory Encryption Features active: AMD SEV';"
        [ "$DIG" = ok ] || reason="$reason launch digest $DIG;"
        case " $ap" in
        " ") reason="$reason no virtio device features in sysfs;" ;;
        *:0*) reason="$reason ACCESS_PLATFORM (bit 33) not negotiated: $ap;" ;;
        esac
        [ -n "$sw" ] || reason="$reason no 'software IO TLB' in dmesg;"
        case $hw in
        none) ;;
        '' | 0) reason="$reason SWIOTLB high-water mark ${hw:-none}: no bounce buffer used;" ;;
        esac
    fi
    pass=0
    if [ -z "$reason" ]; then
        pass=1
        reason=ok
    fi
    if [ "$pass" != 1 ]; then
        logtail "$name" "$LOG" 25
        logfull "$name" "$LOG"
    fi
    say "NESTED-RESULT name=$name pass=$pass secs=$SECS exit=$RC $facts access_platform=${ap:-none} swiotlb_hiwater=${hw:-none} sev=$sevline digest=$DIG reason=$reason"
}
