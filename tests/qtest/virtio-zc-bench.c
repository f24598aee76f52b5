/*
 * virtio-zc device benchmark (bench/virtio-zc-bench.sh runs it)
 *
 * Drives virtio-zc through qtest against loopback receivers that this
 * program runs, and prints each figure next to a baseline measured in
 * the same run, with the repetitions of all cases interleaved:
 *
 * - reset: the wall time of a device reset with N stalled buffers in
 *   flight (the receivers do not read), against a reset of the same
 *   device with nothing in flight, and against the copy floor: N
 *   buffers copied into memory not mapped before, in this process (a
 *   reclaim gives the guest new pages with the old contents: the copy
 *   and the page faults are the least it costs). The buffers lie back to back in a
 *   2 MiB-aligned region of guest RAM. Each case runs on THP-backed
 *   guest RAM (what QEMU asks for, MADV_HUGEPAGE) and on 4 KiB pages
 *   (QEMU started with PR_SET_THP_DISABLE), and prints the memory it
 *   found under the buffers (pagemap and kpageflags, or smaps). N above
 *   64 spreads the buffers over N / 64 transmit queues, so that every
 *   buffer is in a socket's send queue, not just held by the device.
 *   Every buffer must be completed once, with status RECLAIMED and
 *   unchanged bytes, or the run fails.
 *   Each device's spare-pool covers its N buffers (at least the default
 *   8 MiB), so that every reset takes its new pages from spares faulted
 *   in before; -P leaves it at the default.
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
#include <sys/prctl.h>
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
#define STALL_RCVBUF    65536
#define PER_QUEUE       64          /* stalled buffers per transmit queue */
#define HUGE_ALIGN      (2 * 1024 * 1024)
#define POLL_US         100
#define GIVE_UP_US      (20 * G_USEC_PER_SEC)   /* a hang guard only */

typedef enum MemType {
    MEM_THP,        /* QEMU's default: guest RAM madvised MADV_HUGEPAGE */
    MEM_4K,         /* QEMU started with transparent huge pages disabled */
    MEM__MAX,
} MemType;

static const char *const mem_names[MEM__MAX] = { "THP", "4 KiB" };

typedef struct Bench {
    QTestState *qts;
    QGuestAllocator alloc;
    QPCIBus *bus;
    QVirtioPCIDevice *dev;
    uint32_t nq;
    QVirtQueue *vq[VIRTIO_ZC_MAX_QUEUES];
    int lfd, rfd[VIRTIO_ZC_MAX_QUEUES];
    uint64_t *hdr, *data, *st;  /* guest addresses, one per slot */
    uint8_t *want;              /* the bytes of every slot */
    uint32_t slots, len;        /* slot i is on queue i % nq */
} Bench;

/* The receiver thread of the throughput runs */
typedef struct Drain {
    int fd;
    const uint8_t *want;
    uint32_t slots, len;
    uint64_t msgs;              /* messages to receive */
    uint64_t bad;               /* messages with a wrong frame or byte */
} Drain;

