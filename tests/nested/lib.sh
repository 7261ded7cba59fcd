# Shared by tests/nested/run.sh and benches/nested_boot.sh (sourced, bash): finds what the nested
# stack needs, builds the images and runs L1 under QEMU TCG with an emulated AMD SVM CPU.
# Needs ROOT (the repo) set by the caller.
# shellcheck disable=SC2034 # variables set here are read by the callers

NESTED_DIR=$ROOT/tests/nested
CACHE=${SEVM_NESTED_CACHE:-$ROOT/target/nested-cache}
# L1's shape: 1 vCPU, run by 1 host thread (TCG thread=single), the L1 kernel told not to test
# its timer IRQ. What failed otherwise (QEMU 7.2, 2-core host; numbers in
# benches/results/nested-check/README.md):
#   - 2 vCPUs under MTTCG (thread=multi, the old default): QEMU does not make a text poke on one
#     vCPU (Linux's int3-based jump-label/static-call patching) visible to the other in time; the
#     other executes the transient int3 after the patcher removed it and L1 oopses ("Oops: int3"
#     in kvm_arch_vcpu_ioctl_run: 2 L1 deaths in 13 L2 boots in a 10-round run). Toggling the
#     sched_schedstats static key (tests/nested/poke-stress.sh) killed L1 that way within 10-60 s
#     in 4 of 4 runs; with thread=single, 0 of 1 in 120 s.
#   - 2 vCPUs under thread=single: no int3 oops, but the two vCPUs take turns on one thread, L1
#     found its TSC unstable and fell back to the HPET (3 of 4 L1s), and not one L2 Linux boot
#     finished in 11 minutes in 4 L1s (at host load 13-16).
#   - With 1 vCPU there is no other vCPU to race; sevm's 2-vCPU guests still get 2 vCPUs (L1's
#     KVM runs both vCPU threads on its one CPU). thread=single keeps a larger -smp safe from the
#     race.
#   - The L1 kernel's check that the PIT timer IRQ works (a few ticks within a TSC-timed wait)
#     fails when the host is loaded ("IO-APIC + timer doesn't work!" panic at L1 boot, 1 of 5 L1
#     boots at load 15); `no_timer_check` skips that test (a common setting for VMs). L2's kernel
#     (sevm's guest) gets no such argument.
L1_CPUS=${SEVM_NESTED_L1_CPUS:-1}
# The CPU model QEMU emulates for L1 (L2 sees L1's KVM's view of it); +svm,+npt,phys-bits=48
# are always added.
L1_CPU_MODEL=${SEVM_NESTED_L1_CPU:-max}
L1_MEM=${SEVM_NESTED_L1_MEM:-2G}
# TCG's threading for L1: single (default) or multi (MTTCG).
L1_TCG_THREAD=${SEVM_NESTED_L1_TCG:-single}
case $L1_TCG_THREAD in
single | multi) ;;
*) printf 'nested: ERROR: SEVM_NESTED_L1_TCG=%s: expected single or multi\n' "$L1_TCG_THREAD" >&2 && exit 1 ;;
esac
# L1's kernel command line; SEVM_NESTED_L1_APPEND adds to it.
L1_CMDLINE="console=ttyS0 panic=-1 no_timer_check${SEVM_NESTED_L1_APPEND:+ $SEVM_NESTED_L1_APPEND}"
L1_START_TIMEOUT=${SEVM_NESTED_L1_START_TIMEOUT:-300}
QEMU=${SEVM_NESTED_QEMU:-qemu-system-x86_64}

nlog() { printf '== nested: %s\n' "$*"; }
ndie() {
    printf 'nested: ERROR: %s\n' "$*" >&2
    exit 1
}

# The cached kernel (install-deps.sh): sets KVER and KDIR (empty when there is none).
nested_kernel() {
    KVER=""
    KDIR=""
    if [ -s "$CACHE/kernel-version" ]; then
        KVER=$(cat "$CACHE/kernel-version")
        KDIR=$CACHE/linux-$KVER
    fi
}

