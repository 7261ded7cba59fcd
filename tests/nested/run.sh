#!/usr/bin/env bash
# The nested-KVM check (issue 12): real Linux guests under sevm on a real KVM, with no /dev/kvm
# needed on this machine. QEMU TCG emulates an AMD CPU with SVM and nested paging and boots a
# Debian 6.12 kernel as L1; L1's kvm_amd is a real KVM; sevm runs inside L1 and boots Linux (the
# same kernel) as L2, and the bundled guests. Checks (tests/nested/l1-checks.sh):
#   - bundled guests: hello (1 and 2 vCPUs), cpuid, reset, secret-reader, ticker; cpuid and
#     secret-reader under soft SEV and hello under SEV-ES, each with the launch digest sevm
#     reports equal to `sevm owner measure --vmm sevm` computed here on the host;
#   - Linux L2 with only `console=ttyS0 panic=-1`: plain 1 vCPU, plain 2 vCPUs, soft SEV 1 vCPU,
#     soft SEV 2 vCPUs, N boots each. A boot passes when /init is reached, a user-space echo
#     appears on sevm's serial output, a line written to sevm's stdin reaches /init, nproc is the
#     vCPU count, the clocksource is kvm-clock, sevm exits 0 through the exit port; under SEV also
#     `Memory Encryption Features active: AMD SEV` and the owner's launch digest;
#   - Linux under an SEV-ES policy (1 and 2 vCPUs): boots (as above) or is refused up front
#     (an `error:` before any launch digest, within ES_REFUSE_SECS); a hang fails.
# A Linux boot that hangs is stopped after SEVM_NESTED_BOOT_TIMEOUT seconds and fails (never
# retried). An L1 that fails (panics or freezes: QEMU TCG itself is slightly flaky) is retried
# once, with the checks that have no result yet, and the output says so.
#
# Environment: SEVM_NESTED_BOOTS (10), SEVM_NESTED_BOOT_TIMEOUT (90 s), SEVM_NESTED_CACHE
# (<repo>/target/nested-cache), SEVM_NESTED_SEVM (a prebuilt sevm instead of cargo build),
# SEVM_NESTED_ONLY (an extended regex: run only the matching checks), SEVM_NESTED_L1_CPUS (1),
# SEVM_NESTED_L1_MEM (2G), SEVM_NESTED_JOBS (1: checks at a time in L1), SEVM_NESTED_L1_CPU (the
# QEMU CPU model of L1, see lib.sh), SEVM_NESTED_L1_TCG (single: TCG's threading for L1, see
# lib.sh), SEVM_NESTED_L1_APPEND (extra L1 kernel arguments), SEVM_NESTED_DEVICES (1: the virtio
# device checks dev-<blk|blkro|net|vsock>-<plain|sev>, tests/nested/devices.sh; 0: left out),
# SEVM_NESTED_DEV_TIMEOUT (600 s: one device check's limit).
# Work files (L1 console, result channel, failed boots' whole serial output): <cache>/last-run.
# Exit status: 0 all checks passed (or SKIP when CI is unset and something is missing), 1 not.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
. "$ROOT/tests/nested/lib.sh"
. "$ROOT/tests/nested/devices.sh"
T_START=$SECONDS

BOOTS=${SEVM_NESTED_BOOTS:-10}
BOOT_TIMEOUT=${SEVM_NESTED_BOOT_TIMEOUT:-90}
GUEST_TIMEOUT=${SEVM_NESTED_GUEST_TIMEOUT:-30}
ES_REFUSE_SECS=${SEVM_NESTED_ES_REFUSE_SECS:-20}
# Checks run this many at a time inside L1. 1 by default: L1 has 1 vCPU (lib.sh); with 2 L1
# vCPUs under MTTCG and 2 at a time, L1 oopsed on a text-poke int3 in 2 of 2 runs here.
JOBS=${SEVM_NESTED_JOBS:-1}
CMDLINE="console=ttyS0 panic=-1"
MEM=512M
SEV_OBJ="cbitpos=47,reduced-phys-bits=1"
case $BOOTS in '' | *[!0-9]*) ndie "SEVM_NESTED_BOOTS=$BOOTS is not a number" ;; esac
case $BOOT_TIMEOUT in '' | *[!0-9]*) ndie "SEVM_NESTED_BOOT_TIMEOUT=$BOOT_TIMEOUT is not a number" ;; esac
case $JOBS in '' | 0 | *[!0-9]*) ndie "SEVM_NESTED_JOBS=$JOBS is not a positive number" ;; esac

