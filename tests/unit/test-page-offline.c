/*
 * Unit tests for the page offline engine (util/page-offline.c)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/page-offline.h"
#include "qemu/thread.h"
#include "qemu/atomic.h"
#include <sys/uio.h>
#include <sys/syscall.h>

#define NPAGES 64

typedef struct Area {
    char *base;
    size_t len;
    size_t psize;
} Area;

static void area_new(Area *a, size_t npages)
{
    a->psize = qemu_real_host_page_size();
    a->len = npages * a->psize;
    a->base = mmap(NULL, a->len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(a->base != MAP_FAILED);
}

static void area_free(Area *a)
{
    munmap(a->base, a->len);
}

static void fill(char *p, size_t len, unsigned seed)
{
    size_t i;

    for (i = 0; i < len; i++) {
        p[i] = (char)(seed + i * 7 + (i >> 12));
    }
}

/*
 * True if a VMA that intersects [@start, @start + @len) is registered with
 * a userfaultfd (VmFlags "um", "uw" or "ui" in /proc/self/smaps)
 */
static bool uffd_registered(char *start, size_t len)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    bool in = false;
    uintptr_t lo, hi;
    int i;

    g_assert(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    lines = g_strsplit(smaps, "\n", -1);
    for (i = 0; lines[i]; i++) {
        /* A VMA header: "start-end perms ..."; no field name parses so */
        if (sscanf(lines[i], "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
            in = lo < (uintptr_t)start + len && hi > (uintptr_t)start;
        } else if (in && g_str_has_prefix(lines[i], "VmFlags:") &&
                   (strstr(lines[i], " um") || strstr(lines[i], " uw") ||
                    strstr(lines[i], " ui"))) {
            return true;
        }
    }
    return false;
}

/*
 * Skip a method the host does not offer. A missing userfaultfd is a
 * matter of privilege (vm.unprivileged_userfaultfd, /dev/userfaultfd):
 * with QEMU_ZC_TEST_PRIVILEGED set (for CI, which runs as root) it fails
 * the test instead. UFFD_FEATURE_MOVE needs Linux 6.8 whoever runs it.
 */
static bool method_ok(PageOfflineMethod m)
{
    if (page_offline_available(m)) {
        return true;
    }
    if (m != PAGE_OFFLINE_COPY &&
        !page_offline_available(PAGE_OFFLINE_UFFD_WP)) {
        if (getenv("QEMU_ZC_TEST_PRIVILEGED")) {
            g_test_message("QEMU_ZC_TEST_PRIVILEGED is set, but no"
                           " userfaultfd is available");
            g_test_fail();
        } else {
            g_test_skip("userfaultfd is not available (it needs root or"
                        " vm.unprivileged_userfaultfd=1)");
        }
        return false;
    }
    g_test_skip("UFFD_FEATURE_MOVE is not available (Linux 6.8 or later)");
    return false;
}

/* Contents of the range and of its neighbours survive, unaligned range */
static void test_contents(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    g_autofree char *ref = NULL;
    PageOfflineMethod used;
    Area a;
    int i;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, NPAGES);
    ref = g_malloc(a.len);
    fill(a.base, a.len, 3);
    memcpy(ref, a.base, a.len);
    for (i = 0; i < 3; i++) {
        g_assert_cmpint(page_offline_range(a.base + a.psize + 123,
                                           (NPAGES - 4) * a.psize + 5, m,
                                           &used), ==, 0);
        g_assert(memcmp(ref, a.base, a.len) == 0);
    }
    if (m != PAGE_OFFLINE_AUTO) {
        g_assert_cmpint(used, ==, m);
    }
    /*
     * The pages are still ordinary private memory: no userfaultfd tracks
     * them any more, every byte written is read back from where it was
     * written (a pattern that differs from page to page, so two pages
     * mapped to one would show), and a dropped page reads as zeroes.
     */
    g_assert_false(uffd_registered(a.base, a.len));
    fill(a.base, a.len, 99);
    fill(ref, a.len, 99);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    g_assert(memcmp(ref, a.base + a.psize, a.psize) != 0);
    g_assert_cmpint(madvise(a.base + a.psize, a.psize, MADV_DONTNEED), ==, 0);
    memset(ref + a.psize, 0, a.psize);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    area_free(&a);
}

/*
 * A pipe that got the pages with vmsplice() (no SPLICE_F_GIFT) references
 * them as a stalled zero-copy socket does: after the offline, the reader
 * gets the original bytes, never what was written afterwards.
 */
