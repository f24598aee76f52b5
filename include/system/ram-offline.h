/*
 * Offlining guest RAM: replace the host pages under a range of guest RAM
 * with fresh pages holding the same contents (see qemu/page-offline.h)
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SYSTEM_RAM_OFFLINE_H
#define SYSTEM_RAM_OFFLINE_H

#include "exec/cpu-common.h"
#include "qemu/page-offline.h"
#include "qemu/queue.h"

typedef enum RamOfflineSupport {
    /*
     * The block can be offlined: private anonymous, or shared and
     * fd-backed (memfd, memory-backend-file with share=on: offlined by a
     * private remap, see ram_offline_host_reshare()), host page size
     */
    RAM_OFFLINE_OK,
    /* fd-backed but private (share=off), read-only, or preallocated */
    RAM_OFFLINE_NO_SHARED,
    /* hugetlbfs or another page size larger than the host's */
    RAM_OFFLINE_NO_HUGEPAGE,
    /* Someone relies on the pages staying put (VFIO, ...) */
    RAM_OFFLINE_NO_DISCARD,
    /* Not guest RAM at all (bounce buffer, MMIO) */
    RAM_OFFLINE_NO_RAM,
    /*
     * Shared RAM that an earlier offline mapped privately and that is not
     * shared again yet: an offline now would drop the guest's writes to
     * its private copy. For now only: copy.
     */
    RAM_OFFLINE_NO_PRIVATE,
} RamOfflineSupport;

/*
 * ram_offline_host_support: whether the guest RAM at host address @host
 * (@len bytes, within one RAMBlock) can be offlined. A caller that gets
 * anything but RAM_OFFLINE_OK must not expect ram_offline_host_range()
 * to work and should copy: RAM_OFFLINE_NO_PRIVATE may change later, the
 * others are for good.
 */
RamOfflineSupport ram_offline_host_support(void *host, size_t len);

/*
 * ram_offline_host_needs_reshare: whether [@host, @host + @len) lies in
 * shared RAM, which an offline maps privately. The caller of the offline
 * must call ram_offline_host_reshare() on it once nothing references the
 * pages it had before the offline any more (the zero-copy sends that
 * referenced them completed, or their socket was closed with its unsent
 * data dropped). Until then, every other mapper of the file (a vhost-user
 * back end) sees the bytes the pages had at the offline, and the guest's
 * later writes to them stay in its private copy.
 */
bool ram_offline_host_needs_reshare(void *host, size_t len);

/*
 * ram_offline_host_reshare: map the private pages of shared RAM under
 * the @n ranges of @iov shared again: write the guest's bytes to the file
 * (where the old pages, no longer referenced, are) and map it back, with
 * the vCPUs paused around the two steps. Pages that are not private are
 * left alone.
 *
 * With @replace, the old pages may still be referenced: they are taken
 * out of the file first (fallocate(PUNCH_HOLE), the references keep
 * them) and the guest's bytes go to new pages. Another mapper of the file
 * that reads those pages in between sees zeroes, and its writes there
 * are lost.
 *
 * During postcopy or a background snapshot, or after a failed write, the
 * pages stay private and are tried again with the next re-share or when
 * the migration ends. Returns 0 or a negative errno (-EBUSY: deferred).
 * With the BQL, not from a QEMU_CLOCK_VIRTUAL timer callback.
 */
int ram_offline_host_reshare(const struct iovec *iov, unsigned int n,
                             bool replace);

/*
 * ram_offline_refused: a reason why no offline may happen right now
 * (postcopy, background snapshot), or NULL.
 */
const char *ram_offline_refused(void);

/*
 * Pin holders: a device that pins guest pages (iommu-emul) tells the
 * offline engine which of them may be replaced and keeps its pins on the
 * new pages. Replacing the page under a host address is harmless to
 * whoever reaches the page through that address (QEMU's device models,
 * through the RAMBlock): only a page whose physical page was handed out
 * (a long-term pin for DMA outside QEMU, a host address taken by an IOMMU
 * notifier consumer such as VFIO or vhost) must stay.
 *
 * The list and the callbacks run with the BQL held.
 */
typedef struct RamOfflinePinHolder RamOfflinePinHolder;

struct RamOfflinePinHolder {
    /*
     * Whether a page of [@host, @host + @len) of @rb is pinned in a way
     * that exposes the physical page: the offline is then refused
     * (-EBUSY). Pages that the holder keeps only as a cache may be
     * released here.
     */
    bool (*exposed)(RamOfflinePinHolder *h, RAMBlock *rb, void *host,
                    size_t len);
    /*
     * Optional. [@host, @host + @len) of @rb was mapped anew (a private
     * remap of shared RAM, or mapped shared again): the new mapping does
     * not carry an mlock() of the old one, so lock the pinned pages in it
     * again. Offlines that keep the mapping (private anonymous RAM) keep
     * its lock: the new pages are locked as the old ones were.
     */
    void (*remapped)(RamOfflinePinHolder *h, RAMBlock *rb, void *host,
                     size_t len);
    QLIST_ENTRY(RamOfflinePinHolder) next;
};

void ram_offline_pin_holder_add(RamOfflinePinHolder *h);
void ram_offline_pin_holder_remove(RamOfflinePinHolder *h);

/*
 * ram_offline_host_range: offline the guest pages under [@host, @host +
 * @len), which must lie in one RAMBlock. Called with the BQL held.
 * @method is normally PAGE_OFFLINE_AUTO; another value is tried first
 * (tests, debugging), and if it fails, PAGE_OFFLINE_AUTO is tried next.
 *
 * Returns 0, -EBUSY when refused for now (postcopy, background snapshot,
 * a pin holder that exposes a page: try again later; only these refusals
 * return -EBUSY), -ENOTSUP for a RAM type that cannot be offlined, or
 * another negative errno when every method failed (the pages may then
 * still be referenced). *@used receives the method that ran last.
 *
 * With PAGE_OFFLINE_COPY, or with AUTO where userfaultfd is unavailable,
 * the vCPUs are paused around a plain copy and swap (or left paused if
 * they already are, as during a system reset). Do not call it from a
 * QEMU_CLOCK_VIRTUAL timer callback (pausing the vCPUs waits for those
 * timers): defer to a bottom half.
 */
int ram_offline_host_range(void *host, size_t len, PageOfflineMethod method,
                           PageOfflineMethod *used);

/*
 * ram_offline_host_ranges: offline the guest pages under each of the @n
 * ranges of @iov (each within one RAMBlock) in one pass, as
 * ram_offline_host_range() would one by one, but registering each
 * RAMBlock with the engine's userfaultfd once, offlining a page that
 * several ranges share once, and replacing a huge page that they cover
 * together whole. For a device reset or a timeout sweep.
 *
 * @results[i] receives what ram_offline_host_range() would have
 * returned for range i. Returns 0 if every range was offlined, else the
 * first failure. Called with the BQL held, not from a QEMU_CLOCK_VIRTUAL
 * timer callback.
 */
int ram_offline_host_ranges(const struct iovec *iov, unsigned int n,
                            PageOfflineMethod method, PageOfflineMethod *used,
                            int *results);

#endif
