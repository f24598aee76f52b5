/*
 * Page offlining: give a host virtual range fresh pages with the same
 * contents, leaving the old pages to whoever still references them.
 *
 * The userfaultfd methods stay correct while other threads (running
 * vCPUs) read and write the range: the old pages leave the range only
 * once nothing can change them any more (they are moved out, zapped, or
 * write-protected), and every access to a page that is not back yet
 * blocks in the kernel on a userfault that the new page resolves.
 *
 * One userfaultfd serves every offline of the process, with its scratch
 * areas; creating them per offline, and registering just the range
 * (which splits the mapping, and a huge page under its edges), cost more
 * than the offline itself (docs/specs/virtio-zc.rst, "Reclaim cost").
 * Guest memory is registered only for the duration of one call, because
 * a range can belong to only one userfaultfd (postcopy has its own), and
 * because a registered hole blocks whoever touches it.
 *
 * This thread must never touch a registered hole itself (it would wait
 * on its own userfault): the ranges are populated before they are
 * registered, and the scratch area, which stays registered, is only
 * read where mincore() says a page is there.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/page-offline.h"
#include "qemu/atomic.h"
#include "qemu/cutils.h"
#include "qemu/host-utils.h"
#include "qemu/thread.h"

static PageOfflineStats po_stats;

#ifdef CONFIG_LINUX
#include <sys/ioctl.h>
#include <sys/resource.h>
#include "qemu/madvise.h"
#include "qemu/userfaultfd.h"

#define PO_HUGE         (2 * 1024 * 1024)   /* PMD size on x86 and arm64 */
#define PO_PIPE         (1024 * 1024)       /* default pipe-max-size */
#define PO_SPLICE       (256 * 1024)        /* per round: stays in cache */
#define PO_POOL         4                   /* spare huge pages, at least */
#define PO_POOL_MAX     256                 /* and at most (512 MiB) */
#define PO_POOL_SETTLE_US 50000             /* refill that long after use */

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24     /* Linux 5.18 */
#endif

/*
 * Drop the pages of [@start, @start + @len). Locked (mlock) memory, which
 * MADV_DONTNEED refuses, is dropped with MADV_DONTNEED_LOCKED: the
 * mapping stays locked, so the new pages that the offline puts there are
 * locked too. Returns 0 or -errno.
 */
static int po_zap(void *start, size_t len)
{
    if (!madvise(start, len, MADV_DONTNEED)) {
        return 0;
    }
    if (errno == EINVAL && !madvise(start, len, MADV_DONTNEED_LOCKED)) {
        return 0;
    }
    return -errno;
}

#ifndef PAGEMAP_SCAN
/* The PAGEMAP_SCAN ioctl of /proc/PID/pagemap, Linux 6.7 (linux/fs.h) */
struct page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

struct pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};

#define PAGEMAP_SCAN    _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_HUGE    (1 << 6)
#endif

typedef struct PageOfflineEngine {
    QemuMutex lock;
    bool tried;         /* po_setup() ran */
    int err;            /* 0 once set up, or why it cannot be */
    int uffd;
    bool have_move;     /* UFFD_FEATURE_MOVE */
    size_t huge;        /* PMD huge page size */
    char *scratch;      /* huge bytes, registered MISSING: small pages */
    char *hscratch;     /* huge bytes, huge-aligned, registered: huge pages */
    char *bounce;       /* pipe_size bytes */
    int pipefd[2];
    size_t pipe_size;
    int pagemap;        /* /proc/self/pagemap for PAGEMAP_SCAN, or -1 */
    /*
     * Spare huge pages, faulted in ahead of time by a thread of their
     * own: PO_POOL_MAX slots of huge bytes each (address space only),
     * not registered, of which the first pool_want are kept ready. A
     * slot is ready when pages are mapped there. Under lock.
     */
    char *pool;
    bool pool_ready[PO_POOL_MAX];
    bool pool_busy[PO_POOL_MAX];    /* taken, in use by an offline */
    bool pool_huge[PO_POOL_MAX];    /* ready, and mapped as one huge page */
    int pool_want;      /* slots to keep ready (po_pool_target()) */
    uint64_t pool_reserved;     /* bytes users asked to keep ready */
    uint64_t pool_most;         /* bytes demand may grow the pool to */
    uint64_t pool_demand;       /* bytes the largest call wanted */
    int call_taken;     /* spares the current call took */
    uint64_t call_missed;       /* bytes it wanted a spare for in vain */
    bool pool_stop;     /* a slot would not take a huge page: give up */
    char *spare;        /* the spare that splicing takes pages from */
    size_t spare_off;   /* its pages below this moved away already */
    QemuCond pool_cond; /* a slot was used: fill it again */
} PageOfflineEngine;

static PageOfflineEngine po_engine;

/* A page-aligned span of one call */
typedef struct POSpan {
    uintptr_t start, end;
} POSpan;

/* An area of @len bytes aligned to @align, or NULL */
static char *po_map_aligned(size_t len, size_t align)
{
    char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *p;

    if (raw == MAP_FAILED) {
        return NULL;
    }
    p = (char *)ROUND_UP((uintptr_t)raw, align);
    if (p > raw) {
        munmap(raw, p - raw);
    }
    munmap(p + len, raw + align - p);
    return p;
}

