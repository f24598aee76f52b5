/*
 * Reclaim latency of the page offline engine
 *
 * For each method, offline 64 KiB buffers whose pages a pipe still
 * references (vmsplice(), as a stalled MSG_ZEROCOPY send does), and
 * print the median and 90th percentile time per buffer next to a
 * baseline measured in the same run: a plain memcpy() of the same
 * buffer, the cost a copying transmit path pays per buffer. Timings are
 * printed, never checked; the contents are checked.
 *
 * Usage: page-offline-bench [-n BUFFERS] [-s BUFFER-SIZE]
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/uio.h>
#include "qemu/madvise.h"
#include "qemu/page-offline.h"
#include "qemu/timer.h"

typedef struct Case {
    const char *name;
    PageOfflineMethod method;   /* PAGE_OFFLINE__MAX: memcpy baseline */
    bool thp;
} Case;

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

/* Returns false if the method cannot run here */
static bool run_case(const Case *c, unsigned n, size_t size, int64_t *ns)
{
    size_t total = (size_t)n * size;
    g_autofree uint8_t *want = g_malloc(size);
    g_autofree uint8_t *got = g_malloc(size);
    g_autofree uint8_t *dst = g_malloc(size);
    uint8_t *area;
    unsigned i;

    if (c->method != PAGE_OFFLINE__MAX &&
        !page_offline_available(c->method)) {
        return false;
    }
    area = mmap(NULL, total, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(area != MAP_FAILED);
    qemu_madvise(area, total, c->thp ? QEMU_MADV_HUGEPAGE :
                                       QEMU_MADV_NOHUGEPAGE);
    for (i = 0; i < n; i++) {
        fill(area + (size_t)i * size, size, i);
    }

    for (i = 0; i < n; i++) {
        uint8_t *buf = area + (size_t)i * size;
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        int fds[2];
        int64_t t0;
        size_t off;

        /* A pipe big enough to hold a reference to every page */
        g_assert(pipe(fds) == 0);
        g_assert(fcntl(fds[1], F_SETPIPE_SZ, (int)size) >= (int)size);
        g_assert(vmsplice(fds[1], &iov, 1, 0) == (ssize_t)size);
        memcpy(want, buf, size);

        t0 = get_clock();
        if (c->method == PAGE_OFFLINE__MAX) {
            memcpy(dst, buf, size);
        } else {
            g_assert_cmpint(page_offline_range(buf, size, c->method, NULL),
                            ==, 0);
        }
        ns[i] = get_clock() - t0;

        /* The guest side rewrites; the pipe must keep the old bytes */
        memset(buf, 0xa5, size);
        for (off = 0; off < size; ) {
            ssize_t r = read(fds[0], got + off, size - off);

            g_assert(r > 0);
            off += r;
        }
        if (c->method != PAGE_OFFLINE__MAX) {
            g_assert(memcmp(want, got, size) == 0);
        }
        close(fds[0]);
        close(fds[1]);
    }
    munmap(area, total);
    qsort(ns, n, sizeof(*ns), cmp_i64);
    return true;
}

int main(int argc, char **argv)
{
    static const Case cases[] = {
        { "memcpy (baseline)", PAGE_OFFLINE__MAX, false },
        { "uffd-move", PAGE_OFFLINE_UFFD_MOVE, false },
        { "uffd-wp", PAGE_OFFLINE_UFFD_WP, false },
        { "auto", PAGE_OFFLINE_AUTO, false },
        { "auto, THP memory", PAGE_OFFLINE_AUTO, true },
        { "copy (unsafe)", PAGE_OFFLINE_COPY, false },
    };
    unsigned n = 64;
    size_t size = 64 * 1024;
    double base = 1;
    int opt;
    unsigned i;

    while ((opt = getopt(argc, argv, "n:s:")) != -1) {
        switch (opt) {
        case 'n':
            n = MAX(atoi(optarg), 1);
            break;
        case 's':
            size = QEMU_ALIGN_UP(MAX(atol(optarg), 1),
                                 qemu_real_host_page_size());
            break;
        default:
            fprintf(stderr, "usage: %s [-n BUFFERS] [-s BUFFER-SIZE]\n",
                    argv[0]);
            return 1;
        }
    }

    printf("page offline reclaim latency: %u buffers of %zu KiB, each still"
           " referenced by a pipe\n", n, size / 1024);
    printf("%-20s %12s %12s %14s\n", "method", "median us", "p90 us",
           "x baseline");
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree int64_t *ns = g_new0(int64_t, n);
        double med;

        if (!run_case(&cases[i], n, size, ns)) {
            printf("%-20s %12s\n", cases[i].name, "unavailable");
            continue;
        }
        med = ns[n / 2] / 1000.0;
        if (i == 0) {
            base = MAX(med, 0.001);
        }
        printf("%-20s %12.1f %12.1f %14.1f\n", cases[i].name, med,
               ns[n * 9 / 10] / 1000.0, med / base);
    }
    return 0;
}
