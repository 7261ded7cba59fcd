/* The minimal KVM process of benches/startup.sh (issue 11): open /dev/kvm, create a VM with
 * one 4 KiB memory slot ending at 4 GiB, create one vCPU, map its kvm_run, run it to its first
 * exit and exit. The page holds, at the reset vector (0xfffffff0), `mov al, 0; out 0xf4, al`,
 * so the first exit is KVM_EXIT_IO on port 0xf4: the same exit sevm's bundled guests end
 * with. No CPUID, no registers set: the floor under any KVM-based VMM. With the argument
 * `--irqchip` it also issues KVM_CREATE_IRQCHIP right after KVM_CREATE_VM, as sevm does, to
 * show what the in-kernel interrupt controller alone costs; with `--irqchip-late` it issues it
 * after KVM_SET_USER_MEMORY_REGION instead (Firecracker's order), to compare the two orders;
 * with `--split-irqchip` it enables KVM_CAP_SPLIT_IRQCHIP (local APIC in the kernel, no PIC or
 * IOAPIC) right after KVM_CREATE_VM, as sevm does for its bundled guests.
 * Exit code 0 when the first exit is that port write, 1 otherwise (with a message). */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int fail(const char *what)
{
    perror(what);
    return 1;
}

int main(int argc, char **argv)
{
    int irqchip = argc > 1 && strcmp(argv[1], "--irqchip") == 0;
    int late = argc > 1 && strcmp(argv[1], "--irqchip-late") == 0;
    int split = argc > 1 && strcmp(argv[1], "--split-irqchip") == 0;
    if (argc > 2 || (argc > 1 && !irqchip && !late && !split)) {
        fprintf(stderr, "kvm_min: unknown arguments (only --irqchip, --irqchip-late or "
                        "--split-irqchip)\n");
        return 1;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return fail("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return fail("KVM_CREATE_VM");
    if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        return fail("KVM_CREATE_IRQCHIP");
    if (split) {
        struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP, .args = {24}};
        if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0)
            return fail("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");
    }
    uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return fail("mmap guest page");
    static const uint8_t code[] = {0xb0, 0x00, 0xe6, 0xf4, 0xf4}; /* mov al,0; out 0xf4,al; hlt */
    memcpy(page + 0xff0, code, sizeof code);
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0xfffff000,
        .memory_size = 4096,
        .userspace_addr = (uint64_t)(uintptr_t)page,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return fail("KVM_SET_USER_MEMORY_REGION");
    if (late && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        return fail("KVM_CREATE_IRQCHIP");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        return fail("KVM_CREATE_VCPU");
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < 0)
        return fail("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        return fail("mmap kvm_run");
    if (ioctl(vcpu, KVM_RUN, 0) < 0)
        return fail("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0xf4) {
        fprintf(stderr, "kvm_min: first exit %u (port 0x%x), expected KVM_EXIT_IO on 0xf4\n",
                run->exit_reason, run->exit_reason == KVM_EXIT_IO ? run->io.port : 0);
        return 1;
    }
    return 0;
}