nested_require "the nested-KVM check (tests/nested/run.sh)"
dev_missing=$(nested_dev_missing)
if [ -n "$dev_missing" ]; then
    [ -n "${CI:-}" ] && ndie "the virtio device checks (SEVM_NESTED_DEVICES=1) cannot run, missing: $dev_missing"
    printf '\n!!!!!!!!!!\nSKIP: the virtio device checks (CI unset), missing:\n%s\n!!!!!!!!!!\n\n' "$dev_missing" >&2
    DEVICES=0
fi
mkdir -p "$CACHE"
WORK=$CACHE/last-run
rm -rf "$WORK"
mkdir -p "$WORK"
nlog "kernel $KVER, cache $CACHE, work files in $WORK"

nested_build_sevm
nested_platform

# --- the checks, in the order L1 runs them
guests="guest-hello guest-hello-2cpu guest-cpuid guest-reset guest-secret-reader guest-ticker-2cpu
guest-cpuid-sev guest-secret-reader-sev guest-hello-seves-2cpu"
read -r -d "" -a all_checks <<<"$guests linux-seves-1cpu linux-seves-2cpu"
for ((i = 1; i <= BOOTS; i++)); do
    nn=$(printf '%02d' "$i")
    all_checks+=("linux-plain-1cpu-$nn" "linux-plain-2cpu-$nn" "linux-sev-1cpu-$nn" "linux-sev-2cpu-$nn")
