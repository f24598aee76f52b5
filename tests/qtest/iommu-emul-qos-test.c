/*
 * qos-test cases for the iommu-emul qgraph node
 *
 * They take the device from the graph, as a driver would find it on any
 * PCI bus, and drive its command ring against docs/specs/iommu-emul.rst.
 * The requester is the host bridge at 00.0, a PCI function on the root
 * bus behind the IOMMU on every x86 machine. iommu-emul-test covers DMA,
 * faults, pinning and overcommit with edu as the requester.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qemu/module.h"
#include "qobject/qdict.h"
#include "libqos/qgraph.h"
#include "libqos/iommu-emul.h"
#include "hw/pci/pci_regs.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define HOST_BRIDGE     0x0000  /* bus 0, devfn 00.0 */
#define IOMMU_QOM       "/machine/peripheral/" QIOMMU_EMUL_NODE_ID

static uint64_t counter(QTestState *qts, const char *name)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments':"
                           " {'path': %s, 'property': %s}}", IOMMU_QOM, name);
    uint64_t v;

    g_assert(qdict_haskey(rsp, "return"));
    v = qdict_get_int(rsp, "return");
    qobject_unref(rsp);
    return v;
}

/* Registers as the spec gives them after reset and probing */
static void test_identity(void *obj, void *data, QGuestAllocator *alloc)
{
    QIOMMUEmul *d = obj;
    uint32_t cap = qpci_io_readl(&d->pdev, d->bar, A_CAP);

    g_assert_cmphex(qpci_config_readw(&d->pdev, PCI_VENDOR_ID), ==,
                    IOMMU_EMUL_PCI_VENDOR_ID);
    g_assert_cmphex(qpci_config_readw(&d->pdev, PCI_DEVICE_ID), ==,
                    IOMMU_EMUL_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_io_readl(&d->pdev, d->bar, A_VERSION), ==,
                    IOMMU_EMUL_VERSION);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, BUS_ADDR), ==,
                     IOMMU_EMUL_BUS_ADDR_IOVA);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, PAGE_SHIFT), ==,
                     IOMMU_EMUL_PAGE_SHIFT);
    g_assert_cmpuint(qpci_io_readl(&d->pdev, d->bar, A_CMDQ_HEAD), ==, 0);
    g_assert_cmpuint(qpci_io_readq(&d->pdev, d->bar, A_PINNED), ==, 0);
}

/*
 * A mapping's whole life through the command ring: QUERY sees bypass and
 * nothing mapped; MAP returns a page-aligned bus address inside the
 * aperture; QUERY translates any byte of it; UNMAP removes it; and the
 * pin follows, in PINNED and in the QOM counters.
 */
static void test_map_query_unmap(void *obj, void *data,
                                 QGuestAllocator *alloc)
{
    QIOMMUEmul *d = obj;
    QTestState *qts = d->pdev.bus->qts;
    uint64_t gpa = guest_alloc(alloc, 2 * IOMMU_EMUL_PAGE_SIZE);
    uint64_t start = qpci_io_readq(&d->pdev, d->bar, A_APERTURE_START);
    uint64_t end = qpci_io_readq(&d->pdev, d->bar, A_APERTURE_END);
    QIOMMUEmulCmd map = {
        .opcode = IOMMU_EMUL_OP_MAP,
        .flags = IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE,
        .requester = HOST_BRIDGE,
        .addr = gpa,
        .length = 2 * IOMMU_EMUL_PAGE_SIZE,
    };
    QIOMMUEmulCmd q = {
        .opcode = IOMMU_EMUL_OP_QUERY,
        .requester = HOST_BRIDGE,
    };
    QIOMMUEmulCmdOut out, qout;

    g_assert_cmpuint(gpa % IOMMU_EMUL_PAGE_SIZE, ==, 0);

    q.addr = start;
    g_assert_cmphex(qiommu_emul_cmd(&d->cmdq, &q, &qout), ==,
                    IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(qout.flags & IOMMU_EMUL_QUERY_TRANSLATE, ==, 0);

    g_assert_cmphex(qiommu_emul_cmd(&d->cmdq, &map, &out), ==,
                    IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(out.addr % IOMMU_EMUL_PAGE_SIZE, ==, 0);
    g_assert_cmphex(out.addr, >=, start);
    g_assert_cmphex(out.addr + map.length - 1, <=, end);
    g_assert_cmpuint(qpci_io_readq(&d->pdev, d->bar, A_PINNED), ==,
                     map.length);
    g_assert_cmpuint(counter(qts, "mappings"), ==, 1);
    g_assert_cmpuint(counter(qts, "pinned-pages"), ==, 2);

    q.addr = out.addr + IOMMU_EMUL_PAGE_SIZE + 5;
    g_assert_cmphex(qiommu_emul_cmd(&d->cmdq, &q, &qout), ==,
                    IOMMU_EMUL_ST_OK);
    g_assert_cmphex(qout.addr, ==, gpa + IOMMU_EMUL_PAGE_SIZE + 5);
    g_assert_cmphex(qout.base, ==, out.addr);
    g_assert_cmphex(qout.length, ==, map.length);
    g_assert_cmphex(qout.flags & (IOMMU_EMUL_QUERY_READ |
                                  IOMMU_EMUL_QUERY_WRITE), ==,
                    IOMMU_EMUL_QUERY_READ | IOMMU_EMUL_QUERY_WRITE);

    g_assert_cmphex(qiommu_emul_cmd(&d->cmdq, &(QIOMMUEmulCmd) {
                        .opcode = IOMMU_EMUL_OP_UNMAP,
                        .requester = HOST_BRIDGE,
                        .addr = out.addr,
                        .length = map.length,
                    }, NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(qiommu_emul_cmd(&d->cmdq, &q, NULL), ==,
                    IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmpuint(qpci_io_readq(&d->pdev, d->bar, A_PINNED), ==, 0);
    g_assert_cmpuint(counter(qts, "mappings"), ==, 0);
    g_assert_cmpuint(counter(qts, "pinned-pages"), ==, 0);
    guest_free(alloc, gpa);
}

static void register_iommu_emul_test(void)
{
    qos_add_test("identity", "iommu-emul", test_identity, NULL);
    qos_add_test("map-query-unmap", "iommu-emul", test_map_query_unmap,
                 NULL);
}

libqos_init(register_iommu_emul_test);
