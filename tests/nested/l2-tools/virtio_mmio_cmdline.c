// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only helper for the nested-KVM harness (tests/nested): Debian's 6.12 kernel is built
 * without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so its virtio_mmio driver ignores the
 * `virtio_mmio.device=SIZE@BASE:IRQ` entries sevm puts on the command line and a stock Debian
 * guest finds no sevm device. This module does what that option does: for each
 * `device=SIZE@BASE:IRQ` parameter (l2-init.sh passes the command line's entries) it registers
 * a "virtio-mmio" platform device with one memory and one IRQ resource, to which the stock
 * virtio_mmio driver binds. Written for this repo from the parameter format documented in
 * Linux's Documentation/admin-guide/kernel-parameters.txt (virtio_mmio.device=).
 */
#include <linux/init.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>

#define MAX_DEVICES 8

static char *device[MAX_DEVICES];
static int ndevice;
module_param_array(device, charp, &ndevice, 0444);
MODULE_PARM_DESC(device, "virtio-mmio devices, SIZE@BASE:IRQ, comma-separated");

static struct platform_device *pdevs[MAX_DEVICES];
static int npdevs;

static int __init parse_one(const char *spec, u64 *base, u64 *size, unsigned int *irq)
{
	char *end;
	u64 s, b;

	s = memparse(spec, &end);
	if (s == 0 || *end != '@')
		return -EINVAL;
	b = simple_strtoull(end + 1, &end, 0);
	if (*end != ':')
		return -EINVAL;
	if (kstrtouint(end + 1, 0, irq) || *irq == 0)
		return -EINVAL;
	*base = b;
	*size = s;
	return 0;
}

static int __init vmc_init(void)
{
	int i;

	for (i = 0; i < ndevice; i++) {
		struct resource res[2] = {};
		u64 base, size;
		unsigned int irq;
		struct platform_device *p;

		if (parse_one(device[i], &base, &size, &irq)) {
			pr_err("virtio_mmio_cmdline: bad device '%s' (want SIZE@BASE:IRQ)\n", device[i]);
			continue;
		}
		res[0].flags = IORESOURCE_MEM;
		res[0].start = base;
		res[0].end = base + size - 1;
		res[1].flags = IORESOURCE_IRQ;
		res[1].start = irq;
		res[1].end = irq;
		p = platform_device_register_resndata(NULL, "virtio-mmio", PLATFORM_DEVID_AUTO, res,
						      ARRAY_SIZE(res), NULL, 0);
		if (IS_ERR(p)) {
			pr_err("virtio_mmio_cmdline: registering '%s' failed: %ld\n", device[i],
			       PTR_ERR(p));
			continue;
		}
		pr_info("virtio_mmio_cmdline: virtio-mmio device at %#llx size %#llx irq %u\n", base,
			size, irq);
		pdevs[npdevs++] = p;
	}
	return 0;
}

static void __exit vmc_exit(void)
{
	while (npdevs > 0)
		platform_device_unregister(pdevs[--npdevs]);
}

module_init(vmc_init);
module_exit(vmc_exit);
MODULE_DESCRIPTION("virtio-mmio devices from module parameters (sevm nested test harness)");
MODULE_LICENSE("GPL");
