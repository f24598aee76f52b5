/*
 * libqos helpers for iommu-emul (docs/specs/iommu-emul.rst)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "../libqtest.h"
#include "qemu/bswap.h"
#include "qemu/module.h"
#include "libqos-malloc.h"
#include "hw/iommu-emul/iommu-emul-regs.h"
#include "iommu-emul.h"

static void qiommu_emul_encode(uint8_t *e, const QIOMMUEmulCmd *cmd)
{
    memset(e, 0, IOMMU_EMUL_CMD_SIZE);
    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, cmd->opcode);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, cmd->flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, cmd->requester);
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, cmd->addr);
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, cmd->length);
    stq_le_p(e + IOMMU_EMUL_CMD_DMA_LIMIT, cmd->dma_limit);
}

void qiommu_emul_cmdq_start(QIOMMUEmulRing *r, QPCIDevice *dev, QPCIBar bar,
                            uint64_t base, uint32_t log2, uint32_t ctrl_extra)
{
    g_assert_cmphex(base % IOMMU_EMUL_CMD_SIZE, ==, 0);
    r->dev = dev;
    r->bar = bar;
    r->base = base;
    r->log2 = log2;
    r->tail = 0;
    qpci_io_writeq(dev, bar, A_CMDQ_BASE, base);
    qpci_io_writel(dev, bar, A_CMDQ_SIZE, log2);
    qpci_io_writel(dev, bar, A_CTRL, R_CTRL_CMDQ_EN_MASK | ctrl_extra);
}

uint16_t qiommu_emul_cmd(QIOMMUEmulRing *r, const QIOMMUEmulCmd *cmd,
                         QIOMMUEmulCmdOut *out)
{
    QTestState *qts = r->dev->bus->qts;
    uint64_t ea = r->base + (uint64_t)r->tail * IOMMU_EMUL_CMD_SIZE;
    uint8_t e[IOMMU_EMUL_CMD_SIZE];
    uint16_t status;

    qiommu_emul_encode(e, cmd);
    qtest_memwrite(qts, ea, e, sizeof(e));
    r->tail = (r->tail + 1) % (1u << r->log2);
    qpci_io_writel(r->dev, r->bar, A_CMDQ_TAIL, r->tail);
    g_assert_cmpuint(qpci_io_readl(r->dev, r->bar, A_CMDQ_HEAD), ==,
                     r->tail);

    qtest_memread(qts, ea, e, sizeof(e));
    status = lduw_le_p(e + IOMMU_EMUL_CMD_STATUS);
    g_assert_cmphex(status & IOMMU_EMUL_STATUS_DONE, ==,
                    IOMMU_EMUL_STATUS_DONE);
    if (out) {
        out->flags = ldl_le_p(e + IOMMU_EMUL_CMD_OUT_FLAGS);
        out->addr = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR);
        out->base = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_BASE);
        out->length = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_LENGTH);
    }
    return status & ~IOMMU_EMUL_STATUS_DONE;
}

/* Copy @n entries from index @idx of the ring to or from @buf */
static void qiommu_emul_ring_io(QIOMMUEmulRing *r, uint32_t idx, uint8_t *buf,
                                unsigned n, bool write)
{
    QTestState *qts = r->dev->bus->qts;
    uint32_t entries = 1u << r->log2;

    while (n) {
        unsigned chunk = MIN(n, entries - idx);
        uint64_t ea = r->base + (uint64_t)idx * IOMMU_EMUL_CMD_SIZE;

        if (write) {
            qtest_bufwrite(qts, ea, buf, chunk * IOMMU_EMUL_CMD_SIZE);
        } else {
            qtest_bufread(qts, ea, buf, chunk * IOMMU_EMUL_CMD_SIZE);
        }
        buf += chunk * IOMMU_EMUL_CMD_SIZE;
        n -= chunk;
        idx = (idx + chunk) % entries;
    }
}