done
mapfile -t -O "${#all_checks[@]}" all_checks < <(nested_dev_checks)
if [ -n "${SEVM_NESTED_ONLY:-}" ]; then
    mapfile -t all_checks < <(printf '%s\n' "${all_checks[@]}" | grep -E -- "$SEVM_NESTED_ONLY")
    nlog "NOTE: SEVM_NESTED_ONLY='$SEVM_NESTED_ONLY': running ${#all_checks[@]} checks only"
    ((${#all_checks[@]})) || ndie "SEVM_NESTED_ONLY matches no check"
fi

# --- images
nlog "building the L2 initramfs and the L1 image"
nested_l2_initrd "$WORK/l2.cpio.gz"
if [ "$DEVICES" = 1 ]; then
    nested_dev_build "$WORK/l2tools"
    nested_dev_l2_extra "$WORK/l2.cpio.gz" "$WORK/l2tools"
fi
nested_l1_root "$NESTED_DIR/l1-checks.sh" "$WORK/l2.cpio.gz"
[ "$DEVICES" = 1 ] && nested_dev_l1_extra "$WORK/l2tools"
nested_cpio "$L1ROOT" "$WORK/l1-base.cpio"
rm -rf "$L1ROOT"

# The launch digests the owner predicts, on the host, for exactly these images and options.
plan_digests=""
add_digest() { # KEY ARGS...
    local key=$1 d
    shift
    d=$("$SEVM" owner measure --vmm sevm "$@") || ndie "sevm owner measure --vmm sevm $* failed"
    plan_digests+="DIGEST_$key=$d"$'\n'
}
nlog "sevm owner measure --vmm sevm: the expected launch digests"
for c in 1 2; do
    add_digest "linux_sev_$c" --kernel "$KDIR/boot/vmlinuz-$KVER" --initrd "$WORK/l2.cpio.gz" \
        --cmdline "$CMDLINE" --memory "$MEM" --num-cpus "$c" --policy 0x1
    add_digest "linux_seves_$c" --kernel "$KDIR/boot/vmlinuz-$KVER" --initrd "$WORK/l2.cpio.gz" \
        --cmdline "$CMDLINE" --memory "$MEM" --num-cpus "$c" --policy 0x5
done
add_digest guest_cpuid_sev_1 --guest cpuid --num-cpus 1 --policy 0x1
if [ "$DEVICES" = 1 ]; then
    for k in $DEV_KINDS; do
        add_digest "dev_${k}_sev_1" --kernel "$KDIR/boot/vmlinuz-$KVER" --initrd "$WORK/l2.cpio.gz" \
            --cmdline "$(dev_full_cmdline "$k")" --memory "$MEM" --num-cpus 1 --policy 0x1
    done
fi
add_digest guest_secret_reader_sev_1 --guest secret-reader --num-cpus 1 --policy 0x1
add_digest guest_hello_seves_2 --guest hello --num-cpus 2 --policy 0x5
INPUT_LINE="typed-on-sevm-stdin-$RANDOM$RANDOM"

# The L1 image for a list of checks: the base archive and a small one with the plan (the kernel
# unpacks concatenated cpio archives in order).
make_l1_image() { # OUT CHECKS...
    local out=$1 d
    shift
    d=$WORK/plan-root
    rm -rf "$d"
    mkdir -p "$d/nested"
    {
        echo "CHECKS='$*'"
        echo "BOOT_TIMEOUT=$BOOT_TIMEOUT"
        echo "GUEST_TIMEOUT=$GUEST_TIMEOUT"
        echo "ES_REFUSE_SECS=$ES_REFUSE_SECS"
        echo "CMDLINE='$CMDLINE'"
        echo "MEM=$MEM"
        echo "INPUT_LINE=$INPUT_LINE"
        echo "SEV_OBJ=$SEV_OBJ"
        echo "JOBS=$JOBS"
        printf '%s' "$plan_digests"
        nested_dev_plan
    } >"$d/nested/plan"
    nested_cpio "$d" "$WORK/plan.cpio"
    cat "$WORK/l1-base.cpio" "$WORK/plan.cpio" >"$out"
    rm -rf "$d" "$WORK/plan.cpio"
}

# --- results, as they arrive on the result channel
declare -A RESULT=() PASS=() SECS=() LOGS=() RUNNING=()
field() { # LINE KEY
    local v=" $1"
    v=${v#* "$2"=}
    [ "$v" = " $1" ] && return
    echo "${v%% *}"
}
on_line() {
    local line=$1 name
    case $line in
    NESTED-L1-BOOTED* | NESTED-L1-START* | NESTED-L1-DONE* | NESTED-L1-ERROR*)
        echo "   L1: ${line#NESTED-}"
        ;;
    NESTED-BEGIN*)
        RUNNING[$(field "$line" name)]=1
        ;;
    NESTED-FULL*)
        name=$(field "$line" name)
        mkdir -p "$WORK/failed"
        printf '%s\n' "${line#* | }" >>"$WORK/failed/$name.log"
        return
        ;;
    NESTED-LOG*)
        name=$(field "$line" name)
        LOGS[$name]+="${line#* | }"$'\n'
        ;;
    NESTED-RESULT*)
        name=$(field "$line" name)
        RESULT[$name]=$line
        PASS[$name]=$(field "$line" pass)
        SECS[$name]=$(field "$line" secs)
        unset "RUNNING[$name]"
        if [ "${PASS[$name]}" = 1 ]; then
            printf '   PASS %-26s %6ss  %s\n' "$name" "${SECS[$name]}" "${line#* reason=}"
        else
            printf '   FAIL %-26s %6ss  %s\n' "$name" "${SECS[$name]}" "${line#* reason=}"
            printf '%s' "${LOGS[$name]:-}" | sed 's/^/        | /'
            [ -f "$WORK/failed/$name.log" ] && echo "        (whole serial output: $WORK/failed/$name.log)"
        fi
        ;;
    esac
    echo "$line" >>"$WORK/results-all.log"
}