static size_t po_huge_size(void)
{
    g_autofree char *text = NULL;
    uint64_t size;

    if (g_file_get_contents("/sys/kernel/mm/transparent_hugepage/"
                            "hpage_pmd_size", &text, NULL, NULL) &&
        !qemu_strtou64(text, NULL, 10, &size) && size >= 4096 &&
        is_power_of_2(size) && size <= 64 * PO_HUGE) {
        return size;
    }
    return PO_HUGE;
}

/*
 * Map the huge scratch area afresh. A huge page moves as one only into
 * an empty page middle directory entry: once small pages passed through
 * the area (the source was not mapped as one huge page after all), the
 * page table they left would keep it from taking a huge page whole for
 * good. Returns 0 or -errno.
 */
static int po_renew_huge(void)
{
    PageOfflineEngine *e = &po_engine;

    if (mmap(e->hscratch, e->huge, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != e->hscratch) {
        return -errno;
    }
    qemu_madvise(e->hscratch, e->huge, QEMU_MADV_HUGEPAGE);
    return uffd_register_memory(e->uffd, e->hscratch, e->huge,
                                UFFDIO_REGISTER_MODE_MISSING, NULL) ?
           -errno : 0;
}

static bool po_is_huge(uintptr_t start);

/*
 * Fill the pool's empty slots with fresh pages, for good: a huge page
 * where the kernel gives one, else small pages. Faulting memory in costs
 * milliseconds per 2 MiB where the host backs memory lazily (the kernel
 * zeroes pages that nobody touched for long): here, away from any
 * offline. The lock is not held while pages fault in.
 */
static void *po_pool_thread(void *opaque)
{
    PageOfflineEngine *e = &po_engine;
    size_t psize = qemu_real_host_page_size();
    char *slot, *p;
    bool ok, niced = false, settled = false;
    int i;

    qemu_mutex_lock(&e->lock);
    while (!e->pool_stop) {
        for (i = e->pool_want; i < PO_POOL_MAX; i++) {
            if (e->pool_ready[i]) {
                /* Beyond the target now (a device went away): drop it */
                e->pool_ready[i] = false;
                qemu_madvise(e->pool + (size_t)i * e->huge, e->huge,
                             QEMU_MADV_DONTNEED);
            }
        }
        for (i = 0; i < e->pool_want && (e->pool_ready[i] || e->pool_busy[i]);
             i++) {
            /* the first empty slot */
        }
        if (i == e->pool_want) {
            /*
             * Full. From now on at the lowest priority: a refill must
             * not take the CPU from the thread that has just offlined
             * (it still completes the requests), nor from the vCPUs.
             * The first fill, at start, runs at the normal priority, so
             * that the pool is there for the first reclaim on a busy host.
             */
            if (!niced) {
                niced = true;
                if (setpriority(PRIO_PROCESS, qemu_get_thread_id(), 19)) {
                    /* Not fatal: refills at the normal priority */
                }
            }
            qemu_cond_wait(&e->pool_cond, &e->lock);
            settled = false;
            continue;
        }
        if (niced && !settled) {
            /*
             * A spare was just used: let the reclaim that used it finish
             * first (remapping the slot and faulting pages in take the
             * mmap lock, flush TLBs and want a CPU), then refill
             */
            qemu_mutex_unlock(&e->lock);
            g_usleep(PO_POOL_SETTLE_US);
            qemu_mutex_lock(&e->lock);
            settled = true;
            continue;
        }
        slot = e->pool + (size_t)i * e->huge;
        qemu_mutex_unlock(&e->lock);
        /* Fresh: a used slot may hold a page table, or small pages */
        /* A huge page if there is one, else small pages, all present */
        ok = mmap(slot, e->huge, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == slot;
        if (ok) {
            qemu_madvise(slot, e->huge, QEMU_MADV_HUGEPAGE);
            for (p = slot; p < slot + e->huge; p += psize) {
                /* volatile: the write must happen, it faults the page in */
                *(volatile char *)p = 0;
            }
        }
        qemu_mutex_lock(&e->lock);
        e->pool_ready[i] = ok;
        e->pool_huge[i] = ok && po_is_huge((uintptr_t)slot);
        /* Cannot map memory: stop trying */
        e->pool_stop = !ok;
    }
    qemu_mutex_unlock(&e->lock);
    return NULL;
}

/*
 * The slots to keep ready: what users reserved, grown to what the largest
 * call wanted up to what they allow, at least PO_POOL and at most
 * PO_POOL_MAX. With the lock held.
 */
static void po_pool_target(void)
{
    PageOfflineEngine *e = &po_engine;
    uint64_t bytes = MAX(e->pool_reserved,
                         MIN(e->pool_demand, e->pool_most));
    int want;

    if (!e->huge) {
        return;         /* not set up yet: po_setup() calls again */
    }
    want = MIN(DIV_ROUND_UP(bytes, e->huge), PO_POOL_MAX);
    want = MAX(want, PO_POOL);
    if (want != e->pool_want) {
        e->pool_want = want;
        if (e->pool) {
            qemu_cond_signal(&e->pool_cond);
        }
    }
}

/* Map the pool and start its thread; a pool that fails stays empty */
static void po_pool_setup(void)
{
    PageOfflineEngine *e = &po_engine;
    QemuThread thread;
    char *raw;
    size_t len = PO_POOL_MAX * e->huge;

    e->pool_stop = true;
    if (!e->have_move) {
        return;
    }
    /* Address space only: the thread maps each slot it fills */
    raw = mmap(NULL, len + e->huge, PROT_NONE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        return;
    }
    e->pool = (char *)ROUND_UP((uintptr_t)raw, e->huge);
    if (e->pool > raw) {
        munmap(raw, e->pool - raw);
    }
    munmap(e->pool + len, raw + e->huge - e->pool);
    qemu_cond_init(&e->pool_cond);
    po_pool_target();
    e->pool_stop = false;
    qemu_thread_create(&thread, "page-offline-pool", po_pool_thread, NULL,
                       QEMU_THREAD_DETACHED);
}

/*
 * A ready spare (@huge: mapped as one huge page), taken out of the pool
 * until po_pool_put(), or NULL. With the lock held.
 */
static char *po_pool_take(bool huge)
{
    PageOfflineEngine *e = &po_engine;
    int i;

    for (i = 0; i < e->pool_want && !e->pool_stop; i++) {
        if (e->pool_ready[i] && (e->pool_huge[i] || !huge)) {
            e->pool_ready[i] = false;
            e->pool_busy[i] = true;
            e->call_taken++;
            return e->pool + (size_t)i * e->huge;
        }
    }
    return NULL;
}

/* A call wanted a spare for @len bytes, and the pool had none */
static void po_pool_missed(size_t len)
{
    if (!po_engine.pool_stop) {
        po_engine.call_missed += len;
    }
}

/* Done with the spare @slot (its pages moved away, or not): refill it */
static void po_pool_put(char *slot)
{
    PageOfflineEngine *e = &po_engine;

    e->pool_busy[(slot - e->pool) / e->huge] = false;
    qemu_cond_signal(&e->pool_cond);
}

/* Set the engine up; with po_engine.lock held. Returns 0 or -errno. */
static int po_setup(void)
{
    PageOfflineEngine *e = &po_engine;
    uint64_t features = 0;
    int sz;

    if (e->tried) {
        return e->err;
    }
    e->tried = true;
    e->uffd = -1;
    e->pipefd[0] = e->pipefd[1] = -1;
    e->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    e->huge = po_huge_size();
    if (!uffd_query_features(&features) && (features & UFFD_FEATURE_MOVE)) {
        e->uffd = uffd_create_fd(UFFD_FEATURE_MOVE, true);
        e->have_move = e->uffd >= 0;
    }
    if (e->uffd < 0) {
        e->uffd = uffd_create_fd(0, true);
    }
    if (e->uffd < 0) {
        e->err = -ENOSYS;
        return e->err;
    }
    po_stats.uffd_opened++;
    if (pipe2(e->pipefd, O_CLOEXEC)) {
        e->err = -errno;
        goto fail;
    }
    /* As large as allowed, up to PO_PIPE: it bounds one round of splice */
    sz = fcntl(e->pipefd[1], F_SETPIPE_SZ, PO_PIPE);
    if (sz < 0) {
        sz = fcntl(e->pipefd[1], F_GETPIPE_SZ);
    }
    if (sz < (int)qemu_real_host_page_size()) {
        e->err = -EINVAL;
        goto fail;
    }
    e->pipe_size = sz;
    e->scratch = po_map_aligned(e->huge, e->huge);
    e->hscratch = po_map_aligned(e->huge, e->huge);
    e->bounce = po_map_aligned(e->pipe_size, qemu_real_host_page_size());
    if (!e->scratch || !e->hscratch || !e->bounce) {
        e->err = -ENOMEM;
        goto fail;
    }
    if (uffd_register_memory(e->uffd, e->scratch, e->huge,
                             UFFDIO_REGISTER_MODE_MISSING, NULL) ||
        po_renew_huge()) {
        e->err = -ENOSYS;
        goto fail;
    }
    po_pool_setup();
    return 0;

fail:
    /* The areas, if any, stay mapped and unused: this is not retried */
    close(e->uffd);
    e->uffd = -1;
    if (e->pipefd[0] >= 0) {
        close(e->pipefd[0]);
        close(e->pipefd[1]);
    }
    return e->err;
}

static void po_lock(void)
{
    static gsize once;

    if (g_once_init_enter(&once)) {
        qemu_mutex_init(&po_engine.lock);
        g_once_init_leave(&once, 1);
    }
    qemu_mutex_lock(&po_engine.lock);
}

static void po_unlock(void)
{
    qemu_mutex_unlock(&po_engine.lock);
}

static int po_register(void *addr, size_t len, uint64_t mode)
{
    return uffd_register_memory(po_engine.uffd, addr, len, mode, NULL) ?
           -errno : 0;
}

static int po_unregister(void *addr, size_t len)
{
    return uffd_unregister_memory(po_engine.uffd, addr, len) ? -errno : 0;
}

/*
 * UFFDIO_MOVE up to @len bytes from @src to the holes at @dst. Returns 0
 * or -errno, with *@moved the prefix that was moved either way.
 */
static int po_move(char *dst, char *src, size_t len, bool wake,
                   size_t *moved)
{
    size_t psize = qemu_real_host_page_size(), step = len;
    int again = 0;

    *moved = 0;
    while (*moved < len) {
        struct uffdio_move mv = {
            .dst = (uintptr_t)(dst + *moved),
            .src = (uintptr_t)(src + *moved),
            .len = MIN(len - *moved, step),
            .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES |
                    (wake ? 0 : UFFDIO_MOVE_MODE_DONTWAKE),
        };

        if (ioctl(po_engine.uffd, UFFDIO_MOVE, &mv) == 0) {
            *moved += mv.len;
            step = len;
            continue;
        }
        if (mv.move > 0) {
            *moved += mv.move;
            continue;
        }
        if (errno == EAGAIN && again++ < 1000) {
            continue;
        }
        if (errno == EINVAL && step > psize) {
            /* The range crosses mappings: one page gets over the edge */
            step = psize;
            continue;
        }
        return -errno;
    }
    return 0;
}

/* UFFDIO_COPY @len bytes from @src into the holes at @dst, then wake */
static int po_copy(char *dst, char *src, size_t len)
{
    size_t psize = qemu_real_host_page_size(), step = len, done = 0;
    int again = 0;

    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)(dst + done),
            .src = (uintptr_t)(src + done),
            .len = MIN(len - done, step),
        };

        if (ioctl(po_engine.uffd, UFFDIO_COPY, &c) == 0) {
            done += c.len;
            step = len;
            continue;
        }
        if (c.copy > 0) {
            done += c.copy;
            continue;
        }
        if (errno == EAGAIN && again++ < 1000) {
            continue;
        }
        if (errno == ENOENT && step > psize) {
            /* The range crosses mappings: one page gets over the edge */
            step = psize;
            continue;
        }
        return -errno;
    }
    return 0;
}

