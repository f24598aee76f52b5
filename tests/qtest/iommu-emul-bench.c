/*
 * iommu-emul device benchmark (bench/iommu-emul-bench.sh runs it)
 *
 * Drives iommu-emul through qtest as a guest using it for its DMA API
 * would, with 10, 1000 and 10000 live mappings of one requester, and
 * prints each figure next to a baseline from the same run:
 *
 * - map+unmap: a batch of K MAPs of one page each, then a batch of their
 *   K UNMAPs, each batch with a single doorbell write (iova mode), so the
 *   qtest round trips are shared by K commands. Operations per second,
 *   with the pin cache off and on, and the mlock/munlock system calls
 *   each map+unmap pair cost (from the device's counters).
 * - translate: a virtio-blk behind the IOMMU (gpa mode, iommu_platform)
 *   writes Q requests of 4 MiB to a null block device, all kicked at
 *   once. QEMU translates the buffer page by page when it maps it for
 *   the request; the time per 4 KiB page translated is the difference
 *   between the requester translating and bypassing the IOMMU, divided
 *   by the pages. The mapping that covers the buffers is the newest,
 *   after the live ones, as the buffer mappings of a DMA API are.
 *
 * With IOMMU_EMUL_BENCH_BASE_QEMU set to another QEMU binary (another
 * revision of iommu-emul, built side by side), every figure is measured
 * with it too and printed as a ratio. Only correctness failures (a
 * command that fails, a DMA fault, a request that does not complete with
 * status OK) make it exit non-zero: timings are reported, never asserted.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qemu/bswap.h"
#include "qobject/qdict.h"
#include "libqos/pci-pc.h"
#include "libqos/malloc-pc.h"
#include "libqos/virtio.h"
#include "libqos/virtio-pci.h"
#include "libqos/iommu-emul.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_blk.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define PAGE            0x1000ULL
#define IOMMU_DEVFN     QPCI_DEVFN(4, 0)
#define BLK_DEVFN       QPCI_DEVFN(6, 0)
#define BLK_RID         BLK_DEVFN           /* bus 0 */

/* Guest memory: libqos allocates from 1 MiB up, and needs under 64 MiB */
#define INFRA_GPA       (1ULL << 20)
#define INFRA_LEN       (64ULL << 20)
#define LIVE_GPA        (256ULL << 20)      /* up to 10000 live pages */
#define CHURN_GPA       (320ULL << 20)      /* the pages mapped per round */
#define CMDQ_GPA        (384ULL << 20)
#define CMDQ_LOG2       12                  /* 4096 entries, 256 KiB */
#define FAULTQ_GPA      (386ULL << 20)
#define FAULTQ_LOG2     4

#define MAX_LIVE        10000
#define MAX_CHURN       4095
#define REQ_LEN         (4 << 20)           /* all requests write one buffer */
#define MAX_REQS        64
#define GIVE_UP_US      (60 * G_USEC_PER_SEC)   /* a hang guard only */

static const unsigned lives[] = { 10, 1000, MAX_LIVE };

typedef struct Opts {
    unsigned reps;      /* repetitions of each measurement; medians */
    unsigned churn;     /* K: MAPs (and UNMAPs) per doorbell */
    unsigned reqs;      /* Q: virtio-blk requests per doorbell */
    const char *base;   /* env var of the baseline QEMU, or NULL */
} Opts;

typedef struct Bench {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *iommu;
    QPCIBar regs;
    QIOMMUEmulRing ring;
    bool counters;      /* the QEMU has the pin cache counters */
    /* translate runs */
    QGuestAllocator alloc;
    QVirtioPCIDevice *blk;
    QVirtQueue *vq;
    uint64_t hdr[MAX_REQS], st[MAX_REQS], data;
} Bench;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double now_s(void)
{
    return g_get_monotonic_time() / 1e6;
}

