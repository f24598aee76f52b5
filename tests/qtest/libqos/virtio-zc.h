/*
 * libqos driver for virtio-zc
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_LIBQOS_VIRTIO_ZC_H
#define TESTS_LIBQOS_VIRTIO_ZC_H

#include "qgraph.h"
#include "virtio.h"
#include "virtio-pci.h"

typedef struct QVirtioZC QVirtioZC;
typedef struct QVirtioZCPCI QVirtioZCPCI;

/* The "virtio-zc" interface: the virtio device and its transmit queue */
struct QVirtioZC {
    QVirtioDevice *vdev;
    QVirtQueue *txq;
};

struct QVirtioZCPCI {
    QVirtioPCIDevice pci_vdev;
    QVirtioZC zc;
    QGuestAllocator *alloc;
};

#endif