/*
 * Copy back to @dst what a move took from it to @from (the registered
 * scratch area), page by page where a page is there; a hole moved out
 * stays a hole. @from is never read where mincore() says nothing is
 * mapped, so this thread cannot wait on a userfault of its own.
 */
static int po_copy_back(char *dst, char *from, size_t len)
{
    size_t psize = qemu_real_host_page_size();
    size_t npages = len / psize, i, run;
    g_autofree unsigned char *vec = g_malloc(npages);
    int ret;

    if (mincore(from, len, vec)) {
        return -errno;
    }
    for (i = 0; i < npages; i += run) {
        for (run = 1; i + run < npages && (vec[i + run] & 1) ==
             (vec[i] & 1); run++) {
            /* a run of pages that are all there, or all holes */
        }
        if (vec[i] & 1) {
            ret = po_copy(dst + i * psize, from + i * psize, run * psize);
            if (ret) {
                return ret;
            }
        }
    }
    return 0;
}

/* Read one byte of every page so that none is a hole (zero page) */
static void po_touch(uintptr_t start, uintptr_t end)
{
    size_t psize = qemu_real_host_page_size();
    uintptr_t p;

    for (p = start; p < end; p += psize) {
        /* volatile: the read must happen, it maps the page */
        (void)*(volatile char *)p;
    }
}

