/*
 * Page offlining: give a host virtual range fresh pages with the same
 * contents, leaving the old pages to whoever still references them.
 *
 * The userfaultfd methods stay correct while other threads (running
 * vCPUs) read and write the range: between taking the old pages away and
 * installing the new ones, every access to the range blocks in the
 * kernel on a userfault that the final UFFDIO_COPY resolves. The range
 * is registered only for the duration of one offline, because a range
 * can belong to only one userfaultfd (postcopy has its own).
 *
 * This thread must never touch a registered hole itself (it would wait
 * on its own userfault): the MOVE method only reads the scratch area
 * after unregistering it, and the WP method populates the range before
 * registering it.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/page-offline.h"

#ifdef CONFIG_LINUX
#include <sys/ioctl.h>
#include "qemu/userfaultfd.h"

/*
 * Thin adapters over util/userfaultfd.c that return -errno. A
 * userfaultfd that cannot be had, or lacks @features, is -ENOSYS.
 */
static int po_uffd_new(uint64_t features)
{
    int fd = uffd_create_fd(features, true);

    return fd < 0 ? -ENOSYS : fd;
}

static int po_register(int fd, void *addr, size_t len, uint64_t mode)
{
    return uffd_register_memory(fd, addr, len, mode, NULL) ? -errno : 0;
}

static int po_unregister(int fd, void *addr, size_t len)
{
    return uffd_unregister_memory(fd, addr, len) ? -errno : 0;
}

/*
 * A userfaultfd with @features and a private anonymous area of @len
 * bytes (scratch or bounce space). Returns the fd, or -errno.
 */
static int po_setup(uint64_t features, size_t len, char **area)
{
    int fd = po_uffd_new(features);
    int ret;

    if (fd < 0) {
        return fd;
    }
    *area = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (*area == MAP_FAILED) {
        ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

/* UFFDIO_COPY @len bytes from @src into the holes at @dst, then wake */
static int po_copy(int fd, char *dst, char *src, size_t len)
{
    size_t done = 0;
    int again = 0;

    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)(dst + done),
            .src = (uintptr_t)(src + done),
            .len = len - done,
        };

        if (ioctl(fd, UFFDIO_COPY, &c) == 0) {
            break;
        }
        if (c.copy > 0) {
            done += c.copy;
            continue;
        }
        if (errno == EAGAIN && again++ < 1000) {
            continue;
        }
        return -errno;
    }
    return 0;
}

static void po_touch(char *start, size_t len, size_t psize)
{
    size_t off;

    for (off = 0; off < len; off += psize) {
        /* volatile: the read must happen, it maps the page */
        (void)*(volatile char *)(start + off);
    }
}

/*
 * Move the old pages to a scratch area and UFFDIO_COPY them back. Returns
 * 0 with *@done = @len, or an error with *@done the prefix length that was
 * offlined (the rest is untouched).
 */
static int po_offline_move(char *start, size_t len, size_t *done)
{
    struct uffdio_move mv;
    size_t moved = 0;
    int again = 0;
    char *scratch;
    int fd, ret, ret2;

    *done = 0;
    fd = po_setup(UFFD_FEATURE_MOVE, len, &scratch);
    if (fd < 0) {
        return fd;
    }
    ret = po_register(fd, start, len, UFFDIO_REGISTER_MODE_MISSING);
    if (ret) {
        goto out_unmap;
    }
    ret = po_register(fd, scratch, len, UFFDIO_REGISTER_MODE_MISSING);
    if (ret) {
        goto out_unregister;
    }
    while (moved < len) {
        mv = (struct uffdio_move) {
            .dst = (uintptr_t)(scratch + moved),
            .src = (uintptr_t)(start + moved),
            .len = len - moved,
            .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES |
                    UFFDIO_MOVE_MODE_DONTWAKE,
        };
        if (ioctl(fd, UFFDIO_MOVE, &mv) == 0) {
            moved = len;
            break;
        }
        if (mv.move > 0) {
            moved += mv.move;
            continue;
        }
        if (errno == EAGAIN && again++ < 1000) {
            continue;
        }
        ret = -errno;
        break;
    }
    /* Holes of the scratch area now read as zeroes instead of faulting */
    ret2 = po_unregister(fd, scratch, len);
    if (ret2 && !ret) {
        ret = ret2;
    }
    /*
     * Give the moved prefix fresh copies of its pages, whatever happened:
     * the holes it left must never be seen as zero pages.
     */
    ret2 = po_copy(fd, start, scratch, moved);
    if (ret2) {
        ret = ret2;
    } else {
        *done = moved;
    }

out_unregister:
    /* This also wakes any thread that still waits on the range */
    po_unregister(fd, start, len);
out_unmap:
    /* Old pages go away here unless the kernel still references them */
    munmap(scratch, len);
    close(fd);
    return ret;
}

