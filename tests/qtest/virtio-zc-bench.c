/*
 * virtio-zc device benchmark (bench/virtio-zc-bench.sh runs it)
 *
 * Drives virtio-zc through qtest against a loopback receiver that this
 * program runs, and prints each figure next to a baseline measured in
 * the same run:
 *
 * - reset: the wall time of a device reset with N stalled buffers in
 *   flight (the receiver does not read), against a reset of the same
 *   device with nothing in flight. Every buffer must be completed once,
 *   with status RECLAIMED and unchanged bytes, or the run fails.
 * - throughput: M requests sent to a receiver that drains, with zero
 *   copy (zerocopy=on) against the copy path (zerocopy=off): wall time,
 *   MiB/s, and QEMU's CPU time per MiB (utime + stime of the QEMU
 *   process). The receiver checks every byte.
 *
 * Both include the qtest round trips of posting and polling, which are
 * the same on both sides of each ratio. Nothing here is a pass/fail
 * timing: only correctness failures make it exit non-zero.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include "libqtest.h"
#include "qemu/bswap.h"
#include "qemu/thread.h"
#include "libqos/pci-pc.h"
#include "libqos/malloc-pc.h"
#include "libqos/virtio.h"
#include "libqos/virtio-pci.h"
#include "standard-headers/linux/virtio_config.h"
#include "hw/virtio-zc/virtio-zc-abi.h"

#define BENCH_DEVFN     QPCI_DEVFN(6, 0)
#define STALL_SNDBUF    8388608
#define POLL_US         100
#define GIVE_UP_US      (60 * G_USEC_PER_SEC)   /* a hang guard only */

typedef struct Bench {
    QTestState *qts;
    QGuestAllocator alloc;
    QPCIBus *bus;
    QVirtioPCIDevice *dev;
    QVirtQueue *vq;
    int lfd, rfd;
    uint64_t *hdr, *data, *st;  /* guest addresses, one per slot */
    uint8_t *want;              /* the bytes of every slot */
    uint32_t slots, len;
} Bench;

/* The receiver thread of the throughput runs */
typedef struct Drain {
    int fd;
    const uint8_t *want;
    uint32_t slots, len;
    uint64_t msgs;              /* messages to receive */
    uint64_t bad;               /* messages with a wrong frame or byte */
} Drain;