static int bench_listen(int rcvbuf, int backlog, int *port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t salen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    g_assert(fd >= 0);
    if (rcvbuf) {
        /* Inherited by the accepted sockets */
        g_assert(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                            sizeof(rcvbuf)) == 0);
    }
    g_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    g_assert(listen(fd, backlog) == 0);
    g_assert(getsockname(fd, (struct sockaddr *)&sa, &salen) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* The buffer of every slot, distinct per slot and offset */
static void slot_bytes(uint8_t *buf, uint32_t slot, uint32_t len)
{
    uint32_t j;

    for (j = 0; j < len; j++) {
        buf[j] = slot * 29 + j * 7 + (j >> 9);
    }
}

/*
 * A device with @nq transmit queues, all to one receiver of SO_RCVBUF
 * @rcvbuf, and @slots requests ready to post. Their data buffers lie
 * back to back from a 2 MiB-aligned guest address. @mem decides whether
 * QEMU may back guest RAM with transparent huge pages.
 */
static void bench_start(Bench *b, uint32_t nq, uint32_t slots, uint32_t len,
                        int rcvbuf, MemType mem, const char *props)
{
    QPCIAddress addr = { .devfn = BENCH_DEVFN };
    g_autoptr(GString) dest = g_string_new("");
    g_autofree uint8_t *buf = g_malloc(len);
    uint64_t region;
    uint32_t i;
    int port;

    g_assert(nq >= 1 && nq <= VIRTIO_ZC_MAX_QUEUES && slots >= nq);
    memset(b, 0, sizeof(*b));
    b->nq = nq;
    b->slots = slots;
    b->len = len;
    b->lfd = bench_listen(rcvbuf, nq, &port);
    for (i = 0; i < nq; i++) {
        /* ';' needs no escaping on -device, unlike ',' */
        g_string_append_printf(dest, "%s127.0.0.1:%d", i ? ";" : "", port);
    }
    /* Inherited by QEMU through fork() and execve() */
    g_assert(prctl(PR_SET_THP_DISABLE, mem == MEM_4K, 0, 0, 0) == 0);
    b->qts = qtest_initf("-machine pc -m 1G -device 'virtio-zc-pci,id=zc,"
                         "addr=06.0,dest=%s,num-queues=%u,max-inflight=%u,"
                         "%s'", dest->str, nq, DIV_ROUND_UP(slots, nq),
                         props);
    g_assert(prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0) == 0);
    /* The device connects queue by queue, in order */
    for (i = 0; i < nq; i++) {
        b->rfd[i] = accept(b->lfd, NULL, NULL);
        g_assert(b->rfd[i] >= 0);
    }
    pc_alloc_init(&b->alloc, b->qts, ALLOC_NO_FLAGS);
    b->bus = qpci_new_pc(b->qts, NULL);
    b->dev = virtio_pci_new(b->bus, &addr);
    g_assert(b->dev && b->dev->vdev.device_type == VIRTIO_ID_ZC);
    qvirtio_pci_device_enable(b->dev);
    qvirtio_start_device(&b->dev->vdev);
    qvirtio_set_features(&b->dev->vdev, 1ull << VIRTIO_F_VERSION_1);
    for (i = 0; i < nq; i++) {
        b->vq[i] = qvirtqueue_setup(&b->dev->vdev, &b->alloc, i);
    }
    qvirtio_set_driver_ok(&b->dev->vdev);

    b->hdr = g_new(uint64_t, slots);
    b->data = g_new(uint64_t, slots);
    b->st = g_new(uint64_t, slots);
    b->want = g_malloc((size_t)slots * len);
    region = guest_alloc(&b->alloc, (size_t)slots * len + HUGE_ALIGN);
    region = ROUND_UP(region, HUGE_ALIGN);
    for (i = 0; i < slots; i++) {
        struct virtio_zc_req_hdr h = { .tag = cpu_to_le64(i) };

        b->hdr[i] = guest_alloc(&b->alloc, sizeof(h));
        qtest_memwrite(b->qts, b->hdr[i], &h, sizeof(h));
        b->data[i] = region + (uint64_t)i * len;
        slot_bytes(buf, i, len);
        qtest_bufwrite(b->qts, b->data[i], buf, len);
        memcpy(b->want + (size_t)i * len, buf, len);
        b->st[i] = guest_alloc(&b->alloc, 1);
    }
}

static void bench_stop(Bench *b)
{
    uint32_t i;

    for (i = 0; i < b->nq; i++) {
        qvirtqueue_cleanup(b->dev->vdev.bus, b->vq[i], &b->alloc);
    }
    qvirtio_pci_device_disable(b->dev);
    g_free(b->dev->pdev);
    g_free(b->dev);
    qpci_free_pc(b->bus);
    alloc_destroy(&b->alloc);
    qtest_quit(b->qts);
    for (i = 0; i < b->nq; i++) {
        close(b->rfd[i]);
    }
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

    for (i = 0; i < b->nq; i++) {
        qvirtqueue_reset_pool(b->vq[i]);
    }
    for (i = 0; i < b->slots; i++) {
        QVirtQueue *vq = b->vq[i % b->nq];

        qtest_writeb(b->qts, b->st[i], 0xff);
        head = qvirtqueue_add(b->qts, vq, b->hdr[i],
                              sizeof(struct virtio_zc_req_hdr), false, true);
        qvirtqueue_add(b->qts, vq, b->data[i], b->len, false, true);
        qvirtqueue_add(b->qts, vq, b->st[i], 1, true, false);
        qvirtqueue_kick(b->qts, &b->dev->vdev, vq, head);
    }
}

