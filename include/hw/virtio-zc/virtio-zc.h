/*
 * virtio-zc: zero-copy transmit with reclaim by page offlining
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_ZC_H
#define HW_VIRTIO_ZC_H

#include "hw/virtio/virtio.h"
#include "hw/virtio-zc/virtio-zc-abi.h"
#include "qom/object.h"

#define TYPE_VIRTIO_ZC "virtio-zc-device"
OBJECT_DECLARE_SIMPLE_TYPE(VirtIOZC, VIRTIO_ZC)

struct VirtIOZC {
    VirtIODevice parent_obj;

    VirtQueue *txq;
};

#endif