/*
 * UFFD_SPLICE: take a reference of our own on the old pages (vmsplice
 * into the pipe), zap them (every later access blocks on the registered
 * hole), read them back from the pipe (every write that made it before
 * the zap is in them) and UFFDIO_COPY that into the holes.
 */
static int po_splice_chunks(char *start, size_t len, char **spare,
                            size_t *spare_off)
{
    PageOfflineEngine *e = &po_engine;
    size_t done, got, chunk, in;
    char *buf;
    ssize_t n;
    int ret;

    for (done = 0; done < len; done += chunk) {
        struct iovec iov = {
            .iov_base = start + done,
            .iov_len = MIN(len - done, MIN(e->pipe_size, PO_SPLICE)),
        };

        n = vmsplice(e->pipefd[1], &iov, 1, SPLICE_F_NONBLOCK);
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        /* Page-aligned: the pipe took whole pages */
        chunk = n;
        ret = po_zap(start + done, chunk);
        /*
         * Into the pages of a spare huge page if there is one (faulted
         * in long before), which then move in: no page to allocate now
         */
        if (*spare && *spare_off + chunk > e->huge) {
            po_pool_put(*spare);
            *spare = NULL;
        }
        if (!*spare && !ret) {
            *spare = po_pool_take(false);
            *spare_off = 0;
            if (!*spare) {
                po_pool_missed(chunk);
            }
        }
        buf = *spare ? *spare + *spare_off : e->bounce;
        for (got = 0; got < chunk; got += n) {
            n = read(e->pipefd[0], buf + got, chunk - got);
            if (n <= 0 && !(n < 0 && errno == EINTR)) {
                /* The pipe holds what it was given: this cannot happen */
                return n < 0 ? -errno : -EIO;
            }
            n = MAX(n, 0);
        }
        if (ret) {
            /* Nothing was zapped: the old pages are still in place */
            return ret;
        }
        in = 0;
        if (*spare) {
            /* What does not move (e.g. locked memory) is copied */
            po_move(start + done, buf, chunk, true, &in);
            *spare_off += chunk;
            po_stats.bytes_pooled += in;
        }
        ret = po_copy(start + done + in, buf + in, chunk - in);
        if (ret) {
            return ret;
        }
    }
    po_stats.bytes_spliced += len;
    return 0;
}