static int bench_listen(int rcvbuf, int *port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t salen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    g_assert(fd >= 0);
    if (rcvbuf) {
        g_assert(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                            sizeof(rcvbuf)) == 0);
    }
    g_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    g_assert(listen(fd, 1) == 0);
    g_assert(getsockname(fd, (struct sockaddr *)&sa, &salen) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void bench_start(Bench *b, uint32_t slots, uint32_t len, int rcvbuf,
                        const char *props)
{
    QPCIAddress addr = { .devfn = BENCH_DEVFN };
    g_autofree uint8_t *buf = g_malloc(len);
    uint32_t i, j;
    int port;

    memset(b, 0, sizeof(*b));
    b->slots = slots;
    b->len = len;
    b->lfd = bench_listen(rcvbuf, &port);
    b->qts = qtest_initf("-machine pc -m 1G -device virtio-zc-pci,id=zc,"
                         "addr=06.0,dest=127.0.0.1:%d,max-inflight=%u,%s",
                         port, slots, props);
    b->rfd = accept(b->lfd, NULL, NULL);
    g_assert(b->rfd >= 0);
    pc_alloc_init(&b->alloc, b->qts, ALLOC_NO_FLAGS);
    b->bus = qpci_new_pc(b->qts, NULL);
    b->dev = virtio_pci_new(b->bus, &addr);
    g_assert(b->dev && b->dev->vdev.device_type == VIRTIO_ID_ZC);
    qvirtio_pci_device_enable(b->dev);
    qvirtio_start_device(&b->dev->vdev);
    qvirtio_set_features(&b->dev->vdev, 1ull << VIRTIO_F_VERSION_1);
    b->vq = qvirtqueue_setup(&b->dev->vdev, &b->alloc, VIRTIO_ZC_TXQ);
    qvirtio_set_driver_ok(&b->dev->vdev);

    b->hdr = g_new(uint64_t, slots);
    b->data = g_new(uint64_t, slots);
    b->st = g_new(uint64_t, slots);
    b->want = g_malloc((size_t)slots * len);
    for (i = 0; i < slots; i++) {
        struct virtio_zc_req_hdr h = { .tag = cpu_to_le64(i) };

        b->hdr[i] = guest_alloc(&b->alloc, sizeof(h));
        qtest_memwrite(b->qts, b->hdr[i], &h, sizeof(h));
        b->data[i] = guest_alloc(&b->alloc, len);
        for (j = 0; j < len; j++) {
            buf[j] = i * 29 + j * 7 + (j >> 9);
        }
        qtest_memwrite(b->qts, b->data[i], buf, len);
        memcpy(b->want + (size_t)i * len, buf, len);
        b->st[i] = guest_alloc(&b->alloc, 1);
    }
}

static void bench_stop(Bench *b)
{
    qvirtqueue_cleanup(b->dev->vdev.bus, b->vq, &b->alloc);
    qvirtio_pci_device_disable(b->dev);
    g_free(b->dev->pdev);
    g_free(b->dev);
    qpci_free_pc(b->bus);
    alloc_destroy(&b->alloc);
    qtest_quit(b->qts);
    close(b->rfd);
    close(b->lfd);
    g_free(b->hdr);
    g_free(b->data);
    g_free(b->st);
    g_free(b->want);
}

/* Post every slot as one request: header, data, status */
static void bench_post_all(Bench *b)
{
    uint32_t i, head;

    qvirtqueue_reset_pool(b->vq);
    for (i = 0; i < b->slots; i++) {
        qtest_writeb(b->qts, b->st[i], 0xff);
        head = qvirtqueue_add(b->qts, b->vq, b->hdr[i],
                              sizeof(struct virtio_zc_req_hdr), false, true);
        qvirtqueue_add(b->qts, b->vq, b->data[i], b->len, false, true);
        qvirtqueue_add(b->qts, b->vq, b->st[i], 1, true, false);
        qvirtqueue_kick(b->qts, &b->dev->vdev, b->vq, head);
    }
}

/*
 * Collect b->slots used elements; each slot exactly once, with a status
 * in @ok_mask. Returns false on any violation.
 */
static bool bench_collect(Bench *b, uint32_t ok_mask)
{
    g_autofree bool *seen = g_new0(bool, b->slots);
    gint64 start = g_get_monotonic_time();
    uint32_t got = 0, head, len, slot;
    uint8_t status;

    while (got < b->slots) {
        if (!qvirtqueue_get_buf(b->qts, b->vq, &head, &len)) {
            if (g_get_monotonic_time() - start > GIVE_UP_US) {
                fprintf(stderr, "gave up: %u of %u completed\n", got,
                        b->slots);
                return false;
            }
            g_usleep(POLL_US);
            continue;
        }
        slot = head / 3;
        if (head % 3 || slot >= b->slots || seen[slot]) {
            fprintf(stderr, "bad or repeated used element %u\n", head);
            return false;
        }
        seen[slot] = true;
        status = qtest_readb(b->qts, b->st[slot]);
        if (status >= 32 || !(ok_mask & (1u << status))) {
            fprintf(stderr, "slot %u: status %u\n", slot, status);
            return false;
        }
        got++;
    }
    return true;
}

static uint64_t bench_counter(Bench *b, const char *name)
{
    QDict *rsp = qtest_qmp(b->qts, "{'execute': 'qom-get', 'arguments':"
                           " {'path': '/machine/peripheral/zc/virtio-backend',"
                           " 'property': %s}}", name);
    uint64_t v = qdict_get_int(rsp, "return");

    qobject_unref(rsp);
    return v;
}

/* utime + stime of QEMU, in microseconds */
static uint64_t qemu_cpu_us(Bench *b)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat",
                                            (int)qtest_pid(b->qts));
    g_autofree char *text = NULL;
    unsigned long ut = 0, st = 0;
    char *p;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    p = strrchr(text, ')');
    g_assert(p);
    /* fields 14 and 15; p points at the end of field 2 */
    g_assert(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u"
                    " %lu %lu", &ut, &st) == 2);
    return (uint64_t)(ut + st) * G_USEC_PER_SEC / sysconf(_SC_CLK_TCK);
}

