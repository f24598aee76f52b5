/*
 * virtio-zc fuzz target: valid virtqueues, random chains, a real receiver
 *
 * generic-fuzz-virtio-zc seldom gets a virtio-zc queue running. This
 * target brings the device up as a driver does (docs/specs/virtio-zc.rst:
 * features, two transmit queues, DRIVER_OK) and spends the input on the
 * requests: headers with fuzzed flags, timeouts and tags, data split over
 * fuzzed segments, status buffers of any size and place, indirect tables,
 * raw descriptor chains (loops, bad flags and addresses), avail index
 * jumps, guest writes to buffers in flight, device status writes, resets,
 * and the virtual clock, which expires requests and makes the device
 * reclaim them by offlining their pages.
 *
 * The device listens (listen=127.0.0.1:PORT) and the target plays the
 * receivers: it connects, reads, stops reading (a stalled destination,
 * with a small receive buffer), and disconnects, as the input says. So
 * the fuzzer can never stall forever, and every state of the
 * destination is reachable, reconnects included.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/libqos/pci-pc.h"
#include "tests/qtest/libqos/malloc-pc.h"
#include "tests/qtest/libqos/virtio.h"
#include "tests/qtest/libqos/virtio-pci.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_ring.h"
#include "hw/virtio-zc/virtio-zc-abi.h"
#include "fuzz.h"
#include "qemu_zc_fuzz.h"

#define VZF_DEVFN           QPCI_DEVFN(4, 0)
#define VZF_NQ              2
#define VZF_AREA_SIZE       (1 * MiB)
#define MAX_ACTIONS         256
#define MAX_DESCS           8

typedef struct VZFuzz {
    QTestState *s;
    QGuestAllocator alloc;
    QPCIBus *bus;
    QVirtioPCIDevice *dev;
    QVirtioDevice *vdev;
    QVirtQueue *vq[VZF_NQ];
    uint16_t next_desc[VZF_NQ];
    uint64_t area;          /* buffers: headers, data, status, tables */
    int rfd[VZF_NQ];        /* the receivers' sockets, -1: none */
} VZFuzz;

enum {
    ACT_REQ,
    ACT_RAW_CHAIN,
    ACT_KICK,
    ACT_AVAIL_IDX,
    ACT_CLOCK,
    ACT_RECV,
    ACT_DEV_RESET,
    ACT_STATUS,
    ACT_CONFIG,
    ACT_REWRITE,
    ACT__MAX,
};

static int vzf_port;

static uint64_t vzf_buf(VZFuzz *f, ZCFuzzInput *in, uint32_t len)
{
    uint8_t k = zcf_u8(in);
    uint64_t off;

    if (k >= 0xf8) {
        /* anywhere: outside RAM, MMIO, wrapping */
        return zcf_u64(in);
    }
    len = MIN(len, VZF_AREA_SIZE);
    off = ((uint64_t)zcf_u16(in) * 64) % (VZF_AREA_SIZE - len + 1);
    return f->area + off;
}

static uint32_t vzf_len(ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);

    if (k < 0xc0) {
        return (k + 1) * 16;
    }
    if (k < 0xf8) {
        return (zcf_u16(in) % (64 * KiB)) + 1;
    }
    return zcf_u32(in);
}

static void vzf_write_desc(VZFuzz *f, uint64_t table, uint16_t i,
                           uint64_t addr, uint32_t len, uint16_t flags,
                           uint16_t next)
{
    uint8_t d[16];

    stq_le_p(d, addr);
    stl_le_p(d + 8, len);
    stw_le_p(d + 12, flags);
    stw_le_p(d + 14, next);
    qtest_memwrite(f->s, table + i * 16, d, sizeof(d));
}

/* Make @head available on queue @q, and notify unless told not to */
static void vzf_publish(VZFuzz *f, int q, uint16_t head, bool kick)
{
    QVirtQueue *vq = f->vq[q];
    uint16_t idx = qtest_readw(f->s, vq->avail + 2);

    qtest_writew(f->s, vq->avail + 4 + 2 * (idx % vq->size), head);
    qtest_writew(f->s, vq->avail + 2, idx + 1);
    if (kick) {
        f->vdev->bus->virtqueue_kick(f->vdev, vq);
    }
}

