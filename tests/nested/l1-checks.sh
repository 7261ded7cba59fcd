# The check matrix, run inside L1 by l1-init.sh (sourced; `say` writes to the result channel).
# /nested/plan (written by run.sh on the host) sets:
#   CHECKS          the check names, run in this order
#   BOOT_TIMEOUT    seconds one Linux boot may take (sevm --timeout; a hang is a failure)
#   GUEST_TIMEOUT   the same for a bundled guest
#   ES_REFUSE_SECS  an SEV-ES launch that fails must fail within this many seconds ("up front")
#   CMDLINE MEM     the L2 kernel command line and memory
#   INPUT_LINE      the line written to sevm's stdin once L2's /init asks for it
#   SEV_OBJ         the sev-guest object options after `policy=...`
#   DIGEST_<key>    the launch digests the owner predicts, computed on the host
#   JOBS            how many checks run at the same time
# Check names: guest-<name>[-sev|-seves][-<N>cpu], linux-<plain|sev|seves>-<N>cpu[-<NN>].
# Every check ends with one line
#   NESTED-RESULT name=... pass=0|1 secs=... exit=... <facts> reason=...
# and NESTED-LOG lines (the facts seen; on a failure also the last serial lines).
# shellcheck disable=SC1091 # written by run.sh
. /nested/plan
SEVM=/usr/local/bin/sevm
L2K=/l2/vmlinuz
L2I=/l2/initrd.cpio.gz
PLATFORM=/platform

# The virtio device checks (check_dev), when run.sh put them in.
# shellcheck disable=SC1091 # tests/nested/l1-devices.sh, copied by devices.sh
[ -f /nested/l1-devices.sh ] && . /nested/l1-devices.sh

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# A log line made safe for the result channel: no CR, no control characters.
clean() { tr -d '\r' | sed 's/[^[:print:]]/?/g'; }
logtail() { # NAME FILE N
    tail -n "$3" "$2" | clean | while IFS= read -r l; do say "NESTED-LOG name=$1 | $l"; done
}
# A failed check's whole serial output, which the host keeps in a file.
logfull() { # NAME FILE
    clean <"$2" | while IFS= read -r l; do say "NESTED-FULL name=$1 | $l"; done
}

# run_sevm NAME TIMEOUT FEED ARGS...: runs `sevm run ARGS` with its output in /tmp/NAME.log and
# its stdin on a FIFO; with FEED=1 writes INPUT_LINE to it once L2's /init says it waits for
# input; calls the function named by RUN_HOOK (if set) every 0.3 s while sevm runs. Sets RC
# (sevm's exit status; 137 if the outer kill was needed) and SECS.
run_sevm() {
    name=$1 tmo=$2 feed=$3
    shift 3
    LOG=/tmp/$name.log
    fifo=/tmp/$name.in
    rm -f "$LOG" "$fifo"
    mkfifo "$fifo"
    t0=$(now)
    # sevm's own --timeout stops the guest; the outer kill is for a sevm that itself hangs.
    timeout -s KILL $((tmo + 20)) "$SEVM" run --timeout "$tmo" "$@" <"$fifo" >"$LOG" 2>&1 &
    pid=$!
    exec 3>"$fifo"
    sent=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$feed" = 1 ] && [ "$sent" = 0 ] && grep -q 'NESTED-L2: waiting-for-input' "$LOG"; then
            echo "$INPUT_LINE" >&3
            sent=1
        fi
        # A device check's host half (check_dev sets RUN_HOOK while its sevm runs).
        [ -n "${RUN_HOOK:-}" ] && "$RUN_HOOK"
        sleep 0.3
    done
    wait "$pid"
    RC=$?
    exec 3>&-
    SECS=$(since "$t0")
    rm -f "$fifo"
}

sev_args() { # POLICY
    echo "--object sev-guest,id=sev0,policy=$1,$SEV_OBJ --machine confidential-guest-support=sev0 --platform-dir $PLATFORM"
}