static int cmp_i64(const void *a, const void *b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;

    return x < y ? -1 : x > y;
}

static gint64 median(gint64 *v, int n)
{
    qsort(v, n, sizeof(*v), cmp_i64);
    return v[n / 2];
}

/* One reset of a fresh device with @stalled buffers in flight, in us */
static gint64 reset_once(uint32_t stalled, uint32_t len, bool *ok)
{
    Bench b;
    gint64 t0, dt;
    uint32_t i;

    bench_start(&b, MAX(stalled, 1), len, 4096,
                "sndbuf=" stringify(STALL_SNDBUF) ",timeout-ms=60000");
    if (stalled) {
        bench_post_all(&b);
        while (bench_counter(&b, "in-flight") != stalled) {
            g_usleep(POLL_US);
        }
    }
    t0 = g_get_monotonic_time();
    qvirtio_reset(&b.dev->vdev);
    dt = g_get_monotonic_time() - t0;

    /*
     * Reset returned every buffer, as the spec says: status RECLAIMED
     * written (the used ring is being reset, so not there), bytes
     * unchanged, nothing left in flight.
     */
    if (stalled && (bench_counter(&b, "in-flight") != 0 ||
                    bench_counter(&b, "reclaimed") != stalled ||
                    bench_counter(&b, "completed") != stalled)) {
        fprintf(stderr, "reset left buffers behind\n");
        *ok = false;
    }
    for (i = 0; i < stalled && *ok; i++) {
        g_autofree uint8_t *now = g_malloc(len);

        qtest_memread(b.qts, b.data[i], now, len);
        if (qtest_readb(b.qts, b.st[i]) != VIRTIO_ZC_S_RECLAIMED ||
            memcmp(now, b.want + (size_t)i * len, len)) {
            fprintf(stderr, "slot %u: not reclaimed, or changed\n", i);
            *ok = false;
        }
    }
    bench_stop(&b);
    return dt;
}

static bool recv_all(int fd, void *buf, size_t len)
{
    size_t off = 0;
    ssize_t n;

    while (off < len) {
        n = recv(fd, (char *)buf + off, len - off, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return false;
        }
        off += n;
    }
    return true;
}

static void *drain_thread(void *opaque)
{
    Drain *d = opaque;
    g_autofree uint8_t *buf = g_malloc(d->len);
    struct virtio_zc_frame_hdr fh;
    uint64_t m;

    for (m = 0; m < d->msgs; m++) {
        uint64_t tag;

        if (!recv_all(d->fd, &fh, sizeof(fh)) ||
            !recv_all(d->fd, buf, d->len)) {
            d->bad += d->msgs - m;
            break;
        }
        tag = le64_to_cpu(fh.tag);
        if (le32_to_cpu(fh.magic) != VIRTIO_ZC_FRAME_MAGIC ||
            le32_to_cpu(fh.len) != d->len || le64_to_cpu(fh.seq) != m ||
            tag >= d->slots ||
            memcmp(buf, d->want + tag * d->len, d->len)) {
            d->bad++;
        }
    }
    return NULL;
}

typedef struct Tput {
    gint64 wall_us;
    uint64_t cpu_us;
} Tput;

/* Send @rounds × @slots requests to a draining receiver */
static Tput tput_once(bool zerocopy, uint32_t slots, uint32_t len,
                      uint32_t rounds, bool *ok)
{
    Bench b;
    Drain d;
    QemuThread th;
    Tput r;
    uint64_t cpu0;
    uint32_t n;
    gint64 t0;

    bench_start(&b, slots, len, 0, zerocopy ? "zerocopy=on" : "zerocopy=off");
    d = (Drain) { .fd = b.rfd, .want = b.want, .slots = slots, .len = len,
                  .msgs = (uint64_t)slots * rounds };
    qemu_thread_create(&th, "drain", drain_thread, &d, QEMU_THREAD_JOINABLE);

    cpu0 = qemu_cpu_us(&b);
    t0 = g_get_monotonic_time();
    for (n = 0; n < rounds && *ok; n++) {
        bench_post_all(&b);
        *ok = bench_collect(&b, zerocopy ?
                            (1u << VIRTIO_ZC_S_OK) |
                            (1u << VIRTIO_ZC_S_COPIED) :
                            1u << VIRTIO_ZC_S_COPIED);
    }
    r.wall_us = g_get_monotonic_time() - t0;
    r.cpu_us = qemu_cpu_us(&b) - cpu0;
    if (!*ok) {
        shutdown(b.rfd, SHUT_RDWR);
    }
    qemu_thread_join(&th);
    if (d.bad) {
        fprintf(stderr, "receiver: %" PRIu64 " bad messages\n", d.bad);
        *ok = false;
    }
    bench_stop(&b);
    return r;
}

