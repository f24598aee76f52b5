/*
 * virtio-zc: zero-copy transmit with reclaim by page offlining
 *
 * Not functional yet: the device realizes with one transmit queue and
 * returns every buffer the guest posts unprocessed (used length 0), so
 * that no buffer is ever lost. See docs/specs/virtio-zc.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/virtio.h"
#include "hw/virtio-zc/virtio-zc.h"
#include "migration/vmstate.h"
#include "qapi/error.h"
#include "trace.h"

#define VIRTIO_ZC_QUEUE_SIZE 256

static void virtio_zc_handle_tx(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtQueueElement *elem;

    while ((elem = virtqueue_pop(vq, sizeof(VirtQueueElement)))) {
        trace_virtio_zc_handle_tx(elem->out_num, elem->in_num);
        virtqueue_push(vq, elem, 0);
        g_free(elem);
    }
    virtio_notify(vdev, vq);
}

static uint64_t virtio_zc_get_features(VirtIODevice *vdev, uint64_t features,
                                       Error **errp)
{
    return features;
}

static void virtio_zc_realize(DeviceState *dev, Error **errp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOZC *s = VIRTIO_ZC(dev);

    virtio_init(vdev, VIRTIO_ID_ZC, 0);
    s->txq = virtio_add_queue(vdev, VIRTIO_ZC_QUEUE_SIZE, virtio_zc_handle_tx);
}

static void virtio_zc_unrealize(DeviceState *dev)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOZC *s = VIRTIO_ZC(dev);

    virtio_del_queue(vdev, virtio_get_queue_index(s->txq));
    virtio_cleanup(vdev);
}

static const VMStateDescription vmstate_virtio_zc = {
    .name = "virtio-zc",
    .unmigratable = 1,
};

static void virtio_zc_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioDeviceClass *vdc = VIRTIO_DEVICE_CLASS(klass);

    dc->desc = "Zero-copy transmit device (not functional yet)";
    dc->vmsd = &vmstate_virtio_zc;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    vdc->realize = virtio_zc_realize;
    vdc->unrealize = virtio_zc_unrealize;
    vdc->get_features = virtio_zc_get_features;
}

static const TypeInfo virtio_zc_types[] = {
    {
        .name = TYPE_VIRTIO_ZC,
        .parent = TYPE_VIRTIO_DEVICE,
        .instance_size = sizeof(VirtIOZC),
        .class_init = virtio_zc_class_init,
    },
};

DEFINE_TYPES(virtio_zc_types)