/*
 * CPU time of QEMU's main thread, which runs the device models, in
 * seconds (/proc/PID/schedstat, in ns): unlike wall time, it does not
 * count the time other processes of a loaded machine take.
 */
static double cpu_s(QTestState *qts)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/schedstat",
                                            (int)qtest_pid(qts));
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        fprintf(stderr, "iommu-emul-bench: cannot read %s\n", path);
        exit(1);
    }
    return g_ascii_strtoull(text, NULL, 10) / 1e9;
}

/* A QOM counter of the device, or -1 if this QEMU does not have it */
static int64_t counter(Bench *b, const char *name)
{
    QDict *resp = qtest_qmp(b->qts, "{'execute': 'qom-get', 'arguments':"
                            " {'path': '/machine/peripheral/iommu0',"
                            "  'property': %s}}", name);
    int64_t v = qdict_haskey(resp, "return") ?
                qdict_get_int(resp, "return") : -1;

    qobject_unref(resp);
    return v;
}

/* Start QEMU (@binvar: its env var) with iommu-emul and a virtio-blk */
static void bench_start(Bench *b, const char *binvar, const char *mode,
                        const char *props)
{
    g_autofree char *args = g_strdup_printf(
        "-machine q35 -m 512M -device iommu-emul,id=iommu0,addr=04.0,"
        "bus-addr=%s,max-mappings=16384,cmdq-max-log2=%d,max-pinned=2G%s"
        " -blockdev null-co,node-name=n0,size=1073741824"
        " -device virtio-blk-pci,drive=n0,addr=06.0,disable-legacy=on,"
        "iommu_platform=on", mode, CMDQ_LOG2, props);

    memset(b, 0, sizeof(*b));
    b->qts = qtest_init_with_env(binvar, args, true);
    b->bus = qpci_new_pc(b->qts, NULL);
    b->iommu = qpci_device_find(b->bus, IOMMU_DEVFN);
    g_assert_nonnull(b->iommu);
    qpci_device_enable(b->iommu);
    b->regs = qpci_iomap(b->iommu, IOMMU_EMUL_REGS_BAR, NULL);
    qpci_io_writeq(b->iommu, b->regs, A_FAULTQ_BASE, FAULTQ_GPA);
    qpci_io_writel(b->iommu, b->regs, A_FAULTQ_SIZE, FAULTQ_LOG2);
    qiommu_emul_cmdq_start(&b->ring, b->iommu, b->regs, CMDQ_GPA, CMDQ_LOG2,
                           R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmphex(qpci_io_readl(b->iommu, b->regs, A_STATUS), ==,
                    R_STATUS_CMDQ_ON_MASK | R_STATUS_FAULTQ_ON_MASK);
    b->counters = counter(b, "mlock-calls") >= 0;
}

static void bench_stop(Bench *b)
{
    if (b->blk) {
        qvirtqueue_cleanup(b->blk->vdev.bus, b->vq, &b->alloc);
        qvirtio_pci_device_disable(b->blk);
        g_free(b->blk->pdev);
        g_free(b->blk);
        alloc_destroy(&b->alloc);
    }
    g_free(b->iommu);
    qpci_free_pc(b->bus);
    qtest_quit(b->qts);
}

/*
 * @n commands @op of one page each, in batches of at most 4095, all of
 * which must succeed. MAP maps @addr[i], with @perm, and stores the bus
 * address in @bus[i]; UNMAP unmaps bus address @addr[i].
 */
static void batch(Bench *b, uint16_t op, const uint64_t *addr, uint64_t *bus,
                  unsigned n)
{
    unsigned max = (1u << CMDQ_LOG2) - 1, done, i;
    g_autofree QIOMMUEmulCmd *c = g_new0(QIOMMUEmulCmd, max);
    g_autofree QIOMMUEmulCmdOut *out = g_new0(QIOMMUEmulCmdOut, max);
    g_autofree uint16_t *st = g_new0(uint16_t, max);

    for (done = 0; done < n; done += i) {
        unsigned k = MIN(max, n - done);

        for (i = 0; i < k; i++) {
            c[i] = (QIOMMUEmulCmd) {
                .opcode = op, .requester = BLK_RID,
                .flags = op == IOMMU_EMUL_OP_MAP ?
                         IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE : 0,
                .addr = addr[done + i], .length = PAGE,
            };
        }
        qiommu_emul_cmd_batch(&b->ring, c, k, st, out);
        for (i = 0; i < k; i++) {
            if (st[i] != IOMMU_EMUL_ST_OK) {
                fprintf(stderr, "iommu-emul-bench: command 0x%x of 0x%"
                        PRIx64 " failed with status 0x%x\n", op,
                        addr[done + i], st[i]);
                exit(1);
            }
            if (bus) {
                bus[done + i] = out[i].addr;
            }
        }
    }
}

static void one(Bench *b, uint16_t op, uint16_t flags, uint64_t addr,
                uint64_t len)
{
    QIOMMUEmulCmd c = {
        .opcode = op, .flags = flags, .requester = BLK_RID,
        .addr = addr, .length = len,
    };
    uint16_t st = qiommu_emul_cmd(&b->ring, &c, NULL);

    if (st != IOMMU_EMUL_ST_OK) {
        fprintf(stderr, "iommu-emul-bench: command 0x%x failed with status"
                " 0x%x\n", op, st);
        exit(1);
    }
}

/* @n live mappings of single pages */
static void map_live(Bench *b, unsigned n)
{
    g_autofree uint64_t *gpa = g_new(uint64_t, n);
    unsigned i;

    for (i = 0; i < n; i++) {
        gpa[i] = LIVE_GPA + i * PAGE;
    }
    batch(b, IOMMU_EMUL_OP_MAP, gpa, NULL, n);
}

typedef struct MapResult {
    double ops_per_s;
    double cpu_us;              /* QEMU CPU time per operation */
    double mlocks, munlocks;    /* per map+unmap pair; < 0: not counted */
    double hits;                /* pin cache hits per pair */
} MapResult;

/* map+unmap of K pages per round, @live mappings alive, medians */
static MapResult run_map(const Opts *o, const char *binvar,
                         const char *props, unsigned live)
{
    g_autofree uint64_t *gpa = g_new(uint64_t, o->churn);
    g_autofree uint64_t *bus = g_new(uint64_t, o->churn);
    g_autofree double *t = g_new(double, o->reps);
    g_autofree double *cpu = g_new(double, o->reps);
    int64_t ml0 = 0, mu0 = 0, h0 = 0;
    MapResult r = { .mlocks = -1, .munlocks = -1, .hits = -1 };
    unsigned i, rep;
    Bench b;

    bench_start(&b, binvar, "iova", props);
    map_live(&b, live);
    for (i = 0; i < o->churn; i++) {
        gpa[i] = CHURN_GPA + i * PAGE;
    }
    /* A warm-up round: the pin cache fills, the host faults pages in */
    batch(&b, IOMMU_EMUL_OP_MAP, gpa, bus, o->churn);
    batch(&b, IOMMU_EMUL_OP_UNMAP, bus, NULL, o->churn);
    if (b.counters) {
        ml0 = counter(&b, "mlock-calls");
        mu0 = counter(&b, "munlock-calls");
        h0 = counter(&b, "pin-cache-hits");
    }
    for (rep = 0; rep < o->reps; rep++) {
        double t0 = now_s(), c0 = cpu_s(b.qts);

        batch(&b, IOMMU_EMUL_OP_MAP, gpa, bus, o->churn);
        batch(&b, IOMMU_EMUL_OP_UNMAP, bus, NULL, o->churn);
        t[rep] = now_s() - t0;
        cpu[rep] = cpu_s(b.qts) - c0;
    }
    r.ops_per_s = 2.0 * o->churn / median(t, o->reps);
    r.cpu_us = median(cpu, o->reps) / (2.0 * o->churn) * 1e6;
    if (b.counters) {
        double pairs = (double)o->churn * o->reps;

        r.mlocks = (counter(&b, "mlock-calls") - ml0) / pairs;
        r.munlocks = (counter(&b, "munlock-calls") - mu0) / pairs;
        r.hits = (counter(&b, "pin-cache-hits") - h0) / pairs;
    }
    if (counter(&b, "mappings") != live) {
        fprintf(stderr, "iommu-emul-bench: %" PRId64 " mappings left, not"
                " %u\n", counter(&b, "mappings"), live);
        exit(1);
    }
    bench_stop(&b);
    return r;
}

/* virtio-blk with VIRTIO_F_ACCESS_PLATFORM, its buffers allocated */
static void blk_start(Bench *b, const Opts *o)
{
    QPCIAddress addr = { .devfn = BLK_DEVFN };
    uint64_t want = (1ull << VIRTIO_F_VERSION_1) |
                    (1ull << VIRTIO_F_ACCESS_PLATFORM);
    unsigned i;

    pc_alloc_init(&b->alloc, b->qts, ALLOC_NO_FLAGS);
    b->blk = virtio_pci_new(b->bus, &addr);
    g_assert_nonnull(b->blk);
    qvirtio_pci_device_enable(b->blk);
    qvirtio_start_device(&b->blk->vdev);
    g_assert_cmphex(qvirtio_get_features(&b->blk->vdev) & want, ==, want);
    qvirtio_set_features(&b->blk->vdev, want);
    b->vq = qvirtqueue_setup(&b->blk->vdev, &b->alloc, 0);
    qvirtio_set_driver_ok(&b->blk->vdev);
    b->data = guest_alloc(&b->alloc, REQ_LEN);
    qtest_memset(b->qts, b->data, 0x5a, REQ_LEN);
    for (i = 0; i < o->reqs; i++) {
        uint8_t hdr[16] = { 0 };

        b->hdr[i] = guest_alloc(&b->alloc, sizeof(hdr));
        b->st[i] = guest_alloc(&b->alloc, 1);
        stl_le_p(hdr, VIRTIO_BLK_T_OUT);
        stq_le_p(hdr + 8, 0);
        qtest_memwrite(b->qts, b->hdr[i], hdr, sizeof(hdr));
    }
    g_assert_cmphex(b->data + REQ_LEN, <=, INFRA_GPA + INFRA_LEN);
}

/*
 * Q write requests with one notification; returns QEMU's CPU time for
 * them, and the wall time in *@wall
 */
static double blk_round(Bench *b, const Opts *o, double *wall)
{
    QVirtioDevice *d = &b->blk->vdev;
    uint32_t head[MAX_REQS];
    uint16_t idx;
    unsigned i, got = 0;
    double t0, c0;
    gint64 give_up;

    /* Reuse the descriptors from the start of the table */
    b->vq->free_head = 0;
    b->vq->num_free = b->vq->size;
    for (i = 0; i < o->reqs; i++) {
        qtest_writeb(b->qts, b->st[i], 0xff);
        head[i] = qvirtqueue_add(b->qts, b->vq, b->hdr[i], 16, false, true);
        qvirtqueue_add(b->qts, b->vq, b->data, REQ_LEN, false, true);
        qvirtqueue_add(b->qts, b->vq, b->st[i], 1, true, false);
    }
    idx = qtest_readw(b->qts, b->vq->avail + 2);
    for (i = 0; i < o->reqs; i++) {
        qtest_writew(b->qts, b->vq->avail + 4 +
                     2 * ((idx + i) % b->vq->size), head[i]);
    }
    t0 = now_s();
    c0 = cpu_s(b->qts);
    qtest_writew(b->qts, b->vq->avail + 2, idx + o->reqs);
    d->bus->virtqueue_kick(d, b->vq);
    give_up = g_get_monotonic_time() + GIVE_UP_US;
    while (got < o->reqs) {
        if (qvirtqueue_get_buf(b->qts, b->vq, NULL, NULL)) {
            got++;
        } else if (g_get_monotonic_time() > give_up) {
            fprintf(stderr, "iommu-emul-bench: virtio-blk requests did not"
                    " complete\n");
            exit(1);
        } else {
            g_usleep(50);   /* fewer polls, which cost QEMU CPU too */
        }
    }
    c0 = cpu_s(b->qts) - c0;
    *wall = now_s() - t0;
    for (i = 0; i < o->reqs; i++) {
        if (qtest_readb(b->qts, b->st[i]) != VIRTIO_BLK_S_OK) {
            fprintf(stderr, "iommu-emul-bench: virtio-blk request %u failed"
                    "\n", i);
            exit(1);
        }
    }
    return c0;
}

/*
 * QEMU CPU nanoseconds per page translated with @live mappings (medians),
 * and the same from wall time in *@wall_ns
 */
static double run_translate(const Opts *o, const char *binvar,
                            unsigned live, double *wall_ns)
{
    g_autofree double *tx = g_new(double, o->reps);
    g_autofree double *tb = g_new(double, o->reps);
    g_autofree double *wx = g_new(double, o->reps);
    g_autofree double *wb = g_new(double, o->reps);
    double pages = (double)o->reqs * REQ_LEN / PAGE, w;
    unsigned rep;
    Bench b;

    bench_start(&b, binvar, "gpa", "");
    blk_start(&b, o);
    map_live(&b, live);
    /* The newest mapping covers the rings and buffers */
    one(&b, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE,
        INFRA_GPA, INFRA_LEN);
    blk_round(&b, o, &w);
    for (rep = 0; rep < o->reps; rep++) {
        one(&b, IOMMU_EMUL_OP_SET_MODE, 0, 0, 0);
        tb[rep] = blk_round(&b, o, &wb[rep]);
        one(&b, IOMMU_EMUL_OP_SET_MODE, IOMMU_EMUL_MODE_TRANSLATE, 0, 0);
        tx[rep] = blk_round(&b, o, &wx[rep]);
    }
    *wall_ns = MAX(median(wx, o->reps) - median(wb, o->reps), 0) / pages *
               1e9;
    if (counter(&b, "faults")) {
        fprintf(stderr, "iommu-emul-bench: %" PRId64 " DMA faults\n",
                counter(&b, "faults"));
        exit(1);
    }
    bench_stop(&b);
    return MAX(median(tx, o->reps) - median(tb, o->reps), 0) / pages * 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: iommu-emul-bench [-r REPS] [-k MAPS] [-q REQS]\n"
            "  -r  repetitions of each measurement (medians), default 9\n"
            "  -k  MAPs and UNMAPs per doorbell, 1 to %d, default 1024\n"
            "  -q  virtio-blk requests of 4 MiB per doorbell, 1 to %d,"
            " default 32\n"
            "QTEST_QEMU_BINARY: the QEMU to measure;"
            " IOMMU_EMUL_BENCH_BASE_QEMU: a baseline QEMU (optional)\n",
            MAX_CHURN, MAX_REQS);
    exit(2);
}