static int cmp_tput(const void *a, const void *b)
{
    return cmp_i64(&((const Tput *)a)->wall_us, &((const Tput *)b)->wall_us);
}

int main(int argc, char **argv)
{
    uint32_t stalled = 64, len = 64 * 1024, slots = 32, rounds = 16;
    int reps = 5, i, c;
    bool ok = true;
    g_autofree gint64 *idle = NULL, *busy = NULL;
    g_autofree Tput *zc = NULL, *cp = NULL;
    double mib;

    while ((c = getopt(argc, argv, "n:s:r:m:")) != -1) {
        switch (c) {
        case 'n':
            stalled = atoi(optarg);
            break;
        case 's':
            len = atoi(optarg);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'm':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-n STALLED] [-s BUFFER-SIZE]"
                    " [-r REPETITIONS] [-m ROUNDS]\n", argv[0]);
            return 2;
        }
    }
    if (!stalled || stalled > 256 || len < 4096 || len > (1 << 20) ||
        reps < 1 || rounds < 1) {
        fprintf(stderr, "out of range: 1 <= STALLED <= 256, 4096 <= SIZE"
                " <= 1 MiB, REPETITIONS and ROUNDS >= 1\n");
        return 2;
    }
    idle = g_new(gint64, reps);
    busy = g_new(gint64, reps);
    zc = g_new(Tput, reps);
    cp = g_new(Tput, reps);

    for (i = 0; i < reps && ok; i++) {
        idle[i] = reset_once(0, len, &ok);
        busy[i] = reset_once(stalled, len, &ok);
        zc[i] = tput_once(true, slots, len, rounds, &ok);
        cp[i] = tput_once(false, slots, len, rounds, &ok);
    }
    if (!ok) {
        fprintf(stderr, "virtio-zc-bench: FAILED (see above)\n");
        return 1;
    }

    printf("virtio-zc device benchmark, %d repetitions, medians\n", reps);
    printf("reset with %u stalled %u KiB buffers: %.2f ms wall;"
           " idle reset (baseline): %.2f ms; ratio %.1f\n",
           stalled, len / 1024, median(busy, reps) / 1000.0,
           median(idle, reps) / 1000.0,
           (double)median(busy, reps) / MAX(median(idle, reps), 1));

    qsort(zc, reps, sizeof(*zc), cmp_tput);
    qsort(cp, reps, sizeof(*cp), cmp_tput);
    mib = (double)slots * rounds * len / (1 << 20);
    printf("throughput, %u x %u KiB requests to a draining loopback"
           " receiver:\n", slots * rounds, len / 1024);
    printf("  %-22s %10s %10s %16s\n", "path", "wall ms", "MiB/s",
           "QEMU CPU us/MiB");
    printf("  %-22s %10.1f %10.1f %16.1f\n", "zero copy",
           zc[reps / 2].wall_us / 1000.0,
           mib * G_USEC_PER_SEC / zc[reps / 2].wall_us,
           zc[reps / 2].cpu_us / mib);
    printf("  %-22s %10.1f %10.1f %16.1f\n", "copy path (baseline)",
           cp[reps / 2].wall_us / 1000.0,
           mib * G_USEC_PER_SEC / cp[reps / 2].wall_us,
           cp[reps / 2].cpu_us / mib);
    printf("  zero copy / copy: wall %.2f, QEMU CPU %.2f\n",
           (double)zc[reps / 2].wall_us / cp[reps / 2].wall_us,
           (double)zc[reps / 2].cpu_us / MAX(cp[reps / 2].cpu_us, 1));
    return 0;
}
