/*
 * Reclaim latency of the page offline engine
 *
 * Offline 64 KiB buffers whose pages a pipe still references
 * (vmsplice(), as a stalled MSG_ZEROCOPY send does), and print the
 * median and 90th percentile time per buffer of each method next to two
 * baselines measured in the same run, with the rounds of all cases
 * interleaved:
 *
 * - memcpy: a plain memcpy() of the buffer, what a copying transmit
 *   path pays per buffer;
 * - floor: UFFDIO_MOVE of the buffer's pages to a scratch area and
 *   UFFDIO_COPY back, with a userfaultfd, registrations and scratch area
 *   set up beforehand: the least a race-free offline of 4 KiB pages does.
 *
 * One by one: each buffer is offlined alone (a timeout). Batch: all the
 * buffers of a round at once (a reset). Both with the area as the window
 * that the engine registers, as QEMU does with a RAMBlock.
 * The buffers lie back to back from a 2 MiB-aligned address, on 4 KiB
 * pages or on transparent huge pages; each line says what smaps found.
 * Timings are printed, never checked; the contents are checked.
 *
 * Usage: page-offline-bench [-n BUFFERS] [-s BUFFER-SIZE] [-r ROUNDS]
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include "qemu/madvise.h"
#include "qemu/page-offline.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"

#define HUGE    (2 * 1024 * 1024)

typedef enum Kind {
    K_MEMCPY,           /* baseline */
    K_FLOOR,            /* baseline */
    K_ONE,              /* page_offline_range() per buffer */
    K_BATCH,            /* page_offline_ranges() of all buffers */
} Kind;

typedef struct Case {
    const char *name;
    Kind kind;
    PageOfflineMethod method;
    bool thp;
    /* results */
    bool unavailable;
    GArray *ns;         /* per buffer, every round */
    long huge_kb;       /* least AnonHugePages seen under the buffers */
} Case;

/* The prepared userfaultfd of the floor */
static int floor_uffd = -1;
static uint8_t *floor_scratch;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
    size_t i;

    for (i = 0; i < len; i++) {
        p[i] = seed + i * 7 + (i >> 12);
    }
}

/* AnonHugePages, in KiB, of the mapping that contains @p */
static long anon_huge_kb(void *p)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    uintptr_t lo, hi;
    bool in = false;
    int i;

    if (!g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL)) {
        return -1;
    }
    lines = g_strsplit(smaps, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (sscanf(lines[i], "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        } else if (in && g_str_has_prefix(lines[i], "AnonHugePages:")) {
            return atol(lines[i] + strlen("AnonHugePages:"));
        }
    }
    return -1;
}

static bool floor_setup(size_t size)
{
    uint64_t features = 0;

    if (uffd_query_features(&features) || !(features & UFFD_FEATURE_MOVE)) {
        return false;
    }
    floor_uffd = uffd_create_fd(UFFD_FEATURE_MOVE, true);
    if (floor_uffd < 0) {
        return false;
    }
    floor_scratch = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(floor_scratch != MAP_FAILED);
    qemu_madvise(floor_scratch, size, QEMU_MADV_NOHUGEPAGE);
    g_assert(!uffd_register_memory(floor_uffd, floor_scratch, size,
                                   UFFDIO_REGISTER_MODE_MISSING, NULL));
    return true;
}

/* UFFDIO_MOVE out, UFFDIO_COPY back: @buf is registered already */
static void floor_offline(uint8_t *buf, size_t size)
{
    struct uffdio_move mv = {
        .dst = (uintptr_t)floor_scratch,
        .src = (uintptr_t)buf,
        .len = size,
        .mode = UFFDIO_MOVE_MODE_DONTWAKE,
    };
    struct uffdio_copy cp = {
        .dst = (uintptr_t)buf,
        .src = (uintptr_t)floor_scratch,
        .len = size,
    };

    g_assert(ioctl(floor_uffd, UFFDIO_MOVE, &mv) == 0);
    g_assert(ioctl(floor_uffd, UFFDIO_COPY, &cp) == 0);
    g_assert(madvise(floor_scratch, size, MADV_DONTNEED) == 0);
}

