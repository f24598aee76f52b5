/*
 * Offlining guest RAM
 *
 * The generic part (how to swap pages) is util/page-offline.c; this file
 * decides which guest RAM may be offlined at all, and when:
 *
 * - private anonymous RAM (the default -m, memory-backend-ram): yes, with
 *   the page offline engine;
 * - shared fd-backed RAM (memfd, memory-backend-file with share=on): yes,
 *   by a private remap (below);
 * - private fd-backed RAM (memory-backend-file, share=off), and pages of
 *   shared RAM that an earlier offline left private: no, callers copy;
 * - hugetlbfs RAM: no, callers copy instead;
 * - while something needs the pages to stay put (discard disabled, for
 *   example by VFIO): no;
 * - during postcopy migration or a background snapshot (both register
 *   guest RAM with their own userfaultfd): refused for now (-EBUSY);
 * - when a pin holder exposes the physical page of a page it pinned
 *   (iommu-emul in hpa mode, or a mapping whose requester has an IOMMU
 *   notifier consumer: VFIO, vhost): refused for now (-EBUSY). Pages it
 *   pinned only for QEMU's own device models (mlock, reached through the
 *   RAMBlock's address) are offlined, and keep their lock.
 *
 * Shared RAM is offlined by mapping the same file offset again, with
 * MAP_FIXED | MAP_PRIVATE: the guest keeps reading the same contents and
 * gets a private copy of a page when it first writes it, while the page
 * cache page, which the socket references, and every other mapper of the
 * file keep the old bytes. No write of a running vCPU is lost: mmap()
 * swaps the mapping under the mmap lock. The pages stay private, and the
 * file stale for them, until the caller says that whatever referenced
 * them has let go (ram_offline_host_reshare()): then the guest's bytes
 * are written to the file and the range is mapped shared again, with the
 * vCPUs paused. Until then, requests over them are copied.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "hw/boards.h"
#include "qemu/madvise.h"
#include "system/qtest.h"
#include "migration/misc.h"
#include "migration/client-options.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "system/cpus.h"
#include "hw/core/cpu.h"
#include "system/ram-offline.h"
#include "trace.h"

static bool ram_offline_all_vcpus_stopped(void);

/* Devices that pin guest pages; with the BQL */
static QLIST_HEAD(, RamOfflinePinHolder) ram_offline_pin_holders =
    QLIST_HEAD_INITIALIZER(ram_offline_pin_holders);

void ram_offline_pin_holder_add(RamOfflinePinHolder *h)
{
    QLIST_INSERT_HEAD(&ram_offline_pin_holders, h, next);
}

void ram_offline_pin_holder_remove(RamOfflinePinHolder *h)
{
    QLIST_REMOVE(h, next);
}

static bool ram_offline_exposed(RAMBlock *rb, void *host, size_t len)
{
    RamOfflinePinHolder *h;

    QLIST_FOREACH(h, &ram_offline_pin_holders, next) {
        if (h->exposed(h, rb, host, len)) {
            return true;
        }
    }
    return false;
}

/* A mapping anew drops mlock(): let the pin holders lock their pages */
static void ram_offline_remapped(RAMBlock *rb, void *host, size_t len)
{
    RamOfflinePinHolder *h;

    QLIST_FOREACH(h, &ram_offline_pin_holders, next) {
        if (h->remapped) {
            h->remapped(h, rb, host, len);
        }
    }
}

/* Host ranges of shared RAM that an offline left private; with the BQL */
typedef struct RamOfflinePrivate {
    uintptr_t start, end;
} RamOfflinePrivate;

static GArray *ram_offline_private;    /* sorted, disjoint */

/* Whether @rb is offlined by a private remap of its file */
static bool ram_offline_by_remap(RAMBlock *rb)
{
    return qemu_ram_get_fd(rb) >= 0 && qemu_ram_is_shared(rb);
}

static RamOfflineSupport ram_offline_block_support(RAMBlock *rb,
                                                   ram_addr_t offset,
                                                   size_t len)
{
    if (!rb || offset + len < offset ||
        offset + len > qemu_ram_get_used_length(rb)) {
        return RAM_OFFLINE_NO_RAM;
    }
    if (qemu_ram_pagesize(rb) != qemu_real_host_page_size()) {
        return RAM_OFFLINE_NO_HUGEPAGE;
    }
    if ((rb->flags & (RAM_PREALLOC | RAM_READONLY)) ||
        (!ram_offline_by_remap(rb) &&
         (qemu_ram_get_fd(rb) >= 0 || qemu_ram_is_shared(rb)))) {
        return RAM_OFFLINE_NO_SHARED;
    }
    if (ram_block_discard_is_disabled()) {
        return RAM_OFFLINE_NO_DISCARD;
    }
    return RAM_OFFLINE_OK;
}