/* Write-protect, copy out, drop the old pages, UFFDIO_COPY back */
static int po_offline_wp(char *start, size_t len, size_t psize)
{
    struct uffdio_writeprotect wp = {
        .range = { .start = (uintptr_t)start, .len = len },
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    char *bounce;
    int fd, ret;

    fd = po_setup(0, len, &bounce);
    if (fd < 0) {
        return fd;
    }
    /* No holes once registered: this thread must not fault on them */
    po_touch(start, len, psize);
    ret = po_register(fd, start, len,
                      UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
    if (ret) {
        goto out_unmap;
    }
    if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp)) {
        ret = -errno;
        goto out_unregister;
    }
    memcpy(bounce, start, len);
    if (madvise(start, len, MADV_DONTNEED)) {
        ret = -errno;
        goto out_unregister;
    }
    ret = po_copy(fd, start, bounce, len);

out_unregister:
    po_unregister(fd, start, len);
out_unmap:
    munmap(bounce, len);
    close(fd);
    return ret;
}

static int po_offline_copy(char *start, size_t len)
{
    char *bounce;
    int ret = 0;

    bounce = mmap(NULL, len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bounce == MAP_FAILED) {
        return -errno;
    }
    memcpy(bounce, start, len);
    if (madvise(start, len, MADV_DONTNEED)) {
        ret = -errno;
    } else {
        memcpy(start, bounce, len);
    }
    munmap(bounce, len);
    return ret;
}

bool page_offline_available(PageOfflineMethod method)
{
    int fd;

    switch (method) {
    case PAGE_OFFLINE_COPY:
        return true;
    case PAGE_OFFLINE_AUTO:
    case PAGE_OFFLINE_UFFD_WP:
        fd = po_uffd_new(0);
        break;
    case PAGE_OFFLINE_UFFD_MOVE:
        fd = po_uffd_new(UFFD_FEATURE_MOVE);
        break;
    default:
        return false;
    }
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

int page_offline_range(void *host, size_t len, PageOfflineMethod method,
                       PageOfflineMethod *used)
{
    size_t psize = qemu_real_host_page_size();
    uintptr_t first = (uintptr_t)host & ~(psize - 1);
    uintptr_t last;
    char *start = (char *)first;
    size_t done = 0;
    int ret;

    if (len == 0) {
        if (used) {
            *used = method;
        }
        return 0;
    }
    if ((uintptr_t)host + len < (uintptr_t)host || !host) {
        return -EINVAL;
    }
    last = ROUND_UP((uintptr_t)host + len, psize);
    len = last - first;

    switch (method) {
    case PAGE_OFFLINE_AUTO:
        ret = po_offline_move(start, len, &done);
        if (ret == -EBUSY && done < len) {
            /*
             * A large folio the kernel cannot split while it is
             * referenced: write-protect the rest instead. -EBUSY before
             * anything moved may also mean the range is registered by
             * another userfaultfd; the WP method then fails the same way.
             */
            ret = po_offline_wp(start + done, len - done, psize);
            method = PAGE_OFFLINE_UFFD_WP;
        } else if (ret == -ENOSYS) {
            ret = po_offline_wp(start, len, psize);
            method = PAGE_OFFLINE_UFFD_WP;
        } else {
            method = PAGE_OFFLINE_UFFD_MOVE;
        }
        break;
    case PAGE_OFFLINE_UFFD_MOVE:
        ret = po_offline_move(start, len, &done);
        break;
    case PAGE_OFFLINE_UFFD_WP:
        ret = po_offline_wp(start, len, psize);
        break;
    case PAGE_OFFLINE_COPY:
        ret = po_offline_copy(start, len);
        break;
    default:
        return -EINVAL;
    }
    if (used) {
        *used = method;
    }
    return ret;
}

#else /* !CONFIG_LINUX */

bool page_offline_available(PageOfflineMethod method)
{
    return method == PAGE_OFFLINE_COPY;
}

int page_offline_range(void *host, size_t len, PageOfflineMethod method,
                       PageOfflineMethod *used)
{
    return -ENOSYS;
}

#endif /* CONFIG_LINUX */

const char *page_offline_method_name(PageOfflineMethod method)
{
    static const char *const names[PAGE_OFFLINE__MAX] = {
        [PAGE_OFFLINE_AUTO] = "auto",
        [PAGE_OFFLINE_UFFD_MOVE] = "uffd-move",
        [PAGE_OFFLINE_UFFD_WP] = "uffd-wp",
        [PAGE_OFFLINE_COPY] = "copy",
    };

    /* An enum may be unsigned: compare as unsigned, for every compiler */
    if ((unsigned)method >= PAGE_OFFLINE__MAX) {
        return "invalid";
    }
    return names[method];
}