# Generous bounds: every check may use its whole time limit, plus L1's boot.
remaining=("${all_checks[@]}")
retried=""
attempt=1
while :; do
    make_l1_image "$WORK/l1.cpio" "${remaining[@]}"
    qtimeout=$((L1_START_TIMEOUT + 120 + ${#remaining[@]} * (BOOT_TIMEOUT + 30)))
    # Device checks may take DEV_TIMEOUT each (they send a heartbeat, so `stall` holds).
    qtimeout=$((qtimeout + $(printf '%s\n' "${remaining[@]}" | grep -c '^dev-') * (DEV_TIMEOUT + 60)))
    stall=$((BOOT_TIMEOUT + 90))
    nlog "L1 attempt $attempt: ${#remaining[@]} checks (QEMU TCG thread=$L1_TCG_THREAD, -cpu $L1_CPU_MODEL, -smp $L1_CPUS, -m $L1_MEM, L1 cmdline \"$L1_CMDLINE\"; outer limit ${qtimeout}s)"
    nested_run_l1 "$WORK/l1.cpio" "$WORK/l1-console-$attempt.log" "$WORK/results-$attempt.log" \
        "$stall" "$qtimeout" on_line
    nlog "L1 attempt $attempt: $L1_STATUS after ${L1_SECS}s, QEMU used ${L1_CPU_SECS}s of CPU ($L1_WHY)"
    cpu_total=$(awk -v a="${cpu_total:-0}" -v b="$L1_CPU_SECS" 'BEGIN { print a + b }')
    left=()
    for c in "${remaining[@]}"; do
        [ -n "${RESULT[$c]:-}" ] || left+=("$c")
    done
    case $L1_STATUS in
    done | error) break ;;
    esac
    nested_show_console "$WORK/l1-console-$attempt.log" 40
    ((${#RUNNING[@]})) && echo "   (L1 failed while running: ${!RUNNING[*]})"
    RUNNING=()
    if [ "$attempt" = 2 ] || ((${#left[@]} == 0)); then
        break
    fi
    if [ "$L1_STATUS" = nostart ]; then
        retried="L1 failed to boot on attempt 1 ($L1_WHY); retried once"
    else
        retried="L1 died on attempt 1 after $((${#remaining[@]} - ${#left[@]})) results ($L1_WHY); retried once with the ${#left[@]} checks left"
    fi
    echo "!! RETRY: $retried"
    remaining=("${left[@]}")
    attempt=2
done

# --- summary
echo
echo "== nested summary (kernel $KVER, $BOOTS boots a Linux configuration, boot limit ${BOOT_TIMEOUT}s, $JOBS checks at a time)"
printf '%-26s %-9s %8s %8s %8s\n' check passed median min max
fails=0
missing=0
declare -A seen=()
for c in "${all_checks[@]}"; do
    group=$c
    [[ $c =~ ^(linux-(plain|sev)-[0-9]+cpu)-[0-9]+$ ]] && group=${BASH_REMATCH[1]}
    [ -n "${seen[$group]:-}" ] && continue
    seen[$group]=1
    np=0 nt=0 times=()
    for d in "${all_checks[@]}"; do
        [ "$d" = "$group" ] || [[ $d == "$group"-[0-9][0-9] ]] || continue
        nt=$((nt + 1))
        if [ -z "${RESULT[$d]:-}" ]; then
            missing=$((missing + 1))
            continue
        fi
        times+=("${SECS[$d]}")
        if [ "${PASS[$d]}" = 1 ]; then np=$((np + 1)); else fails=$((fails + 1)); fi
    done
    if ((${#times[@]})); then
        read -r med mn mx < <(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }')
    else
        med=- mn=- mx=-
    fi
    printf '%-26s %-9s %8s %8s %8s\n' "$group" "$np/$nt" "$med" "$mn" "$mx"
done
if ((fails)); then
    echo
    echo "Failed:"
    for c in "${all_checks[@]}"; do
        [ -n "${RESULT[$c]:-}" ] && [ "${PASS[$c]}" != 1 ] && echo "  $c: ${RESULT[$c]#* reason=}"
    done
fi
if ((missing)); then
    echo
    echo "No result (L1 failed before they ran: $L1_STATUS, $L1_WHY):"
    for c in "${all_checks[@]}"; do
        [ -n "${RESULT[$c]:-}" ] || echo "  $c"
    done
fi
[ -n "$retried" ] && echo "NOTE: $retried"
echo "Result channel: $WORK/results-all.log; L1 consoles: $WORK/l1-console-*.log"
echo "Total harness time: $((SECONDS - T_START)) s (QEMU CPU time: ${cpu_total:-0} s on $(nproc) host CPUs; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
if ((fails + missing)); then
    echo "nested: FAILED ($fails failed, $missing without a result, of ${#all_checks[@]})"
    exit 1
fi
echo "nested: all ${#all_checks[@]} checks passed"