# Everything the harness needs from outside the repo, one missing item a line (empty: all there).
nested_missing() {
    local t
    for t in "$QEMU" cpio gzip ldd timeout; do
        command -v "$t" >/dev/null 2>&1 || echo "command $t (Debian: $(nested_pkg_of "$t"))"
    done
    command -v modprobe >/dev/null 2>&1 || [ -x /sbin/modprobe ] || echo "command modprobe (Debian: kmod)"
    if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
        echo "a static /bin/busybox (Debian: busybox-static)"
    fi
    if [ -z "${SEVM_NESTED_SEVM:-}" ]; then
        command -v cargo >/dev/null 2>&1 || echo "command cargo"
    fi
    nested_kernel
    if [ -z "$KVER" ] || [ ! -f "$KDIR/boot/vmlinuz-$KVER" ] || [ ! -f "$KDIR/lib/modules/$KVER/modules.dep" ]; then
        echo "the Debian 6.12 kernel extracted in $CACHE (tests/nested/install-deps.sh puts it there)"
    else
        if find "$KDIR/lib/modules/$KVER/kernel/arch/x86/kvm" -name '*.ko.xz' | grep -q .; then
            command -v xz >/dev/null 2>&1 || echo "command xz (Debian: xz-utils)"
        fi
        if find "$KDIR/lib/modules/$KVER/kernel/arch/x86/kvm" -name '*.ko.zst' | grep -q .; then
            command -v zstd >/dev/null 2>&1 || echo "command zstd (Debian: zstd)"
        fi
    fi
}

nested_pkg_of() {
    case $1 in
    *qemu-system-x86_64 | *qemu*) echo qemu-system-x86 ;;
    cpio) echo cpio ;;
    gzip) echo gzip ;;
    ldd) echo libc-bin ;;
    timeout) echo coreutils ;;
    *) echo "?" ;;
    esac
}

# Prints the missing items and exits: status 1 with CI set, else a loud SKIP and status 0.
nested_require() { # WHAT (for the message)
    local missing
    missing=$(nested_missing)
    nested_kernel
    [ -z "$missing" ] && return 0
    if [ -n "${CI:-}" ]; then
        printf 'nested: ERROR: %s cannot run, missing:\n' "$1" >&2
        while IFS= read -r l; do printf '  - %s\n' "$l"; done <<<"$missing" >&2
        printf 'Run tests/nested/install-deps.sh (as root) first.\n' >&2
        exit 1
    fi
    {
        printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
        printf 'SKIP: %s did not run (CI unset), missing:\n' "$1"
        while IFS= read -r l; do printf '  - %s\n' "$l"; done <<<"$missing"
        printf 'Run tests/nested/install-deps.sh (as root) to get them.\n'
        printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
    } >&2
    exit 0
}

# Sets SEVM to a release sevm binary: SEVM_NESTED_SEVM if given, else `cargo build --release`.
nested_build_sevm() {
    if [ -n "${SEVM_NESTED_SEVM:-}" ]; then
        SEVM=$SEVM_NESTED_SEVM
        [ -x "$SEVM" ] || ndie "SEVM_NESTED_SEVM=$SEVM is not an executable file"
        nlog "sevm: $SEVM (SEVM_NESTED_SEVM)"
        return
    fi
    nlog "cargo build --release -p sevm"
    (cd "$ROOT" && cargo build --release -p sevm) || ndie "cargo build --release -p sevm failed"
    SEVM=${CARGO_TARGET_DIR:-$ROOT/target}/release/sevm
    [ -x "$SEVM" ] || ndie "no sevm binary at $SEVM after the build"
}

# A soft SEV platform made on the host (its RSA-4096 keys take minutes under TCG), cached.
# Sets PLATFORM_DIR.
nested_platform() {
    PLATFORM_DIR=$CACHE/platform
    if [ -f "$PLATFORM_DIR/sev-state.json" ] && "$SEVM" platform --platform-dir "$PLATFORM_DIR" status >/dev/null 2>&1; then
        return
    fi
    nlog "making the soft SEV platform in $PLATFORM_DIR (sevm platform status)"
    rm -rf "$PLATFORM_DIR"
    "$SEVM" platform --platform-dir "$PLATFORM_DIR" status >/dev/null || ndie "sevm platform --platform-dir $PLATFORM_DIR status failed"
}