/* Splice, taking pages from the spare of the call (po_offline_spans) */
static int po_splice(char *start, size_t len)
{
    return po_splice_chunks(start, len, &po_engine.spare,
                            &po_engine.spare_off);
}

/*
 * Move the pages of [@start, @start + @len) (at most one huge page, not
 * crossing a huge page boundary) out to the scratch area and copy them
 * back. Returns 0 with *@done = @len, or -errno with *@done the prefix
 * that was offlined (-EBUSY: the kernel refused to move a page).
 */
static int po_move_copy(char *start, size_t len, size_t *done)
{
    PageOfflineEngine *e = &po_engine;
    size_t moved;
    int ret, ret2;

    *done = 0;
    ret = po_move(e->scratch, start, len, false, &moved);
    /*
     * Give the moved prefix fresh copies of its pages, whatever happened:
     * the holes it left must never be seen as zero pages.
     */
    ret2 = po_copy_back(start, e->scratch, moved);
    /* The old pages go away here unless the kernel still references them */
    madvise(e->scratch, ROUND_UP(moved, qemu_real_host_page_size()),
            MADV_DONTNEED);
    if (ret2) {
        return ret2;
    }
    *done = moved;
    po_stats.bytes_moved += moved;
    return ret;
}

/*
 * AUTO, while the pool has a spare: move the old pages of [@start,
 * @start + @len) (at most one huge page, not crossing a huge page
 * boundary) out to the scratch area, copy them into pages of the spare
 * with memcpy() and move those in. Cheaper than splicing, whose pipe
 * read copies page by page into pages allocated now. Returns 0 with
 * *@done = @len, -EAGAIN with nothing done (no spare), or -errno with
 * *@done the prefix that was offlined (-EBUSY: the kernel refused to
 * move a page, e.g. of a huge page that it references).
 */
static int po_move_spare(char *start, size_t len, size_t *done)
{
    PageOfflineEngine *e = &po_engine;
    size_t psize = qemu_real_host_page_size();
    size_t i, run, moved, in, off;
    g_autofree unsigned char *vec = NULL;
    char *buf;
    int ret, ret2 = 0;

    *done = 0;
    if (e->spare && e->spare_off + len > e->huge) {
        po_pool_put(e->spare);
        e->spare = NULL;
    }
    if (!e->spare) {
        e->spare = po_pool_take(false);
        e->spare_off = 0;
    }
    if (!e->spare) {
        /* The splice that follows counts what found no spare */
        return -EAGAIN;
    }
    buf = e->spare + e->spare_off;
    e->spare_off += len;
    ret = po_move(e->scratch, start, len, false, &moved);
    vec = g_malloc(MAX(moved / psize, 1));
    if (moved && mincore(e->scratch, moved, vec)) {
        /* Cannot tell holes: copies of their own, as po_move_copy() */
        ret2 = po_copy_back(start, e->scratch, moved);
        moved = ret2 ? 0 : moved;
    } else {
        /* Never read a hole of the registered scratch area */
        for (i = 0; i < moved / psize && !ret2; i += run) {
            for (run = 1; i + run < moved / psize &&
                 (vec[i + run] & 1) == (vec[i] & 1); run++) {
                /* a run of pages that are all there, or all holes */
            }
            if (!(vec[i] & 1)) {
                continue;
            }
            off = i * psize;
            memcpy(buf + off, e->scratch + off, run * psize);
            po_move(start + off, buf + off, run * psize, true, &in);
            po_stats.bytes_pooled += in;
            /* What does not move in is copied in */
            ret2 = po_copy(start + off + in, e->scratch + off + in,
                           run * psize - in);
        }
    }
    /* The old pages go away here unless the kernel still references them */
    madvise(e->scratch, ROUND_UP(moved, psize), MADV_DONTNEED);
    if (ret2) {
        return ret2;
    }
    *done = moved;
    po_stats.bytes_moved += moved;
    return ret;
}

/*
 * Whether [@start, @start + huge) is mapped as one huge page (PMD) now.
 * False if the kernel cannot tell (no PAGEMAP_SCAN before Linux 6.7).
 */
static bool po_is_huge(uintptr_t start)
{
    PageOfflineEngine *e = &po_engine;
    struct page_region r;
    struct pm_scan_arg arg = {
        .size = sizeof(arg),
        .start = start,
        .end = start + e->huge,
        .vec = (uintptr_t)&r,
        .vec_len = 1,
        .category_mask = PAGE_IS_HUGE,
        .return_mask = PAGE_IS_HUGE,
    };

    if (e->pagemap < 0 || ioctl(e->pagemap, PAGEMAP_SCAN, &arg) != 1) {
        return false;
    }
    return r.start == start && r.end == start + e->huge;
}

/*
 * Replace the huge page at @start (huge-aligned, huge bytes) whole: move
 * it out to the huge scratch area as one huge page (a referenced huge
 * page moves whole; split, its pages could not move alone) and copy its
 * contents back into small pages. Returns 0, or like po_move_copy().
 *
 * A new huge page would keep the guest's huge page, but faulting one in
 * costs several milliseconds where the kernel has to take a huge page
 * from memory that nobody touched for long (as in a virtual machine
 * whose host backs memory lazily), while small pages come warm from the
 * allocator's per-CPU lists; khugepaged may make a huge page of them
 * again later.
 */
