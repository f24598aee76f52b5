/*
 * iommu-emul guest interface: PCI identity, register map, ring formats
 *
 * This header mirrors docs/specs/iommu-emul.rst; the qtest includes it.
 * Everything in guest memory and in the register BAR is little-endian.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_IOMMU_EMUL_REGS_H
#define HW_IOMMU_EMUL_REGS_H

#include "hw/registerfields.h"

#define IOMMU_EMUL_PCI_VENDOR_ID    0x1af4  /* PCI_VENDOR_ID_REDHAT_QUMRANET */
#define IOMMU_EMUL_PCI_DEVICE_ID    0x10f0  /* experimental range */
#define IOMMU_EMUL_PCI_REVISION     0x01    /* 1: first functional version */
#define IOMMU_EMUL_PCI_CLASS        0x0806  /* PCI_CLASS_SYSTEM_IOMMU */

#define IOMMU_EMUL_REGS_BAR         0
#define IOMMU_EMUL_REGS_SIZE        0x1000
#define IOMMU_EMUL_MSIX_BAR         2   /* BAR 0 takes slots 0 and 1 */
#define IOMMU_EMUL_MSIX_BAR_SIZE    0x1000
#define IOMMU_EMUL_MSIX_PBA_OFFSET  0x800   /* the table is at offset 0 */
#define IOMMU_EMUL_MSIX_VECTORS     2

/* Configuration space: capability offsets */
#define IOMMU_EMUL_PCIE_CAP_OFFSET  0x40    /* PCI Express bus only */
#define IOMMU_EMUL_MSIX_CAP_OFFSET  0x80
#define IOMMU_EMUL_VEC_FAULT        0
#define IOMMU_EMUL_VEC_CMD          1

#define IOMMU_EMUL_MAGIC            0x4d454f49  /* "IOEM" */
#define IOMMU_EMUL_VERSION          0x00010000  /* 1.0 */

#define IOMMU_EMUL_PAGE_SHIFT       12
#define IOMMU_EMUL_PAGE_SIZE        (1ULL << IOMMU_EMUL_PAGE_SHIFT)

/* The MSI window is never translated and never handed out as IOVA */
#define IOMMU_EMUL_MSI_BASE         0xfee00000ULL
#define IOMMU_EMUL_MSI_LAST         0xfeefffffULL

/* Register map (BAR 0) */
REG32(MAGIC,            0x000)
REG32(VERSION,          0x004)
REG32(CAP,              0x008)
    FIELD(CAP, BUS_ADDR,       0, 2)   /* 0 iova, 1 gpa, 2 hpa */
    FIELD(CAP, PAGE_SHIFT,     8, 6)
    FIELD(CAP, CMDQ_MAX_LOG2,  16, 4)
    FIELD(CAP, FAULTQ_MAX_LOG2, 20, 4)
    FIELD(CAP, MSIX,           24, 1)
REG32(LIMITS,           0x00c)
    FIELD(LIMITS, MAX_MAPPINGS, 0, 32)  /* mappings per requester */
REG64(MAX_PINNED,       0x010)
REG64(PINNED,           0x018)
REG64(APERTURE_START,   0x020)
REG64(APERTURE_END,     0x028)
REG32(CTRL,             0x030)
    FIELD(CTRL, CMDQ_EN,       0, 1)
    FIELD(CTRL, FAULTQ_EN,     1, 1)
REG32(STATUS,           0x034)
    FIELD(STATUS, CMDQ_ON,     0, 1)
    FIELD(STATUS, FAULTQ_ON,   1, 1)
    FIELD(STATUS, CMDQ_ERR,    2, 1)
    FIELD(STATUS, FAULTQ_ERR,  3, 1)
REG32(CMDQ_ERROR,       0x038)
REG32(FAULTQ_ERROR,     0x03c)
REG64(CMDQ_BASE,        0x040)
REG32(CMDQ_SIZE,        0x048)
REG32(CMDQ_HEAD,        0x050)
REG32(CMDQ_TAIL,        0x054)
REG64(FAULTQ_BASE,      0x060)
REG32(FAULTQ_SIZE,      0x068)
REG32(FAULTQ_HEAD,      0x070)
REG32(FAULTQ_TAIL,      0x074)
REG32(FAULT_OVERFLOW,   0x078)

/* CAP.BUS_ADDR values */
#define IOMMU_EMUL_BUS_ADDR_IOVA    0
#define IOMMU_EMUL_BUS_ADDR_GPA     1
#define IOMMU_EMUL_BUS_ADDR_HPA     2

