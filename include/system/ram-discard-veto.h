/*
 * Discard vetoes: let a device keep pages it pins out of RAM discards
 * (and out of page offlining)
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
 * veto. ram_block_discard_range() then refuses ranges that contain a
 * vetoed page, and ram_block_discard_range_unvetoed() discards only the
 * pages nobody vetoes. Unlike ram_block_discard_disable(), this keeps
 * memory overcommit working for every page that is not pinned.
 */
struct RamDiscardVeto {
    /*
     * Returns true if the host pages [@host, @host + @length) of @rb, one
     * page of @rb's page size, must not be discarded now. May be called
     * without the BQL: it must do its own locking.
     */
    bool (*vetoed)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                   size_t length);
    /*
     * Optional. The guest gave up the host page [@host, @host + @length)
     * of @rb (balloon inflation) while this veto held it: discard it when
     * you release it. Called with the BQL held, right after vetoed()
     * returned true for the same page.
     */
    void (*defer)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                  size_t length);
    /*
     * Optional. The guest took the pages of [@host, @host + @length) of
     * @rb back (balloon deflation): forget any deferred discard of them.
     * @rb NULL: of every page (balloon reset). With the BQL held.
     */
    void (*cancel)(RamDiscardVeto *veto, RAMBlock *rb, void *host,
                   size_t length);
    QLIST_ENTRY(RamDiscardVeto) next;
};

/* Register and unregister a veto; with the BQL held */
void ram_block_discard_veto_add(RamDiscardVeto *veto);
void ram_block_discard_veto_remove(RamDiscardVeto *veto);

/*
 * True if a veto holds any page of [@start, @start + @length) of @rb now.
 * Whoever would replace or drop guest pages behind a pinning device's back
 * asks this first: the page offline engine does.
 */
bool ram_block_discard_range_vetoed(RAMBlock *rb, uint64_t start,
                                    size_t length);

/*
 * Like ram_block_discard_range(), but skip the pages that are vetoed and
 * discard the others. For callers where discarding is only advice (balloon
 * inflation, free page reporting). Returns 0 or the first error.
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