static int po_move_huge(char *start, size_t *done)
{
    PageOfflineEngine *e = &po_engine;
    size_t moved, in = 0;
    char *spare = NULL;
    int ret, ret2;

    *done = 0;
    ret = po_move(e->hscratch, start, e->huge, false, &moved);
    if (moved == e->huge && po_is_huge((uintptr_t)e->hscratch)) {
        spare = po_pool_take(true);
        if (!spare) {
            po_pool_missed(e->huge);
        }
    }
    if (spare) {
        /*
         * A spare huge page, faulted in long before: copy the old page
         * into it and move it in whole. No page to allocate now, and
         * the guest keeps a huge page.
         */
        memcpy(spare, e->hscratch, e->huge);
        po_move(start, spare, e->huge, true, &in);
        po_pool_put(spare);
        if (in == e->huge) {
            po_stats.huge_pooled++;
        }
    }
    /* What did not move in gets copies of its own */
    ret2 = po_copy_back(start + in, e->hscratch + in, moved - in);
    if (!ret2) {
        *done = moved;
        if (moved == e->huge) {
            po_stats.huge_replaced++;
        } else {
            po_stats.bytes_moved += moved;
        }
        ret2 = ret ? ret : moved < e->huge ? -EBUSY : 0;
    }
    /*
     * The old huge page goes away here unless the kernel references it.
     * Small pages that came instead left a page table that would keep
     * the area from taking a huge page whole again: map it afresh.
     */
    if (moved == e->huge && po_is_huge((uintptr_t)e->hscratch)) {
        madvise(e->hscratch, e->huge, MADV_DONTNEED);
    } else {
        po_renew_huge();
    }
    return ret2;
}

/* One call of AUTO or UFFD_MOVE over sorted, disjoint spans */
typedef struct POBatch {
    POSpan *spans;
    int m;
    uintptr_t win_start, win_end;   /* the registered window, if any */
    uintptr_t replaced_end;         /* replaced whole up to here */
    PageOfflineMethod method;
    PageOfflineMethod *used;
} POBatch;

/* Bytes of the huge page region at @region that the spans cover */
static size_t po_coverage(POBatch *b, int i, uintptr_t region)
{
    uintptr_t end = region + po_engine.huge;
    size_t cov = 0;
    int j;

    while (i > 0 && b->spans[i - 1].end > region) {
        i--;
    }
    for (j = i; j < b->m && b->spans[j].start < end; j++) {
        cov += MIN(b->spans[j].end, end) - MAX(b->spans[j].start, region);
    }
    return cov;
}

/*
 * Whether to replace the huge page region at @region whole, as span @i
 * reaches it. Every page of it must be registered (the window covers it,
 * or the spans do). Worth it for a huge page that the spans cover at
 * least half of: one move and one copy of the whole huge page cost about
 * what splicing half of its pages (two copies) does. A region of small
 * pages is better spliced as it is.
 */
static bool po_replace_whole(POBatch *b, int i, uintptr_t region)
{
    size_t huge = po_engine.huge;
    size_t cov;

    if (b->method != PAGE_OFFLINE_AUTO || !po_engine.have_move) {
        return false;
    }
    cov = po_coverage(b, i, region);
    if (!(region >= b->win_start && region + huge <= b->win_end) &&
        cov < huge) {
        return false;
    }
    if (po_engine.pagemap < 0) {
        /* Cannot tell: what moves as one huge page is worth trying */
        return cov == huge;
    }
    return cov >= huge / 2 && po_is_huge(region);
}

static int po_offline_batch_move(POBatch *b)
{
    PageOfflineEngine *e = &po_engine;
    uintptr_t p, end, region;
    size_t done;
    int i, ret;

    for (i = 0; i < b->m; i++) {
        for (p = MAX(b->spans[i].start, b->replaced_end);
             p < b->spans[i].end; p = end) {
            region = ROUND_DOWN(p, e->huge);
            end = MIN(region + e->huge, b->spans[i].end);
            done = 0;
            if (po_replace_whole(b, i, region)) {
                p = region;
                end = region + e->huge;
                b->replaced_end = end;
                ret = po_move_huge((char *)p, &done);
            } else if (b->method == PAGE_OFFLINE_UFFD_MOVE) {
                ret = po_move_copy((char *)p, end - p, &done);
            } else if (e->have_move) {
                /*
                 * AUTO: with a spare, move out, memcpy() and move in;
                 * without one, splice: that costs what moving and
                 * copying back into new pages does, flushes the TLB once
                 * per range instead of once per page, and needs no split
                 * of a huge page that the kernel still references
                 * (UFFDIO_MOVE fails there: the rest is spliced).
                 */
                ret = po_move_spare((char *)p, end - p, &done);
            } else {
                ret = -EAGAIN;
            }
            if (ret && b->method == PAGE_OFFLINE_AUTO) {
                ret = po_splice((char *)p + done, end - p - done);
                *b->used = PAGE_OFFLINE_UFFD_SPLICE;
            }
            if (ret) {
                return ret;
            }
            end = MIN(end, b->spans[i].end);
        }
    }
    return 0;
}

/*
 * UFFD_WP: write-protect, copy out, drop the old pages, UFFDIO_COPY back.
 * Registers the span itself, in write-protect mode too; so no window.
 */
