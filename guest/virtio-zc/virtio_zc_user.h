/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User interface of the virtio-zc guest driver (/dev/virtio-zcN).
 *
 * mmap() the device file (MAP_SHARED, offset 0, up to pool_size bytes) to
 * get the driver's buffer pool: the very pages the device reads.  A SEND
 * posts one request whose data is a range of that pool; WAIT returns the
 * completions, each exactly once.  See README.md in this directory.
 */
#ifndef VIRTIO_ZC_USER_H
#define VIRTIO_ZC_USER_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* Device status codes (docs/specs/virtio-zc.rst) */
#define VZC_ST_OK           0
#define VZC_ST_RECLAIMED    1
#define VZC_ST_COPIED       2
#define VZC_ST_DEST_ERROR   3
#define VZC_ST_BAD_REQUEST  4
/* Driver status codes: the device gave no status */
#define VZC_ST_CANCELED     0x100 /* reset/removed before the device took it */
#define VZC_ST_NO_STATUS    0x101 /* used with used length 0 */

/* struct vzc_completion.flags */
#define VZC_CF_RESET        (1u << 0) /* completed by a device reset */
#define VZC_CF_REMOVED      (1u << 1) /* completed because the device went away */

struct vzc_send {
	__u64 offset;      /* in: byte offset of the data in the pool */
	__u32 length;      /* in: data bytes (1 .. max_data_len) */
	__u32 timeout_ms;  /* in: 0 = device default; else needs F_TIMEOUT */
	__u64 tag;         /* in: copied into the frame */
	__u32 seg_max;     /* in: largest data segment in bytes, 0 = no limit */
	__u32 nsegs;       /* out: data segments used */
	__u64 id;          /* out: driver request id (1, 2, ...) */
	__u32 flags;       /* in: VZC_SEND_F_*, 0 for normal use */
	__u32 reserved;    /* in: 0 */
};

/*
 * struct vzc_send.flags: test aids that post requests the spec forbids, to
 * check the device's answer.  Refused (EPERM) unless the module was loaded
 * with allow_malformed=1.
 */
#define VZC_SEND_F_UNCHECKED  (1u << 0) /* skip the length/segment/timeout checks */
#define VZC_SEND_F_BAD_FLAGS  (1u << 1) /* header flags = 1 */
#define VZC_SEND_F_NO_STATUS  (1u << 2) /* no device-writable byte */
#define VZC_SEND_F_TWO_STATUS (1u << 3) /* two device-writable bytes */
#define VZC_SEND_F_ALL        0xfu

struct vzc_completion {
	__u64 id;          /* the id SEND returned */
	__u64 tag;
	__u32 status;      /* VZC_ST_* */
	__u32 used_len;    /* used length the device reported (1) */
	__u32 flags;       /* VZC_CF_* */
	__u32 reserved;
	__u64 elapsed_ns;  /* from posting to completion (guest clock) */
};

/* struct vzc_wait.flags */
#define VZC_WAIT_TAG        (1u << 0) /* only a completion with this tag */
#define VZC_WAIT_ID         (1u << 1) /* only a completion with this id */

struct vzc_wait {
	__u64 tag;         /* in, with VZC_WAIT_TAG */
	__u64 id;          /* in, with VZC_WAIT_ID */
	__u32 flags;       /* in: VZC_WAIT_* */
	__s32 timeout_ms;  /* in: < 0 forever, 0 do not block */
	struct vzc_completion c; /* out */
};

struct vzc_info {
	__u32 max_inflight;
	__u32 max_segments;
	__u32 max_data_len;
	__u32 default_timeout_ms;
	__u32 max_timeout_ms;
	__u32 dest_state;     /* 1 = connected */
	__u64 features;       /* negotiated feature bits 0..63 */
	__u64 pool_size;      /* bytes that mmap() can map */
	__u32 vq_size;
	__u32 needs_reset;    /* the device set DEVICE_NEEDS_RESET */
	__u64 posted;         /* requests posted since probe */
	__u64 completed;      /* completions queued since probe */
	__u64 in_flight;      /* posted, not completed */
	__u64 undelivered;    /* completed, not yet returned by WAIT */
	__u64 status_count[6]; /* OK, RECLAIMED, COPIED, DEST_ERROR, BAD, other */
	__u64 resets;
};

#define VZC_IOC_MAGIC 'z'
#define VZC_IOC_INFO  _IOR(VZC_IOC_MAGIC, 0, struct vzc_info)
#define VZC_IOC_SEND  _IOWR(VZC_IOC_MAGIC, 1, struct vzc_send)
#define VZC_IOC_WAIT  _IOWR(VZC_IOC_MAGIC, 2, struct vzc_wait)
#define VZC_IOC_RESET _IO(VZC_IOC_MAGIC, 3)

#endif /* VIRTIO_ZC_USER_H */