/*
 * Collect b->slots used elements of a one-queue device; each slot exactly
 * once, with a status in @ok_mask. Returns false on any violation.
 */
static bool bench_collect(Bench *b, uint32_t ok_mask)
{
    g_autofree bool *seen = g_new0(bool, b->slots);
    gint64 start = g_get_monotonic_time();
    uint32_t got = 0, head, len, slot;
    uint8_t status;

    g_assert(b->nq == 1);
    while (got < b->slots) {
        if (!qvirtqueue_get_buf(b->qts, b->vq[0], &head, &len)) {
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

/* The host address of guest-physical @gpa (in pc.ram, below 3 GiB) */
static uint64_t bench_hva(Bench *b, uint64_t gpa)
{
    g_autofree char *out = qtest_hmp(b->qts, "info ramblock");
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    char name[64];
    uint64_t offset, used, total, hva;
    int i;

    for (i = 0; lines[i]; i++) {
        /* The page size is a number and a unit: "4 KiB" */
        if (sscanf(lines[i], "%63s %*s %*s 0x%" SCNx64 " 0x%" SCNx64 " 0x%"
                   SCNx64 " 0x%" SCNx64, name, &offset, &used, &total,
                   &hva) == 5 && !strcmp(name, "pc.ram")) {
            return hva + gpa;
        }
    }
    g_assert_not_reached();
}

/*
 * How many of the pages of guest RAM [@gpa, @gpa + @len) QEMU has in
 * transparent huge pages (kpageflags bit 22, KPF_THP), or -1 if this
 * process cannot tell (no PFNs in pagemap without CAP_SYS_ADMIN)
 */
static long bench_thp_pages(Bench *b, uint64_t gpa, size_t len)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/pagemap",
                                            (int)qtest_pid(b->qts));
    uint64_t hva = bench_hva(b, gpa);
    int pm = open(path, O_RDONLY);
    int kf = open("/proc/kpageflags", O_RDONLY);
    long thp = 0;
    size_t off;

    for (off = 0; pm >= 0 && kf >= 0 && off < len; off += 4096) {
        uint64_t e, flags, pfn;

        if (pread(pm, &e, 8, (hva + off) / 4096 * 8) != 8) {
            thp = -1;
            break;
        }
        pfn = e & ((1ull << 55) - 1);
        if (!(e >> 63)) {
            continue;           /* not present: not in a huge page */
        }
        if (!pfn || pread(kf, &flags, 8, pfn * 8) != 8) {
            thp = -1;
            break;
        }
        thp += (flags >> 22) & 1;
    }
    if (pm < 0 || kf < 0) {
        thp = -1;
    }
    if (pm >= 0) {
        close(pm);
    }
    if (kf >= 0) {
        close(kf);
    }
    return thp;
}

static void bench_wait_counter(Bench *b, const char *name, uint64_t want,
                               bool *ok)
{
    gint64 start = g_get_monotonic_time();

    while (bench_counter(b, name) != want) {
        if (g_get_monotonic_time() - start > GIVE_UP_US) {
            fprintf(stderr, "gave up waiting for %s = %" PRIu64 " (%"
                    PRIu64 "; requests %" PRIu64 ", completed %" PRIu64
                    ", copied %" PRIu64 ", dest-errors %" PRIu64 ")\n",
                    name, want, bench_counter(b, name),
                    bench_counter(b, "requests"),
                    bench_counter(b, "completed"),
                    bench_counter(b, "copied"),
                    bench_counter(b, "dest-errors"));
            *ok = false;
            return;
        }
        g_usleep(POLL_US);
    }
}

/* -P not given: each device gets a spare-pool that covers its buffers */
static bool size_pool = true;

/* The buffers' bytes, in 2 MiB, at least the device's default 8 MiB */
static uint64_t spare_pool_for(uint32_t posted, uint32_t len)
{
    return MAX(ROUND_UP((uint64_t)posted * len, 2 << 20), 8 << 20);
}

/*
 * One reset of a fresh device with @posted buffers posted and written
 * whole, in us. The receivers take the first few messages into their
 * 64 KiB receive buffers and then stall; the others stay in flight.
 * *@thp_pages receives how many of the pages of the buffers were in huge
 * pages, *@inflight how many requests the reset took back.
 */
static gint64 reset_once(uint32_t posted, uint32_t len, MemType mem,
                         bool *ok, long *thp_pages, uint32_t *inflight)
{
    uint32_t nq = posted ? DIV_ROUND_UP(posted, PER_QUEUE) : 1;
    g_autofree uint8_t *now = g_malloc(len);
    g_autofree char *props = NULL;
    uint64_t done = 0;
    Bench b;
    gint64 t0, dt;
    uint32_t i;
    uint8_t status;

    props = g_strdup("sndbuf=" stringify(STALL_SNDBUF) ",timeout-ms=60000");
    if (size_pool) {
        g_autofree char *base = props;

        props = g_strdup_printf("%s,spare-pool=%" PRIu64, base,
                                spare_pool_for(posted, len));
    }
    bench_start(&b, nq, MAX(posted, 1), len, STALL_RCVBUF, mem, props);
    *inflight = 0;
    if (posted) {
        *thp_pages = bench_thp_pages(&b, b.data[0], (size_t)posted * len);
        bench_post_all(&b);
        /* Every message written whole: the socket references each */
        bench_wait_counter(&b, "sent", posted, ok);
        /* Let the completions of what the receivers took arrive */
        g_usleep(20 * 1000);
        done = bench_counter(&b, "completed");
        *inflight = bench_counter(&b, "in-flight");
    }
    t0 = g_get_monotonic_time();
    qvirtio_reset(&b.dev->vdev);
    dt = g_get_monotonic_time() - t0;

    /*
     * Reset returned every buffer still held, as the spec says: status
     * RECLAIMED written (the used ring is being reset, so not there),
     * bytes unchanged, nothing left in flight; every buffer completed
     * exactly once.
     */
    if (posted && (bench_counter(&b, "in-flight") != 0 ||
                   bench_counter(&b, "reclaimed") != *inflight ||
                   bench_counter(&b, "completed") != posted ||
                   done + *inflight != posted)) {
        fprintf(stderr, "reset left buffers behind\n");
        *ok = false;
    }
    for (i = 0; i < posted && *ok; i++) {
        qtest_bufread(b.qts, b.data[i], now, len);
        status = qtest_readb(b.qts, b.st[i]);
        if ((status != VIRTIO_ZC_S_RECLAIMED && status != VIRTIO_ZC_S_OK) ||
            memcmp(now, b.want + (size_t)i * len, len)) {
            fprintf(stderr, "slot %u: status %u, or changed\n", i, status);
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

    bench_start(&b, 1, slots, len, 0, MEM_THP,
                zerocopy ? "zerocopy=on" : "zerocopy=off");
    d = (Drain) { .fd = b.rfd[0], .want = b.want, .slots = slots, .len = len,
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
        shutdown(b.rfd[0], SHUT_RDWR);
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

/*
 * The least a reclaim of @len bytes does, measured in this process: copy
 * them into memory that was not mapped before (page faults included), as
 * offlining gives the guest new pages with the old contents. In us.
 */
static gint64 copy_floor_once(size_t len)
{
    uint8_t *src = mmap(NULL, len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *dst = mmap(NULL, len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gint64 t0, dt;

    g_assert(src != MAP_FAILED && dst != MAP_FAILED);
    memset(src, 0x3c, len);
    t0 = g_get_monotonic_time();
    memcpy(dst, src, len);
    dt = g_get_monotonic_time() - t0;
    munmap(src, len);
    munmap(dst, len);
    return dt;
}

static void print_loadavg(const char *when)
{
    g_autofree char *text = NULL;

    if (g_file_get_contents("/proc/loadavg", &text, NULL, NULL)) {
        *strchrnul(text, ' ') = 0;
        printf("load average (1 min) %s: %s\n", when, text);
    }
}

static const char *mem_label(MemType mem, long thp, uint32_t pages)
{
    static char buf[64];

    if (thp < 0) {
        snprintf(buf, sizeof(buf), "%s (page types unknown)", mem_names[mem]);
    } else {
        snprintf(buf, sizeof(buf), "%s (%ld/%u pages in THPs)",
                 mem_names[mem], thp, pages);
    }
    return buf;
}

int main(int argc, char **argv)
{
    uint32_t len = 64 * 1024, slots = 32, rounds = 16;
    g_autofree char *list = g_strdup("64,1024");
    g_auto(GStrv) counts = NULL;
    int reps = 5, i, c, k, m, ncounts;
    bool ok = true, mems[MEM__MAX] = { true, true }, tput = true;
    g_autofree gint64 *idle = NULL;
    g_autofree gint64 *busy = NULL;      /* [count][mem][rep] */
    g_autofree gint64 *floor = NULL;     /* [count][rep] */
    g_autofree long *thp = NULL;         /* least THP pages seen */
    g_autofree uint32_t *held = NULL;    /* least requests reset took */
    g_autofree uint32_t *stalled = NULL;
    g_autofree Tput *zc = NULL, *cp = NULL;
    double mib;

    while ((c = getopt(argc, argv, "n:s:r:m:t:RP")) != -1) {
        switch (c) {
        case 'n':
            g_free(list);
            list = g_strdup(optarg);
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
        case 't':
            mems[MEM_THP] = strstr(optarg, "thp") != NULL;
            mems[MEM_4K] = strstr(optarg, "4k") != NULL;
            break;
        case 'R':
            tput = false;
            break;
        case 'P':
            size_pool = false;
            break;
        default:
            fprintf(stderr, "usage: %s [-n STALLED[,STALLED...]] [-s SIZE]"
                    " [-r REPETITIONS] [-m ROUNDS] [-t thp,4k] [-R] [-P]\n",
                    argv[0]);
            return 2;
        }
    }
    counts = g_strsplit(list, ",", -1);
    ncounts = g_strv_length(counts);
    stalled = g_new(uint32_t, MAX(ncounts, 1));
    for (k = 0; k < ncounts; k++) {
        stalled[k] = atoi(counts[k]);
        if (!stalled[k] || (stalled[k] > PER_QUEUE &&
                            stalled[k] % PER_QUEUE) ||
            stalled[k] > PER_QUEUE * VIRTIO_ZC_MAX_QUEUES) {
            ncounts = 0;
        }
    }
    if (!ncounts || len < 4096 || len > (1 << 20) || reps < 1 ||
        rounds < 1 || !(mems[MEM_THP] || mems[MEM_4K])) {
        fprintf(stderr, "out of range: 1 <= STALLED <= %d, a multiple of"
                " %d above %d; 4096 <= SIZE <= 1 MiB; REPETITIONS and"
                " ROUNDS >= 1; -t names thp, 4k or both\n",
                PER_QUEUE * VIRTIO_ZC_MAX_QUEUES, PER_QUEUE, PER_QUEUE);
        return 2;
    }
    idle = g_new(gint64, reps);
    busy = g_new0(gint64, (size_t)ncounts * MEM__MAX * reps);
    floor = g_new0(gint64, (size_t)ncounts * reps);
    thp = g_new(long, (size_t)ncounts * MEM__MAX);
    held = g_new(uint32_t, (size_t)ncounts * MEM__MAX);
    for (k = 0; k < ncounts * MEM__MAX; k++) {
        thp[k] = LONG_MAX;
        held[k] = UINT32_MAX;
    }
    zc = g_new(Tput, reps);
    cp = g_new(Tput, reps);

    printf("virtio-zc device benchmark, %d repetitions interleaved, "
           "medians\n", reps);
    print_loadavg("at the start");
    if (size_pool) {
        printf("each device's spare-pool: its N buffers' bytes rounded up to"
               " 2 MiB, at least 8 MiB\n  (QEMU memory kept faulted in; -P:"
               " the default 8 MiB)\n");
    } else {
        printf("each device's spare-pool: the default 8 MiB\n");
    }
    for (i = 0; i < reps && ok; i++) {
        uint32_t n;
        long pages;

        idle[i] = reset_once(0, len, MEM_THP, &ok, &pages, &n);
        for (k = 0; k < ncounts && ok; k++) {
            floor[k * reps + i] = copy_floor_once((size_t)stalled[k] * len);
            for (m = 0; m < MEM__MAX && ok; m++) {
                int at = k * MEM__MAX + m;

                if (!mems[m]) {
                    continue;
                }
                busy[at * reps + i] = reset_once(stalled[k], len, m, &ok,
                                                 &pages, &n);
                thp[at] = MIN(thp[at], pages);
                held[at] = MIN(held[at], n);
            }
        }
        if (tput) {
            zc[i] = tput_once(true, slots, len, rounds, &ok);
            cp[i] = tput_once(false, slots, len, rounds, &ok);
        }
    }
    if (!ok) {
        fprintf(stderr, "virtio-zc-bench: FAILED (see above)\n");
        return 1;
    }

    printf("reset with N %u KiB buffers sent with zero copy (back to back,"
           " 2 MiB-aligned), of\nwhich the receivers (SO_RCVBUF %d, not"
           " reading) left 'held' in flight, against an\nidle reset"
           " (baseline, median %.2f ms):\n", len / 1024, STALL_RCVBUF,
           median(idle, reps) / 1000.0);
    printf("  %5s %5s  %-34s %9s %14s %7s %7s\n", "N", "held",
           "guest RAM under the buffers", "reset ms", "per buffer us",
           "x idle", "x copy");
    for (k = 0; k < ncounts; k++) {
        for (m = 0; m < MEM__MAX; m++) {
            int at = k * MEM__MAX + m;
            gint64 med;

            if (!mems[m]) {
                continue;
            }
            med = median(busy + at * reps, reps);
            printf("  %5u %5u  %-34s %9.2f %14.1f %7.1f %7.1f\n", stalled[k],
                   held[at], mem_label(m, thp[at], stalled[k] * (len / 4096)),
                   med / 1000.0, (double)med / MAX(held[at], 1),
                   (double)med / MAX(median(idle, reps), 1),
                   (double)med / MAX(median(floor + k * reps, reps), 1));
        }
    }
    for (k = 0; k < ncounts; k++) {
        printf("  copy floor (baseline): N x %u KiB copied into new pages in"
               " this process, median %.2f ms\n", len / 1024,
               median(floor + k * reps, reps) / 1000.0);
    }
    for (k = 1; k < ncounts; k++) {
        for (m = 0; m < MEM__MAX; m++) {
            if (mems[m]) {
                printf("  per-buffer time, N=%u against N=%u (%s): x%.2f"
                       "\n", stalled[k], stalled[0], mem_names[m],
                       ((double)median(busy + (k * MEM__MAX + m) * reps,
                                       reps) /
                        MAX(held[k * MEM__MAX + m], 1)) /
                       ((double)MAX(median(busy + m * reps, reps), 1) /
                        MAX(held[m], 1)));
            }
        }
    }

    if (tput) {
        qsort(zc, reps, sizeof(*zc), cmp_tput);
        qsort(cp, reps, sizeof(*cp), cmp_tput);
        mib = (double)slots * rounds * len / (1 << 20);
        printf("throughput, %u x %u KiB requests to a draining loopback"
               " receiver (guest RAM: THP):\n", slots * rounds, len / 1024);
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
    }
    print_loadavg("at the end");
    return 0;
}