/* A request as the spec lays it out, with fuzzed fields and layout */
static void vzf_request(VZFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);
    int q = k & 1;
    QVirtQueue *vq = f->vq[q];
    unsigned nseg = ((k >> 1) & 7) % 5;
    bool split_hdr = k & 0x10;
    bool status_first = (k & 0x60) == 0x60;
    bool indirect = (k & 0x80) && vq->indirect;
    struct {
        uint64_t addr;
        uint32_t len;
        bool write;
    } d[MAX_DESCS];
    uint8_t hdr[sizeof(struct virtio_zc_req_hdr)];
    uint8_t fl = zcf_u8(in), tk = zcf_u8(in);
    unsigned n = 0, i;
    uint64_t hdr_addr, table;
    uint16_t head;

    stl_le_p(hdr, fl < 0xf0 ? 0 : zcf_u32(in));
    stl_le_p(hdr + 4, tk < 0x80 ? 0 : tk < 0xf0 ? tk - 0x7f : zcf_u32(in));
    stq_le_p(hdr + 8, zcf_u8(in));
    hdr_addr = vzf_buf(f, in, sizeof(hdr));
    qtest_memwrite(f->s, hdr_addr, hdr, sizeof(hdr));

    if (status_first) {
        d[n++] = (typeof(d[0])) { vzf_buf(f, in, 1), 1, true };
    }
    if (split_hdr) {
        d[n++] = (typeof(d[0])) { hdr_addr, 8, false };
        d[n++] = (typeof(d[0])) { hdr_addr + 8, 8, false };
    } else {
        d[n++] = (typeof(d[0])) { hdr_addr, sizeof(hdr), false };
    }
    for (i = 0; i < nseg && n < MAX_DESCS - 1; i++) {
        uint32_t len = vzf_len(in);

        d[n++] = (typeof(d[0])) { vzf_buf(f, in, len), len, false };
    }
    if (!status_first) {
        uint8_t sl = zcf_u8(in);
        uint32_t len = sl < 0xe0 ? 1 : sl - 0xe0;

        d[n++] = (typeof(d[0])) { vzf_buf(f, in, len), len, true };
    }

    if (indirect) {
        table = f->area + VZF_AREA_SIZE - MAX_DESCS * 16 * 4 +
                (zcf_u8(in) % 4) * MAX_DESCS * 16;
        for (i = 0; i < n; i++) {
            vzf_write_desc(f, table, i, d[i].addr, d[i].len,
                           (d[i].write ? VRING_DESC_F_WRITE : 0) |
                           (i < n - 1 ? VRING_DESC_F_NEXT : 0), i + 1);
        }
        head = f->next_desc[q]++ % vq->size;
        vzf_write_desc(f, vq->desc, head, table, n * 16,
                       VRING_DESC_F_INDIRECT, 0);
    } else {
        head = f->next_desc[q] % vq->size;
        for (i = 0; i < n; i++) {
            uint16_t cur = f->next_desc[q]++ % vq->size;

            vzf_write_desc(f, vq->desc, cur, d[i].addr, d[i].len,
                           (d[i].write ? VRING_DESC_F_WRITE : 0) |
                           (i < n - 1 ? VRING_DESC_F_NEXT : 0),
                           f->next_desc[q] % vq->size);
        }
    }
    vzf_publish(f, q, head, zcf_u8(in) < 0xe0);
}

/* Raw descriptors: any flags, lengths, addresses and next indices */
static void vzf_raw_chain(VZFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);
    int q = k & 1;
    QVirtQueue *vq = f->vq[q];
    unsigned n = (k >> 1) % 4 + 1, i;
    uint16_t head = f->next_desc[q] % vq->size;

    for (i = 0; i < n; i++) {
        uint16_t cur = f->next_desc[q]++ % vq->size;
        uint32_t len = vzf_len(in);
        uint64_t addr = vzf_buf(f, in, len);
        uint16_t flags = zcf_u8(in) & 7;
        uint16_t next = zcf_u8(in) < 0xc0 ? f->next_desc[q] % vq->size :
                        zcf_u16(in);

        vzf_write_desc(f, vq->desc, cur, addr, len, flags, next);
    }
    vzf_publish(f, q, head, true);
}

