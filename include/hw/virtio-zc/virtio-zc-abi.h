/*
 * virtio-zc guest interface (see docs/specs/virtio-zc.rst)
 *
 * Standard types only, so that qtests, guest drivers and receivers can
 * include it. Multi-byte fields are little-endian.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_ZC_ABI_H
#define HW_VIRTIO_ZC_ABI_H

#include <stdint.h>

/*
 * Provisional device ID: unused by the virtio specification and by
 * include/standard-headers/linux/virtio_ids.h. PCI device ID 0x1040 + 61.
 */
#define VIRTIO_ID_ZC                61
#define VIRTIO_ZC_PCI_DEVICE_ID     (0x1040 + VIRTIO_ID_ZC)

/* Virtqueues: transmitq0 .. transmitq(num_queues - 1) */
#define VIRTIO_ZC_TXQ               0
#define VIRTIO_ZC_MAX_QUEUES        32

/* Feature bits */
/* The driver may set a per-request timeout (timeout_ms) */
#define VIRTIO_ZC_F_TIMEOUT         0

/* Configuration space (read-only) */
struct virtio_zc_config {
    uint32_t max_inflight;          /* requests the device holds at once */
    uint32_t max_segments;          /* data descriptors per request */
    uint32_t max_data_len;          /* data bytes per request */
    uint32_t default_timeout_ms;    /* used when timeout_ms is 0 */
    uint32_t max_timeout_ms;        /* largest timeout_ms accepted */
    uint32_t dest_state;            /* VIRTIO_ZC_DEST_* */
    uint32_t num_queues;            /* transmit queues */
    uint32_t dest_mask;             /* bit i: transmitq i has its dest */
};

#define VIRTIO_ZC_DEST_DISCONNECTED 0
#define VIRTIO_ZC_DEST_CONNECTED    1

/* Request header: the first 16 device-readable bytes of a request */
struct virtio_zc_req_hdr {
    uint32_t flags;                 /* must be 0 */
    uint32_t timeout_ms;            /* 0: default_timeout_ms */
    uint64_t tag;                   /* opaque, copied into the frame */
};

/* Status: the one device-writable byte at the end of a request */
#define VIRTIO_ZC_S_OK              0   /* sent with zero copy, released */
#define VIRTIO_ZC_S_RECLAIMED       1   /* pages offlined; see the spec */
#define VIRTIO_ZC_S_COPIED          2   /* sent by the copy path */
#define VIRTIO_ZC_S_DEST_ERROR      3   /* no destination or it failed */
#define VIRTIO_ZC_S_BAD_REQUEST     4   /* malformed request, not sent */

/* Stream framing: each message on the destination stream starts with */
struct virtio_zc_frame_hdr {
    uint32_t magic;                 /* VIRTIO_ZC_FRAME_MAGIC */
    uint32_t len;                   /* payload bytes that follow */
    uint64_t seq;                   /* 0, 1, 2, ... per connection */
    uint64_t tag;                   /* the request's tag */
};

#define VIRTIO_ZC_FRAME_MAGIC       0x31435a56u /* "VZC1" */

#endif
