/*
 * virtio-zc guest interface (see docs/specs/virtio-zc.rst)
 *
 * Standard types only, so that qtests and guest drivers can include it.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_ZC_ABI_H
#define HW_VIRTIO_ZC_ABI_H

/*
 * Provisional device ID: unused by the virtio specification and by
 * include/standard-headers/linux/virtio_ids.h. PCI device ID 0x1040 + 61.
 */
#define VIRTIO_ID_ZC                61
#define VIRTIO_ZC_PCI_DEVICE_ID     (0x1040 + VIRTIO_ID_ZC)

#endif