static void vzf_recv(VZFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);
    int i = k & 1;
    char buf[64 * KiB];

    switch ((k >> 1) % 4) {
    case 0: {
        /*
         * A receiver connects; a small buffer makes it stall early. The
         * connect does not block: the device accepts from the main loop.
         */
        struct sockaddr_in sa = {
            .sin_family = AF_INET,
            .sin_port = htons(vzf_port),
            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        int rcvbuf = (k & 0x80) ? 4096 : 256 * KiB;

        if (f->rfd[i] >= 0) {
            break;
        }
        f->rfd[i] = socket(AF_INET, SOCK_STREAM, 0);
        g_assert(f->rfd[i] >= 0);
        setsockopt(f->rfd[i], SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                   sizeof(rcvbuf));
        qemu_socket_set_nonblock(f->rfd[i]);
        if (connect(f->rfd[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
            errno != EINPROGRESS) {
            close(f->rfd[i]);
            f->rfd[i] = -1;
        }
        break;
    }
    case 1:
        /* drain everything that arrived */
        while (f->rfd[i] >= 0 &&
               recv(f->rfd[i], buf, sizeof(buf), MSG_DONTWAIT) > 0) {
            flush_events(f->s);
        }
        break;
    case 2:
        /* read a little */
        if (f->rfd[i] >= 0) {
            recv(f->rfd[i], buf, zcf_u16(in) % sizeof(buf) + 1,
                 MSG_DONTWAIT);
        }
        break;
    default:
        /* disconnect: orderly, or abortive with unread data */
        if (f->rfd[i] >= 0) {
            if (k & 0x80) {
                struct linger lg = { .l_onoff = 1, .l_linger = 0 };

                setsockopt(f->rfd[i], SOL_SOCKET, SO_LINGER, &lg,
                           sizeof(lg));
            }
            close(f->rfd[i]);
            f->rfd[i] = -1;
        }
        break;
    }
}

/* Bring the device up as a driver does, with fuzzed features */
static void vzf_dev_start(VZFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);
    uint64_t features = 1ull << VIRTIO_F_VERSION_1;
    int i;

    if (k & 1) {
        features |= 1ull << VIRTIO_ZC_F_TIMEOUT;
    }
    if (k & 2) {
        features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
    }
    if (k & 4) {
        features |= 1ull << VIRTIO_RING_F_EVENT_IDX;
    }
    qvirtio_start_device(f->vdev);
    qvirtio_set_features(f->vdev, features & qvirtio_get_features(f->vdev));
    for (i = 0; i < VZF_NQ; i++) {
        if (f->vq[i]) {
            qvirtqueue_cleanup(f->vdev->bus, f->vq[i], &f->alloc);
        }
        f->vq[i] = qvirtqueue_setup(f->vdev, &f->alloc, i);
        f->next_desc[i] = 0;
    }
    if (!(k & 0x80)) {
        qvirtio_set_driver_ok(f->vdev);
    }
}

static void virtio_zc_fuzz(QTestState *s, const unsigned char *data,
                           size_t size)
{
    ZCFuzzInput in = { data, size };
    QPCIAddress addr = { .devfn = VZF_DEVFN };
    VZFuzz f = { .s = s, .rfd = { -1, -1 } };
    uint8_t buf[256];
    unsigned n, i;

    pc_alloc_init(&f.alloc, s, ALLOC_NO_FLAGS);
    f.area = guest_alloc(&f.alloc, VZF_AREA_SIZE);
    f.bus = qpci_new_pc(s, NULL);
    f.dev = virtio_pci_new(f.bus, &addr);
    g_assert(f.dev);
    f.vdev = &f.dev->vdev;
    qvirtio_pci_device_enable(f.dev);
    vzf_dev_start(&f, &in);

    for (n = 0; in.n && n < MAX_ACTIONS; n++) {
        uint8_t k;

        switch (zcf_u8(&in) % ACT__MAX) {
        case ACT_REQ:
            vzf_request(&f, &in);
            break;
        case ACT_RAW_CHAIN:
            vzf_raw_chain(&f, &in);
            break;
        case ACT_KICK:
            k = zcf_u8(&in) & 1;
            f.vdev->bus->virtqueue_kick(f.vdev, f.vq[k]);
            break;
        case ACT_AVAIL_IDX:
            k = zcf_u8(&in) & 1;
            qtest_writew(s, f.vq[k]->avail + 2, zcf_u16(&in));
            f.vdev->bus->virtqueue_kick(f.vdev, f.vq[k]);
            break;
        case ACT_CLOCK:
            qtest_clock_step(s, ((uint64_t)zcf_u8(&in) + 1) * 4 * SCALE_MS);
            break;
        case ACT_RECV:
            vzf_recv(&f, &in);
            break;
        case ACT_DEV_RESET:
            vzf_dev_start(&f, &in);
            break;
        case ACT_STATUS:
            f.vdev->bus->set_status(f.vdev, zcf_u8(&in));
            break;
        case ACT_CONFIG:
            qvirtio_config_readl(f.vdev, (zcf_u8(&in) % 8) * 4);
            break;
        case ACT_REWRITE:
            /* the guest writes to buffers that may be in flight */
            k = zcf_u8(&in);
            memset(buf, k, sizeof(buf));
            qtest_memwrite(s, f.area + (zcf_u16(&in) * 64) %
                           (VZF_AREA_SIZE - sizeof(buf)), buf, sizeof(buf));
            break;
        }
        flush_events(s);
    }

    if (getenv("QEMU_ZC_FUZZ_DEBUG")) {
        /* how deep the input got: the device's counters (since start) */
        static const char *const names[] = {
            "requests", "completed", "sent", "bytes", "reclaimed", "copied",
            "dest-errors", "bad-requests", "offlined-bytes",
        };
        Object *o = object_resolve_path_type("", "virtio-zc-device", NULL);

        for (i = 0; i < ARRAY_SIZE(names); i++) {
            fprintf(stderr, "%s %" PRIu64 "%s", names[i],
                    object_property_get_uint(o, names[i], NULL),
                    i < ARRAY_SIZE(names) - 1 ? ", " : "\n");
        }
    }
    fuzz_reset(s);
    for (i = 0; i < VZF_NQ; i++) {
        if (f.rfd[i] >= 0) {
            close(f.rfd[i]);
        }
    }
    flush_events(s);
    for (i = 0; i < VZF_NQ; i++) {
        qvirtqueue_cleanup(f.vdev->bus, f.vq[i], &f.alloc);
    }
    g_free(f.dev->pdev);
    g_free(f.dev);
    qpci_free_pc(f.bus);
    alloc_destroy(&f.alloc);
}

static GString *virtio_zc_fuzz_cmdline(FuzzTarget *t)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    GString *cmd = g_string_new(TARGET_NAME);

    /* A free port for the device to listen on */
    g_assert(fd >= 0);
    g_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    g_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    vzf_port = ntohs(sa.sin_port);
    close(fd);
    g_string_append_printf(cmd, " -machine q35,accel=qtest -nodefaults"
                           " -display none -m 512M"
                           " -device virtio-zc-pci,addr=04.0,num-queues=%d,"
                           "listen=127.0.0.1:%d,sndbuf=65536,timeout-ms=20,"
                           "max-inflight=16,max-segments=4,"
                           "max-data-len=262144",
                           VZF_NQ, vzf_port);
    return cmd;
}

static void register_virtio_zc_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "qemu-zc-virtio-zc-fuzz",
        .description = "Fuzz virtio-zc's transmit queues with random"
                       " requests against receivers that stall,"
                       " drain and disconnect",
        .get_init_cmdline = virtio_zc_fuzz_cmdline,
        .fuzz = virtio_zc_fuzz,
    });
}

fuzz_target_init(register_virtio_zc_fuzz_targets);