# Copies an executable and every library ldd lists (dynamic loader included) into DEST at the
# same paths (or the executable at DESTPATH).
nested_copy_with_libs() { # BIN DEST [DESTPATH]
    local bin=$1 dest=$2 to=${3:-$1} lib
    mkdir -p "$dest$(dirname "$to")"
    cp -L "$bin" "$dest$to"
    for lib in $(ldd "$bin" | grep -oE '(^|[[:space:]])/[^[:space:]]+' | tr -d '[:blank:]'); do
        mkdir -p "$dest$(dirname "$lib")"
        cp -L "$lib" "$dest$lib"
    done
}

# newc cpio of DIR's contents, owned by root.
nested_cpio() { # DIR OUT
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

# The L2 initramfs: static busybox and l2-init.sh (or INIT) as /init, gzip'd.
nested_l2_initrd() { # OUT [INIT]
    local d init=${2:-$NESTED_DIR/l2-init.sh}
    d=$(mktemp -d "$WORK/l2root.XXXXXX")
    mkdir -p "$d/bin" "$d/dev" "$d/proc" "$d/sys"
    cp /bin/busybox "$d/bin/busybox"
    cp "$init" "$d/init"
    chmod 0755 "$d/init" "$d/bin/busybox"
    nested_cpio "$d" "$WORK/l2.cpio"
    gzip -9n <"$WORK/l2.cpio" >"$1"
    rm -rf "$d" "$WORK/l2.cpio"
}

# The L1 root: busybox, kvm_amd and its dependencies (decompressed: busybox insmod reads plain
# .ko only), sevm and its libraries, the soft platform, the L2 kernel and initrd, l1-init.sh as
# /init and JOB as /nested/job.sh. Leaves the directory in L1ROOT for callers to add to.
nested_l1_root() { # JOB L2INITRD
    local m base
    L1ROOT=$WORK/l1root
    rm -rf "$L1ROOT"
    mkdir -p "$L1ROOT"/{bin,sbin,dev,proc,sys,tmp,nested/modules,l2,usr/local/bin}
    cp /bin/busybox "$L1ROOT/bin/busybox"
    cp "$NESTED_DIR/l1-init.sh" "$L1ROOT/init"
    cp "$1" "$L1ROOT/nested/job.sh"
    chmod 0755 "$L1ROOT/init" "$L1ROOT/bin/busybox"
    : >"$L1ROOT/nested/modules.order"
    for m in $(PATH=$PATH:/sbin modprobe -d "$KDIR" -S "$KVER" --show-depends kvm_amd | awk '$1 == "insmod" { print $2 }'); do
        base=$(basename "$m")
        case $base in
        *.ko.xz) base=${base%.xz} && xz -dc "$m" >"$L1ROOT/nested/modules/$base" ;;
        *.ko.zst) base=${base%.zst} && zstd -qdc "$m" >"$L1ROOT/nested/modules/$base" ;;
        *.ko.gz) base=${base%.gz} && gzip -dc "$m" >"$L1ROOT/nested/modules/$base" ;;
        *) cp "$m" "$L1ROOT/nested/modules/$base" ;;
        esac
        echo "$base" >>"$L1ROOT/nested/modules.order"
    done
    grep -q '^kvm-amd.ko$' "$L1ROOT/nested/modules.order" || ndie "modprobe --show-depends kvm_amd in $KDIR gave no kvm-amd.ko"
    nested_copy_with_libs "$SEVM" "$L1ROOT" /usr/local/bin/sevm
    cp -r "$PLATFORM_DIR" "$L1ROOT/platform"
    cp "$KDIR/boot/vmlinuz-$KVER" "$L1ROOT/l2/vmlinuz"
    cp "$2" "$L1ROOT/l2/initrd.cpio.gz"
}

