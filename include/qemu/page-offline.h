/*
 * Page offlining: give a host virtual range fresh pages with the same
 * contents, leaving the old pages to whoever still references them
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QEMU_PAGE_OFFLINE_H
#define QEMU_PAGE_OFFLINE_H

/*
 * After a successful page_offline_range(), every page that intersects
 * [@host, @host + @len) is a new page with the contents the old page had
 * at the moment of the swap (bytes outside the range but on the same
 * pages included). Kernel references taken earlier (a socket buffer of a
 * MSG_ZEROCOPY send, a vmsplice()d pipe) keep the old pages, so nothing
 * written to the range afterwards reaches them. The old pages are freed
 * when the last such reference goes away.
 *
 * The range must be private anonymous memory with the host page size
 * (no hugetlbfs, no file or shared mapping). It may be backed by
 * transparent huge pages, and it may be locked (mlock()): the mapping
 * stays locked, and so are the new pages (old pages are zapped with
 * MADV_DONTNEED_LOCKED, Linux 5.18; UFFDIO_MOVE refuses locked memory,
 * so AUTO splices it).
 *
 * All methods but PAGE_OFFLINE_COPY stay correct while other threads
 * (running vCPUs) read and write the range. They share one userfaultfd
 * and its scratch areas, created at the first offline and kept for the
 * life of the process; guest memory is registered with it only for the
 * duration of one call. New pages come from a pool of spare pages that
 * a thread of the engine faults in ahead of time, where it has some.
 */
typedef enum PageOfflineMethod {
    /*
     * Per 2 MiB region: a transparent huge page that the ranges cover at
     * least half of is moved out whole (UFFDIO_MOVE of one huge page) and
     * copied into a spare huge page that moves in whole, or back into
     * small pages (UFFDIO_COPY); the other pages are moved out, copied
     * into pages of a spare that move in, or, without a spare or where
     * a page cannot move, go by UFFD_SPLICE.
     */
    PAGE_OFFLINE_AUTO,
    /* UFFDIO_MOVE of the old pages to a scratch area, UFFDIO_COPY back */
    PAGE_OFFLINE_UFFD_MOVE,
    /* UFFDIO_WRITEPROTECT, copy out, MADV_DONTNEED, UFFDIO_COPY back */
    PAGE_OFFLINE_UFFD_WP,
    /*
     * Copy out, MADV_DONTNEED, copy back. Loses concurrent writes: only
     * correct while nothing else accesses the range (vCPUs paused).
     */
    PAGE_OFFLINE_COPY,
    /*
     * vmsplice() the old pages into a pipe (a reference of our own),
     * MADV_DONTNEED, read them back from the pipe, UFFDIO_COPY. Works on
     * referenced transparent huge pages, and without UFFDIO_MOVE.
     */
    PAGE_OFFLINE_UFFD_SPLICE,
    PAGE_OFFLINE__MAX,
} PageOfflineMethod;

/*
 * page_offline_available: whether @method can work in this process
 * (userfaultfd with the features it needs). PAGE_OFFLINE_COPY always can.
 */
bool page_offline_available(PageOfflineMethod method);

/*
 * page_offline_range: offline the pages under [@host, @host + @len).
 * @used, if not NULL, receives the method that completed the offline
 * (for AUTO: UFFD_SPLICE if any part was spliced, else UFFD_MOVE).
 *
 * Returns 0, or a negative errno: -EBUSY if another userfaultfd has
 * registered the range (postcopy, background snapshot), -ENOSYS if
 * userfaultfd or a feature is missing, -EINVAL for a bad range, or the
 * error of the failed system call. On error the contents are unchanged
 * (the range may already be partly offlined).
 */
int page_offline_range(void *host, size_t len, PageOfflineMethod method,
                       PageOfflineMethod *used);

/*
 * page_offline_ranges: offline the pages under each of the @n ranges of
 * @iov in one pass, as page_offline_range() would one by one. Ranges may
 * overlap and come in any order; pages shared by several are offlined
 * once, and a huge page that the ranges cover together is replaced whole.
 *
 * @window, if not NULL, is a host range that contains every range and
 * consists of whole mappings that may be registered with a userfaultfd
 * for the duration of the call (a RAMBlock): registering it whole splits
 * no mapping and no huge page. Threads that fault on a page of the
 * window that is not populated wait until the call returns. Without a
 * window, the pages of the ranges themselves are registered.
 */
int page_offline_ranges(const struct iovec *iov, unsigned int n,
                        void *window, size_t window_len,
                        PageOfflineMethod method, PageOfflineMethod *used);

/*
 * page_offline_prepare: set the engine up now (its userfaultfd, scratch
 * areas and pool of spare huge pages, which a thread of its own faults
 * in), so that the first offline does not pay for it. Optional.
 */
void page_offline_prepare(void);

/*
 * page_offline_pool_reserve: change by @ready bytes what the pool of
 * spares keeps faulted in (QEMU's memory, for good), and by @most bytes
 * what it may grow to on demand. A call that runs out of spares grows
 * the pool to the bytes it wanted, up to the sum of @most (or of @ready,
 * if larger) over the users. The pool holds at least 8 MiB and at most
 * 512 MiB. A user that goes away gives back what it added (negative
 * values); spares beyond the new size are freed.
 */
void page_offline_pool_reserve(int64_t ready, int64_t most);

/* What the engine did since the process started (tests, benchmarks) */
typedef struct PageOfflineStats {
    uint64_t calls;             /* page_offline_range[s]() that succeeded */
    uint64_t uffd_opened;       /* userfaultfds created (normally 1) */
    uint64_t huge_replaced;     /* 2 MiB regions moved out and in whole */
    uint64_t huge_pooled;       /* of those, given a spare huge page */
    uint64_t spares;            /* spares ready now (huge or small pages) */
    uint64_t pool_target;       /* spares the pool keeps ready (0: none) */
    uint64_t pool_grown;        /* calls that grew the pool on demand */
    uint64_t bytes_moved;       /* moved out, copied back (UFFD_MOVE) */
    uint64_t bytes_spliced;     /* by UFFD_SPLICE */
    uint64_t bytes_pooled;      /* of those, given pages of a spare */
    uint64_t bytes_wp;          /* by UFFD_WP */
    uint64_t bytes_copied;      /* by COPY */
} PageOfflineStats;

void page_offline_get_stats(PageOfflineStats *stats);

const char *page_offline_method_name(PageOfflineMethod method);

#endif