int main(int argc, char **argv)
{
    Opts o = { .reps = 9, .churn = 1024, .reqs = 32 };
    MapResult off[ARRAY_SIZE(lives)], on[ARRAY_SIZE(lives)];
    MapResult base[ARRAY_SIZE(lives)];
    double xl[ARRAY_SIZE(lives)], xb[ARRAY_SIZE(lives)];
    unsigned i;
    int c;

    while ((c = getopt(argc, argv, "r:k:q:")) != -1) {
        switch (c) {
        case 'r':
            o.reps = atoi(optarg);
            break;
        case 'k':
            o.churn = atoi(optarg);
            break;
        case 'q':
            o.reqs = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (!o.reps || !o.churn || o.churn > MAX_CHURN || !o.reqs ||
        o.reqs > MAX_REQS) {
        usage();
    }
    if (getenv("IOMMU_EMUL_BENCH_BASE_QEMU") &&
        *getenv("IOMMU_EMUL_BENCH_BASE_QEMU")) {
        o.base = "IOMMU_EMUL_BENCH_BASE_QEMU";
    }

    printf("map+unmap: %u MAPs of one page, then their %u UNMAPs, one"
           " doorbell each (iova mode); medians of %u rounds.\n"
           "ops/s: wall clock; us/op: QEMU main thread CPU time\n",
           o.churn, o.churn, o.reps);
    printf("%-6s %11s %7s %11s %7s %7s", "live", "off ops/s", "us/op",
           "on ops/s", "us/op", "on/off");
    if (o.base) {
        printf(" %11s %7s %8s", "base ops/s", "us/op", "off/base");
    }
    printf("\n");
    /* Whole rows at once: libqtest reports each QEMU it starts */
    for (i = 0; i < ARRAY_SIZE(lives); i++) {
        off[i] = run_map(&o, "QTEST_QEMU_BINARY", "", lives[i]);
        on[i] = run_map(&o, "QTEST_QEMU_BINARY", ",pin-cache=16M", lives[i]);
        if (o.base) {
            base[i] = run_map(&o, o.base, "", lives[i]);
        }
        printf("%-6u %11.0f %7.2f %11.0f %7.2f %7.2f", lives[i],
               off[i].ops_per_s, off[i].cpu_us, on[i].ops_per_s,
               on[i].cpu_us, off[i].cpu_us / on[i].cpu_us);
        if (o.base) {
            printf(" %11.0f %7.2f %8.2f", base[i].ops_per_s, base[i].cpu_us,
                   base[i].cpu_us / off[i].cpu_us);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("(on/off and off/base: ratios of CPU time per op, > 1: faster)\n");
    printf("system calls per map+unmap pair (device counters):\n");
    for (i = 0; i < ARRAY_SIZE(lives); i++) {
        printf("  %5u live: cache off %.2f mlock + %.2f munlock; cache on"
               " %.2f mlock + %.2f munlock, %.2f pin-cache hits\n", lives[i],
               off[i].mlocks, off[i].munlocks, on[i].mlocks, on[i].munlocks,
               on[i].hits);
    }

    printf("translate: %u virtio-blk writes of 4 MiB per doorbell (gpa"
           " mode, %u pages), translating minus bypassing, per 4 KiB page;"
           " medians of %u.\n"
           "ns/page: QEMU main thread CPU time; wall: wall clock\n",
           o.reqs, o.reqs * (unsigned)(REQ_LEN / PAGE), o.reps);
    printf("%-6s %8s %6s %8s", "live", "ns/page", "vs 10", "wall");
    if (o.base) {
        printf(" %8s %6s %8s %8s", "base ns", "vs 10", "wall",
               "new/base");
    }
    printf("\n");
    for (i = 0; i < ARRAY_SIZE(lives); i++) {
        double w, wb = 0;

        xl[i] = run_translate(&o, "QTEST_QEMU_BINARY", lives[i], &w);
        if (o.base) {
            xb[i] = run_translate(&o, o.base, lives[i], &wb);
        }
        printf("%-6u %8.1f %6.2f %8.1f", lives[i], xl[i],
               xl[0] ? xl[i] / xl[0] : 0, w);
        if (o.base) {
            printf(" %8.1f %6.2f %8.1f %8.3f", xb[i],
                   xb[0] ? xb[i] / xb[0] : 0, wb, xb[i] ? xl[i] / xb[i] : 0);
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