static int po_offline_span_wp(POSpan *s)
{
    PageOfflineEngine *e = &po_engine;
    char *start = (char *)s->start;
    size_t len = s->end - s->start, off, chunk;
    int ret;

    ret = po_register(start, len,
                      UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
    if (ret) {
        return ret;
    }
    for (off = 0; off < len && !ret; off += chunk) {
        struct uffdio_writeprotect wp = {
            .range = { .start = (uintptr_t)start + off },
            .mode = UFFDIO_WRITEPROTECT_MODE_WP,
        };

        chunk = MIN(len - off, e->pipe_size);
        wp.range.len = chunk;
        if (ioctl(e->uffd, UFFDIO_WRITEPROTECT, &wp)) {
            ret = -errno;
            break;
        }
        memcpy(e->bounce, start + off, chunk);
        ret = po_zap(start + off, chunk);
        if (ret) {
            break;
        }
        ret = po_copy(start + off, e->bounce, chunk);
    }
    /* This also lifts the write protection and wakes every waiter */
    po_unregister(start, len);
    if (!ret) {
        po_stats.bytes_wp += len;
    }
    return ret;
}

static int po_offline_copy(POSpan *s)
{
    char *start = (char *)s->start;
    size_t len = s->end - s->start;
    char *bounce;
    int ret = 0;

    bounce = mmap(NULL, len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bounce == MAP_FAILED) {
        return -errno;
    }
    memcpy(bounce, start, len);
    ret = po_zap(start, len);
    if (!ret) {
        memcpy(start, bounce, len);
        po_stats.bytes_copied += len;
    }
    munmap(bounce, len);
    return ret;
}

static int po_cmp_span(const void *a, const void *b)
{
    const POSpan *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * The page-aligned, sorted and merged spans of @iov (empty ranges are
 * left out). Returns their number, or -EINVAL.
 */
static int po_spans(const struct iovec *iov, unsigned int n, POSpan *spans)
{
    size_t psize = qemu_real_host_page_size();
    unsigned int i, m = 0, k;

    for (i = 0; i < n; i++) {
        uintptr_t base = (uintptr_t)iov[i].iov_base;

        if (!iov[i].iov_len) {
            continue;
        }
        if (!base || base + iov[i].iov_len < base ||
            ROUND_UP(base + iov[i].iov_len, psize) < base) {
            return -EINVAL;
        }
        spans[m].start = ROUND_DOWN(base, psize);
        spans[m].end = ROUND_UP(base + iov[i].iov_len, psize);
        m++;
    }
    qsort(spans, m, sizeof(*spans), po_cmp_span);
    for (i = 0, k = 0; i < m; i++) {
        if (k && spans[i].start <= spans[k - 1].end) {
            spans[k - 1].end = MAX(spans[k - 1].end, spans[i].end);
        } else {
            spans[k++] = spans[i];
        }
    }
    return k;
}

/*
 * After a call: if it ran out of spares, grow the pool to what it wanted
 * (the spares it took and the bytes it found none for), so that the
 * next call as large finds them all. With the lock held.
 */
static void po_pool_demand(void)
{
    PageOfflineEngine *e = &po_engine;
    uint64_t wanted;

    if (e->call_missed) {
        wanted = ((uint64_t)e->call_taken +
                  DIV_ROUND_UP(e->call_missed, e->huge)) * e->huge;
        if (wanted > e->pool_demand) {
            e->pool_demand = wanted;
            po_stats.pool_grown++;
            po_pool_target();
        }
    }
    e->call_taken = 0;
    e->call_missed = 0;
}

static int po_offline_spans(POSpan *spans, int m, void *window,
                            size_t window_len, PageOfflineMethod method,
                            PageOfflineMethod *used)
{
    bool win_reg = false;
    int i, ret = 0, reg = 0;

    switch (method) {
    case PAGE_OFFLINE_COPY:
        for (i = 0; i < m && !ret; i++) {
            ret = po_offline_copy(&spans[i]);
        }
        return ret;
    case PAGE_OFFLINE_UFFD_WP:
        for (i = 0; i < m && !ret; i++) {
            po_touch(spans[i].start, spans[i].end);
            ret = po_offline_span_wp(&spans[i]);
        }
        return ret;
    case PAGE_OFFLINE_UFFD_MOVE:
        if (!po_engine.have_move) {
            return -ENOSYS;
        }
        break;
    default:
        break;
    }

    /* No holes once registered: this thread must not fault on them */
    for (i = 0; i < m; i++) {
        po_touch(spans[i].start, spans[i].end);
    }
    if (window) {
        /*
         * Whole mappings: no split. -EINVAL: something in the window
         * cannot be registered; the spans alone may still be.
         */
        ret = po_register(window, window_len, UFFDIO_REGISTER_MODE_MISSING);
        win_reg = !ret;
        if (ret == -EINVAL) {
            window = NULL;
        }
    }
    if (!window) {
        for (ret = 0, reg = 0; reg < m; reg++) {
            ret = po_register((void *)spans[reg].start,
                              spans[reg].end - spans[reg].start,
                              UFFDIO_REGISTER_MODE_MISSING);
            if (ret) {
                break;
            }
        }
    }
    if (ret) {
        /* Refused: nothing was done */
    } else if (method == PAGE_OFFLINE_UFFD_SPLICE) {
        for (i = 0; i < m && !ret; i++) {
            ret = po_splice((char *)spans[i].start,
                            spans[i].end - spans[i].start);
        }
    } else {
        POBatch b = {
            .spans = spans,
            .m = m,
            .win_start = win_reg ? (uintptr_t)window : 0,
            .win_end = win_reg ? (uintptr_t)window + window_len : 0,
            .method = method,
            .used = used,
        };

        ret = po_offline_batch_move(&b);
    }
    if (po_engine.spare) {
        po_pool_put(po_engine.spare);
        po_engine.spare = NULL;
    }
    po_pool_demand();
    /* This also wakes any thread that still waits on a registered page */
    if (win_reg) {
        po_unregister(window, window_len);
    } else {
        for (i = 0; i < reg; i++) {
            po_unregister((void *)spans[i].start,
                          spans[i].end - spans[i].start);
        }
    }
    return ret;
}

bool page_offline_available(PageOfflineMethod method)
{
    bool ok;

    if (method == PAGE_OFFLINE_COPY) {
        return true;
    }
    if ((unsigned)method >= PAGE_OFFLINE__MAX) {
        return false;
    }
    po_lock();
    ok = !po_setup() &&
         (method != PAGE_OFFLINE_UFFD_MOVE || po_engine.have_move);
    po_unlock();
    return ok;
}

int page_offline_ranges(const struct iovec *iov, unsigned int n,
                        void *window, size_t window_len,
                        PageOfflineMethod method, PageOfflineMethod *used)
{
    g_autofree POSpan *spans = g_new(POSpan, MAX(n, 1));
    PageOfflineMethod done_by = method;
    int m, i, ret;

    if ((unsigned)method >= PAGE_OFFLINE__MAX) {
        return -EINVAL;
    }
    m = po_spans(iov, n, spans);
    if (m < 0) {
        return m;
    }
    if (window) {
        uintptr_t w = (uintptr_t)window;

        for (i = 0; i < m; i++) {
            if (spans[i].start < w || spans[i].end - w > window_len) {
                return -EINVAL;
            }
        }
    }
    if (method == PAGE_OFFLINE_AUTO) {
        done_by = PAGE_OFFLINE_UFFD_MOVE;
    }
    if (!m) {
        ret = 0;
    } else if (method == PAGE_OFFLINE_COPY) {
        po_lock();
        ret = po_offline_spans(spans, m, NULL, 0, method, &done_by);
        po_unlock();
    } else {
        po_lock();
        ret = po_setup();
        if (!ret) {
            if (!po_engine.have_move && method == PAGE_OFFLINE_AUTO) {
                done_by = PAGE_OFFLINE_UFFD_SPLICE;
            }
            ret = po_offline_spans(spans, m, window, window_len, method,
                                   &done_by);
        }
        po_unlock();
    }
    if (!ret) {
        qatomic_inc(&po_stats.calls);
    }
    if (used) {
        *used = done_by;
    }
    return ret;
}

void page_offline_prepare(void)
{
    po_lock();
    po_setup();
    po_unlock();
}

void page_offline_pool_reserve(int64_t ready, int64_t most)
{
    PageOfflineEngine *e = &po_engine;

    po_lock();
    e->pool_reserved += ready;
    e->pool_most += most;
    po_pool_target();
    po_unlock();
}

#else /* !CONFIG_LINUX */

void page_offline_prepare(void)
{
}

void page_offline_pool_reserve(int64_t ready, int64_t most)
{
}

bool page_offline_available(PageOfflineMethod method)
{
    return method == PAGE_OFFLINE_COPY;
}

int page_offline_ranges(const struct iovec *iov, unsigned int n,
                        void *window, size_t window_len,
                        PageOfflineMethod method, PageOfflineMethod *used)
{
    return -ENOSYS;
}

#endif /* CONFIG_LINUX */

int page_offline_range(void *host, size_t len, PageOfflineMethod method,
                       PageOfflineMethod *used)
{
    struct iovec iov = { .iov_base = host, .iov_len = len };

    return page_offline_ranges(&iov, 1, NULL, 0, method, used);
}

void page_offline_get_stats(PageOfflineStats *stats)
{
#ifdef CONFIG_LINUX
    int i;

    po_lock();
    po_stats.spares = 0;
    for (i = 0; i < PO_POOL_MAX; i++) {
        po_stats.spares += po_engine.pool_ready[i];
    }
    po_stats.pool_target = po_engine.pool ? po_engine.pool_want : 0;
    po_unlock();
#endif
    *stats = po_stats;
}

const char *page_offline_method_name(PageOfflineMethod method)
{
    static const char *const names[PAGE_OFFLINE__MAX] = {
        [PAGE_OFFLINE_AUTO] = "auto",
        [PAGE_OFFLINE_UFFD_MOVE] = "uffd-move",
        [PAGE_OFFLINE_UFFD_WP] = "uffd-wp",
        [PAGE_OFFLINE_COPY] = "copy",
        [PAGE_OFFLINE_UFFD_SPLICE] = "uffd-splice",
    };

    /* An enum may be unsigned: compare as unsigned, for every compiler */
    if ((unsigned)method >= PAGE_OFFLINE__MAX) {
        return "invalid";
    }
    return names[method];
}
