/*
 * iommu-emul: paravirtual IOMMU that pins only what is mapped
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_IOMMU_EMUL_H
#define HW_IOMMU_EMUL_H

#include "hw/pci/pci_device.h"
#include "qom/object.h"

#define TYPE_IOMMU_EMUL "iommu-emul"
OBJECT_DECLARE_SIMPLE_TYPE(IOMMUEmulState, IOMMU_EMUL)

struct IOMMUEmulState {
    PCIDevice parent_obj;

    MemoryRegion regs;
};

#endif
