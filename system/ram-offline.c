/*
 * Offlining guest RAM
 *
 * The generic part (how to swap pages) is util/page-offline.c; this file
 * decides which guest RAM may be offlined at all, and when:
 *
 * - private anonymous RAM (the default -m, memory-backend-ram): yes;
 * - fd-backed or shared RAM (memfd, memory-backend-file, share=on): no,
 *   a peer mapping the same file would see later guest writes or lose
 *   them; callers copy instead;
 * - hugetlbfs RAM: no, callers copy instead;
 * - while something needs the pages to stay put (discard disabled, for
 *   example by VFIO): no;
 * - during postcopy migration or a background snapshot (both register
 *   guest RAM with their own userfaultfd): refused for now (-EBUSY);
 * - when a discard veto holds a page (iommu-emul has pinned it for DMA,
 *   see system/ram-discard-veto.h): refused for now (-EBUSY).
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "migration/misc.h"
#include "migration/client-options.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "system/cpus.h"
#include "hw/core/cpu.h"
#include "system/ram-discard-veto.h"
#include "system/ram-offline.h"
#include "trace.h"

static RamOfflineSupport ram_offline_block_support(RAMBlock *rb,
                                                   ram_addr_t offset,
                                                   size_t len)
{
    if (!rb || offset + len < offset ||
        offset + len > qemu_ram_get_used_length(rb)) {
        return RAM_OFFLINE_NO_RAM;
    }
    if (qemu_ram_get_fd(rb) >= 0 || qemu_ram_is_shared(rb) ||
        (rb->flags & RAM_PREALLOC)) {
        return RAM_OFFLINE_NO_SHARED;
    }
    if (qemu_ram_pagesize(rb) != qemu_real_host_page_size()) {
        return RAM_OFFLINE_NO_HUGEPAGE;
    }
    if (ram_block_discard_is_disabled()) {
        return RAM_OFFLINE_NO_DISCARD;
    }
    return RAM_OFFLINE_OK;
}

RamOfflineSupport ram_offline_host_support(void *host, size_t len)
{
    ram_addr_t offset;
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    rb = qemu_ram_block_from_host(host, false, &offset);
    return ram_offline_block_support(rb, offset, len);
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
    if (ram_block_discard_range_vetoed(*rb, offset, len)) {
        trace_ram_offline_refused(host, len, "veto");
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