/* Index of the first private range that ends after @start */
static unsigned int ram_offline_private_find(uintptr_t start)
{
    unsigned int lo = 0, hi = ram_offline_private ?
                              ram_offline_private->len : 0;

    while (lo < hi) {
        unsigned int mid = (lo + hi) / 2;

        if (g_array_index(ram_offline_private, RamOfflinePrivate,
                          mid).end <= start) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static bool ram_offline_private_overlaps(uintptr_t start, uintptr_t end)
{
    unsigned int i = ram_offline_private_find(start);

    return ram_offline_private && i < ram_offline_private->len &&
           g_array_index(ram_offline_private, RamOfflinePrivate,
                         i).start < end;
}

static void ram_offline_private_add(uintptr_t start, uintptr_t end)
{
    RamOfflinePrivate r = { start, end };
    unsigned int i, j;

    if (!ram_offline_private) {
        ram_offline_private = g_array_new(false, false, sizeof(r));
    }
    /* Merge with every range that overlaps or touches [start, end) */
    i = ram_offline_private_find(start ? start - 1 : 0);
    for (j = i; j < ram_offline_private->len; j++) {
        RamOfflinePrivate *o = &g_array_index(ram_offline_private,
                                              RamOfflinePrivate, j);

        if (o->start > end) {
            break;
        }
        r.start = MIN(r.start, o->start);
        r.end = MAX(r.end, o->end);
    }
    g_array_remove_range(ram_offline_private, i, j - i);
    g_array_insert_val(ram_offline_private, i, r);
}

static void ram_offline_private_remove(uintptr_t start, uintptr_t end)
{
    unsigned int i = ram_offline_private_find(start);

    while (ram_offline_private && i < ram_offline_private->len) {
        RamOfflinePrivate *o = &g_array_index(ram_offline_private,
                                              RamOfflinePrivate, i);
        RamOfflinePrivate tail = { end, o->end };

        if (o->start >= end) {
            break;
        }
        if (o->start < start) {
            o->end = start;
            i++;
        } else {
            g_array_remove_index(ram_offline_private, i);
        }
        if (tail.end > tail.start && tail.start > start) {
            g_array_insert_val(ram_offline_private, i, tail);
            break;
        }
    }
}

RamOfflineSupport ram_offline_host_support(void *host, size_t len)
{
    size_t psize = qemu_real_host_page_size();
    RamOfflineSupport sup;
    ram_addr_t offset;
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    rb = qemu_ram_block_from_host(host, false, &offset);
    sup = ram_offline_block_support(rb, offset, len);
    if (sup == RAM_OFFLINE_OK && ram_offline_by_remap(rb) &&
        ram_offline_private_overlaps(ROUND_DOWN((uintptr_t)host, psize),
                                     ROUND_UP((uintptr_t)host + len,
                                              psize))) {
        return RAM_OFFLINE_NO_PRIVATE;
    }
    return sup;
}

bool ram_offline_host_needs_reshare(void *host, size_t len)
{
    ram_addr_t offset;
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    rb = qemu_ram_block_from_host(host, false, &offset);
    return rb && ram_offline_by_remap(rb);
}

/* What ram_block_add() advises for guest RAM, on a range mapped again */
static void ram_offline_advise(void *host, size_t len)
{
    if (!machine_dump_guest_core(current_machine)) {
        qemu_madvise(host, len, QEMU_MADV_DONTDUMP);
    }
    if (!qtest_enabled()) {
        qemu_madvise(host, len, QEMU_MADV_DONTFORK);
    }
}

/* Map [@host, @host + @len) of @rb (page-aligned) from its file again */
static int ram_offline_map(RAMBlock *rb, uintptr_t host, size_t len,
                           bool shared)
{
    int flags = MAP_FIXED | (shared ? MAP_SHARED : MAP_PRIVATE) |
                ((rb->flags & RAM_NORESERVE) ? MAP_NORESERVE : 0);
    off_t off = rb->fd_offset +
                (host - (uintptr_t)qemu_ram_get_host_addr(rb));

    if (mmap((void *)host, len, PROT_READ | PROT_WRITE, flags,
             qemu_ram_get_fd(rb), off) != (void *)host) {
        return -errno;
    }
    ram_offline_advise((void *)host, len);
    ram_offline_remapped(rb, (void *)host, len);
    return 0;
}

/*
 * Offline the shared RAM of @rb under @n ranges: map every page that is
 * still shared privately. Pages that are private already stay as they
 * are (mapping them again would drop the guest's private writes).
 */
static int ram_offline_remap(RAMBlock *rb, const struct iovec *iov,
                             unsigned int n)
{
    size_t psize = qemu_real_host_page_size();
    unsigned int i, k;
    uintptr_t p, end, stop;
    int ret;

    for (i = 0; i < n; i++) {
        p = ROUND_DOWN((uintptr_t)iov[i].iov_base, psize);
        end = ROUND_UP((uintptr_t)iov[i].iov_base + iov[i].iov_len, psize);
        while (p < end) {
            k = ram_offline_private_find(p);
            if (ram_offline_private && k < ram_offline_private->len &&
                g_array_index(ram_offline_private, RamOfflinePrivate,
                              k).start <= p) {
                /* Private already: skip to its end */
                p = g_array_index(ram_offline_private, RamOfflinePrivate,
                                  k).end;
                continue;
            }
            stop = end;
            if (ram_offline_private && k < ram_offline_private->len) {
                stop = MIN(stop, g_array_index(ram_offline_private,
                                               RamOfflinePrivate, k).start);
            }
            ret = ram_offline_map(rb, p, stop - p, false);
            if (ret) {
                return ret;
            }
            ram_offline_private_add(p, stop);
            p = stop;
        }
    }
    return 0;
}

/* Re-shares that had to wait (postcopy, background snapshot, errors) */
static GArray *ram_offline_deferred;
static NotifierWithReturn ram_offline_migration_notifier;

static int ram_offline_migration_notify(NotifierWithReturn *notifier,
                                        MigrationEvent *e, Error **errp)
{
    g_autoptr(GArray) deferred = NULL;

    if ((e->type == MIG_EVENT_PRECOPY_DONE ||
         e->type == MIG_EVENT_PRECOPY_FAILED) && ram_offline_deferred &&
        ram_offline_deferred->len) {
        deferred = ram_offline_deferred;
        ram_offline_deferred = NULL;
        ram_offline_host_reshare(&g_array_index(deferred, struct iovec, 0),
                                 deferred->len, false);
    }
    return 0;
}

static void ram_offline_defer(const struct iovec *iov, unsigned int n)
{
    if (!ram_offline_deferred) {
        ram_offline_deferred = g_array_new(false, false,
                                           sizeof(struct iovec));
    }
    if (!ram_offline_migration_notifier.notify) {
        migration_add_notifier(&ram_offline_migration_notifier,
                               ram_offline_migration_notify);
    }
    g_array_append_vals(ram_offline_deferred, iov, n);
}

int ram_offline_host_reshare(const struct iovec *iov, unsigned int n,
                             bool replace)
{
    size_t psize = qemu_real_host_page_size();
    g_autoptr(GArray) todo = g_array_new(false, false,
                                         sizeof(RamOfflinePrivate));
    g_autoptr(GArray) deferred = NULL;
    unsigned int i, k;
    bool pause;
    int ret = 0;

    if (ram_offline_refused()) {
        /* Mapping anew would drop the other userfaultfd's registration */
        ram_offline_defer(iov, n);
        return -EBUSY;
    }
    if (ram_offline_deferred && ram_offline_deferred->len) {
        /* What had to wait goes with this */
        deferred = ram_offline_deferred;
        ram_offline_deferred = NULL;
        ram_offline_host_reshare(&g_array_index(deferred, struct iovec, 0),
                                 deferred->len, false);
    }
    /* The private pages under the ranges */
    for (i = 0; i < n; i++) {
        uintptr_t start = ROUND_DOWN((uintptr_t)iov[i].iov_base, psize);
        uintptr_t end = ROUND_UP((uintptr_t)iov[i].iov_base +
                                 iov[i].iov_len, psize);

        for (k = ram_offline_private_find(start);
             ram_offline_private && k < ram_offline_private->len; k++) {
            RamOfflinePrivate o = g_array_index(ram_offline_private,
                                                RamOfflinePrivate, k);

            if (o.start >= end) {
                break;
            }
            o.start = MAX(o.start, start);
            o.end = MIN(o.end, end);
            g_array_append_val(todo, o);
        }
    }
    if (!todo->len) {
        return 0;
    }
    /*
     * Between the write to the file and the shared mapping, a guest
     * write would be lost: keep the vCPUs still (as the paused copy does).
     */
    pause = !ram_offline_all_vcpus_stopped();
    if (pause) {
        pause_all_vcpus();
    }
    RCU_READ_LOCK_GUARD();
    for (i = 0; i < todo->len; i++) {
        RamOfflinePrivate *o = &g_array_index(todo, RamOfflinePrivate, i);
        size_t len = o->end - o->start, done = 0;
        ram_addr_t offset;
        RAMBlock *rb;
        ssize_t w;

        rb = qemu_ram_block_from_host((void *)o->start, false, &offset);
        if (!rb || !ram_offline_by_remap(rb)) {
            /* The RAMBlock went away, and its mapping with it */
            ram_offline_private_remove(o->start, o->end);
            continue;
        }
        if (ram_offline_exposed(rb, (void *)o->start, len)) {
            /*
             * A page pinned with its physical page exposed (bus-addr=hpa)
             * while private: the pin holds the private page, which must
             * stay the guest's. Later.
             */
            ram_offline_defer(&(struct iovec) { (void *)o->start, len }, 1);
            ret = ret ? ret : -EBUSY;
            continue;
        }
        /*
         * Pages someone may still reference leave the file first; the
         * references keep them, the file gets new ones below.
         */
        if (replace && fallocate(qemu_ram_get_fd(rb),
                                 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 rb->fd_offset + offset, len)) {
            done = len + 1;
        }
        while (done < len) {
            w = pwrite(qemu_ram_get_fd(rb), (char *)o->start + done,
                       len - done, rb->fd_offset + offset + done);
            if (w <= 0 && !(w < 0 && errno == EINTR)) {
                break;
            }
            done += MAX(w, 0);
        }
        w = done != len ? -EIO : ram_offline_map(rb, o->start, len, true);
        trace_ram_offline_host_range((void *)o->start, len, "reshare", w);
        if (w) {
            /* Still private, the file untouched or rewritten: later */
            ram_offline_defer(&(struct iovec) { (void *)o->start, len }, 1);
            ret = ret ? ret : w;
            continue;
        }
        ram_offline_private_remove(o->start, o->end);
    }
    if (pause) {
        resume_all_vcpus();
    }
    return ret;
}

const char *ram_offline_refused(void)
{
    if (migration_in_bg_snapshot()) {
        return "background snapshot";
    }
    if (migration_in_incoming_postcopy() ||
        migration_incoming_postcopy_advised()) {
        return "incoming postcopy";
    }
    if (migrate_postcopy_ram() && migration_is_running()) {
        return "postcopy migration";
    }
    return NULL;
}

static bool ram_offline_all_vcpus_stopped(void)
{
    CPUState *cpu;

    CPU_FOREACH(cpu) {
        if (!cpu_is_stopped(cpu)) {
            return false;
        }
    }
    return true;
}

/*
 * Must not run inside a QEMU_CLOCK_VIRTUAL timer callback:
 * pause_all_vcpus() disables that clock and waits for its timers to
 * finish. Callers defer to a bottom half.
 */
static int ram_offline_paused_copy(const struct iovec *iov, unsigned int n)
{
    bool pause;
    int ret;

    /*
     * Inside a system reset the vCPUs are already paused by the main
     * loop, and must stay paused: resuming is left to the caller of the
     * reset. Likewise while the VM is stopped.
     */
    pause = !ram_offline_all_vcpus_stopped();
    if (pause) {
        pause_all_vcpus();
    }
    ret = page_offline_ranges(iov, n, NULL, 0, PAGE_OFFLINE_COPY, NULL);
    if (pause) {
        resume_all_vcpus();
    }
    return ret;
}

/* Offline with @method; *@used receives the method that did it */
static int ram_offline_with(RAMBlock *rb, const struct iovec *iov,
                            unsigned int n, PageOfflineMethod method,
                            PageOfflineMethod *used)
{
    if (method == PAGE_OFFLINE_COPY ||
        (method == PAGE_OFFLINE_AUTO &&
         !page_offline_available(PAGE_OFFLINE_UFFD_SPLICE))) {
        *used = PAGE_OFFLINE_COPY;
        return ram_offline_paused_copy(iov, n);
    }
    *used = method;
    /*
     * The whole block is the window: registering whole mappings splits
     * neither a mapping nor a huge page (docs/specs/virtio-zc.rst).
     */
    return page_offline_ranges(iov, n, qemu_ram_get_host_addr(rb),
                               qemu_ram_get_max_length(rb), method, used);
}

/*
 * Whether [@host, @host + @len) may be offlined now: 0 with its RAMBlock
 * in *@rb, or -ENOTSUP or -EBUSY as ram_offline_host_range() returns.
 * Within an RCU read-side critical section.
 */
static int ram_offline_check(void *host, size_t len, RAMBlock **rb)
{
    RamOfflineSupport sup;
    ram_addr_t offset;
    const char *why;

    *rb = qemu_ram_block_from_host(host, false, &offset);
    sup = ram_offline_block_support(*rb, offset, len);
    if (sup != RAM_OFFLINE_OK) {
        trace_ram_offline_unsupported(host, len, sup);
        return -ENOTSUP;
    }
    why = ram_offline_refused();
    if (why) {
        trace_ram_offline_refused(host, len, why);
        return -EBUSY;
    }
    if (ram_offline_exposed(*rb, host, len)) {
        trace_ram_offline_refused(host, len, "pinned, physical page exposed");
        return -EBUSY;
    }
    return 0;
}

/* Offline @n ranges of @rb that passed ram_offline_check() */
static int ram_offline_block_ranges(RAMBlock *rb, const struct iovec *iov,
                                    unsigned int n, PageOfflineMethod method,
                                    PageOfflineMethod *used)
{
    PageOfflineMethod done_by;
    int ret;

    if (ram_offline_by_remap(rb)) {
        /* No method to choose: a private remap is race-free as it is */
        ret = ram_offline_remap(rb, iov, n);
        trace_ram_offline_host_range(iov[0].iov_base, iov_size(iov, n),
                                     "private-remap", ret);
        if (used) {
            *used = PAGE_OFFLINE_AUTO;
        }
        return ret == -EBUSY ? -EIO : ret;
    }

    ret = ram_offline_with(rb, iov, n, method, &done_by);
    trace_ram_offline_host_range(iov[0].iov_base, iov_size(iov, n),
                                 page_offline_method_name(done_by), ret);
    if (ret && method != PAGE_OFFLINE_AUTO) {
        /*
         * A forced method can fail where auto does not, for example
         * UFFDIO_MOVE on a transparent huge page that the kernel still
         * references (-EBUSY). The caller needs the pages offlined: only
         * the refusals above may leave them as they are. Offlined pages
         * have the same contents, so a partial first attempt is harmless.
         */
        ret = ram_offline_with(rb, iov, n, PAGE_OFFLINE_AUTO, &done_by);
        trace_ram_offline_host_range(iov[0].iov_base, iov_size(iov, n),
                                     page_offline_method_name(done_by), ret);
    }
    if (used) {
        *used = done_by;
    }
    /* -EBUSY means refused for now: a failed method is not a refusal */
    return ret == -EBUSY ? -EIO : ret;
}

int ram_offline_host_range(void *host, size_t len, PageOfflineMethod method,
                           PageOfflineMethod *used)
{
    struct iovec iov = { .iov_base = host, .iov_len = len };
    RAMBlock *rb;
    int ret;

    RCU_READ_LOCK_GUARD();
    ret = ram_offline_check(host, len, &rb);
    if (ret) {
        return ret;
    }
    return ram_offline_block_ranges(rb, &iov, 1, method, used);
}

int ram_offline_host_ranges(const struct iovec *iov, unsigned int n,
                            PageOfflineMethod method, PageOfflineMethod *used,
                            int *results)
{
    g_autofree RAMBlock **rbs = g_new(RAMBlock *, MAX(n, 1));
    g_autofree struct iovec *group = g_new(struct iovec, MAX(n, 1));
    g_autofree unsigned int *idx = g_new(unsigned int, MAX(n, 1));
    unsigned int i, j, k;
    int ret, first = 0;

    RCU_READ_LOCK_GUARD();
    for (i = 0; i < n; i++) {
        results[i] = ram_offline_check(iov[i].iov_base, iov[i].iov_len,
                                       &rbs[i]);
        if (results[i]) {
            rbs[i] = NULL;
        }
    }
    /* One pass per RAMBlock (a guest has few) */
    for (i = 0; i < n; i++) {
        RAMBlock *rb = rbs[i];

        if (!rb) {
            continue;
        }
        for (j = i, k = 0; j < n; j++) {
            if (rbs[j] == rb) {
                group[k] = iov[j];
                idx[k++] = j;
                rbs[j] = NULL;
            }
        }
        ret = ram_offline_block_ranges(rb, group, k, method, used);
        if (ret && k > 1) {
            /* Find out which: one by one, as the caller would have */
            for (j = 0; j < k; j++) {
                results[idx[j]] = ram_offline_block_ranges(rb, &group[j], 1,
                                                           method, used);
            }
        } else {
            for (j = 0; j < k; j++) {
                results[idx[j]] = ret;
            }
        }
    }
    for (i = 0; i < n && !first; i++) {
        first = results[i];
    }
    return first;
}