void qiommu_emul_cmd_batch(QIOMMUEmulRing *r, const QIOMMUEmulCmd *cmds,
                           unsigned n, uint16_t *status,
                           QIOMMUEmulCmdOut *out)
{
    g_autofree uint8_t *buf = g_malloc(n * IOMMU_EMUL_CMD_SIZE);
    uint32_t first = r->tail;
    unsigned i;

    g_assert_cmpuint(n, <, 1u << r->log2);
    for (i = 0; i < n; i++) {
        qiommu_emul_encode(buf + i * IOMMU_EMUL_CMD_SIZE, &cmds[i]);
    }
    qiommu_emul_ring_io(r, first, buf, n, true);
    r->tail = (r->tail + n) % (1u << r->log2);
    qpci_io_writel(r->dev, r->bar, A_CMDQ_TAIL, r->tail);
    g_assert_cmpuint(qpci_io_readl(r->dev, r->bar, A_CMDQ_HEAD), ==,
                     r->tail);
    qiommu_emul_ring_io(r, first, buf, n, false);
    for (i = 0; i < n; i++) {
        uint8_t *e = buf + i * IOMMU_EMUL_CMD_SIZE;
        uint16_t st = lduw_le_p(e + IOMMU_EMUL_CMD_STATUS);

        g_assert_cmphex(st & IOMMU_EMUL_STATUS_DONE, ==,
                        IOMMU_EMUL_STATUS_DONE);
        status[i] = st & ~IOMMU_EMUL_STATUS_DONE;
        if (out) {
            out[i].flags = ldl_le_p(e + IOMMU_EMUL_CMD_OUT_FLAGS);
            out[i].addr = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR);
            out[i].base = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_BASE);
            out[i].length = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_LENGTH);
        }
    }
}

/* ---- qgraph node ------------------------------------------------------- */

static void *qiommu_emul_get_driver(void *obj, const char *interface)
{
    QIOMMUEmul *d = obj;

    if (!g_strcmp0(interface, "pci-device")) {
        return &d->pdev;
    }
    fprintf(stderr, "%s not present in iommu-emul\n", interface);
    g_assert_not_reached();
}

static void qiommu_emul_start_hw(QOSGraphObject *obj)
{
    QIOMMUEmul *d = (QIOMMUEmul *)obj;

    qpci_device_enable(&d->pdev);
    d->bar = qpci_iomap(&d->pdev, IOMMU_EMUL_REGS_BAR, NULL);
    g_assert_cmphex(qpci_io_readl(&d->pdev, d->bar, A_MAGIC), ==,
                    IOMMU_EMUL_MAGIC);
    qiommu_emul_cmdq_start(&d->cmdq, &d->pdev, d->bar, d->cmdq_mem,
                           QIOMMU_EMUL_NODE_CMDQ_LOG2, 0);
    g_assert_cmphex(qpci_io_readl(&d->pdev, d->bar, A_CMDQ_ERROR), ==,
                    IOMMU_EMUL_QERR_NONE);
}

static void qiommu_emul_destructor(QOSGraphObject *obj)
{
    QIOMMUEmul *d = (QIOMMUEmul *)obj;

    qpci_io_writel(&d->pdev, d->bar, A_CTRL, 0);
    qpci_iounmap(&d->pdev, d->bar);
    guest_free(d->alloc, d->cmdq_mem);
}

static void *qiommu_emul_create(void *pci_bus, QGuestAllocator *alloc,
                                void *addr)
{
    QIOMMUEmul *d = g_new0(QIOMMUEmul, 1);

    qpci_device_init(&d->pdev, pci_bus, addr);
    d->alloc = alloc;
    /* guest_alloc aligns to pages, so also to the entry size */
    d->cmdq_mem = guest_alloc(alloc, IOMMU_EMUL_CMD_SIZE <<
                              QIOMMU_EMUL_NODE_CMDQ_LOG2);
    d->obj.get_driver = qiommu_emul_get_driver;
    d->obj.start_hw = qiommu_emul_start_hw;
    d->obj.destructor = qiommu_emul_destructor;
    return &d->obj;
}

static void qiommu_emul_register_nodes(void)
{
    QPCIAddress addr = {
        .devfn = QPCI_DEVFN(4, 0),
        .vendor_id = IOMMU_EMUL_PCI_VENDOR_ID,
        .device_id = IOMMU_EMUL_PCI_DEVICE_ID,
    };
    QOSGraphEdgeOptions opts = {
        .extra_device_opts = "addr=04.0,id=" QIOMMU_EMUL_NODE_ID,
    };

    add_qpci_address(&opts, &addr);
    qos_node_create_driver("iommu-emul", qiommu_emul_create);
    qos_node_consumes("iommu-emul", "pci-bus", &opts);
    qos_node_produces("iommu-emul", "pci-device");
}

libqos_init(qiommu_emul_register_nodes);
