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
 * (no hugetlbfs, no file or shared mapping).
 */
typedef enum PageOfflineMethod {
    /* UFFD_MOVE, then UFFD_WP for whatever UFFD_MOVE refused (EBUSY) */
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
 * (UFFD_WP if AUTO had to fall back for part of the range).
 *
 * Returns 0, or a negative errno: -EBUSY if another userfaultfd has
 * registered the range (postcopy, background snapshot), -ENOSYS if
 * userfaultfd or a feature is missing, -EINVAL for a bad range, or the
 * error of the failed system call. On error the contents are unchanged
 * (the range may already be partly offlined).
 */
int page_offline_range(void *host, size_t len, PageOfflineMethod method,
                       PageOfflineMethod *used);

const char *page_offline_method_name(PageOfflineMethod method);

#endif
