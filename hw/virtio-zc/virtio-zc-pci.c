/*
 * virtio-zc PCI proxy (modern-only)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/virtio-pci.h"
#include "hw/virtio-zc/virtio-zc.h"
#include "qapi/error.h"
#include "qom/object.h"

typedef struct VirtIOZCPCI VirtIOZCPCI;

#define TYPE_VIRTIO_ZC_PCI "virtio-zc-pci-base"
DECLARE_INSTANCE_CHECKER(VirtIOZCPCI, VIRTIO_ZC_PCI, TYPE_VIRTIO_ZC_PCI)

struct VirtIOZCPCI {
    VirtIOPCIProxy parent_obj;

    VirtIOZC vdev;
};

static void virtio_zc_pci_realize(VirtIOPCIProxy *vpci_dev, Error **errp)
{
    VirtIOZCPCI *dev = VIRTIO_ZC_PCI(vpci_dev);

    virtio_pci_force_virtio_1(vpci_dev);
    qdev_realize(DEVICE(&dev->vdev), BUS(&vpci_dev->bus), errp);
}

static void virtio_zc_pci_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioPCIClass *k = VIRTIO_PCI_CLASS(klass);

    k->realize = virtio_zc_pci_realize;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static void virtio_zc_pci_instance_init(Object *obj)
{
    VirtIOZCPCI *dev = VIRTIO_ZC_PCI(obj);

    virtio_instance_init_common(obj, &dev->vdev, sizeof(dev->vdev),
                                TYPE_VIRTIO_ZC);
}

static const VirtioPCIDeviceTypeInfo virtio_zc_pci_info = {
    .base_name = TYPE_VIRTIO_ZC_PCI,
    .generic_name = "virtio-zc-pci",
    .instance_size = sizeof(VirtIOZCPCI),
    .instance_init = virtio_zc_pci_instance_init,
    .class_init = virtio_zc_pci_class_init,
};

static void virtio_zc_pci_register(void)
{
    virtio_pci_types_register(&virtio_zc_pci_info);
}

type_init(virtio_zc_pci_register)
