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
#include "qemu/notify.h"
#include "qemu/page-offline.h"
#include "qemu/queue.h"
#include "qom/object.h"

#define TYPE_VIRTIO_ZC "virtio-zc-device"
OBJECT_DECLARE_SIMPLE_TYPE(VirtIOZC, VIRTIO_ZC)

typedef struct VirtIOZCReq VirtIOZCReq;
typedef struct VirtIOZCReshare VirtIOZCReshare;

/* One transmit queue with its own destination connection */
typedef struct VirtIOZCQueue {
    VirtIOZC *s;
    unsigned int index;
    VirtQueue *vq;
    const char *dest;           /* host:port; points into VirtIOZC.dests */

    /* Destination */
    int fd;                     /* -1: none or disconnected */
    bool zc_enabled;            /* SO_ZEROCOPY accepted */
    bool want_write;            /* write handler installed */
    uint64_t seq;               /* next frame sequence number */
    uint32_t zc_next_id;        /* id of the next MSG_ZEROCOPY sendmsg */
    GQueue zc_sends;            /* VirtIOZCSend, in id order */

    /* Requests and orphaned message tails */
    QTAILQ_HEAD(, VirtIOZCReq) reqs;    /* every request the queue holds */
    QTAILQ_HEAD(, VirtIOZCReq) sendq;   /* messages with bytes to send */
    uint32_t inflight;                  /* requests on reqs */
} VirtIOZCQueue;

struct VirtIOZC {
    VirtIODevice parent_obj;

    /* Properties */
    char *dest;
    char *listen;
    uint32_t num_queues;
    uint32_t max_inflight;
    uint32_t max_segments;
    uint32_t max_data_len;
    uint32_t timeout_ms;
    uint32_t max_timeout_ms;
    uint32_t sndbuf;
    uint64_t spare_pool;
    int64_t spare_pool_most;    /* what realize added to the engine's */
    bool zerocopy;
    char *offline_method_str;
    PageOfflineMethod offline_method;

    VirtIOZCQueue *queues;      /* num_queues of them */
    char **dests;               /* dest split at ';' or ',' */
    int listen_fd;              /* listening mode: -1 otherwise */
    QEMUBH *bh;
    VMChangeStateEntry *vmstate_entry;
    NotifierWithReturn migration_notifier;

    /* Counters (read-only QOM properties), totals over the queues */
    uint64_t stat_requests;
    uint64_t stat_completed;
    uint64_t stat_sent;
    uint64_t stat_bytes;
    uint64_t stat_reclaimed;
    uint64_t stat_copied;
    uint64_t stat_kernel_copied;
    uint64_t stat_dest_errors;
    uint64_t stat_bad_requests;
    uint64_t stat_offline_refused;
    uint64_t stat_offline_failed;
    uint64_t stat_offlined_bytes;
    uint64_t stat_reshared_bytes;
    /* Shared RAM mapped privately by a reclaim, waiting for its release */
    QLIST_HEAD(, VirtIOZCReshare) reshares;
    uint64_t stat_inflight;
};

#endif