# Runs L1 once: QEMU TCG, an emulated AMD CPU with SVM and nested paging, 48 physical address
# bits (sevm's SEV RAM alias is at 2^47), console on ttyS0 (CONSOLE), the result channel on
# ttyS1 (RESULTS). The caller's function ON_LINE is called for each result-channel line as it
# arrives. Watchdogs: L1 must say NESTED-L1-START within L1_START_TIMEOUT s; after that, a
# silence of STALL s on the result channel means L1 froze; QTIMEOUT bounds the whole run.
# Sets L1_STATUS: done | error (L1 said NESTED-L1-ERROR) | nostart | died (exited or frozen
# after NESTED-L1-START without NESTED-L1-DONE).
nested_run_l1() { # INITRD CONSOLE RESULTS STALL QTIMEOUT ON_LINE
    local initrd=$1 console=$2 results=$3 stall=$4 qtimeout=$5 on_line=$6
    local qpid n=0 t0=$SECONDS last=$SECONDS started=0 done=0 error=0 why="" line total
    : >"$results"
    : >"$console"
    local cpu0
    nested_children_cpu
    cpu0=$CHILDREN_CPU
    rm -f "$WORK/qemu.pid"
    timeout -s KILL "$qtimeout" "$QEMU" -pidfile "$WORK/qemu.pid" -nodefaults -no-user-config -display none -no-reboot \
        -accel "tcg,thread=$L1_TCG_THREAD" -cpu "$L1_CPU_MODEL,+svm,+npt,phys-bits=48" -smp "$L1_CPUS" -m "$L1_MEM" \
        -kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$initrd" -append "$L1_CMDLINE" \
        -serial "file:$console" -serial "file:$results" </dev/null >"$WORK/qemu.out" 2>&1 &
    qpid=$!
    while :; do
        local alive=1
        kill -0 "$qpid" 2>/dev/null || alive=0
        # Complete lines only (the last one may still be being written).
        total=$(wc -l <"$results")
        if [ "$total" -gt "$n" ]; then
            while IFS= read -r line; do
                line=${line%$'\r'}
                case $line in
                NESTED-L1-START*) started=1 ;;
                NESTED-L1-DONE*) done=1 ;;
                NESTED-L1-ERROR*) error=1 ;;
                esac
                "$on_line" "$line"
            done < <(sed -n "$((n + 1)),${total}p" "$results")
            n=$total
            last=$SECONDS
        fi
        [ "$alive" = 1 ] || break
        if [ -z "$why" ] && [ "$started" = 0 ] && [ $((SECONDS - t0)) -gt "$L1_START_TIMEOUT" ]; then
            why="L1 did not start the job within ${L1_START_TIMEOUT}s"
            nested_kill_qemu "$qpid"
        elif [ -z "$why" ] && [ "$started" = 1 ] && [ "$done" = 0 ] && [ $((SECONDS - last)) -gt "$stall" ]; then
            why="L1 silent for ${stall}s on the result channel (frozen)"
            nested_kill_qemu "$qpid"
        fi
        sleep 1
    done
    wait "$qpid" 2>/dev/null
    L1_QEMU_RC=$?
    if [ "$done" = 1 ]; then
        L1_STATUS="done"
    elif [ "$error" = 1 ]; then
        L1_STATUS=error
    elif [ "$started" = 0 ]; then
        L1_STATUS=nostart
    else
        L1_STATUS=died
    fi
    L1_WHY=${why:-QEMU exited with status $L1_QEMU_RC}
    L1_SECS=$((SECONDS - t0))
    nested_children_cpu
    L1_CPU_SECS=$(awk -v a="$cpu0" -v b="$CHILDREN_CPU" 'BEGIN { printf "%.0f", b - a }')
}

# Stops QEMU: its own pid (from -pidfile), then the `timeout` wrapping it (TIMEOUT_PID).
nested_kill_qemu() { # TIMEOUT_PID
    local qp
    qp=$(cat "$WORK/qemu.pid" 2>/dev/null)
    [ -n "$qp" ] && kill -KILL "$qp" 2>/dev/null
    kill -KILL "$1" 2>/dev/null
}

# CHILDREN_CPU: user + system CPU seconds of this shell's waited-for children so far (bash
# `times`, run in this shell: in a command substitution it would count the subshell's).
nested_children_cpu() {
    times >"$WORK/times.txt"
    CHILDREN_CPU=$(tail -n 1 "$WORK/times.txt" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } print s }')
}

# The last lines of L1's console, for a failed L1.
nested_show_console() { # CONSOLE N
    echo "---- last $2 lines of L1's console ($1):"
    tail -n "$2" "$1" | tr -d '\r' | tr -c '[:print:]\n' '?' | sed 's/^/  | /'
    if [ -s "$WORK/qemu.out" ]; then
        echo "---- QEMU's own output:"
        sed 's/^/  | /' "$WORK/qemu.out"
    fi
}