static void test_reference_kept(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    g_autofree char *ref = NULL;
    g_autofree char *got = NULL;
    size_t len, off = 0;
    int fds[2];
    struct iovec iov;
    ssize_t n;
    Area a;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, 8);
    len = a.len;
    ref = g_malloc(len);
    got = g_malloc(len);
    fill(a.base, len, 11);
    memcpy(ref, a.base, len);
    g_assert(pipe(fds) == 0);
    g_assert(fcntl(fds[1], F_SETPIPE_SZ, (int)len) >= (int)len);
    iov.iov_base = a.base;
    iov.iov_len = len;
    g_assert_cmpint(vmsplice(fds[1], &iov, 1, 0), ==, len);

    g_assert_cmpint(page_offline_range(a.base, len, m, NULL), ==, 0);
    g_assert(memcmp(ref, a.base, len) == 0);
    memset(a.base, 0x5a, len);

    while (off < len) {
        n = read(fds[0], got + off, len - off);
        g_assert_cmpint(n, >, 0);
        off += n;
    }
    g_assert(memcmp(ref, got, len) == 0);
    close(fds[0]);
    close(fds[1]);
    area_free(&a);
}

/* kB locked in the VMAs that intersect [@start, @start + @len) */
static unsigned long locked_kb(char *start, size_t len)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned long kb = 0;
    bool in = false;
    uintptr_t lo, hi;
    int i;

    g_assert(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    lines = g_strsplit(smaps, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (sscanf(lines[i], "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
            in = lo < (uintptr_t)start + len && hi > (uintptr_t)start;
        } else if (in && g_str_has_prefix(lines[i], "Locked:")) {
            kb += g_ascii_strtoull(lines[i] + strlen("Locked:"), NULL, 10);
        }
    }
    return kb;
}

/*
 * Locked memory (pages that iommu-emul pinned with mlock) is offlined
 * like any other: the reader of the old pages gets the original bytes,
 * and the range stays locked, with the new pages resident. UFFDIO_MOVE
 * refuses locked memory, and then leaves the contents as they were.
 */
static void test_locked(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    g_autofree char *ref = NULL;
    g_autofree char *got = NULL;
    size_t len, off = 0;
    char *lk;
    int fds[2];
    struct iovec iov;
    ssize_t n;
    Area a;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, 8);
    lk = a.base + 2 * a.psize;
    len = 4 * a.psize;
    ref = g_malloc(a.len);
    got = g_malloc(len);
    fill(a.base, a.len, 21);
    memcpy(ref, a.base, a.len);
    /*
     * The system call itself, as iommu-emul does: the sanitizers turn
     * mlock() into a no-op, and this test is about locked memory.
     */
    if (syscall(SYS_mlock, lk, len)) {
        g_test_skip("mlock() is not allowed here (RLIMIT_MEMLOCK)");
        area_free(&a);
        return;
    }
    g_assert_cmpuint(locked_kb(lk, len), ==, len / 1024);
    g_assert(pipe(fds) == 0);
    g_assert(fcntl(fds[1], F_SETPIPE_SZ, (int)len) >= (int)len);
    iov.iov_base = lk;
    iov.iov_len = len;
    g_assert_cmpint(vmsplice(fds[1], &iov, 1, 0), ==, len);

    if (m == PAGE_OFFLINE_UFFD_MOVE) {
        g_assert_cmpint(page_offline_range(lk, len, m, NULL), <, 0);
        g_assert(memcmp(ref, a.base, a.len) == 0);
        goto out;
    }
    g_assert_cmpint(page_offline_range(lk + 100, len - 200, m, NULL), ==, 0);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    g_assert_cmpuint(locked_kb(lk, len), ==, len / 1024);
    memset(lk, 0x5a, len);
    while (off < len) {
        n = read(fds[0], got + off, len - off);
        g_assert_cmpint(n, >, 0);
        off += n;
    }
    g_assert(memcmp(ref + 2 * a.psize, got, len) == 0);
out:
    close(fds[0]);
    close(fds[1]);
    syscall(SYS_munlock, lk, len);
    area_free(&a);
}

/* Pages never touched stay readable as zeroes, without a hang */
static void test_holes(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    size_t i;
    Area a;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, NPAGES);
    /* Touch every other page: the others are holes */
    for (i = 0; i < NPAGES; i += 2) {
        a.base[i * a.psize] = 1;
    }
    g_assert_cmpint(page_offline_range(a.base, a.len, m, NULL), ==, 0);
    for (i = 0; i < NPAGES; i++) {
        g_assert_cmpint(a.base[i * a.psize], ==, (i % 2) ? 0 : 1);
        g_assert_cmpint(a.base[i * a.psize + 17], ==, 0);
    }
    area_free(&a);
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