/* Ring error codes (CMDQ_ERROR, FAULTQ_ERROR) */
#define IOMMU_EMUL_QERR_NONE        0
#define IOMMU_EMUL_QERR_BAD_SIZE    1   /* SIZE is 0 or above the maximum */
#define IOMMU_EMUL_QERR_BAD_BASE    2   /* misaligned or not all in RAM */
#define IOMMU_EMUL_QERR_BAD_INDEX   3   /* TAIL (or HEAD) >= entries */
#define IOMMU_EMUL_QERR_DMA         4   /* reading/writing an entry failed */

/*
 * Command entry: 64 bytes. The device writes the out_* fields and then
 * status (with IOMMU_EMUL_STATUS_DONE set) into the entry before it
 * advances CMDQ_HEAD past it.
 */
#define IOMMU_EMUL_CMD_SIZE         64
#define IOMMU_EMUL_CMD_OPCODE       0x00    /* le16 */
#define IOMMU_EMUL_CMD_FLAGS        0x02    /* le16 */
#define IOMMU_EMUL_CMD_REQUESTER    0x04    /* le16: bus << 8 | devfn */
#define IOMMU_EMUL_CMD_STATUS       0x06    /* le16, written by the device */
#define IOMMU_EMUL_CMD_RSVD         0x08    /* le32, ignored */
#define IOMMU_EMUL_CMD_OUT_FLAGS    0x0c    /* le32, written by the device */
#define IOMMU_EMUL_CMD_ADDR         0x10    /* le64 */
#define IOMMU_EMUL_CMD_LENGTH       0x18    /* le64 */
#define IOMMU_EMUL_CMD_DMA_LIMIT    0x20    /* le64, MAP only */
#define IOMMU_EMUL_CMD_OUT_ADDR     0x28    /* le64, written by the device */
#define IOMMU_EMUL_CMD_OUT_BASE     0x30    /* le64, written by the device */
#define IOMMU_EMUL_CMD_OUT_LENGTH   0x38    /* le64, written by the device */

/* Opcodes */
#define IOMMU_EMUL_OP_SET_MODE      0x01
#define IOMMU_EMUL_OP_MAP           0x02
#define IOMMU_EMUL_OP_UNMAP         0x03
#define IOMMU_EMUL_OP_DETACH        0x04
#define IOMMU_EMUL_OP_SYNC          0x05
#define IOMMU_EMUL_OP_QUERY         0x06

/* Flags */
#define IOMMU_EMUL_MAP_READ         (1 << 0)
#define IOMMU_EMUL_MAP_WRITE        (1 << 1)
#define IOMMU_EMUL_MODE_TRANSLATE   (1 << 0)   /* SET_MODE; 0 = bypass */
#define IOMMU_EMUL_SYNC_IRQ         (1 << 0)

/* QUERY out_flags */
#define IOMMU_EMUL_QUERY_READ       (1 << 0)
#define IOMMU_EMUL_QUERY_WRITE      (1 << 1)
#define IOMMU_EMUL_QUERY_TRANSLATE  (1 << 8)

/* Command status: DONE | code */
#define IOMMU_EMUL_STATUS_DONE      0x8000
#define IOMMU_EMUL_ST_OK            0x00
#define IOMMU_EMUL_ST_BAD_OPCODE    0x01
#define IOMMU_EMUL_ST_BAD_ARG       0x02
#define IOMMU_EMUL_ST_NO_DEVICE     0x03
#define IOMMU_EMUL_ST_NO_RAM        0x04
#define IOMMU_EMUL_ST_NO_SPACE      0x05
#define IOMMU_EMUL_ST_PIN_LIMIT     0x06
#define IOMMU_EMUL_ST_NOT_FOUND     0x07
#define IOMMU_EMUL_ST_NOT_CONTIGUOUS 0x08  /* hpa: pages not adjacent */

/* Fault record: 32 bytes */
#define IOMMU_EMUL_FAULT_SIZE       32
#define IOMMU_EMUL_FAULT_REQUESTER  0x00    /* le16 */
#define IOMMU_EMUL_FAULT_ACCESS     0x02    /* u8: 1 read, 2 write */
#define IOMMU_EMUL_FAULT_REASON     0x03    /* u8 */
#define IOMMU_EMUL_FAULT_COUNT      0x04    /* le32: merged faults, >= 1 */
#define IOMMU_EMUL_FAULT_ADDR       0x08    /* le64 bus address */
#define IOMMU_EMUL_FAULT_SEQ        0x10    /* le64 fault number, from 1 */
#define IOMMU_EMUL_FAULT_RSVD2      0x18    /* le64, 0 */

#define IOMMU_EMUL_ACCESS_READ      1
#define IOMMU_EMUL_ACCESS_WRITE     2

#define IOMMU_EMUL_REASON_UNMAPPED  1
#define IOMMU_EMUL_REASON_PERM      2

#endif
