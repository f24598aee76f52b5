/*
 * QTest testcase for virtio-zc
 *
 * virtio-zc is not functional yet: these tests cover its PCI identity,
 * the -device virtio-zc alias and the modern-only rule.
 * See docs/specs/virtio-zc.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "hw/virtio-zc/virtio-zc-abi.h"

#define VIRTIO_ZC_DEVFN  QPCI_DEVFN(6, 0)

static void test_pci_identity(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;

    /* The short name is an alias of virtio-zc-pci */
    qts = qtest_initf("-machine %s -device virtio-zc,addr=06.0", machine);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, VIRTIO_ZC_DEVFN);
    g_assert_nonnull(dev);

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1af4);
    /* Modern-only: the device ID is 0x1040 + the virtio device ID */
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                    VIRTIO_ZC_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readw(dev, PCI_SUBSYSTEM_VENDOR_ID), ==,
                    0x1af4);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/*
 * virtio-zc is modern-only: asking for a legacy-capable device still gives
 * the modern device ID and no legacy I/O BAR.
 */
static void test_modern_only(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    uint32_t bar0;

    qts = qtest_initf("-machine %s -device virtio-zc-pci,addr=06.0,"
                      "disable-modern=on,disable-legacy=off", machine);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, VIRTIO_ZC_DEVFN);
    g_assert_nonnull(dev);

    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                    VIRTIO_ZC_PCI_DEVICE_ID);
    bar0 = qpci_config_readl(dev, PCI_BASE_ADDRESS_0);
    g_assert_cmphex(bar0 & PCI_BASE_ADDRESS_SPACE, !=,
                    PCI_BASE_ADDRESS_SPACE_IO);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    static const char *machines[] = { "pc", "q35" };

    g_test_init(&argc, &argv, NULL);
    for (int i = 0; i < ARRAY_SIZE(machines); i++) {
        g_autofree char *p1 = g_strdup_printf("/virtio-zc/%s/pci-identity",
                                              machines[i]);
        g_autofree char *p2 = g_strdup_printf("/virtio-zc/%s/modern-only",
                                              machines[i]);

        qtest_add_data_func(p1, machines[i], test_pci_identity);
        qtest_add_data_func(p2, machines[i], test_modern_only);
    }
    return g_test_run();
}