/* AnonHugePages of the VMA that contains @p, in bytes */
static size_t anon_huge_bytes(char *p)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    bool in = false;
    uintptr_t lo, hi;
    int i;

    g_assert(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    lines = g_strsplit(smaps, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (sscanf(lines[i], "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        } else if (in && g_str_has_prefix(lines[i], "AnonHugePages:")) {
            return g_ascii_strtoull(lines[i] + strlen("AnonHugePages:"),
                                    NULL, 10) * 1024;
        }
    }
    g_assert_not_reached();
}

/*
 * The PMD huge page size if transparent huge pages can be had for a
 * MADV_HUGEPAGE range, else 0
 */
static size_t thp_size(void)
{
    g_autofree char *enabled = NULL;
    g_autofree char *size = NULL;

    if (!g_file_get_contents("/sys/kernel/mm/transparent_hugepage/enabled",
                             &enabled, NULL, NULL) ||
        strstr(enabled, "[never]")) {
        return 0;
    }
    if (!g_file_get_contents("/sys/kernel/mm/transparent_hugepage/"
                             "hpage_pmd_size", &size, NULL, NULL)) {
        return 2 * 1024 * 1024;
    }
    return g_ascii_strtoull(size, NULL, 10);
}

/*
 * Offlining part of a transparent huge page keeps the contents of the
 * whole huge page and gives the offlined part fresh pages: a reference
 * that a pipe holds on the old page still reads the old bytes.
 */
static void test_thp(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    size_t huge = thp_size();
    g_autofree char *ref = NULL;
    g_autofree char *got = NULL;
    char *raw, *p;
    int fds[2];
    struct iovec iov;

    if (!method_ok(m)) {
        return;
    }
    if (!huge) {
        g_test_skip("transparent huge pages are disabled on this host");
        return;
    }
    raw = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(raw != MAP_FAILED);
    p = (char *)ROUND_UP((uintptr_t)raw, huge);
    if (madvise(p, huge, MADV_HUGEPAGE)) {
        g_test_skip("madvise(MADV_HUGEPAGE) fails: no transparent huge"
                    " pages here");
        munmap(raw, 2 * huge);
        return;
    }
    ref = g_malloc(huge);
    got = g_malloc(4096);
    fill(p, huge, 5);
    if (anon_huge_bytes(p) < huge) {
        /* The fault got small pages (memory fragmented): collapse them */
        if (madvise(p, huge, MADV_COLLAPSE)) {
            g_test_message("madvise(MADV_COLLAPSE): %s", strerror(errno));
        }
    }
    g_assert_cmpuint(anon_huge_bytes(p), ==, huge);
    memcpy(ref, p, huge);

    /* Keep a reference on part of the huge page, as a stalled send does */
    g_assert(pipe(fds) == 0);
    iov.iov_base = p + 8192;
    iov.iov_len = 4096;
    g_assert_cmpint(vmsplice(fds[1], &iov, 1, 0), ==, 4096);

    g_assert_cmpint(page_offline_range(p + 4096, 3 * 4096, m, NULL), ==, 0);
    g_assert(memcmp(ref, p, huge) == 0);
    /* The referenced page was replaced: the pipe has the old bytes */
    memset(p + 4096, 0x5a, 3 * 4096);
    g_assert_cmpint(read(fds[0], got, 4096), ==, 4096);
    g_assert(memcmp(got, ref + 8192, 4096) == 0);
    g_assert(memcmp(ref, p, 4096) == 0);
    g_assert(memcmp(ref + 4 * 4096, p + 4 * 4096, huge - 4 * 4096) == 0);
    close(fds[0]);
    close(fds[1]);
    munmap(raw, 2 * huge);
}

/* Number of VMAs that intersect [@start, @start + @len) */
static int count_vmas(char *start, size_t len)
{
    g_autofree char *maps = NULL;
    g_auto(GStrv) lines = NULL;
    uintptr_t lo, hi;
    int i, n = 0;

    g_assert(g_file_get_contents("/proc/self/maps", &maps, NULL, NULL));
    lines = g_strsplit(maps, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (sscanf(lines[i], "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2 &&
            lo < (uintptr_t)start + len && hi > (uintptr_t)start) {
            n++;
        }
    }
    return n;
}

/*
 * Offlining many times leaves the range in the VMAs it had (mremap-based
 * swaps split it until the process runs out of map count)
 */
static void test_no_vma_growth(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    size_t i;
    int before;
    Area a;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, NPAGES);
    fill(a.base, a.len, 1);
    before = count_vmas(a.base, a.len);
    for (i = 0; i < 500; i++) {
        g_assert_cmpint(page_offline_range(a.base + (i % NPAGES) * a.psize,
                                           a.psize, m, NULL), ==, 0);
    }
    g_assert_cmpint(count_vmas(a.base, a.len), ==, before);
    area_free(&a);
}

typedef struct Racer {
    Area *a;
    uint64_t *last;          /* last value written per slot */
    size_t nslots;
    bool stop;
    uint64_t lost;
    uint64_t writes;
} Racer;

/* Writes increasing values and reads each back at once */
static void *racer_fn(void *opaque)
{
    Racer *r = opaque;
    uint64_t *slots = (uint64_t *)r->a->base;
    uint64_t v = 1;
    size_t s;

    while (!qatomic_read(&r->stop)) {
        for (s = 0; s < r->nslots; s++) {
            /* one slot per 512 bytes: several per page */
            size_t idx = s * 64;

            qatomic_set(&slots[idx], v);
            r->last[s] = v;
            if (qatomic_read(&slots[idx]) != v) {
                r->lost++;
            }
            v++;
        }
        r->writes += r->nslots;
    }
    return NULL;
}

/* A concurrent writer races the offline: no write is lost or zeroed */
static void test_concurrent_writer(const void *opaque)
{
    PageOfflineMethod m = GPOINTER_TO_INT(opaque);
    uint64_t *slots;
    QemuThread th;
    Racer r = { 0 };
    gint64 start;
    Area a;
    size_t s;
    int i;

    if (!method_ok(m)) {
        return;
    }
    area_new(&a, 16);
    r.a = &a;
    r.nslots = a.len / 512;
    r.last = g_new0(uint64_t, r.nslots);
    slots = (uint64_t *)a.base;
    qemu_thread_create(&th, "racer", racer_fn, &r, QEMU_THREAD_JOINABLE);
    /*
     * At least 2000 offlines, and on until the racer has written every
     * slot twice meanwhile: on a loaded host it may not get the CPU at
     * first, and the race must really happen
     */
    start = g_get_monotonic_time();
    for (i = 0; i < 2000 || qatomic_read(&r.writes) < 2 * r.nslots; i++) {
        g_assert_cmpint(g_get_monotonic_time() - start, <,
                        60 * G_USEC_PER_SEC);
        g_assert_cmpint(page_offline_range(a.base + (i % 4) * a.psize,
                                           (i % 13 + 1) * a.psize / 2, m,
                                           NULL), ==, 0);
    }
    qatomic_set(&r.stop, true);
    qemu_thread_join(&th);
    g_assert_cmpuint(r.lost, ==, 0);
    g_assert_cmpuint(r.writes, >, 0);
    for (s = 0; s < r.nslots; s++) {
        g_assert_cmpuint(slots[s * 64], ==, r.last[s]);
    }
    g_free(r.last);
    area_free(&a);
}

/* A 2 MiB-aligned area of @len bytes of transparent huge pages, or NULL */
static char *thp_area(size_t len, char **raw)
{
    size_t huge = thp_size();
    char *p;

    if (!huge) {
        return NULL;
    }
    *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert(*raw != MAP_FAILED);
    p = (char *)ROUND_UP((uintptr_t)*raw, huge);
    if (madvise(*raw, len + huge, MADV_HUGEPAGE)) {
        munmap(*raw, len + huge);
        return NULL;
    }
    fill(p, len, 9);
    if (anon_huge_bytes(p) < len) {
        /* The faults got small pages (memory fragmented): collapse them */
        madvise(p, len, MADV_COLLAPSE);
    }
    if (anon_huge_bytes(p) < len) {
        munmap(*raw, len + huge);
        return NULL;
    }
    return p;
}

/*
 * A batch over buffers that cover two transparent huge pages, every
 * buffer referenced, as in a reset with stalled zero-copy sends: each
 * huge page is replaced whole (not spliced page by page), the references
 * keep the old bytes, the contents are the same.
 */
/* Wait until the engine has @want spares ready; false after 60 s */
static bool wait_spares(uint64_t want)
{
    gint64 start = g_get_monotonic_time();
    PageOfflineStats st;

    for (;;) {
        page_offline_get_stats(&st);
        if (st.spares >= want) {
            return true;
        }
        if (g_get_monotonic_time() - start > 60 * G_USEC_PER_SEC) {
            return false;
        }
        g_usleep(1000);
    }
}

/*
 * The spares that the engine faults in ahead of time serve offlines: a
 * huge page replaced whole gets a spare huge page, spliced small pages
 * get pages of a spare. Contents, and the reader's bytes, are as with
 * new pages.
 */
static void test_pool(void)
{
    enum { LEN = 2 * 1024 * 1024, SMALL = 16, REF = 64 * 1024 };
    g_autofree char *ref = g_malloc(LEN);
    g_autofree char *got = g_malloc(LEN);
    PageOfflineStats before, after;
    struct iovec iov;
    int fds[2];
    size_t off;
    char *raw, *p;
    ssize_t n;
    Area a;

    if (!page_offline_available(PAGE_OFFLINE_UFFD_MOVE)) {
        method_ok(PAGE_OFFLINE_UFFD_MOVE);
        return;
    }
    page_offline_prepare();
    g_assert(wait_spares(1));

    /*
     * Small pages, which a pipe references: moved out, their copies in
     * pages of a spare moved in; the reader gets the original bytes
     */
    area_new(&a, SMALL);
    g_assert_cmpint(madvise(a.base, a.len, MADV_NOHUGEPAGE), ==, 0);
    fill(a.base, a.len, 5);
    memcpy(ref, a.base, a.len);
    g_assert(pipe(fds) == 0);
    g_assert(fcntl(fds[1], F_SETPIPE_SZ, (int)a.len) >= (int)a.len);
    iov.iov_base = a.base;
    iov.iov_len = a.len;
    g_assert_cmpint(vmsplice(fds[1], &iov, 1, 0), ==, a.len);
    page_offline_get_stats(&before);
    g_assert_cmpint(page_offline_range(a.base, a.len, PAGE_OFFLINE_AUTO,
                                       NULL), ==, 0);
    page_offline_get_stats(&after);
    g_assert_cmpuint(after.bytes_pooled - before.bytes_pooled, ==, a.len);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    memset(a.base, 0x5a, a.len);
    for (off = 0; off < a.len; off += n) {
        n = read(fds[0], got + off, a.len - off);
        g_assert_cmpint(n, >, 0);
    }
    g_assert(memcmp(ref, got, a.len) == 0);
    close(fds[0]);
    close(fds[1]);
    area_free(&a);

    /* A huge page: replaced whole by a spare huge page */
    p = thp_area(LEN, &raw);
    if (!p) {
        g_test_message("no transparent huge pages: huge spares not tested");
        return;
    }
    if (!wait_spares(4)) {
        g_test_message("the pool did not fill up");
        munmap(raw, LEN + thp_size());
        g_test_fail();
        return;
    }
    memcpy(ref, p, LEN);
    /* The pipe references the first 64 KiB, as a stalled socket would */
    g_assert(pipe(fds) == 0);
    g_assert(fcntl(fds[1], F_SETPIPE_SZ, REF) >= REF);
    iov.iov_base = p;
    iov.iov_len = REF;
    g_assert_cmpint(vmsplice(fds[1], &iov, 1, 0), ==, REF);
    iov.iov_len = LEN;
    page_offline_get_stats(&before);
    g_assert_cmpint(page_offline_ranges(&iov, 1, raw, LEN + thp_size(),
                                        PAGE_OFFLINE_AUTO, NULL), ==, 0);
    page_offline_get_stats(&after);
    g_assert(memcmp(ref, p, LEN) == 0);
    if (after.huge_pooled == before.huge_pooled) {
        /* Every spare has small pages: the huge page was split instead */
        g_test_message("no spare huge page (THP disabled for spares?)");
    } else {
        g_assert_cmpuint(after.huge_pooled - before.huge_pooled, ==, 1);
        /* The guest keeps a huge page */
        g_assert_cmpuint(anon_huge_bytes(p), >=, LEN);
    }
    memset(p, 0x5a, LEN);
    for (off = 0; off < REF; off += n) {
        n = read(fds[0], got + off, REF - off);
        g_assert_cmpint(n, >, 0);
    }
    g_assert(memcmp(ref, got, REF) == 0);
    close(fds[0]);
    close(fds[1]);
    munmap(raw, LEN + thp_size());
}

/* Wait until the engine has exactly @want spares ready; false after 60 s */
static bool wait_spares_exactly(uint64_t want)
{
    gint64 start = g_get_monotonic_time();
    PageOfflineStats st;

    for (;;) {
        page_offline_get_stats(&st);
        if (st.spares == want) {
            return true;
        }
        if (g_get_monotonic_time() - start > 60 * G_USEC_PER_SEC) {
            return false;
        }
        g_usleep(1000);
    }
}

/*
 * The pool follows demand: an offline that runs out of spares grows it
 * to what the offline wanted, within what its users allow
 * (page_offline_pool_reserve), and the spares fault in; when a user gives
 * its share back, the pool shrinks to its least again.
 */
static void test_pool_grows(void)
{
    enum { MIB = 1024 * 1024, LEN = 16 * MIB, HUGE = 2 * MIB };
    g_autofree char *ref = g_malloc(LEN);
    PageOfflineStats before, after;
    Area a;

    if (!page_offline_available(PAGE_OFFLINE_UFFD_MOVE)) {
        method_ok(PAGE_OFFLINE_UFFD_MOVE);
        return;
    }
    page_offline_prepare();
    page_offline_get_stats(&before);
    g_assert_cmpuint(before.pool_target, ==, 4);
    page_offline_pool_reserve(0, 32 * MIB);
    g_assert(wait_spares_exactly(4));

    /* 16 MiB of small pages: 8 MiB from the 4 spares, 8 MiB without */
    area_new(&a, LEN / qemu_real_host_page_size());
    g_assert_cmpint(madvise(a.base, a.len, MADV_NOHUGEPAGE), ==, 0);
    fill(a.base, a.len, 9);
    memcpy(ref, a.base, a.len);
    page_offline_get_stats(&before);
    g_assert_cmpint(page_offline_range(a.base, a.len, PAGE_OFFLINE_AUTO,
                                       NULL), ==, 0);
    page_offline_get_stats(&after);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    /* (A refill 50 ms after the first use may add spares meanwhile) */
    g_assert_cmpuint(after.bytes_pooled - before.bytes_pooled, >=, 4 * HUGE);
    if (after.bytes_pooled - before.bytes_pooled == LEN) {
        g_test_skip("the pool refilled during the offline: it never ran out");
        area_free(&a);
        page_offline_pool_reserve(0, -32 * MIB);
        return;
    }
    g_assert_cmpuint(after.pool_grown - before.pool_grown, ==, 1);
    g_assert_cmpuint(after.pool_target, ==, LEN / HUGE);
    g_assert(wait_spares_exactly(LEN / HUGE));

    /* The same again: every page now comes from a spare */
    page_offline_get_stats(&before);
    g_assert_cmpint(page_offline_range(a.base, a.len, PAGE_OFFLINE_AUTO,
                                       NULL), ==, 0);
    page_offline_get_stats(&after);
    g_assert(memcmp(ref, a.base, a.len) == 0);
    g_assert_cmpuint(after.bytes_pooled - before.bytes_pooled, ==, LEN);
    g_assert_cmpuint(after.pool_grown, ==, before.pool_grown);
    area_free(&a);

    /* The user goes away: back to the least, the surplus is freed */
    page_offline_pool_reserve(0, -32 * MIB);
    page_offline_get_stats(&after);
    g_assert_cmpuint(after.pool_target, ==, 4);
    g_assert(wait_spares_exactly(4));
}

static void test_batch_thp(void)
{
    enum { NBUF = 64, BUF = 64 * 1024 };
    size_t len = NBUF * BUF;
    g_autofree char *ref = g_malloc(len);
    g_autofree char *got = g_malloc(BUF);
    struct iovec iov[NBUF];
    PageOfflineStats before, after;
    int fds[NBUF][2];
    char *raw, *p;
    int i;

    if (!page_offline_available(PAGE_OFFLINE_UFFD_MOVE)) {
        method_ok(PAGE_OFFLINE_UFFD_MOVE);
        return;
    }
    p = thp_area(len, &raw);
    if (!p) {
        g_test_skip("no transparent huge pages for a 4 MiB area");
        return;
    }
    memcpy(ref, p, len);
    for (i = 0; i < NBUF; i++) {
        iov[i].iov_base = p + i * BUF;
        iov[i].iov_len = BUF;
        g_assert(pipe(fds[i]) == 0);
        g_assert(fcntl(fds[i][1], F_SETPIPE_SZ, BUF) >= BUF);
        g_assert_cmpint(vmsplice(fds[i][1], &iov[i], 1, 0), ==, BUF);
    }
    page_offline_get_stats(&before);
    g_assert_cmpint(page_offline_ranges(iov, NBUF, raw, len + thp_size(),
                                        PAGE_OFFLINE_AUTO, NULL), ==, 0);
    page_offline_get_stats(&after);
    g_assert_cmpuint(after.huge_replaced - before.huge_replaced, ==,
                     len / thp_size());
    g_assert_cmpuint(after.bytes_spliced, ==, before.bytes_spliced);
    g_assert(memcmp(ref, p, len) == 0);
    g_assert_false(uffd_registered(raw, len + thp_size()));
    memset(p, 0x5a, len);
    for (i = 0; i < NBUF; i++) {
        size_t off = 0;

        while (off < BUF) {
            ssize_t n = read(fds[i][0], got + off, BUF - off);

            g_assert_cmpint(n, >, 0);
            off += n;
        }
        g_assert(memcmp(ref + i * BUF, got, BUF) == 0);
        close(fds[i][0]);
        close(fds[i][1]);
    }
    munmap(raw, len + thp_size());
}

/*
 * Batches race a writer that keeps writing and reading back slots all
 * over the area: overlapping, unaligned ranges, some covering a whole
 * huge page, some a few pages; none of the writes is lost or zeroed,
 * and the area, registered whole each time, stays one mapping.
 */
static void test_batch_concurrent_writer(const void *opaque)
{
    bool thp = GPOINTER_TO_INT(opaque);
    size_t len = 4 * 1024 * 1024, psize = qemu_real_host_page_size();
    struct iovec iov[5];
    uint64_t *slots;
    QemuThread th;
    Racer r = { 0 };
    char *raw = NULL;
    Area a;
    size_t s;
    int i, vmas;

    if (!method_ok(PAGE_OFFLINE_AUTO)) {
        return;
    }
    if (thp) {
        a.base = thp_area(len, &raw);
        if (!a.base) {
            g_test_skip("no transparent huge pages for a 4 MiB area");
            return;
        }
        a.len = len;
        a.psize = psize;
    } else {
        area_new(&a, len / psize);
        raw = a.base;
    }
    r.a = &a;
    r.nslots = a.len / 512;
    r.last = g_new0(uint64_t, r.nslots);
    slots = (uint64_t *)a.base;
    vmas = count_vmas(a.base, a.len);
    qemu_thread_create(&th, "racer", racer_fn, &r, QEMU_THREAD_JOINABLE);
    for (i = 0; i < 200; i++) {
        size_t off = (i * 37 % 61) * psize + i % 100;

        iov[0] = (struct iovec) { a.base + off, 64 * 1024 + i };
        iov[1] = (struct iovec) { a.base + off + 8192, 3 * psize };
        iov[2] = (struct iovec) { a.base + (i % 2) * 2 * 1024 * 1024,
                                  2 * 1024 * 1024 };
        iov[3] = (struct iovec) { a.base + len - 5 * psize - i, 5 * psize };
        iov[4] = (struct iovec) { a.base + 3 * 1024 * 1024 + i * 100, 1 };
        g_assert_cmpint(page_offline_ranges(iov, ARRAY_SIZE(iov), raw,
                                            len + (thp ? thp_size() : 0),
                                            PAGE_OFFLINE_AUTO, NULL), ==, 0);
    }
    qatomic_set(&r.stop, true);
    qemu_thread_join(&th);
    g_assert_cmpuint(r.lost, ==, 0);
    g_assert_cmpuint(r.writes, >, 0);
    for (s = 0; s < r.nslots; s++) {
        g_assert_cmpuint(slots[s * 64], ==, r.last[s]);
    }
    g_assert_cmpint(count_vmas(a.base, a.len), ==, vmas);
    g_free(r.last);
    if (thp) {
        munmap(raw, len + thp_size());
    } else {
        area_free(&a);
    }
}

/* A number from /proc/self/status, in KiB for sizes */
static long proc_status(const char *key)
{
    g_autofree char *text = NULL;
    char *p;

    g_assert(g_file_get_contents("/proc/self/status", &text, NULL, NULL));
    p = strstr(text, key);
    g_assert_nonnull(p);
    return atol(p + strlen(key));
}

static int count_entries(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    int n = 0;

    g_assert_nonnull(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/*
 * 10,000 reclaims in a row, alone and in batches, of referenced 64 KiB
 * buffers on transparent huge pages (or small pages where there are
 * none): the buffers' mapping stays one, the process keeps its open
 * files and, within a few mappings and MiB, the mappings and resident
 * memory it had after the first, and the engine keeps its one
 * userfaultfd.
 */
static void test_many_bounded(void)
{
    enum { BUF = 64 * 1024, N = 10000 };
    size_t len = 4 * 1024 * 1024;
    g_autofree char *got = g_malloc(BUF);
    g_autofree char *maps0 = NULL;
    g_autofree char *maps1 = NULL;
    PageOfflineStats st0, st1;
    long rss0, rss1;
    int vmas0, area_vmas, fds0, i, fds[2];
    char *raw = NULL, *p;
    Area a;

    if (!method_ok(PAGE_OFFLINE_AUTO)) {
        return;
    }
    p = thp_area(len, &raw);
    if (!p) {
        area_new(&a, len / qemu_real_host_page_size());
        p = raw = a.base;
        fill(p, len, 9);
    }
    g_assert(pipe(fds) == 0);
    g_assert(fcntl(fds[1], F_SETPIPE_SZ, BUF) >= BUF);
    /* The engine sets itself up at the first offline */
    g_assert_cmpint(page_offline_range(p, BUF, PAGE_OFFLINE_AUTO, NULL),
                    ==, 0);
    vmas0 = count_vmas((char *)0, UINTPTR_MAX);
    area_vmas = count_vmas(raw, len);
    g_assert(g_file_get_contents("/proc/self/maps", &maps0, NULL, NULL));
    fds0 = count_entries("/proc/self/fd");
    rss0 = proc_status("VmRSS:");
    page_offline_get_stats(&st0);
    for (i = 0; i < N; i++) {
        char *b = p + (size_t)(i * 7919 % (len / BUF - 1)) * BUF + i % 4096;
        struct iovec iov[3] = {
            { b, BUF }, { p + (i % 61) * 4096, 4096 }, { b + 100, 200 },
        };
        size_t off;

        /* Referenced, as by a stalled send */
        g_assert_cmpint(vmsplice(fds[1], &(struct iovec) {
                                     (char *)ROUND_DOWN((uintptr_t)b, 4096),
                                     BUF }, 1, 0), ==, BUF);
        if (i % 10) {
            g_assert_cmpint(page_offline_range(b, BUF, PAGE_OFFLINE_AUTO,
                                               NULL), ==, 0);
        } else {
            g_assert_cmpint(page_offline_ranges(iov, 3, raw, len +
                                                (raw != p ? thp_size() : 0),
                                                PAGE_OFFLINE_AUTO, NULL),
                            ==, 0);
        }
        for (off = 0; off < BUF; ) {
            ssize_t n = read(fds[0], got + off, BUF - off);

            g_assert_cmpint(n, >, 0);
            off += n;
        }
    }
    page_offline_get_stats(&st1);
    rss1 = proc_status("VmRSS:");
    g_test_message("after %d reclaims: %d -> %d mappings, %d -> %d fds, "
                   "VmRSS %ld -> %ld KiB", N, vmas0,
                   count_vmas((char *)0, UINTPTR_MAX), fds0,
                   count_entries("/proc/self/fd"), rss0, rss1);
    if (count_vmas((char *)0, UINTPTR_MAX) != vmas0) {
        g_assert(g_file_get_contents("/proc/self/maps", &maps1, NULL, NULL));
        g_test_message("mappings before: %s", maps0);
        g_test_message("mappings after: %s", maps1);
    }
    /*
     * The buffers' mapping is never split. The process as a whole may
     * gain a few mappings, not one per reclaim: from the C library, and
     * from the engine's spare pool, whose refill thread (stack and guard)
     * and ready slots come and go in the background.
     */
    g_assert_cmpint(count_vmas(raw, len), ==, area_vmas);
    g_assert_cmpint(count_vmas((char *)0, UINTPTR_MAX), <=, vmas0 + 16);
    g_assert_cmpint(count_entries("/proc/self/fd"), ==, fds0);
    g_assert_cmpint(rss1, <=, rss0 + 8 * 1024);
    g_assert_cmpuint(st1.calls - st0.calls, ==, N);
    g_assert_cmpuint(st1.uffd_opened, ==, st0.uffd_opened);
    close(fds[0]);
    close(fds[1]);
    if (raw != p) {
        munmap(raw, len + thp_size());
    } else {
        area_free(&a);
    }
}

static void test_args(void)
{
    PageOfflineMethod used = PAGE_OFFLINE_COPY;
    char c = 0;

    g_assert_cmpint(page_offline_range(&c, 0, PAGE_OFFLINE_AUTO, &used),
                    ==, 0);
    g_assert_cmpint(page_offline_range(NULL, 4096, PAGE_OFFLINE_AUTO, NULL),
                    ==, -EINVAL);
    g_assert_cmpint(page_offline_range((void *)(uintptr_t)-4096, 8192,
                                       PAGE_OFFLINE_AUTO, NULL), ==, -EINVAL);
    g_assert_cmpint(page_offline_range(&c, 1, PAGE_OFFLINE__MAX, NULL),
                    ==, -EINVAL);
    g_assert_cmpstr(page_offline_method_name(PAGE_OFFLINE_UFFD_MOVE), ==,
                    "uffd-move");
}

static void add(const char *name, GTestDataFunc fn, PageOfflineMethod m)
{
    g_autofree char *path = g_strdup_printf("/page-offline/%s/%s",
                                            page_offline_method_name(m),
                                            name);

    g_test_add_data_func(path, GINT_TO_POINTER(m), fn);
}

int main(int argc, char **argv)
{
    static const PageOfflineMethod all[] = {
        PAGE_OFFLINE_AUTO, PAGE_OFFLINE_UFFD_MOVE, PAGE_OFFLINE_UFFD_WP,
        PAGE_OFFLINE_COPY, PAGE_OFFLINE_UFFD_SPLICE,
    };
    int i;

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/page-offline/args", test_args);
    for (i = 0; i < ARRAY_SIZE(all); i++) {
        add("contents", test_contents, all[i]);
        add("reference-kept", test_reference_kept, all[i]);
        add("holes", test_holes, all[i]);
        add("no-vma-growth", test_no_vma_growth, all[i]);
        add("locked", test_locked, all[i]);
        if (all[i] != PAGE_OFFLINE_COPY) {
            /* The copy method is only correct with writers stopped */
            add("concurrent-writer", test_concurrent_writer, all[i]);
        }
        if (all[i] != PAGE_OFFLINE_UFFD_MOVE) {
            /* UFFDIO_MOVE alone may refuse a referenced THP (-EBUSY) */
            add("thp", test_thp, all[i]);
        }
    }
    g_test_add_func("/page-offline/batch/thp", test_batch_thp);
    g_test_add_data_func("/page-offline/batch/concurrent-writer",
                         GINT_TO_POINTER(false),
                         test_batch_concurrent_writer);
    g_test_add_data_func("/page-offline/batch/concurrent-writer-thp",
                         GINT_TO_POINTER(true), test_batch_concurrent_writer);
    g_test_add_func("/page-offline/many-bounded", test_many_bounded);
    g_test_add_func("/page-offline/pool", test_pool);
    g_test_add_func("/page-offline/pool-grows", test_pool_grows);
    return g_test_run();
}
