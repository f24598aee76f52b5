/*
 * libqos helpers for iommu-emul (docs/specs/iommu-emul.rst)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "../libqtest.h"
#include "qemu/bswap.h"
#include "hw/iommu-emul/iommu-emul-regs.h"
#include "iommu-emul.h"

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
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };
    uint16_t status;

    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, cmd->opcode);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, cmd->flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, cmd->requester);
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, cmd->addr);
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, cmd->length);
    stq_le_p(e + IOMMU_EMUL_CMD_DMA_LIMIT, cmd->dma_limit);
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
