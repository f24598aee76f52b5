/*
 * libqos helpers for iommu-emul (docs/specs/iommu-emul.rst)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef LIBQOS_IOMMU_EMUL_H
#define LIBQOS_IOMMU_EMUL_H

#include "pci.h"
#include "qgraph.h"

/* A command ring that the test set up: its guest address and size */
typedef struct QIOMMUEmulRing {
    QPCIDevice *dev;
    QPCIBar bar;            /* BAR 0, the registers */
    uint64_t base;          /* CMDQ_BASE */
    uint32_t log2;          /* CMDQ_SIZE */
    uint32_t tail;          /* the next entry to produce */
} QIOMMUEmulRing;

typedef struct QIOMMUEmulCmd {
    uint16_t opcode;
    uint16_t flags;
    uint16_t requester;     /* bus << 8 | devfn */
    uint64_t addr;
    uint64_t length;
    uint64_t dma_limit;     /* MAP only */
} QIOMMUEmulCmd;

typedef struct QIOMMUEmulCmdOut {
    uint32_t flags;
    uint64_t addr;
    uint64_t base;
    uint64_t length;
} QIOMMUEmulCmdOut;

/*
 * Program CMDQ_BASE and CMDQ_SIZE and set CTRL.CMDQ_EN (other CTRL bits
 * as in @ctrl_extra). The ring must be aligned to the entry size.
 */
void qiommu_emul_cmdq_start(QIOMMUEmulRing *r, QPCIDevice *dev, QPCIBar bar,
                            uint64_t base, uint32_t log2, uint32_t ctrl_extra);

/*
 * Write @cmd at the tail, ring the doorbell (CMDQ_TAIL), check that the
 * device consumed it (CMDQ_HEAD) and completed it (STATUS_DONE), and
 * return its status code. @out, if not NULL, receives the results.
 */
uint16_t qiommu_emul_cmd(QIOMMUEmulRing *r, const QIOMMUEmulCmd *cmd,
                         QIOMMUEmulCmdOut *out);

/*
 * Submit the @n commands @cmds with one doorbell write (CMDQ_TAIL), as a
 * driver batches them, and check that the device consumed and completed
 * them all. @n must be below the ring's number of entries. @status[i]
 * receives the status code of command i and, if @out is not NULL,
 * @out[i] its results.
 */
void qiommu_emul_cmd_batch(QIOMMUEmulRing *r, const QIOMMUEmulCmd *cmds,
                           unsigned n, uint16_t *status,
                           QIOMMUEmulCmdOut *out);

/*
 * The qgraph node "iommu-emul": the device found on a PCI bus by its IDs,
 * with bus mastering on, BAR 0 mapped and the command ring started, in
 * the state a guest driver leaves it after probing. Tests that consume
 * "iommu-emul" get this object.
 */
typedef struct QIOMMUEmul {
    QOSGraphObject obj;
    QPCIDevice pdev;
    QPCIBar bar;
    QIOMMUEmulRing cmdq;
    uint64_t cmdq_mem;
    QGuestAllocator *alloc;
} QIOMMUEmul;

/* The node's qdev id, and the entries of the command ring it starts */
#define QIOMMU_EMUL_NODE_ID         "iommu0"
#define QIOMMU_EMUL_NODE_CMDQ_LOG2  4

#endif
