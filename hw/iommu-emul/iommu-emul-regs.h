/*
 * iommu-emul guest interface: PCI identity and register map
 *
 * This header describes docs/specs/iommu-emul.rst; the qtest includes it.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_IOMMU_EMUL_REGS_H
#define HW_IOMMU_EMUL_REGS_H

#define IOMMU_EMUL_PCI_VENDOR_ID    0x1af4  /* PCI_VENDOR_ID_REDHAT_QUMRANET */
#define IOMMU_EMUL_PCI_DEVICE_ID    0x10f0  /* experimental range */
#define IOMMU_EMUL_PCI_REVISION     0x00    /* 0: not functional yet */
#define IOMMU_EMUL_PCI_CLASS        0x0806  /* PCI_CLASS_SYSTEM_IOMMU */

#define IOMMU_EMUL_REGS_BAR         0
#define IOMMU_EMUL_REGS_SIZE        0x1000

#endif