# The launch digest sevm reported ("launch digest <hex>") against DIGEST_<key>.
digest_check() { # KEY -> DIG=ok|mismatch|none, and a log line
    want=""
    eval "want=\${DIGEST_$1:-}"
    got=$(grep -o 'launch digest [0-9a-f]*' "$LOG" | head -n 1 | cut -d' ' -f3)
    if [ -z "$got" ]; then
        DIG=none
    elif [ "$got" = "$want" ]; then
        DIG=ok
    else
        DIG=mismatch
    fi
    say "NESTED-LOG name=$name | digest: sevm ${got:-<none>} owner ${want:-<none>}"
}

check_guest() { # NAME: guest-<g>[-sev|-seves][-<N>cpu]
    name=$1
    rest=${name#guest-}
    cpus=1
    case $rest in
    *-[0-9]cpu)
        cpus=${rest##*-}
        cpus=${cpus%cpu}
        rest=${rest%-*}
        ;;
    esac
    mode=plain
    case $rest in
    *-seves)
        mode=seves
        rest=${rest%-seves}
        ;;
    *-sev)
        mode=sev
        rest=${rest%-sev}
        ;;
    esac
    g=$rest
    want_rc=0
    tmo=$GUEST_TIMEOUT
    case $g in
    hello) if [ "$cpus" -gt 1 ]; then pat="cpus online: 0$cpus"; else pat="hello from the sevm bundled guest"; fi ;;
    cpuid) if [ "$mode" = plain ]; then pat="cpuid 80000000 max="; else pat="msr c0010131="; fi ;;
    reset) pat="reset guest: done" ;;
    secret-reader) pat="no secret" ;;
    ticker)
        pat="ticker: counting"
        want_rc=124
        tmo=5
        ;;
    *) pat="<unknown guest $g>" ;;
    esac
    extra=""
    case $mode in
    sev) extra=$(sev_args 0x1) ;;
    seves) extra=$(sev_args 0x5) ;;
    esac
    # shellcheck disable=SC2086 # extra is a list of words
    run_sevm "$name" "$tmo" 0 --guest "$g" --cpus "$cpus" $extra
    out=0
    grep -qF "$pat" "$LOG" && out=1
    DIG=-
    [ "$mode" = plain ] || digest_check "guest_$(echo "$g" | tr - _)_${mode}_$cpus"
    pass=0 reason=ok
    if [ "$RC" != "$want_rc" ]; then
        reason="exit $RC, expected $want_rc"
    elif [ "$out" != 1 ]; then
        reason="no '$pat' in the output"
    elif [ "$DIG" != - ] && [ "$DIG" != ok ]; then
        reason="launch digest $DIG"
    else
        pass=1
    fi
    if [ "$pass" != 1 ]; then
        logtail "$name" "$LOG" 25
        logfull "$name" "$LOG"
    fi
    say "NESTED-RESULT name=$name pass=$pass secs=$SECS exit=$RC output=$out digest=$DIG reason=$reason"
}

# What L2's /init reported, from the serial log.
l2_fact() { grep -o "NESTED-L2: $1=[^[:cntrl:]]*" "$LOG" | head -n 1 | sed "s/^NESTED-L2: $1=//"; }