/* One round of @c over @n buffers; false if the method cannot run here */
static bool run_round(Case *c, unsigned n, size_t size)
{
    size_t total = (size_t)n * size;
    g_autofree uint8_t *want = g_malloc(total);
    g_autofree uint8_t *got = g_malloc(size);
    g_autofree uint8_t *dst = g_malloc(size);
    g_autofree int *fds = g_new(int, 2 * n);
    g_autofree struct iovec *iov = g_new(struct iovec, n);
    uint8_t *raw, *area;
    long huge;
    int64_t t0, ns;
    unsigned i;

    if ((c->kind == K_ONE || c->kind == K_BATCH) &&
        !page_offline_available(c->method)) {
        return false;
    }
    if (c->kind == K_FLOOR && floor_uffd < 0) {
        return false;
    }
    raw = mmap(NULL, total + HUGE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(raw != MAP_FAILED);
    area = (uint8_t *)ROUND_UP((uintptr_t)raw, HUGE);
    qemu_madvise(raw, total + HUGE, c->thp ? QEMU_MADV_HUGEPAGE :
                                             QEMU_MADV_NOHUGEPAGE);
    fill(area, total, c->ns->len);
    memcpy(want, area, total);
    huge = anon_huge_kb(area);
    c->huge_kb = MIN(c->huge_kb, huge);
    if (c->kind == K_FLOOR) {
        g_assert(!uffd_register_memory(floor_uffd, area, total,
                                       UFFDIO_REGISTER_MODE_MISSING, NULL));
    }

    /* Every buffer referenced at once, as by stalled sends */
    for (i = 0; i < n; i++) {
        iov[i].iov_base = area + (size_t)i * size;
        iov[i].iov_len = size;
        g_assert(pipe(fds + 2 * i) == 0);
        g_assert(fcntl(fds[2 * i + 1], F_SETPIPE_SZ, (int)size) >= (int)size);
        g_assert(vmsplice(fds[2 * i + 1], &iov[i], 1, 0) == (ssize_t)size);
    }

    if (c->kind == K_BATCH) {
        t0 = get_clock();
        g_assert_cmpint(page_offline_ranges(iov, n, raw, total + HUGE,
                                            c->method, NULL), ==, 0);
        ns = (get_clock() - t0) / n;
        for (i = 0; i < n; i++) {
            g_array_append_val(c->ns, ns);
        }
    } else {
        for (i = 0; i < n; i++) {
            t0 = get_clock();
            switch (c->kind) {
            case K_MEMCPY:
                memcpy(dst, iov[i].iov_base, size);
                break;
            case K_FLOOR:
                floor_offline(iov[i].iov_base, size);
                break;
            default:
                /* The area is the window, as a RAMBlock is for QEMU */
                g_assert_cmpint(page_offline_ranges(&iov[i], 1, raw,
                                                    total + HUGE, c->method,
                                                    NULL), ==, 0);
            }
            ns = get_clock() - t0;
            g_array_append_val(c->ns, ns);
        }
    }
    if (c->kind == K_FLOOR) {
        g_assert(!uffd_unregister_memory(floor_uffd, area, total));
    }

    /* The guest side rewrites; each pipe must keep the old bytes */
    g_assert(memcmp(want, area, total) == 0);
    memset(area, 0xa5, total);
    for (i = 0; i < n; i++) {
        size_t off;

        for (off = 0; off < size; ) {
            ssize_t r = read(fds[2 * i], got + off, size - off);

            g_assert(r > 0);
            off += r;
        }
        if (c->kind != K_MEMCPY) {
            g_assert(memcmp(want + (size_t)i * size, got, size) == 0);
        }
        close(fds[2 * i]);
        close(fds[2 * i + 1]);
    }
    munmap(raw, total + HUGE);
    return true;
}

static double median_us(Case *c)
{
    g_array_sort(c->ns, cmp_i64);
    return g_array_index(c->ns, int64_t, c->ns->len / 2) / 1000.0;
}

int main(int argc, char **argv)
{
    static Case cases[] = {
        { "memcpy (baseline)", K_MEMCPY, 0, false },
        { "floor (baseline)", K_FLOOR, 0, false },
        { "auto", K_ONE, PAGE_OFFLINE_AUTO, false },
        { "auto", K_ONE, PAGE_OFFLINE_AUTO, true },
        { "uffd-move", K_ONE, PAGE_OFFLINE_UFFD_MOVE, false },
        { "uffd-splice", K_ONE, PAGE_OFFLINE_UFFD_SPLICE, false },
        { "uffd-splice", K_ONE, PAGE_OFFLINE_UFFD_SPLICE, true },
        { "uffd-wp", K_ONE, PAGE_OFFLINE_UFFD_WP, false },
        { "copy (unsafe)", K_ONE, PAGE_OFFLINE_COPY, false },
        { "auto, all at once", K_BATCH, PAGE_OFFLINE_AUTO, false },
        { "auto, all at once", K_BATCH, PAGE_OFFLINE_AUTO, true },
    };
    g_autofree char *load = NULL;
    unsigned n = 64, rounds = 5, r;
    size_t size = 64 * 1024;
    double memcpy_us = 1, floor_us = 0;
    int opt;
    unsigned i;

    while ((opt = getopt(argc, argv, "n:s:r:")) != -1) {
        switch (opt) {
        case 'n':
            n = MAX(atoi(optarg), 1);
            break;
        case 's':
            size = QEMU_ALIGN_UP(MAX(atol(optarg), 1),
                                 qemu_real_host_page_size());
            break;
        case 'r':
            rounds = MAX(atoi(optarg), 1);
            break;
        default:
            fprintf(stderr, "usage: %s [-n BUFFERS] [-s BUFFER-SIZE]"
                    " [-r ROUNDS]\n", argv[0]);
            return 1;
        }
    }
    if (g_file_get_contents("/proc/loadavg", &load, NULL, NULL)) {
        *strchrnul(load, ' ') = 0;
    }
    floor_setup((size_t)n * size);
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        cases[i].ns = g_array_new(false, false, sizeof(int64_t));
        cases[i].huge_kb = LONG_MAX;
    }
    for (r = 0; r < rounds; r++) {
        for (i = 0; i < ARRAY_SIZE(cases); i++) {
            if (!cases[i].unavailable) {
                cases[i].unavailable = !run_round(&cases[i], n, size);
            }
        }
    }

    printf("page offline reclaim latency: %u buffers of %zu KiB, back to"
           " back, each still\nreferenced by a pipe; %u rounds interleaved;"
           " load average (1 min) %s\n", n, size / 1024, rounds,
           load ? load : "?");
    printf("%-20s %-24s %10s %10s %10s %10s\n", "method", "memory (smaps)",
           "median us", "p90 us", "x memcpy", "x floor");
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        Case *c = &cases[i];
        g_autofree char *mem = NULL;
        char vs_floor[16] = "-";
        double med;

        if (c->unavailable) {
            printf("%-20s %-24s %10s\n", c->name, c->thp ? "THP" : "4 KiB",
                   "unavailable");
            continue;
        }
        mem = g_strdup_printf("%s (%ld/%zu KiB huge)",
                              c->thp ? "THP" : "4 KiB",
                              MAX(c->huge_kb, -1), (size_t)n * size / 1024);
        med = median_us(c);
        if (c->kind == K_MEMCPY) {
            memcpy_us = MAX(med, 0.001);
        } else if (c->kind == K_FLOOR) {
            floor_us = med;
        }
        if (floor_us) {
            snprintf(vs_floor, sizeof(vs_floor), "%.2f", med / floor_us);
        }
        printf("%-20s %-24s %10.1f %10.1f %10.1f %10s\n", c->name, mem, med,
               g_array_index(c->ns, int64_t, c->ns->len * 9 / 10) / 1000.0,
               med / memcpy_us, vs_floor);
    }
    return 0;
}
