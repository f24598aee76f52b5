/*
 * QTest testcase for iommu-emul
 *
 * iommu-emul is not functional yet: these tests cover its PCI identity
 * on pc and q35. See docs/specs/iommu-emul.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define IOMMU_EMUL_DEVFN  QPCI_DEVFN(5, 0)

static void test_pci_identity(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;

    qts = qtest_initf("-machine %s -device iommu-emul,addr=05.0", machine);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, IOMMU_EMUL_DEVFN);
    g_assert_nonnull(dev);

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==,
                    IOMMU_EMUL_PCI_VENDOR_ID);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                    IOMMU_EMUL_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readw(dev, PCI_CLASS_DEVICE), ==,
                    IOMMU_EMUL_PCI_CLASS);
    /* BAR 0 is a 64-bit memory BAR */
    g_assert_cmphex(qpci_config_readl(dev, PCI_BASE_ADDRESS_0) &
                    (PCI_BASE_ADDRESS_SPACE | PCI_BASE_ADDRESS_MEM_TYPE_MASK),
                    ==, PCI_BASE_ADDRESS_SPACE_MEMORY |
                    PCI_BASE_ADDRESS_MEM_TYPE_64);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

static void test_not_hotpluggable(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QDict *resp;

    qts = qtest_initf("-machine %s", machine);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'iommu-emul', 'id': 'iommu0'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    static const char *machines[] = { "pc", "q35" };

    g_test_init(&argc, &argv, NULL);
    for (int i = 0; i < ARRAY_SIZE(machines); i++) {
        g_autofree char *p1 = g_strdup_printf("/iommu-emul/%s/pci-identity",
                                              machines[i]);
        g_autofree char *p2 = g_strdup_printf("/iommu-emul/%s/no-hotplug",
                                              machines[i]);

        qtest_add_data_func(p1, machines[i], test_pci_identity);
        qtest_add_data_func(p2, machines[i], test_not_hotpluggable);
    }
    return g_test_run();
}
