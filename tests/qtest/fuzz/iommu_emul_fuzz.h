/*
 * The machine of the iommu-emul fuzz targets and its guest memory layout
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef IOMMU_EMUL_FUZZ_H
#define IOMMU_EMUL_FUZZ_H

#define IEF_IOMMU_DEVFN     QPCI_DEVFN(4, 0)
#define IEF_EDU0_DEVFN      QPCI_DEVFN(5, 0)
#define IEF_EDU1_DEVFN      QPCI_DEVFN(6, 0)

#define IEF_RAM_SIZE        (512 * MiB)
#define IEF_CMDQ_BASE       (16 * MiB)
#define IEF_FAULTQ_BASE     (17 * MiB)
#define IEF_BUF_BASE        (32 * MiB)
#define IEF_BUF_PAGES       64

/* -device options of iommu-emul and the two edu behind it */
extern const char *iommu_emul_fuzz_cmdline;

#endif