check_linux() { # NAME: linux-<mode>-<N>cpu[-<NN>]
    name=$1
    rest=${name#linux-}
    mode=${rest%%-*}
    rest=${rest#*-}
    cpus=${rest%%cpu*}
    extra=""
    policy=""
    case $mode in
    sev) policy=0x1 ;;
    seves) policy=0x5 ;;
    esac
    [ -n "$policy" ] && extra=$(sev_args "$policy")
    # shellcheck disable=SC2086 # extra is a list of words
    run_sevm "$name" "$BOOT_TIMEOUT" 1 --kernel "$L2K" --initrd "$L2I" --cmdline "$CMDLINE" \
        --memory "$MEM" --cpus "$cpus" --on-reset shutdown $extra
    started=0 init=0 echo_ok=0 input=0 done=0 sevline=0
    grep -q 'Linux version' "$LOG" && started=1
    grep -q 'NESTED-L2: init reached' "$LOG" && init=1
    grep -q 'NESTED-L2-ECHO user-space-console-ok' "$LOG" && echo_ok=1
    grep -qF "NESTED-L2: input=$INPUT_LINE" "$LOG" && input=1
    grep -q 'NESTED-L2: done' "$LOG" && done=1
    grep -q 'Memory Encryption Features active: AMD SEV' "$LOG" && sevline=1
    nproc=$(l2_fact nproc)
    clock=$(l2_fact clocksource)
    DIG=-
    [ -n "$policy" ] && digest_check "linux_${mode}_$cpus"
    grep -E 'NESTED-L2: (nproc|online|clocksource|uptime|input|dmesg)|Memory Encryption Features|sevm: |error: ' "$LOG" |
        clean | while IFS= read -r l; do say "NESTED-LOG name=$name | $l"; done
    pass=0
    reason=""
    if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        reason="hang: stopped after ${BOOT_TIMEOUT}s (exit $RC)"
    elif [ "$mode" = seves ] && [ "$started" = 0 ] && [ "$RC" != 0 ]; then
        # Refused up front: a non-zero exit, quickly, with sevm's error, before the launch was
        # measured (no launch digest) and before the kernel printed anything; `error: ` is how sevm
        # prints the error it exits with.
        if grep -q 'error: ' "$LOG" && [ "$DIG" = none ] && awk -v s="$SECS" -v m="$ES_REFUSE_SECS" 'BEGIN { exit !(s <= m) }'; then
            pass=1
            reason="refused up front: $(grep -o 'error: .*' "$LOG" | tail -n 1 | clean | cut -c1-200)"
        else
            reason="failed without a kernel message, but not up front (exit $RC after ${SECS}s, launch digest $DIG)"
        fi
    else
        [ "$RC" = 0 ] || reason="$reason exit $RC;"
        [ "$init" = 1 ] || reason="$reason /init not reached;"
        [ "$echo_ok" = 1 ] || reason="$reason user-space echo missing;"
        [ "$input" = 1 ] || reason="$reason stdin line not read;"
        [ "$nproc" = "$cpus" ] || reason="$reason nproc ${nproc:-?} not $cpus;"
        [ "$clock" = kvm-clock ] || reason="$reason clocksource ${clock:-?};"
        [ "$done" = 1 ] || reason="$reason no done marker;"
        if [ -n "$policy" ]; then
            [ "$sevline" = 1 ] || reason="$reason no 'Memory Encryption Features active: AMD SEV';"
            [ "$DIG" = ok ] || reason="$reason launch digest $DIG;"
        fi
        if [ -z "$reason" ]; then
            pass=1
            reason=ok
            [ "$mode" = seves ] && reason="booted under SEV-ES"
        fi
    fi
    if [ "$pass" != 1 ]; then
        logtail "$name" "$LOG" 25
        logfull "$name" "$LOG"
    fi
    say "NESTED-RESULT name=$name pass=$pass secs=$SECS exit=$RC init=$init echo=$echo_ok input=$input cpus=${nproc:-?} clock=${clock:-?} sev=$sevline digest=$DIG reason=$reason"
}

run_check() { # NAME; leaves /tmp/NAME.done when finished
    say "NESTED-BEGIN name=$1"
    case $1 in
    guest-*) check_guest "$1" ;;
    linux-*) check_linux "$1" ;;
    dev-*) check_dev "$1" ;;
    *) say "NESTED-RESULT name=$1 pass=0 secs=0 reason=unknown check" ;;
    esac
    rm -f "/tmp/$1.log"
    : >"/tmp/$1.done"
}

# Up to JOBS checks at a time (each in its own subshell, with its own log and FIFO), in order.
started=0
for c in $CHECKS; do
    while [ $((started - $(find /tmp -maxdepth 1 -name '*.done' | wc -l))) -ge "${JOBS:-1}" ]; do
        sleep 0.3
    done
    run_check "$c" &
    started=$((started + 1))
done
wait
