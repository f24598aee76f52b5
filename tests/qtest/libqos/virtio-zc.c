/*
 * libqos driver for virtio-zc
 *
 * Puts virtio-zc-pci in the qos graph, so that the generic virtio and PCI
 * tests of qos-test also run on it. start_hw brings the device up with
 * VIRTIO_ZC_F_TIMEOUT negotiated and its transmit queue set up.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "../libqtest.h"
#include "qemu/module.h"
#include "qgraph.h"
#include "standard-headers/linux/virtio_config.h"
#include "hw/virtio-zc/virtio-zc-abi.h"
#include "virtio-zc.h"

static void *qvirtio_zc_get_driver(QVirtioZC *zc, const char *interface)
{
    if (!g_strcmp0(interface, "virtio-zc")) {
        return zc;
    }
    if (!g_strcmp0(interface, "virtio")) {
        return zc->vdev;
    }

    fprintf(stderr, "%s not present in virtio-zc\n", interface);
    g_assert_not_reached();
}

static void *qvirtio_zc_pci_get_driver(void *object, const char *interface)
{
    QVirtioZCPCI *z = object;

    if (!g_strcmp0(interface, "pci-device")) {
        return z->pci_vdev.pdev;
    }
    return qvirtio_zc_get_driver(&z->zc, interface);
}

static void qvirtio_zc_pci_start_hw(QOSGraphObject *obj)
{
    QVirtioZCPCI *z = (QVirtioZCPCI *)obj;
    QVirtioDevice *vdev = z->zc.vdev;
    uint64_t features;

    qvirtio_pci_device_enable(&z->pci_vdev);
    qvirtio_start_device(vdev);
    features = qvirtio_get_features(vdev);
    features &= (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_ZC_F_TIMEOUT);
    qvirtio_set_features(vdev, features);
    z->zc.txq = qvirtqueue_setup(vdev, z->alloc, VIRTIO_ZC_TXQ);
    qvirtio_set_driver_ok(vdev);
}

static void qvirtio_zc_pci_destructor(QOSGraphObject *obj)
{
    QVirtioZCPCI *z = (QVirtioZCPCI *)obj;

    if (z->zc.txq) {
        qvirtqueue_cleanup(z->zc.vdev->bus, z->zc.txq, z->alloc);
        z->zc.txq = NULL;
    }
    qvirtio_pci_destructor(obj);
}

static void *virtio_zc_pci_create(void *pci_bus, QGuestAllocator *alloc,
                                  void *addr)
{
    QVirtioZCPCI *z = g_new0(QVirtioZCPCI, 1);
    QOSGraphObject *obj = &z->pci_vdev.obj;

    virtio_pci_init(&z->pci_vdev, pci_bus, addr);
    z->zc.vdev = &z->pci_vdev.vdev;
    z->alloc = alloc;
    g_assert_cmphex(z->zc.vdev->device_type, ==, VIRTIO_ID_ZC);

    obj->get_driver = qvirtio_zc_pci_get_driver;
    obj->start_hw = qvirtio_zc_pci_start_hw;
    obj->destructor = qvirtio_zc_pci_destructor;
    return obj;
}

static void virtio_zc_register_nodes(void)
{
    QPCIAddress addr = {
        .devfn = QPCI_DEVFN(4, 0),
    };
    QOSGraphEdgeOptions opts = {
        .extra_device_opts = "addr=04.0",
    };

    /*
     * Only the PCI proxy: virtio-zc is modern-only, and the legacy
     * virtio-mmio transport of the qos machines would not take it.
     */
    add_qpci_address(&opts, &addr);
    qos_node_create_driver("virtio-zc-pci", virtio_zc_pci_create);
    qos_node_consumes("virtio-zc-pci", "pci-bus", &opts);
    qos_node_produces("virtio-zc-pci", "pci-device");
    qos_node_produces("virtio-zc-pci", "virtio");
    qos_node_produces("virtio-zc-pci", "virtio-zc");
}

libqos_init(virtio_zc_register_nodes);
