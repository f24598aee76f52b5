/*
 * iommu-emul: paravirtual IOMMU that pins only what is mapped
 *
 * Not functional yet: the device realizes and exposes its PCI identity and
 * an empty register BAR. See docs/specs/iommu-emul.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pci_ids.h"
#include "migration/vmstate.h"
#include "hw/iommu-emul/iommu-emul.h"
#include "iommu-emul-regs.h"
#include "trace.h"

static uint64_t iommu_emul_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    qemu_log_mask(LOG_UNIMP, "%s: register 0x%" HWADDR_PRIx
                  " not implemented yet\n", __func__, addr);
    return 0;
}

static void iommu_emul_mmio_write(void *opaque, hwaddr addr, uint64_t val,
                                  unsigned size)
{
    qemu_log_mask(LOG_UNIMP, "%s: register 0x%" HWADDR_PRIx
                  " not implemented yet\n", __func__, addr);
}

static const MemoryRegionOps iommu_emul_mmio_ops = {
    .read = iommu_emul_mmio_read,
    .write = iommu_emul_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 4,
        .max_access_size = 8,
    },
};

static void iommu_emul_realize(PCIDevice *pdev, Error **errp)
{
    IOMMUEmulState *s = IOMMU_EMUL(pdev);

    memory_region_init_io(&s->regs, OBJECT(s), &iommu_emul_mmio_ops, s,
                          "iommu-emul-regs", IOMMU_EMUL_REGS_SIZE);
    pci_register_bar(pdev, IOMMU_EMUL_REGS_BAR,
                     PCI_BASE_ADDRESS_SPACE_MEMORY |
                     PCI_BASE_ADDRESS_MEM_TYPE_64, &s->regs);
    trace_iommu_emul_realize(IOMMU_EMUL_PCI_VENDOR_ID,
                             IOMMU_EMUL_PCI_DEVICE_ID);
}

static const VMStateDescription iommu_emul_vmstate = {
    .name = TYPE_IOMMU_EMUL,
    .unmigratable = 1,
};

static void iommu_emul_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = iommu_emul_realize;
    k->vendor_id = IOMMU_EMUL_PCI_VENDOR_ID;
    k->device_id = IOMMU_EMUL_PCI_DEVICE_ID;
    k->revision = IOMMU_EMUL_PCI_REVISION;
    k->class_id = IOMMU_EMUL_PCI_CLASS;
    dc->desc = "Paravirtual IOMMU that pins only mapped pages (not functional yet)";
    dc->vmsd = &iommu_emul_vmstate;
    dc->hotpluggable = false;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo iommu_emul_types[] = {
    {
        .name = TYPE_IOMMU_EMUL,
        .parent = TYPE_PCI_DEVICE,
        .instance_size = sizeof(IOMMUEmulState),
        .class_init = iommu_emul_class_init,
        .interfaces = (InterfaceInfo[]) {
            { INTERFACE_PCIE_DEVICE },
            { INTERFACE_CONVENTIONAL_PCI_DEVICE },
            { },
        },
    },
};

DEFINE_TYPES(iommu_emul_types)
