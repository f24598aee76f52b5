/*
 * Discard vetoes: let a device keep pages it pins out of the RAM discards
 * that mean "the guest gave this page up"
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SYSTEM_RAM_DISCARD_VETO_H
#define SYSTEM_RAM_DISCARD_VETO_H

#include "qemu/queue.h"

typedef struct RamDiscardVeto RamDiscardVeto;

/*
 * A device that temporarily pins guest pages (for DMA that bypasses the
 * memory API, or that must not see a page replaced under it) registers a
 * veto. Unlike ram_block_discard_disable(), this keeps memory overcommit
 * working for every page that is not pinned.
 *
 * The veto is opt-in: only the callers of the functions below consult it,
 * the places where the guest gives memory up (balloon inflation, free page
 * reporting, virtio-mem unplug). Page offlining, which replaces a page with
 * a copy instead of dropping it, asks its own pin holders
 * (system/ram-offline.h). ram_block_discard_range()
 * itself does not, so every other discard (KVM guest_memfd conversion,
 * hv-balloon, qemu_ram_remap(), postcopy, ...) behaves as without vetoes.
 *
 * The veto list has its own lock: the functions below may be called from
 * any thread. The callbacks are called with that lock held and must not
 * call any function of this header.
 */
struct RamDiscardVeto {
    /*
     * Returns true if the host page [@host, @host + @length) of @rb (one
     * page of @rb's page size) must not be discarded now. A veto that
     * holds pages of it only as a cache (pinned, but not in use) releases
     * them here and returns false, so that the discard goes ahead.
     */
    bool (*vetoed)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                   size_t length);
    /*
     * Optional. The guest gave up the host page [@host, @host + @length)
     * of @rb (balloon inflation) while this veto held it: discard it when
     * you release it. Called right after vetoed() returned true for the
     * same page.
     */
    void (*defer)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                  size_t length);
    /*
     * Optional. The guest took the pages of [@host, @host + @length) of
     * @rb back (balloon deflation): forget any deferred discard of them.
     * @rb NULL: of every page (balloon reset).
     */
    void (*cancel)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                   size_t length);
    QLIST_ENTRY(RamDiscardVeto) next;
};

/*
 * Register and unregister a veto. After ram_block_discard_veto_remove()
 * returns, no callback of @veto runs any more.
 */
void ram_block_discard_veto_add(RamDiscardVeto *veto);
void ram_block_discard_veto_remove(RamDiscardVeto *veto);

/* True if a veto holds any page of [@start, @start + @length) of @rb now */
bool ram_block_discard_range_vetoed(RAMBlock *rb, uint64_t start,
                                    size_t length);

/*
 * Like ram_block_discard_range(), but refuse with -EBUSY, discarding
 * nothing, if a veto holds a page of the range. For discards of memory the
 * guest gives up as a whole (virtio-mem unplug): the guest retries later.
 */
int ram_block_discard_range_unless_vetoed(RAMBlock *rb, uint64_t start,
                                          size_t length);

/*
 * Like ram_block_discard_range(), but skip the pages that are vetoed and
 * discard the others. For callers where discarding is only advice (free
 * page reporting). Returns 0 or the first error.
 */
int ram_block_discard_range_unvetoed(RAMBlock *rb, uint64_t start,
                                     size_t length);

/*
 * Like ram_block_discard_range_unvetoed(), but each vetoed page is handed
 * to the defer() callback of the vetoes that hold it, which discard it
 * when they release it. For balloon inflation: the guest will not touch
 * the page again until it deflates it. Not for free page reporting, whose
 * pages the guest may reuse at any time without telling the host.
 */
int ram_block_discard_range_deferred(RAMBlock *rb, uint64_t start,
                                     size_t length);

/*
 * Forget the deferred discards of the host pages that overlap [@start,
 * @start + @length) of @rb, or of every page if @rb is NULL. For balloon
 * deflation and reset: the guest owns those pages again.
 */
void ram_block_discard_cancel_deferred(RAMBlock *rb, uint64_t start,
                                       size_t length);

#endif
