/*
 * iommu-emul: paravirtual IOMMU that pins only what is mapped
 *
 * The guest asks the device, through a command ring, to map (requester,
 * guest-physical address, length, permissions). The device chooses the bus
 * address, pins the pages behind it while they are mapped, and translates
 * the DMA of the requester through an IOMMU memory region. Everything that
 * is not mapped stays overcommittable. See docs/specs/iommu-emul.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/syscall.h>
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qemu/lockable.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pci_bus.h"
#include "hw/pci/pci_ids.h"
#include "hw/pci/msix.h"
#include "hw/pci/pcie.h"
#include "hw/qdev-properties.h"
#include "hw/resettable.h"
#include "migration/misc.h"
#include "migration/qemu-file-types.h"
#include "migration/vmstate.h"
#include "exec/address-spaces.h"
#include "system/dma.h"
#include "system/system.h"
#include "hw/iommu-emul/iommu-emul.h"
#include "iommu-emul-regs.h"
#include "iommu-emul-hpa.h"
#include "trace.h"

#define PAGE_MASK_EMUL      (IOMMU_EMUL_PAGE_SIZE - 1)
/* At most this many guest-error messages about faults per second */
#define FAULT_LOG_PER_SEC   10

typedef struct IOMMUEmulCmd {
    uint16_t opcode;
    uint16_t flags;
    uint16_t requester;
    uint64_t addr;
    uint64_t length;
    uint64_t dma_limit;
    /* results */
    uint32_t out_flags;
    uint64_t out_addr;
    uint64_t out_base;
    uint64_t out_length;
} IOMMUEmulCmd;

/* Pinning */

static bool iommu_emul_do_mlock(void)
{
    /* With -overcommit mem-lock=on all of guest RAM is locked already */
    return !should_mlock(mlock_state);
}

/*
 * Lock or unlock [@host, @host + @len) through the system call itself:
 * the sanitizers intercept mlock() and munlock() and turn them into
 * no-ops, and pinning is this device's job in every build. Counted, so
 * that one can check what a pin costs. Called with s->mutex held.
 */
static int iommu_emul_mlock(IOMMUEmulState *s, uintptr_t host, size_t len,
                            bool lock)
{
    if (lock) {
        s->mlock_calls++;
    } else {
        s->munlock_calls++;
    }
    return syscall(lock ? SYS_mlock : SYS_munlock, (void *)host, len);
}

/*
 * The pin cache: host pages that stay locked after their last mapping
 * went away, so that mapping them again costs no system call. A hash
 * table finds a page, a queue orders them by unpinning, oldest first.
 * Everything under s->mutex.
 */

/* Take @host out of the cache, still locked; false if it is not there */
static bool iommu_emul_cache_take(IOMMUEmulState *s, uintptr_t host)
{
    GList *link = g_hash_table_lookup(s->cache, (gpointer)host);

    if (!link) {
        return false;
    }
    g_hash_table_remove(s->cache, (gpointer)host);
    g_queue_delete_link(&s->cache_lru, link);
    s->cached_pages--;
    return true;
}

/* Unlock the page the cache held longest; false if the cache is empty */
static bool iommu_emul_cache_evict(IOMMUEmulState *s)
{
    uintptr_t host = (uintptr_t)g_queue_peek_head(&s->cache_lru);

    if (!iommu_emul_cache_take(s, host)) {
        return false;
    }
    iommu_emul_mlock(s, host, IOMMU_EMUL_PAGE_SIZE, false);
    s->cache_evictions++;
    return true;
}

/* Keep @host, which has just lost its last pin, locked in the cache */
static void iommu_emul_cache_put(IOMMUEmulState *s, uintptr_t host)
{
    g_queue_push_tail(&s->cache_lru, (gpointer)host);
    g_hash_table_insert(s->cache, (gpointer)host, s->cache_lru.tail);
    s->cached_pages++;
    while (s->cached_pages > s->cache_max && iommu_emul_cache_evict(s)) {
        /* the least recently unpinned pages leave first */
    }
}

/* Empty the cache (reset, removal, RLIMIT_MEMLOCK) */
static void iommu_emul_cache_flush(IOMMUEmulState *s)
{
    while (iommu_emul_cache_evict(s)) {
        /* nothing else */
    }
}

/*
 * Lock a run of pages that are neither pinned nor cached; 0 or the errno
 * of mlock. If the cache holds pages, RLIMIT_MEMLOCK counts them too: on
 * failure, empty it and try once more.
 */
static int iommu_emul_lock_run(IOMMUEmulState *s, uintptr_t host,
                               size_t len)
{
    int i, err = 0;

    for (i = 0; i < 2; i++) {
        if (!iommu_emul_mlock(s, host, len, true)) {
            return 0;
        }
        err = errno;
        trace_iommu_emul_pin_fail(host, err);
        /* A failed mlock may have locked part of the run */
        iommu_emul_mlock(s, host, len, false);
        if (!s->cached_pages) {
            break;
        }
        iommu_emul_cache_flush(s);
    }
    return err;
}

/*
 * Drop one pin of @host. Returns true if the caller must unlock the page
 * now: its last pin went and it does not stay in the cache (@cache false,
 * or the cache is off, or its discard is pending). Called with s->mutex
 * held.
 */
static bool iommu_emul_unpin_page(IOMMUEmulState *s, uintptr_t host,
                                  bool cache)
{
    gpointer key = (gpointer)host;
    uintptr_t count = (uintptr_t)g_hash_table_lookup(s->pins, key);

    if (!count) {
        return false;
    }
    if (count > 1) {
        g_hash_table_insert(s->pins, key, (gpointer)(count - 1));
        return false;
    }
    g_hash_table_remove(s->pins, key);
    s->pinned_pages--;
    /* The guest ballooned it while it was pinned: drop it, unlocked */
    if (g_hash_table_remove(s->discard_pending, key)) {
        g_array_append_val(s->discard_due, host);
        return iommu_emul_do_mlock();
    }
    if (cache && s->cache_max) {
        iommu_emul_cache_put(s, host);
        return false;
    }
    return iommu_emul_do_mlock();
}

/*
 * Host address of the guest page at @gpa, or NULL if it is not plain
 * writable RAM (MMIO, ROM, RAM devices and holes are refused).
 */
static uintptr_t iommu_emul_host_page(uint64_t gpa)
{
    hwaddr xlat, len = IOMMU_EMUL_PAGE_SIZE;
    MemoryRegion *mr;

    RCU_READ_LOCK_GUARD();
    mr = address_space_translate(&address_space_memory, gpa, &xlat, &len,
                                 true, MEMTXATTRS_UNSPECIFIED);
    if (!memory_region_is_ram(mr) || memory_region_is_ram_device(mr) ||
        mr->readonly || len < IOMMU_EMUL_PAGE_SIZE) {
        return 0;
    }
    return (uintptr_t)memory_region_get_ram_ptr(mr) + xlat;
}

/* True if [base, base + len) is RAM, checked page by page */
static bool iommu_emul_range_is_ram(uint64_t base, uint64_t len)
{
    uint64_t off;

    for (off = 0; off < len; off += IOMMU_EMUL_PAGE_SIZE) {
        if (!iommu_emul_host_page((base + off) & ~PAGE_MASK_EMUL)) {
            return false;
        }
    }
    return true;
}

/*
 * Drop a pin of each of the @npages host pages @hosts; with @cache, the
 * pages that lose their last pin may stay locked in the pin cache. The
 * others are unlocked, adjacent ones with one munlock. Called with
 * s->mutex held.
 */
static void iommu_emul_unpin_range(IOMMUEmulState *s, const uintptr_t *hosts,
                                   uint64_t npages, bool cache)
{
    uintptr_t run = 0;
    size_t len = 0;
    uint64_t i;

    for (i = 0; i < npages; i++) {
        if (!iommu_emul_unpin_page(s, hosts[i], cache)) {
            continue;
        }
        if (len && run + len == hosts[i]) {
            len += IOMMU_EMUL_PAGE_SIZE;
            continue;
        }
        if (len) {
            iommu_emul_mlock(s, run, len, false);
        }
        run = hosts[i];
        len = IOMMU_EMUL_PAGE_SIZE;
    }
    if (len) {
        iommu_emul_mlock(s, run, len, false);
    }
}

/*
 * Pin the @npages guest pages from @gpa for a new mapping (MAP, and the
 * migration destination): the pages that are not pinned yet must fit in
 * max-pinned, then every page is pinned. A page pinned already, or in the
 * pin cache, costs no system call; the others are locked with one mlock
 * per run of adjacent host pages. Returns IOMMU_EMUL_ST_OK with *@hosts
 * the host page of each page (the mapping keeps them, so that unpinning
 * is exact even if the guest changes its memory map later), or NO_RAM or
 * PIN_LIMIT with nothing pinned; *@err is then the errno of the failed
 * mlock, or 0. Called with s->mutex held.
 */
static uint16_t iommu_emul_pin_range(IOMMUEmulState *s, uint64_t gpa,
                                     uint64_t npages, uintptr_t **hosts,
                                     int *err)
{
    g_autofree uintptr_t *h = NULL;
    uint64_t i, j, fresh = 0;

    *err = 0;
    if (npages > s->max_pinned >> IOMMU_EMUL_PAGE_SHIFT) {
        return IOMMU_EMUL_ST_PIN_LIMIT;
    }
    h = g_new(uintptr_t, npages);
    for (i = 0; i < npages; i++) {
        h[i] = iommu_emul_host_page(gpa + (i << IOMMU_EMUL_PAGE_SHIFT));
        if (!h[i]) {
            return IOMMU_EMUL_ST_NO_RAM;
        }
        fresh += !g_hash_table_contains(s->pins, (gpointer)h[i]);
    }
    if ((s->pinned_pages + fresh) * IOMMU_EMUL_PAGE_SIZE > s->max_pinned) {
        return IOMMU_EMUL_ST_PIN_LIMIT;
    }

    for (i = 0; i < npages; i = j) {
        gpointer key = (gpointer)h[i];
        uintptr_t count = (uintptr_t)g_hash_table_lookup(s->pins, key);

        j = i + 1;
        if (count) {
            g_hash_table_insert(s->pins, key, (gpointer)(count + 1));
            continue;
        }
        if (iommu_emul_cache_take(s, h[i])) {
            s->cache_hits++;
        } else {
            /* The run of adjacent pages that need a lock */
            while (j < npages && h[j] == h[j - 1] + IOMMU_EMUL_PAGE_SIZE &&
                   !g_hash_table_contains(s->pins, (gpointer)h[j]) &&
                   !g_hash_table_contains(s->cache, (gpointer)h[j])) {
                j++;
            }
            *err = iommu_emul_do_mlock() ?
                   iommu_emul_lock_run(s, h[i],
                                       (j - i) << IOMMU_EMUL_PAGE_SHIFT) : 0;
            if (*err) {
                iommu_emul_unpin_range(s, h, i, false);
                return IOMMU_EMUL_ST_PIN_LIMIT;
            }
            s->cache_misses += j - i;
        }
        for (; i < j; i++) {
            g_hash_table_insert(s->pins, (gpointer)h[i], (gpointer)1);
            s->pinned_pages++;
        }
    }
    *hosts = g_steal_pointer(&h);
    return IOMMU_EMUL_ST_OK;
}

static void iommu_emul_mapping_free(IOMMUEmulMapping *m)
{
    g_free(m->hosts);
    g_free(m);
}

/*
 * Discard veto: balloon inflation, free page reporting and virtio-mem must
 * not discard a pinned page (page offlining asks below instead). What
 * the pin cache holds of a page that is not pinned goes at once: the
 * discard proceeds, so the cache never costs overcommit. Called from any
 * thread, under the veto list's lock.
 */
static bool iommu_emul_discard_vetoed(RamDiscardVeto *veto, RAMBlock *rb,
                                      void *host, size_t length)
{
    IOMMUEmulState *s = container_of(veto, IOMMUEmulState, discard_veto);
    uintptr_t first = (uintptr_t)host & ~PAGE_MASK_EMUL;
    uintptr_t end = (uintptr_t)host + length;
    uintptr_t p;

    QEMU_LOCK_GUARD(&s->mutex);
    if (g_hash_table_size(s->pins)) {
        for (p = first; p < end; p += IOMMU_EMUL_PAGE_SIZE) {
            if (g_hash_table_contains(s->pins, (gpointer)p)) {
                s->vetoed_discards++;
                trace_iommu_emul_discard_vetoed((uintptr_t)host, length);
                return true;
            }
        }
    }
    for (p = first; p < end && s->cached_pages; p += IOMMU_EMUL_PAGE_SIZE) {
        if (iommu_emul_cache_take(s, p)) {
            iommu_emul_mlock(s, p, IOMMU_EMUL_PAGE_SIZE, false);
            s->cache_releases++;
            trace_iommu_emul_cache_release(p);
        }
    }
    return false;
}

/*
 * Deferred discard: balloon inflation hands over the pinned pages it had
 * to skip; each is discarded when its last mapping goes away, unless the
 * guest deflated it (or reset the balloon) meanwhile.
 */
static void iommu_emul_discard_defer(RamDiscardVeto *veto, RAMBlock *rb,
                                     void *host, size_t length)
{
    IOMMUEmulState *s = container_of(veto, IOMMUEmulState, discard_veto);
    uintptr_t p = (uintptr_t)host & ~PAGE_MASK_EMUL;
    uintptr_t end = (uintptr_t)host + length;

    QEMU_LOCK_GUARD(&s->mutex);
    for (; p < end; p += IOMMU_EMUL_PAGE_SIZE) {
        if (g_hash_table_contains(s->pins, (gpointer)p)) {
            g_hash_table_add(s->discard_pending, (gpointer)p);
        }
    }
    trace_iommu_emul_discard_deferred((uintptr_t)host, length);
}

static gboolean iommu_emul_in_range(gpointer key, gpointer value,
                                    gpointer range)
{
    uintptr_t *r = range;

    return (uintptr_t)key >= r[0] && (uintptr_t)key < r[1];
}

static void iommu_emul_discard_cancel(RamDiscardVeto *veto, RAMBlock *rb,
                                      void *host, size_t length)
{
    IOMMUEmulState *s = container_of(veto, IOMMUEmulState, discard_veto);
    uintptr_t range[2] = {
        (uintptr_t)host & ~PAGE_MASK_EMUL, (uintptr_t)host + length
    };
    uintptr_t p;

    trace_iommu_emul_discard_cancelled((uintptr_t)host, length);
    QEMU_LOCK_GUARD(&s->mutex);
    if (!rb) {
        g_hash_table_remove_all(s->discard_pending);
    } else if (length / IOMMU_EMUL_PAGE_SIZE >
               g_hash_table_size(s->discard_pending)) {
        g_hash_table_foreach_remove(s->discard_pending, iommu_emul_in_range,
                                    range);
    } else {
        for (p = range[0]; p < range[1]; p += IOMMU_EMUL_PAGE_SIZE) {
            g_hash_table_remove(s->discard_pending, (gpointer)p);
        }
    }
}

/*
 * Page offline (virtio-zc's reclaim, system/ram-offline.c). In iova and
 * gpa modes the device models inside QEMU reach a mapped page through
 * its host address (the RAMBlock), so replacing the physical page under
 * that address keeps every translation right; the pin (mlock) stays on
 * the address and so covers the new page. The physical page is exposed,
 * and must stay, in hpa mode (a long-term pin, its host-physical address
 * handed to the guest) and for the mappings of a requester whose IOMMU
 * region has a notifier: a consumer such as VFIO or vhost took the host
 * address of the translation. With the BQL (notifiers change under it).
 */
static bool iommu_emul_consumer_maps(IOMMUEmulState *s, uintptr_t first,
                                     uintptr_t end)
{
    IntervalTreeNode *node;
    uint64_t i, npages;
    guint k;

    for (k = 0; k < s->devs->len; k++) {
        IOMMUEmulDev *d = g_ptr_array_index(s->devs, k);

        if (!d->nmaps ||
            d->iommu_mr.iommu_notify_flags == IOMMU_NOTIFIER_NONE) {
            continue;
        }
        for (node = interval_tree_iter_first(&d->maps, 0, UINT64_MAX); node;
             node = interval_tree_iter_next(node, 0, UINT64_MAX)) {
            IOMMUEmulMapping *m = container_of(node, IOMMUEmulMapping, node);

            npages = (node->last - node->start + 1) >> IOMMU_EMUL_PAGE_SHIFT;
            for (i = 0; i < npages; i++) {
                if (m->hosts[i] >= first && m->hosts[i] < end) {
                    return true;
                }
            }
        }
    }
    return false;
}

static bool iommu_emul_offline_exposed(RamOfflinePinHolder *h, RAMBlock *rb,
                                       void *host, size_t length)
{
    IOMMUEmulState *s = container_of(h, IOMMUEmulState, offline_pins);
    uintptr_t first = (uintptr_t)host & ~PAGE_MASK_EMUL;
    uintptr_t end = (uintptr_t)host + length;
    bool pinned = false;
    uintptr_t p;

    QEMU_LOCK_GUARD(&s->mutex);
    /* What only the pin cache holds goes, as for a discard */
    for (p = first; p < end && s->cached_pages; p += IOMMU_EMUL_PAGE_SIZE) {
        if (iommu_emul_cache_take(s, p)) {
            iommu_emul_mlock(s, p, IOMMU_EMUL_PAGE_SIZE, false);
            s->cache_releases++;
            trace_iommu_emul_cache_release(p);
        }
    }
    for (p = first; p < end && g_hash_table_size(s->pins) && !pinned;
         p += IOMMU_EMUL_PAGE_SIZE) {
        pinned = g_hash_table_contains(s->pins, (gpointer)p);
    }
    if (!pinned || (s->mode != IOMMU_EMUL_BUS_ADDR_HPA &&
                    !iommu_emul_consumer_maps(s, first, end))) {
        return false;
    }
    s->vetoed_discards++;
    trace_iommu_emul_discard_vetoed((uintptr_t)host, length);
    return true;
}

/*
 * [@host, @host + @length) was mapped anew (shared RAM offlined by a
 * private remap, or shared again): the new mapping is not locked. Lock
 * the pages that are pinned or cached there again, so that each pin
 * still holds its page and is released once, by the munlock of its
 * unpin. A failure leaves the page mapped for DMA but not locked (the
 * lock had been charged before, so this needs no more than then).
 */
static void iommu_emul_offline_remapped(RamOfflinePinHolder *h, RAMBlock *rb,
                                        void *host, size_t length)
{
    IOMMUEmulState *s = container_of(h, IOMMUEmulState, offline_pins);
    uintptr_t p = (uintptr_t)host & ~PAGE_MASK_EMUL;
    uintptr_t end = ROUND_UP((uintptr_t)host + length, IOMMU_EMUL_PAGE_SIZE);
    uintptr_t run = 0;

    if (!iommu_emul_do_mlock()) {
        return;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    if (!g_hash_table_size(s->pins) && !s->cached_pages) {
        return;
    }
    for (; p <= end; p += IOMMU_EMUL_PAGE_SIZE) {
        bool held = p < end &&
                    (g_hash_table_contains(s->pins, (gpointer)p) ||
                     g_hash_table_contains(s->cache, (gpointer)p));

        if (held && !run) {
            run = p;
        } else if (!held && run) {
            if (iommu_emul_mlock(s, run, p - run, true)) {
                trace_iommu_emul_pin_fail(run, errno);
            }
            run = 0;
        }
    }
}

/*
 * Discard the pages whose last pin went away while a discard was pending,
 * unless a mapping pinned one again meanwhile. Without s->mutex: the
 * discard asks our veto.
 */
static void iommu_emul_flush_discards(IOMMUEmulState *s)
{
    g_autoptr(GArray) due = NULL;
    bool inhibited;
    unsigned i;

    WITH_QEMU_LOCK_GUARD(&s->mutex) {
        if (!s->discard_due->len) {
            return;
        }
        due = s->discard_due;
        s->discard_due = g_array_new(false, false, sizeof(uintptr_t));
    }
    /* As for the balloon itself: not while discarding is unsafe */
    inhibited = ram_block_discard_is_disabled() ||
                migration_in_incoming_postcopy() ||
                migration_in_bg_snapshot();
    for (i = 0; i < due->len && !inhibited; i++) {
        uintptr_t host = g_array_index(due, uintptr_t, i);
        ram_addr_t offset;
        RAMBlock *rb;
        size_t psize;
        int ret;

        rb = qemu_ram_block_from_host((void *)host, false, &offset);
        if (!rb) {
            continue;
        }
        /* A larger host page goes when its last pinned page does */
        psize = qemu_ram_pagesize(rb);
        ret = ram_block_discard_range_unless_vetoed(
                  rb, QEMU_ALIGN_DOWN(offset, psize), psize);
        trace_iommu_emul_discard_late(host, ret);
        if (ret == 0) {
            WITH_QEMU_LOCK_GUARD(&s->mutex) {
                s->deferred_discards++;
            }
        }
    }
}

/* Forget every deferred discard, without discarding */
static void iommu_emul_drop_discards(IOMMUEmulState *s)
{
    QEMU_LOCK_GUARD(&s->mutex);
    g_hash_table_remove_all(s->discard_pending);
    g_array_set_size(s->discard_due, 0);
}

/* IOMMU notifications */

static void iommu_emul_notify(IOMMUEmulDev *d, IOMMUNotifier *n,
                              uint64_t start, uint64_t last, uint64_t gpa,
                              IOMMUAccessFlags perm)
{
    IOMMUTLBEvent event = {
        .type = perm == IOMMU_NONE ? IOMMU_NOTIFIER_UNMAP : IOMMU_NOTIFIER_MAP,
        .entry = {
            .target_as = &address_space_memory,
            .translated_addr = gpa,
            .perm = perm,
        },
    };

    while (start <= last) {
        uint64_t mask = dma_aligned_pow2_mask(start, last, 64);

        event.entry.iova = start;
        event.entry.addr_mask = mask;
        if (n) {
            memory_region_notify_iommu_one(n, &event);
        } else {
            memory_region_notify_iommu(&d->iommu_mr, 0, event);
        }
        if (perm != IOMMU_NONE) {
            event.entry.translated_addr += mask + 1;
        }
        if (start + mask == last) {
            break;
        }
        start += mask + 1;
    }
}

/* Address spaces and requesters */

static void iommu_emul_switch_as(IOMMUEmulDev *d)
{
    memory_region_set_enabled(&d->bypass_mr, !d->translate);
    memory_region_set_enabled(MEMORY_REGION(&d->iommu_mr), d->translate);
}

typedef bool IOMMUEmulDevFn(IOMMUEmulDev *d, void *opaque);

/*
 * The one walk over the requesters: call @fn on each, oldest first, until
 * it returns true, and return that requester (NULL if none did).
 */
static IOMMUEmulDev *iommu_emul_find_dev_if(IOMMUEmulState *s,
                                            IOMMUEmulDevFn *fn, void *opaque)
{
    unsigned i;

    for (i = 0; i < s->devs->len; i++) {
        IOMMUEmulDev *d = g_ptr_array_index(s->devs, i);

        if (fn(d, opaque)) {
            return d;
        }
    }
    return NULL;
}

typedef struct IOMMUEmulDevKey {
    PCIBus *bus;
    const char *bus_name;
    int devfn;
} IOMMUEmulDevKey;

static bool iommu_emul_dev_is(IOMMUEmulDev *d, void *opaque)
{
    IOMMUEmulDevKey *k = opaque;

    return d->devfn == k->devfn &&
           (k->bus ? d->bus == k->bus : !strcmp(BUS(d->bus)->name,
                                                k->bus_name));
}

static uint16_t iommu_emul_rid(IOMMUEmulDev *d)
{
    return PCI_BUILD_BDF(pci_bus_num(d->bus), d->devfn);
}

static bool iommu_emul_dev_has_rid(IOMMUEmulDev *d, void *opaque)
{
    return iommu_emul_rid(d) == *(uint16_t *)opaque;
}

/* The requester with PCI requester ID @rid (bus numbers are the guest's) */
static IOMMUEmulDev *iommu_emul_find_dev(IOMMUEmulState *s, uint16_t rid)
{
    return iommu_emul_find_dev_if(s, iommu_emul_dev_has_rid, &rid);
}

static AddressSpace *iommu_emul_find_add_as(PCIBus *bus, void *opaque,
                                            int devfn)
{
    IOMMUEmulState *s = opaque;
    PCIDevice *pdev = PCI_DEVICE(s);
    IOMMUEmulDevKey key = { .bus = bus, .devfn = devfn };
    IOMMUEmulDev *d;
    g_autofree char *name = NULL;

    /* The IOMMU's own DMA (its rings) is never translated */
    if (bus == pci_get_bus(pdev) && devfn == pdev->devfn) {
        return &address_space_memory;
    }

    d = iommu_emul_find_dev_if(s, iommu_emul_dev_is, &key);
    if (d) {
        return &d->as;
    }

    d = g_new0(IOMMUEmulDev, 1);
    d->s = s;
    d->bus = bus;
    d->devfn = devfn;
    d->iova_hint = s->aperture_start;

    name = g_strdup_printf("iommu-emul-%s-%02x.%x", BUS(bus)->name,
                           PCI_SLOT(devfn), PCI_FUNC(devfn));
    memory_region_init(&d->root, OBJECT(s), name, UINT64_MAX);
    address_space_init(&d->as, &d->root, name);
    memory_region_init_alias(&d->bypass_mr, OBJECT(s), "iommu-emul-bypass",
                             get_system_memory(), 0,
                             memory_region_size(get_system_memory()));
    memory_region_init_iommu(&d->iommu_mr, sizeof(d->iommu_mr),
                             TYPE_IOMMU_EMUL_MEMORY_REGION, OBJECT(s),
                             name, UINT64_MAX);
    memory_region_add_subregion_overlap(&d->root, 0,
                                        MEMORY_REGION(&d->iommu_mr), 0);
    memory_region_add_subregion_overlap(&d->root, 0, &d->bypass_mr, 0);
    iommu_emul_switch_as(d);
    g_ptr_array_add(s->devs, d);
    trace_iommu_emul_add_as(pci_bus_num(bus), devfn);
    return &d->as;
}

static const PCIIOMMUOps iommu_emul_iommu_ops = {
    .get_address_space = iommu_emul_find_add_as,
};

/*
 * The mapping store of a requester: its mappings in an interval tree by
 * bus address (they may overlap in gpa and hpa modes), and what they
 * translate to in a second one, d->xlate: the maximal bus ranges that
 * translate alike (same offset to the guest-physical address, same union
 * of the permissions of the mappings over them). translate() needs a
 * single lookup there. Everything under s->mutex.
 */

#define IOMMU_EMUL_NODE(n, type) \
    ((n) ? container_of((n), type, node) : NULL)

/* A translation range, before it goes into d->xlate */
typedef struct IOMMUEmulSeg {
    uint64_t first;
    uint64_t last;
    uint64_t delta;
    IOMMUAccessFlags perm;
} IOMMUEmulSeg;

/* A mapping that starts (add) or ends before (!add) bus address pos */
typedef struct IOMMUEmulEdge {
    uint64_t pos;
    IOMMUAccessFlags perm;
    bool add;
} IOMMUEmulEdge;

static int iommu_emul_edge_cmp(gconstpointer a, gconstpointer b)
{
    const IOMMUEmulEdge *x = a, *y = b;

    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static IOMMUEmulXlate *iommu_emul_xlate_new(uint64_t first, uint64_t last,
                                            uint64_t delta,
                                            IOMMUAccessFlags perm)
{
    IOMMUEmulXlate *x = g_new0(IOMMUEmulXlate, 1);

    x->node.start = first;
    x->node.last = last;
    x->delta = delta;
    x->perm = perm;
    return x;
}

/* Split the translation range over @pos - 1 and @pos, if any, at @pos */
static void iommu_emul_xlate_split(IOMMUEmulDev *d, uint64_t pos)
{
    IOMMUEmulXlate *x, *y;

    if (!pos) {
        return;
    }
    x = IOMMU_EMUL_NODE(interval_tree_iter_first(&d->xlate, pos, pos),
                        IOMMUEmulXlate);
    if (!x || x->node.start == pos) {
        return;
    }
    y = iommu_emul_xlate_new(pos, x->node.last, x->delta, x->perm);
    interval_tree_remove(&x->node, &d->xlate);
    x->node.last = pos - 1;
    interval_tree_insert(&x->node, &d->xlate);
    interval_tree_insert(&y->node, &d->xlate);
}

/*
 * Merge the translation ranges that end at @pos - 1 and start at @pos if
 * they translate alike, so that d->xlate holds maximal ranges
 */
static void iommu_emul_xlate_merge(IOMMUEmulDev *d, uint64_t pos)
{
    IOMMUEmulXlate *a, *b;

    if (!pos) {
        return;
    }
    a = IOMMU_EMUL_NODE(interval_tree_iter_first(&d->xlate, pos - 1, pos - 1),
                        IOMMUEmulXlate);
    b = IOMMU_EMUL_NODE(interval_tree_iter_first(&d->xlate, pos, pos),
                        IOMMUEmulXlate);
    if (!a || !b || a == b || a->delta != b->delta || a->perm != b->perm) {
        return;
    }
    interval_tree_remove(&a->node, &d->xlate);
    interval_tree_remove(&b->node, &d->xlate);
    a->node.last = b->node.last;
    interval_tree_insert(&a->node, &d->xlate);
    g_free(b);
}

/* Append a range to @segs, merged with the previous one if it continues it */
static void iommu_emul_seg_add(GArray *segs, uint64_t first, uint64_t last,
                               uint64_t delta, IOMMUAccessFlags perm)
{
    IOMMUEmulSeg seg = {
        .first = first, .last = last, .delta = delta, .perm = perm,
    };

    if (segs->len) {
        IOMMUEmulSeg *p = &g_array_index(segs, IOMMUEmulSeg, segs->len - 1);

        if (p->last + 1 == first && p->delta == delta && p->perm == perm) {
            p->last = last;
            return;
        }
    }
    g_array_append_val(segs, seg);
}

/*
 * What [@first, @last] of @d translates to, from the mappings: a sweep over
 * their edges, O(k log k) for the k mappings that overlap the range. Every
 * mapping over a bus address translates it to the same host memory (the
 * same guest-physical address in gpa mode, the same host-physical page in
 * hpa mode, and mappings do not overlap in iova mode), so any one of them
 * gives the address: the lowest that covers the range's start.
 */
static GArray *iommu_emul_xlate_compute(IOMMUEmulDev *d, uint64_t first,
                                        uint64_t last)
{
    GArray *segs = g_array_new(false, false, sizeof(IOMMUEmulSeg));
    g_autoptr(GArray) edges = g_array_new(false, false,
                                          sizeof(IOMMUEmulEdge));
    unsigned nr = 0, nw = 0, n = 0, i;
    IntervalTreeNode *node;
    uint64_t cur = first;

    for (node = interval_tree_iter_first(&d->maps, first, last); node;
         node = interval_tree_iter_next(node, first, last)) {
        IOMMUEmulMapping *m = container_of(node, IOMMUEmulMapping, node);
        IOMMUEmulEdge e = {
            .pos = MAX(node->start, first), .perm = m->perm, .add = true,
        };

        g_array_append_val(edges, e);
        if (node->last < last) {
            e.pos = node->last + 1;
            e.add = false;
            g_array_append_val(edges, e);
        }
    }
    g_array_sort(edges, iommu_emul_edge_cmp);

    for (i = 0; i <= edges->len; i++) {
        IOMMUEmulEdge *e = i < edges->len ?
                           &g_array_index(edges, IOMMUEmulEdge, i) : NULL;

        if (n && (!e || e->pos > cur)) {
            IOMMUEmulMapping *rep = IOMMU_EMUL_NODE(
                interval_tree_iter_first(&d->maps, cur, cur),
                IOMMUEmulMapping);

            if (rep) {
                iommu_emul_seg_add(segs, cur, e ? e->pos - 1 : last,
                                   rep->gpa - rep->node.start,
                                   (nr ? IOMMU_RO : 0) | (nw ? IOMMU_WO : 0));
            }
        }
        if (!e) {
            break;
        }
        cur = e->pos;
        if (e->add) {
            n++;
            nr += !!(e->perm & IOMMU_RO);
            nw += !!(e->perm & IOMMU_WO);
        } else {
            n--;
            nr -= !!(e->perm & IOMMU_RO);
            nw -= !!(e->perm & IOMMU_WO);
        }
    }
    return segs;
}

/*
 * The translation at @pos in a sorted list of disjoint ranges (NULL if
 * none covers it); lowers *@until to the last address up to which it stays
 * so. *@i moves forward over the ranges that end before @pos.
 */
static void iommu_emul_state_at(uint64_t pos, const IOMMUEmulSeg *list,
                                unsigned len, unsigned *i, uint64_t *until,
                                const IOMMUEmulSeg **seg)
{
    while (*i < len && list[*i].last < pos) {
        (*i)++;
    }
    *seg = NULL;
    if (*i < len) {
        if (list[*i].first <= pos) {
            *seg = &list[*i];
            *until = MIN(*until, list[*i].last);
        } else {
            *until = MIN(*until, list[*i].first - 1);
        }
    }
}

/*
 * Tell the notifiers how the translation of [@first, @last] changed from
 * @old to @new: UNMAP where it went away or changed, then MAP where it is
 * new or changed; nothing where it stayed the same.
 */
static void iommu_emul_xlate_notify(IOMMUEmulDev *d, GArray *old,
                                    GArray *new, uint64_t first,
                                    uint64_t last)
{
    unsigned i = 0, j = 0;
    uint64_t pos = first;

    for (;;) {
        const IOMMUEmulSeg *o, *n;
        uint64_t until = last;

        iommu_emul_state_at(pos, (IOMMUEmulSeg *)old->data, old->len, &i,
                            &until, &o);
        iommu_emul_state_at(pos, (IOMMUEmulSeg *)new->data, new->len, &j,
                            &until, &n);
        if (!(!o && !n) &&
            !(o && n && o->delta == n->delta && o->perm == n->perm)) {
            if (o) {
                d->s->invalidations++;
                trace_iommu_emul_invalidate(pci_bus_num(d->bus), d->devfn,
                                            pos, until);
                iommu_emul_notify(d, NULL, pos, until, 0, IOMMU_NONE);
            }
            if (n) {
                iommu_emul_notify(d, NULL, pos, until, pos + n->delta,
                                  n->perm);
            }
        }
        if (until == last) {
            break;
        }
        pos = until + 1;
    }
}

/*
 * The mappings over [@first, @last] of @d changed: recompute what the range
 * translates to, and notify what changed. O((k + r) log n) for the k
 * mappings and r translation ranges there.
 */
static void iommu_emul_xlate_update(IOMMUEmulDev *d, uint64_t first,
                                    uint64_t last)
{
    g_autoptr(GArray) old = g_array_new(false, false, sizeof(IOMMUEmulSeg));
    g_autoptr(GPtrArray) gone = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) new = NULL;
    IntervalTreeNode *node;
    unsigned i;

    iommu_emul_xlate_split(d, first);
    if (last != UINT64_MAX) {
        iommu_emul_xlate_split(d, last + 1);
    }
    for (node = interval_tree_iter_first(&d->xlate, first, last); node;
         node = interval_tree_iter_next(node, first, last)) {
        IOMMUEmulXlate *x = container_of(node, IOMMUEmulXlate, node);
        IOMMUEmulSeg seg = {
            .first = node->start, .last = node->last,
            .delta = x->delta, .perm = x->perm,
        };

        g_array_append_val(old, seg);
        g_ptr_array_add(gone, x);
    }
    for (i = 0; i < gone->len; i++) {
        IOMMUEmulXlate *x = g_ptr_array_index(gone, i);

        interval_tree_remove(&x->node, &d->xlate);
    }

    new = iommu_emul_xlate_compute(d, first, last);
    for (i = 0; i < new->len; i++) {
        IOMMUEmulSeg *seg = &g_array_index(new, IOMMUEmulSeg, i);
        IOMMUEmulXlate *x = iommu_emul_xlate_new(seg->first, seg->last,
                                                 seg->delta, seg->perm);

        interval_tree_insert(&x->node, &d->xlate);
    }
    iommu_emul_xlate_notify(d, old, new, first, last);
    iommu_emul_xlate_merge(d, first);
    if (last != UINT64_MAX) {
        iommu_emul_xlate_merge(d, last + 1);
    }
}

/* Add @m to the store of @d, and its translation */
static void iommu_emul_store_add(IOMMUEmulDev *d, IOMMUEmulMapping *m)
{
    m->seq = d->next_seq++;
    interval_tree_insert(&m->node, &d->maps);
    if (m->node.start == d->iova_hint && m->node.last != UINT64_MAX) {
        d->iova_hint = m->node.last + 1;
    }
    d->nmaps++;
    d->s->mappings++;
    iommu_emul_xlate_update(d, m->node.start, m->node.last);
}

/*
 * Take @m out of the store of @d (its translation goes, or shrinks to what
 * other mappings still allow) and release it: its pins go, with the
 * discards that were pending on them.
 */
static void iommu_emul_store_remove(IOMMUEmulDev *d, IOMMUEmulMapping *m)
{
    IOMMUEmulState *s = d->s;

    trace_iommu_emul_unmap(iommu_emul_rid(d), m->node.start,
                           m->node.last - m->node.start + 1);
    interval_tree_remove(&m->node, &d->maps);
    d->nmaps--;
    s->mappings--;
    s->unmaps++;
    if (m->node.start < d->iova_hint) {
        d->iova_hint = m->node.start;
    }
    iommu_emul_xlate_update(d, m->node.start, m->node.last);
    iommu_emul_hpa_unpin(s, m->hpa_pin);
    iommu_emul_unpin_range(s, m->hosts,
                           (m->node.last - m->node.start + 1) >>
                           IOMMU_EMUL_PAGE_SHIFT, true);
    iommu_emul_mapping_free(m);
}

/*
 * Remove every mapping of @d; returns how many there were. With @cache,
 * their pages may stay in the pin cache (DETACH, not reset).
 */
static unsigned iommu_emul_store_clear(IOMMUEmulDev *d, bool cache)
{
    IOMMUEmulState *s = d->s;
    unsigned n = d->nmaps;
    IntervalTreeNode *node;

    /* Nothing translates any more: one UNMAP per translation range */
    while ((node = interval_tree_iter_first(&d->xlate, 0, UINT64_MAX))) {
        interval_tree_remove(node, &d->xlate);
        s->invalidations++;
        trace_iommu_emul_invalidate(pci_bus_num(d->bus), d->devfn,
                                    node->start, node->last);
        iommu_emul_notify(d, NULL, node->start, node->last, 0, IOMMU_NONE);
        g_free(container_of(node, IOMMUEmulXlate, node));
    }
    while ((node = interval_tree_iter_first(&d->maps, 0, UINT64_MAX))) {
        IOMMUEmulMapping *m = container_of(node, IOMMUEmulMapping, node);

        trace_iommu_emul_unmap(iommu_emul_rid(d), node->start,
                               node->last - node->start + 1);
        interval_tree_remove(node, &d->maps);
        iommu_emul_hpa_unpin(s, m->hpa_pin);
        iommu_emul_unpin_range(s, m->hosts,
                               (node->last - node->start + 1) >>
                               IOMMU_EMUL_PAGE_SHIFT, cache);
        iommu_emul_mapping_free(m);
    }
    s->mappings -= n;
    s->unmaps += n;
    d->nmaps = 0;
    d->iova_hint = s->aperture_start;
    return n;
}

/*
 * iova mode: the lowest free range of @len bytes in [d->iova_hint, @limit]
 * that overlaps neither a mapping of @d nor the MSI window. O(log n) if the
 * first gap fits, plus O(log n) for each smaller hole it passes.
 */
static bool iommu_emul_alloc(IOMMUEmulDev *d, uint64_t len, uint64_t limit,
                             uint64_t *bus)
{
    uint64_t cand = d->iova_hint;
    bool full = true;   /* nothing free from d->iova_hint to cand */

    for (;;) {
        uint64_t start, last, end;
        IntervalTreeNode *node;

        if (cand > limit || limit - cand < len - 1) {
            return false;
        }
        end = cand + len - 1;
        node = interval_tree_iter_first(&d->maps, cand, end);
        start = node ? node->start : UINT64_MAX;
        last = node ? node->last : UINT64_MAX;
        if (cand <= IOMMU_EMUL_MSI_LAST && end >= IOMMU_EMUL_MSI_BASE &&
            IOMMU_EMUL_MSI_BASE < start) {
            start = IOMMU_EMUL_MSI_BASE;
            last = IOMMU_EMUL_MSI_LAST;
        }
        if (start == UINT64_MAX) {
            break;
        }
        full = full && start <= cand;
        if (last == UINT64_MAX) {
            return false;
        }
        cand = last + 1;
        if (full) {
            d->iova_hint = cand;
        }
    }
    *bus = cand;
    return true;
}

/* Translation */

/* Called with s->mutex held */
static void iommu_emul_record_fault(IOMMUEmulState *s, IOMMUEmulDev *d,
                                    hwaddr addr, IOMMUAccessFlags flag,
                                    uint8_t reason)
{
    uint8_t access = (flag & IOMMU_WO) ? IOMMU_EMUL_ACCESS_WRITE :
                                         IOMMU_EMUL_ACCESS_READ;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    uint16_t rid = iommu_emul_rid(d);
    IOMMUEmulFault *last = s->npending ? &s->pending[s->npending - 1] : NULL;

    /*
     * One DMA that is blocked is retried by the memory core in small
     * pieces: merge faults on the same page until the record is delivered.
     */
    if (last && last->requester == rid && last->access == access &&
        last->reason == reason &&
        !((last->addr ^ addr) & ~PAGE_MASK_EMUL)) {
        if (last->count < UINT32_MAX) {
            last->count++;
        }
        return;
    }
    s->faults++;
    trace_iommu_emul_fault(rid, addr, access, reason);
    if (now - s->log_window >= 1000) {
        s->log_window = now;
        s->log_count = 0;
    }
    if (s->log_count++ < FAULT_LOG_PER_SEC) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: requester %02x:%02x.%x %s 0x%"
                      HWADDR_PRIx " blocked (%s)\n", __func__,
                      PCI_BUS_NUM(rid), PCI_SLOT(d->devfn), PCI_FUNC(d->devfn),
                      access == IOMMU_EMUL_ACCESS_WRITE ? "write" : "read",
                      addr, reason == IOMMU_EMUL_REASON_UNMAPPED ?
                      "not mapped" : "permission");
    }
    if (s->npending == IOMMU_EMUL_PENDING_FAULTS) {
        s->fault_overflow++;
        return;
    }
    s->pending[s->npending++] = (IOMMUEmulFault) {
        .requester = rid,
        .access = access,
        .reason = reason,
        .count = 1,
        .addr = addr,
    };
    qemu_bh_schedule(s->fault_bh);
}

static IOMMUTLBEntry iommu_emul_translate(IOMMUMemoryRegion *iommu_mr,
                                          hwaddr addr, IOMMUAccessFlags flag,
                                          int iommu_idx)
{
    IOMMUEmulDev *d = container_of(iommu_mr, IOMMUEmulDev, iommu_mr);
    IOMMUEmulState *s = d->s;
    IOMMUEmulXlate *x;
    IOMMUTLBEntry entry = {
        .target_as = &address_space_memory,
        .iova = addr & ~PAGE_MASK_EMUL,
        .translated_addr = addr & ~PAGE_MASK_EMUL,
        .addr_mask = PAGE_MASK_EMUL,
        .perm = IOMMU_NONE,
    };

    /* MSIs pass through */
    if (addr >= IOMMU_EMUL_MSI_BASE && addr <= IOMMU_EMUL_MSI_LAST) {
        entry.perm = IOMMU_RW;
        return entry;
    }

    /* One lookup: the permissions of overlapping mappings are merged */
    QEMU_LOCK_GUARD(&s->mutex);
    x = IOMMU_EMUL_NODE(interval_tree_iter_first(&d->xlate, addr, addr),
                        IOMMUEmulXlate);
    if (x) {
        entry.translated_addr = (addr & ~PAGE_MASK_EMUL) + x->delta;
        entry.perm = x->perm;
    }
    /* IOMMU_NONE comes from replay and lookups: never a fault */
    if (flag == IOMMU_NONE) {
        return entry;
    }
    if (!x || (x->perm & flag) != flag) {
        iommu_emul_record_fault(s, d, addr, flag,
                                x ? IOMMU_EMUL_REASON_PERM :
                                    IOMMU_EMUL_REASON_UNMAPPED);
        entry.perm = IOMMU_NONE;
    }
    return entry;
}

static void iommu_emul_replay(IOMMUMemoryRegion *iommu_mr, IOMMUNotifier *n)
{
    IOMMUEmulDev *d = container_of(iommu_mr, IOMMUEmulDev, iommu_mr);
    IntervalTreeNode *node;

    QEMU_LOCK_GUARD(&d->s->mutex);
    for (node = interval_tree_iter_first(&d->xlate, 0, UINT64_MAX); node;
         node = interval_tree_iter_next(node, 0, UINT64_MAX)) {
        IOMMUEmulXlate *x = container_of(node, IOMMUEmulXlate, node);

        iommu_emul_notify(d, n, node->start, node->last,
                          node->start + x->delta, x->perm);
    }
}

static int iommu_emul_notify_flag_changed(IOMMUMemoryRegion *iommu_mr,
                                          IOMMUNotifierFlag old,
                                          IOMMUNotifierFlag new,
                                          Error **errp)
{
    if (new & IOMMU_NOTIFIER_DEVIOTLB_UNMAP) {
        error_setg(errp, "iommu-emul does not support dev-iotlb");
        return -EINVAL;
    }
    return 0;
}

/*
 * Entries of a ring: 0 while it is off. The guest can write any value to
 * *_SIZE, but a ring turns on only with a size it may have (1 to 15).
 */
static uint32_t iommu_emul_queue_entries(const IOMMUEmulQueue *q)
{
    return q->on && q->size >= 1 && q->size <= 15 ? 1u << q->size : 0;
}

/* Faults: from the pending list to the fault ring */

static void iommu_emul_flush_faults(IOMMUEmulState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    IOMMUEmulFault batch[IOMMU_EMUL_PENDING_FAULTS];
    unsigned n, i, written = 0, dropped = 0;
    uint64_t seq;

    WITH_QEMU_LOCK_GUARD(&s->mutex) {
        n = s->npending;
        memcpy(batch, s->pending, n * sizeof(batch[0]));
        s->npending = 0;
        seq = s->fault_seq;
        s->fault_seq += n;
    }

    for (i = 0; i < n; i++) {
        uint32_t entries = iommu_emul_queue_entries(&s->faultq);
        uint8_t rec[IOMMU_EMUL_FAULT_SIZE] = { 0 };
        dma_addr_t ea;

        if (!entries || s->faultq.error) {
            continue;
        }
        if ((s->faultq.tail + 1) % entries == s->faultq.head) {
            dropped++;
            continue;
        }
        stw_le_p(rec + IOMMU_EMUL_FAULT_REQUESTER, batch[i].requester);
        rec[IOMMU_EMUL_FAULT_ACCESS] = batch[i].access;
        rec[IOMMU_EMUL_FAULT_REASON] = batch[i].reason;
        stl_le_p(rec + IOMMU_EMUL_FAULT_COUNT, batch[i].count);
        stq_le_p(rec + IOMMU_EMUL_FAULT_ADDR, batch[i].addr);
        stq_le_p(rec + IOMMU_EMUL_FAULT_SEQ, seq + i + 1);
        ea = s->faultq.base + (uint64_t)s->faultq.tail * IOMMU_EMUL_FAULT_SIZE;
        if (pci_dma_write(pdev, ea, rec, sizeof(rec)) != MEMTX_OK) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: cannot write fault record at"
                          " 0x%" PRIx64 "\n", __func__, ea);
            s->faultq.error = IOMMU_EMUL_QERR_DMA;
            continue;
        }
        s->faultq.tail = (s->faultq.tail + 1) % entries;
        written++;
    }
    if (dropped) {
        WITH_QEMU_LOCK_GUARD(&s->mutex) {
            s->fault_overflow += dropped;
        }
    }
    if (written && s->msix && msix_enabled(pdev)) {
        msix_notify(pdev, IOMMU_EMUL_VEC_FAULT);
    }
}

static void iommu_emul_fault_bh(void *opaque)
{
    iommu_emul_flush_faults(opaque);
}

/* Commands */

/*
 * MAP and UNMAP ranges: not empty, page multiples, and addr + length
 * within 64 bits (a range may not reach 2^64 itself)
 */
static bool iommu_emul_range_valid(uint64_t addr, uint64_t length)
{
    return length && !((addr | length) & PAGE_MASK_EMUL) &&
           addr + length > addr;
}

static uint16_t iommu_emul_map(IOMMUEmulState *s, IOMMUEmulCmd *c)
{
    IOMMUAccessFlags perm = IOMMU_NONE;
    IOMMUEmulHpaPin *hpa_pin = NULL;
    uintptr_t *hosts = NULL;
    uint64_t limit, npages;
    IOMMUEmulMapping *m;
    IOMMUEmulDev *d;
    uint64_t bus = 0;
    uint16_t st;
    int err;

    if (c->flags & IOMMU_EMUL_MAP_READ) {
        perm |= IOMMU_RO;
    }
    if (c->flags & IOMMU_EMUL_MAP_WRITE) {
        perm |= IOMMU_WO;
    }
    if (perm == IOMMU_NONE ||
        (c->flags & ~(IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE)) ||
        !iommu_emul_range_valid(c->addr, c->length)) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    if (c->length > s->max_pinned) {
        return IOMMU_EMUL_ST_PIN_LIMIT;
    }
    if (!iommu_emul_range_is_ram(c->addr, c->length)) {
        return IOMMU_EMUL_ST_NO_RAM;
    }
    limit = c->dma_limit ? MIN(c->dma_limit, s->aperture_end) :
                           s->aperture_end;
    npages = c->length >> IOMMU_EMUL_PAGE_SHIFT;

    QEMU_LOCK_GUARD(&s->mutex);
    if (d->nmaps >= s->max_mappings) {
        return IOMMU_EMUL_ST_NO_SPACE;
    }

    /* Choose the bus address; in hpa mode it is known once pinned */
    if (s->mode == IOMMU_EMUL_BUS_ADDR_GPA) {
        if (c->addr < s->aperture_start ||
            c->addr + c->length - 1 > limit) {
            return IOMMU_EMUL_ST_NO_SPACE;
        }
        bus = c->addr;
    } else if (s->mode == IOMMU_EMUL_BUS_ADDR_IOVA) {
        if (limit < s->aperture_start ||
            !iommu_emul_alloc(d, c->length, limit, &bus)) {
            return IOMMU_EMUL_ST_NO_SPACE;
        }
    }

    st = iommu_emul_pin_range(s, c->addr, npages, &hosts, &err);
    if (st != IOMMU_EMUL_ST_OK) {
        return st;
    }
    if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA) {
        st = iommu_emul_hpa_pin(s, hosts, npages, limit, &bus, &hpa_pin);
        if (st != IOMMU_EMUL_ST_OK) {
            iommu_emul_unpin_range(s, hosts, npages, false);
            g_free(hosts);
            return st;
        }
    }

    m = g_new0(IOMMUEmulMapping, 1);
    m->node.start = bus;
    m->node.last = bus + c->length - 1;
    m->gpa = c->addr;
    m->perm = perm;
    m->hosts = hosts;
    m->hpa_pin = hpa_pin;
    trace_iommu_emul_map(c->requester, c->addr, c->length, perm, bus);
    iommu_emul_store_add(d, m);
    s->maps++;
    c->out_addr = bus;
    return IOMMU_EMUL_ST_OK;
}

static uint16_t iommu_emul_unmap(IOMMUEmulState *s, IOMMUEmulCmd *c)
{
    IOMMUEmulMapping *hit = NULL;
    uint64_t last = c->addr + c->length - 1;
    IntervalTreeNode *node;
    IOMMUEmulDev *d;

    if (c->flags || !iommu_emul_range_valid(c->addr, c->length)) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    /* Exactly one mapping; of gpa/hpa-mode duplicates, the most recent */
    for (node = interval_tree_iter_first(&d->maps, c->addr, c->addr); node;
         node = interval_tree_iter_next(node, c->addr, c->addr)) {
        IOMMUEmulMapping *m = container_of(node, IOMMUEmulMapping, node);

        if (node->start == c->addr && node->last == last &&
            (!hit || m->seq > hit->seq)) {
            hit = m;
        }
    }
    if (!hit) {
        return IOMMU_EMUL_ST_NOT_FOUND;
    }
    iommu_emul_store_remove(d, hit);
    return IOMMU_EMUL_ST_OK;
}

static uint16_t iommu_emul_set_mode(IOMMUEmulState *s, IOMMUEmulCmd *c)
{
    IOMMUEmulDev *d;

    if (c->flags & ~IOMMU_EMUL_MODE_TRANSLATE) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    WITH_QEMU_LOCK_GUARD(&s->mutex) {
        d->translate = c->flags & IOMMU_EMUL_MODE_TRANSLATE;
    }
    trace_iommu_emul_set_mode(c->requester, d->translate);
    iommu_emul_switch_as(d);
    return IOMMU_EMUL_ST_OK;
}

static uint16_t iommu_emul_query(IOMMUEmulState *s, IOMMUEmulCmd *c)
{
    IOMMUEmulMapping *hit = NULL;
    IntervalTreeNode *node;
    IOMMUEmulDev *d;

    if (c->flags) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    c->out_flags = d->translate ? IOMMU_EMUL_QUERY_TRANSLATE : 0;
    /* Of the mappings that cover addr, the oldest */
    for (node = interval_tree_iter_first(&d->maps, c->addr, c->addr); node;
         node = interval_tree_iter_next(node, c->addr, c->addr)) {
        IOMMUEmulMapping *m = container_of(node, IOMMUEmulMapping, node);

        if (!hit || m->seq < hit->seq) {
            hit = m;
        }
    }
    if (!hit) {
        return IOMMU_EMUL_ST_NOT_FOUND;
    }
    c->out_addr = hit->gpa + (c->addr - hit->node.start);
    c->out_base = hit->node.start;
    c->out_length = hit->node.last - hit->node.start + 1;
    c->out_flags |= (hit->perm & IOMMU_RO ? IOMMU_EMUL_QUERY_READ : 0) |
                    (hit->perm & IOMMU_WO ? IOMMU_EMUL_QUERY_WRITE : 0);
    return IOMMU_EMUL_ST_OK;
}

/*
 * The execution budget of one step (see the spec's "Execution budget"):
 * a step ends before an entry, or before a mapping of a DETACH, once the
 * cost of what it executed reaches it.
 */
#define IOMMU_EMUL_CMDQ_BUDGET (1ULL << 18)

static uint64_t iommu_emul_map_pages(const IntervalTreeNode *node)
{
    return (node->last - node->start + 1) >> IOMMU_EMUL_PAGE_SHIFT;
}

/*
 * DETACH, in steps: removes mappings of the requester while *@work is
 * below the budget, adding each one's pages to it. Returns true when it
 * is done, false when the step must end with it partly done; the count of
 * removed mappings stays in s->cmdq_detached until it is done.
 */
static bool iommu_emul_detach(IOMMUEmulState *s, IOMMUEmulCmd *c,
                              uint64_t *work, uint16_t *status)
{
    IntervalTreeNode *node;
    uint64_t total = 0;
    IOMMUEmulDev *d;

    if (c->flags) {
        *status = IOMMU_EMUL_ST_BAD_ARG;
        return true;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        *status = IOMMU_EMUL_ST_NO_DEVICE;
        return true;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    for (node = interval_tree_iter_first(&d->maps, 0, UINT64_MAX); node;
         node = interval_tree_iter_next(node, 0, UINT64_MAX)) {
        total += iommu_emul_map_pages(node);
    }
    if (*work + total <= IOMMU_EMUL_CMDQ_BUDGET) {
        /* All of it fits (the check before the last mapping passes) */
        s->cmdq_detached += iommu_emul_store_clear(d, true);
        *work += total;
    } else {
        while ((node = interval_tree_iter_first(&d->maps, 0, UINT64_MAX))) {
            if (*work >= IOMMU_EMUL_CMDQ_BUDGET) {
                s->cmdq_detach_rid = c->requester;
                return false;
            }
            *work += iommu_emul_map_pages(node);
            iommu_emul_store_remove(d, container_of(node, IOMMUEmulMapping,
                                                    node));
            s->cmdq_detached++;
        }
        d->iova_hint = s->aperture_start;
    }
    c->out_length = s->cmdq_detached;
    s->cmdq_detached = 0;
    *status = IOMMU_EMUL_ST_OK;
    return true;
}

static uint16_t iommu_emul_exec(IOMMUEmulState *s, IOMMUEmulCmd *c,
                                bool *irq)
{
    switch (c->opcode) {
    case IOMMU_EMUL_OP_SET_MODE:
        return iommu_emul_set_mode(s, c);
    case IOMMU_EMUL_OP_MAP:
        return iommu_emul_map(s, c);
    case IOMMU_EMUL_OP_UNMAP:
        return iommu_emul_unmap(s, c);
    case IOMMU_EMUL_OP_SYNC:
        if (c->flags & ~IOMMU_EMUL_SYNC_IRQ) {
            return IOMMU_EMUL_ST_BAD_ARG;
        }
        *irq = c->flags & IOMMU_EMUL_SYNC_IRQ;
        return IOMMU_EMUL_ST_OK;
    case IOMMU_EMUL_OP_QUERY:
        return iommu_emul_query(s, c);
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "%s: unknown opcode 0x%x\n",
                      __func__, c->opcode);
        return IOMMU_EMUL_ST_BAD_OPCODE;
    }
}

/* Entries between CMDQ_HEAD and CMDQ_TAIL that the device is to execute */
static bool iommu_emul_cmdq_pending(IOMMUEmulState *s)
{
    return iommu_emul_queue_entries(&s->cmdq) && !s->cmdq.error &&
           s->cmdq.head != s->cmdq.tail;
}

/*
 * One step of execution: pending entries in order until the budget is
 * used up (see the spec's "Execution budget"). What is left runs from
 * cmdq_timer, or in the step of the next CMDQ_HEAD read or CMDQ_TAIL or
 * CMDQ_ERROR write, whichever comes first.
 */
static void iommu_emul_cmdq_step(IOMMUEmulState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    uint32_t entries = iommu_emul_queue_entries(&s->cmdq);
    uint64_t work = 0;

    while (iommu_emul_cmdq_pending(s) && work < IOMMU_EMUL_CMDQ_BUDGET) {
        dma_addr_t ea = s->cmdq.base +
                        (uint64_t)s->cmdq.head * IOMMU_EMUL_CMD_SIZE;
        uint8_t e[IOMMU_EMUL_CMD_SIZE];
        IOMMUEmulCmd c = { 0 };
        uint16_t status;
        bool irq = false;

        if (pci_dma_read(pdev, ea, e, sizeof(e)) != MEMTX_OK) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: cannot read command at 0x%"
                          PRIx64 "\n", __func__, ea);
            s->cmdq.error = IOMMU_EMUL_QERR_DMA;
            break;
        }
        c.opcode = lduw_le_p(e + IOMMU_EMUL_CMD_OPCODE);
        c.flags = lduw_le_p(e + IOMMU_EMUL_CMD_FLAGS);
        c.requester = lduw_le_p(e + IOMMU_EMUL_CMD_REQUESTER);
        c.addr = ldq_le_p(e + IOMMU_EMUL_CMD_ADDR);
        c.length = ldq_le_p(e + IOMMU_EMUL_CMD_LENGTH);
        c.dma_limit = ldq_le_p(e + IOMMU_EMUL_CMD_DMA_LIMIT);

        if (c.opcode != IOMMU_EMUL_OP_DETACH ||
            c.requester != s->cmdq_detach_rid) {
            /* Not the partly done DETACH (the guest changed the entry) */
            s->cmdq_detached = 0;
        }
        if (c.opcode == IOMMU_EMUL_OP_DETACH) {
            bool done = iommu_emul_detach(s, &c, &work, &status);

            iommu_emul_flush_discards(s);
            if (!done) {
                break;
            }
            work++;
        } else {
            if (c.opcode == IOMMU_EMUL_OP_MAP ||
                c.opcode == IOMMU_EMUL_OP_UNMAP) {
                work += c.length >> IOMMU_EMUL_PAGE_SHIFT;
            }
            work++;
            status = iommu_emul_exec(s, &c, &irq);
            iommu_emul_flush_discards(s);
        }
        trace_iommu_emul_cmd(s->cmdq.head, c.opcode, c.requester, c.addr,
                             c.length, status);
        if (status != IOMMU_EMUL_ST_OK) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: command %u opcode 0x%x"
                          " failed with status 0x%x\n", __func__,
                          s->cmdq.head, c.opcode, status);
        }

        stl_le_p(e + IOMMU_EMUL_CMD_OUT_FLAGS, c.out_flags);
        stq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR, c.out_addr);
        stq_le_p(e + IOMMU_EMUL_CMD_OUT_BASE, c.out_base);
        stq_le_p(e + IOMMU_EMUL_CMD_OUT_LENGTH, c.out_length);
        stw_le_p(e + IOMMU_EMUL_CMD_STATUS, IOMMU_EMUL_STATUS_DONE | status);
        if (pci_dma_write(pdev, ea + IOMMU_EMUL_CMD_OUT_FLAGS,
                          e + IOMMU_EMUL_CMD_OUT_FLAGS, 4) != MEMTX_OK ||
            pci_dma_write(pdev, ea + IOMMU_EMUL_CMD_OUT_ADDR,
                          e + IOMMU_EMUL_CMD_OUT_ADDR, 24) != MEMTX_OK ||
            pci_dma_write(pdev, ea + IOMMU_EMUL_CMD_STATUS,
                          e + IOMMU_EMUL_CMD_STATUS, 2) != MEMTX_OK) {
            /* The command took effect; only its completion was lost */
            qemu_log_mask(LOG_GUEST_ERROR, "%s: cannot complete command at"
                          " 0x%" PRIx64 "\n", __func__, ea);
            s->cmdq.error = IOMMU_EMUL_QERR_DMA;
        }
        s->cmdq.head = (s->cmdq.head + 1) % entries;
        if (irq && s->msix && msix_enabled(pdev)) {
            msix_notify(pdev, IOMMU_EMUL_VEC_CMD);
        }
    }
    if (iommu_emul_cmdq_pending(s)) {
        /*
         * The next step in the background, 1 ns of virtual time later:
         * at once while the guest runs, but not until a qtest steps the
         * clock (tests see each step) nor while the VM is stopped
         */
        timer_mod(s->cmdq_timer,
                  qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 1);
    }
}

/*
 * A background step. The device's re-entrancy guard keeps the step's DMA
 * out of its own MMIO, as for a guarded BH.
 */
static void iommu_emul_cmdq_timer(void *opaque)
{
    IOMMUEmulState *s = opaque;
    MemReentrancyGuard *guard = &DEVICE(s)->mem_reentrancy_guard;

    if (guard->engaged_in_io) {
        timer_mod(s->cmdq_timer, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 1);
        return;
    }
    guard->engaged_in_io = true;
    iommu_emul_cmdq_step(s);
    guard->engaged_in_io = false;
}

/* Rings and registers */

/* A ring must be aligned to its entry size and lie entirely in RAM */
static uint32_t iommu_emul_check_ring(uint64_t base, uint32_t log2,
                                      uint32_t max_log2, uint32_t esize)
{
    uint64_t len;

    if (log2 == 0 || log2 > max_log2) {
        return IOMMU_EMUL_QERR_BAD_SIZE;
    }
    len = (uint64_t)esize << log2;
    if ((base & (esize - 1)) || base + (len - 1) < base ||
        !iommu_emul_range_is_ram(base & ~PAGE_MASK_EMUL,
                                 ((base & PAGE_MASK_EMUL) + len +
                                  PAGE_MASK_EMUL) & ~PAGE_MASK_EMUL)) {
        return IOMMU_EMUL_QERR_BAD_BASE;
    }
    return IOMMU_EMUL_QERR_NONE;
}

/* CTRL turns a ring on (after checking it) or off */
static void iommu_emul_queue_enable(IOMMUEmulQueue *q, bool enable,
                                    uint32_t max_log2, uint32_t entry_size,
                                    const char *what)
{
    if (!enable) {
        q->on = false;
        return;
    }
    if (q->on) {
        return;
    }
    q->error = iommu_emul_check_ring(q->base, q->size, max_log2, entry_size);
    if (q->error) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: bad %s ring (error %u)\n",
                      __func__, what, q->error);
        return;
    }
    q->on = true;
    q->head = q->tail = 0;
}

static void iommu_emul_write_ctrl(IOMMUEmulState *s, uint32_t val)
{
    if (val & ~(R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: reserved CTRL bits 0x%x\n",
                      __func__, val);
    }
    s->ctrl = val & (R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
    iommu_emul_queue_enable(&s->cmdq, FIELD_EX32(val, CTRL, CMDQ_EN),
                            s->cmdq_max_log2, IOMMU_EMUL_CMD_SIZE, "command");
    if (!s->cmdq.on || s->cmdq.head == s->cmdq.tail) {
        /* Off, or restarted at 0: a partly done DETACH is abandoned */
        s->cmdq_detached = 0;
    }
    iommu_emul_queue_enable(&s->faultq, FIELD_EX32(val, CTRL, FAULTQ_EN),
                            s->faultq_max_log2, IOMMU_EMUL_FAULT_SIZE,
                            "fault");
}

static uint32_t iommu_emul_status(IOMMUEmulState *s)
{
    uint32_t v = 0;

    v = FIELD_DP32(v, STATUS, CMDQ_ON, s->cmdq.on);
    v = FIELD_DP32(v, STATUS, FAULTQ_ON, s->faultq.on);
    v = FIELD_DP32(v, STATUS, CMDQ_ERR, !!s->cmdq.error);
    v = FIELD_DP32(v, STATUS, FAULTQ_ERR, !!s->faultq.error);
    return v;
}

static bool iommu_emul_is_reg64(hwaddr addr)
{
    switch (addr & ~7ULL) {
    case A_MAX_PINNED:
    case A_PINNED:
    case A_APERTURE_START:
    case A_APERTURE_END:
    case A_CMDQ_BASE:
    case A_FAULTQ_BASE:
        return true;
    default:
        return false;
    }
}

static uint64_t iommu_emul_read64(IOMMUEmulState *s, hwaddr addr)
{
    switch (addr) {
    case A_MAX_PINNED:
        return s->max_pinned;
    case A_PINNED:
        return s->pinned_pages * IOMMU_EMUL_PAGE_SIZE;
    case A_APERTURE_START:
        return s->aperture_start;
    case A_APERTURE_END:
        return s->aperture_end;
    case A_CMDQ_BASE:
        return s->cmdq.base;
    case A_FAULTQ_BASE:
        return s->faultq.base;
    default:
        return 0;
    }
}

static uint32_t iommu_emul_read32(IOMMUEmulState *s, hwaddr addr)
{
    uint32_t v = 0;

    switch (addr) {
    case A_MAGIC:
        return IOMMU_EMUL_MAGIC;
    case A_VERSION:
        return IOMMU_EMUL_VERSION;
    case A_CAP:
        v = FIELD_DP32(v, CAP, BUS_ADDR, s->mode);
        v = FIELD_DP32(v, CAP, PAGE_SHIFT, IOMMU_EMUL_PAGE_SHIFT);
        v = FIELD_DP32(v, CAP, CMDQ_MAX_LOG2, s->cmdq_max_log2);
        v = FIELD_DP32(v, CAP, FAULTQ_MAX_LOG2, s->faultq_max_log2);
        v = FIELD_DP32(v, CAP, MSIX, s->msix);
        return v;
    case A_LIMITS:
        return s->max_mappings;
    case A_CTRL:
        return s->ctrl;
    case A_STATUS:
        iommu_emul_flush_faults(s);
        return iommu_emul_status(s);
    case A_CMDQ_ERROR:
        return s->cmdq.error;
    case A_FAULTQ_ERROR:
        return s->faultq.error;
    case A_CMDQ_SIZE:
        return s->cmdq.size;
    case A_CMDQ_HEAD:
        /* A driver waiting for a batch makes progress (no BH needed) */
        if (iommu_emul_cmdq_pending(s)) {
            iommu_emul_cmdq_step(s);
        }
        return s->cmdq.head;
    case A_CMDQ_TAIL:
        return s->cmdq.tail;
    case A_FAULTQ_SIZE:
        return s->faultq.size;
    case A_FAULTQ_HEAD:
        return s->faultq.head;
    case A_FAULTQ_TAIL:
        iommu_emul_flush_faults(s);
        return s->faultq.tail;
    case A_FAULT_OVERFLOW:
        iommu_emul_flush_faults(s);
        WITH_QEMU_LOCK_GUARD(&s->mutex) {
            v = s->fault_overflow;
        }
        return v;
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "%s: read of unknown register 0x%"
                      HWADDR_PRIx "\n", __func__, addr);
        return 0;
    }
}

static uint64_t iommu_emul_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    IOMMUEmulState *s = opaque;
    uint64_t val;

    if (addr & (size - 1)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: misaligned read at 0x%"
                      HWADDR_PRIx "\n", __func__, addr);
        return 0;
    }
    if (iommu_emul_is_reg64(addr)) {
        val = iommu_emul_read64(s, addr & ~7ULL);
        if (size == 4) {
            val = (addr & 4) ? val >> 32 : (uint32_t)val;
        }
    } else if (size == 8) {
        val = iommu_emul_read32(s, addr) |
              ((uint64_t)iommu_emul_read32(s, addr + 4) << 32);
    } else {
        val = iommu_emul_read32(s, addr);
    }
    trace_iommu_emul_mmio_read(addr, val, size);
    return val;
}

static void iommu_emul_write64(IOMMUEmulState *s, hwaddr addr, uint64_t val,
                               uint64_t mask)
{
    uint64_t *reg;
    bool busy;

    switch (addr) {
    case A_CMDQ_BASE:
        reg = &s->cmdq.base;
        busy = s->cmdq.on;
        break;
    case A_FAULTQ_BASE:
        reg = &s->faultq.base;
        busy = s->faultq.on;
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "%s: write to read-only register 0x%"
                      HWADDR_PRIx "\n", __func__, addr);
        return;
    }
    if (busy) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: ring base 0x%" HWADDR_PRIx
                      " written while the ring is on\n", __func__, addr);
        return;
    }
    *reg = (*reg & ~mask) | (val & mask);
}

static void iommu_emul_write32(IOMMUEmulState *s, hwaddr addr, uint32_t val)
{
    switch (addr) {
    case A_CTRL:
        iommu_emul_write_ctrl(s, val);
        break;
    case A_CMDQ_ERROR:
        s->cmdq.error = IOMMU_EMUL_QERR_NONE;
        iommu_emul_cmdq_step(s);
        break;
    case A_FAULTQ_ERROR:
        s->faultq.error = IOMMU_EMUL_QERR_NONE;
        break;
    case A_CMDQ_SIZE:
    case A_FAULTQ_SIZE: {
        IOMMUEmulQueue *q = addr == A_CMDQ_SIZE ? &s->cmdq : &s->faultq;

        if (q->on) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: ring size 0x%" HWADDR_PRIx
                          " written while the ring is on\n", __func__, addr);
            break;
        }
        q->size = val;
        break;
    }
    case A_CMDQ_TAIL:
        if (!s->cmdq.on) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: CMDQ_TAIL written while the"
                          " ring is off\n", __func__);
            break;
        }
        if (val >= iommu_emul_queue_entries(&s->cmdq)) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: CMDQ_TAIL %u out of range\n",
                          __func__, val);
            /* The first error stays until the guest clears it */
            if (!s->cmdq.error) {
                s->cmdq.error = IOMMU_EMUL_QERR_BAD_INDEX;
            }
            break;
        }
        s->cmdq.tail = val;
        iommu_emul_cmdq_step(s);
        break;
    case A_FAULTQ_HEAD:
        if (val >= iommu_emul_queue_entries(&s->faultq)) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: FAULTQ_HEAD %u ignored\n",
                          __func__, val);
            break;
        }
        s->faultq.head = val;
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "%s: write to read-only or unknown"
                      " register 0x%" HWADDR_PRIx "\n", __func__, addr);
        break;
    }
}

static void iommu_emul_mmio_write(void *opaque, hwaddr addr, uint64_t val,
                                  unsigned size)
{
    IOMMUEmulState *s = opaque;

    trace_iommu_emul_mmio_write(addr, val, size);
    if (addr & (size - 1)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: misaligned write at 0x%"
                      HWADDR_PRIx "\n", __func__, addr);
        return;
    }
    if (iommu_emul_is_reg64(addr)) {
        if (size == 8) {
            iommu_emul_write64(s, addr, val, UINT64_MAX);
        } else if (addr & 4) {
            iommu_emul_write64(s, addr & ~7ULL, val << 32,
                               0xffffffff00000000ULL);
        } else {
            iommu_emul_write64(s, addr, val, 0xffffffffULL);
        }
    } else if (size == 8) {
        iommu_emul_write32(s, addr, val);
        iommu_emul_write32(s, addr + 4, val >> 32);
    } else {
        iommu_emul_write32(s, addr, val);
    }
}

/*
 * A misaligned access reaches the handlers whole (.impl.unaligned: the
 * memory core would otherwise split it into aligned pieces that each take
 * effect), and they ignore it. Accesses of 1 or 2 bytes are invalid and
 * ignored by the memory core (reads return 0).
 */
static const MemoryRegionOps iommu_emul_mmio_ops = {
    .read = iommu_emul_mmio_read,
    .write = iommu_emul_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 8,
        .unaligned = true,
    },
    .impl = {
        .min_access_size = 4,
        .max_access_size = 8,
        .unaligned = true,
    },
};

/* Lifecycle */

static bool iommu_emul_release_dev(IOMMUEmulDev *d, void *opaque)
{
    WITH_QEMU_LOCK_GUARD(&d->s->mutex) {
        iommu_emul_store_clear(d, false);
        d->translate = false;
    }
    iommu_emul_switch_as(d);
    return false;
}

/* Every requester back to bypass without mappings, nothing pinned */
static void iommu_emul_release_all(IOMMUEmulState *s)
{
    iommu_emul_find_dev_if(s, iommu_emul_release_dev, NULL);
    WITH_QEMU_LOCK_GUARD(&s->mutex) {
        iommu_emul_cache_flush(s);
    }
    /*
     * Reset and exit: the guest that restarts owns all its memory again
     * (the balloon forgets its pages too), so nothing is discarded late.
     */
    iommu_emul_drop_discards(s);
}

static void iommu_emul_machine_done(Notifier *n, void *opaque)
{
    IOMMUEmulState *s = container_of(n, IOMMUEmulState, machine_done);
    PCIBus *bus = pci_get_bus(PCI_DEVICE(s));

    if (bus->iommu_ops != &iommu_emul_iommu_ops || bus->iommu_opaque != s) {
        error_report("iommu-emul: another IOMMU took over PCI bus %s; "
                     "iommu-emul cannot be combined with other IOMMUs",
                     BUS(bus)->name);
        exit(1);
    }
}

static void iommu_emul_realize(PCIDevice *pdev, Error **errp)
{
    IOMMUEmulState *s = IOMMU_EMUL(pdev);
    PCIBus *bus = pci_get_bus(pdev);
    bool ambiguous = false;
    Error *err = NULL;
    int ret;

    if (!s->bus_addr || !strcmp(s->bus_addr, "iova")) {
        s->mode = IOMMU_EMUL_BUS_ADDR_IOVA;
    } else if (!strcmp(s->bus_addr, "gpa")) {
        s->mode = IOMMU_EMUL_BUS_ADDR_GPA;
    } else if (!strcmp(s->bus_addr, "hpa")) {
        s->mode = IOMMU_EMUL_BUS_ADDR_HPA;
    } else {
        error_setg(errp, "iommu-emul: bus-addr must be iova, gpa or hpa,"
                   " not '%s'", s->bus_addr);
        return;
    }
    if (s->cmdq_max_log2 < 1 || s->cmdq_max_log2 > 15 ||
        s->faultq_max_log2 < 1 || s->faultq_max_log2 > 15) {
        error_setg(errp, "iommu-emul: cmdq-max-log2 and faultq-max-log2"
                   " must be between 1 and 15");
        return;
    }
    if (s->aperture_bits < 32 || s->aperture_bits > 64) {
        error_setg(errp, "iommu-emul: aperture-bits must be between 32"
                   " and 64");
        return;
    }
    if (s->max_mappings == 0 || s->max_pinned < IOMMU_EMUL_PAGE_SIZE) {
        error_setg(errp, "iommu-emul: max-mappings must be at least 1 and"
                   " max-pinned at least 4 KiB");
        return;
    }
    if (!pci_bus_is_root(bus)) {
        error_setg(errp, "iommu-emul must be on the root PCI bus");
        return;
    }
    /* We are in the QOM tree already: another one makes it ambiguous */
    object_resolve_path_type("", TYPE_IOMMU_EMUL, &ambiguous);
    if (ambiguous) {
        error_setg(errp, "iommu-emul: there can be only one iommu-emul"
                   " device per machine");
        return;
    }
    if (bus->iommu_ops) {
        error_setg(errp, "iommu-emul: PCI bus %s already has an IOMMU"
                   " (intel-iommu, amd-iommu or virtio-iommu?); iommu-emul"
                   " cannot be combined with another IOMMU", BUS(bus)->name);
        return;
    }
    if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA && !iommu_emul_hpa_init(s, errp)) {
        return;
    }

    s->aperture_end = s->aperture_bits == 64 ? UINT64_MAX :
                      (1ULL << s->aperture_bits) - 1;
    s->aperture_start = s->mode == IOMMU_EMUL_BUS_ADDR_IOVA ? 1 * MiB : 0;
    s->max_pinned &= ~PAGE_MASK_EMUL;

    memory_region_init_io(&s->regs, OBJECT(s), &iommu_emul_mmio_ops, s,
                          "iommu-emul-regs", IOMMU_EMUL_REGS_SIZE);
    pci_register_bar(pdev, IOMMU_EMUL_REGS_BAR,
                     PCI_BASE_ADDRESS_SPACE_MEMORY |
                     PCI_BASE_ADDRESS_MEM_TYPE_64, &s->regs);

    /*
     * MSI-X in a 64-bit BAR of its own; without MSI-X on the host the
     * guest polls (CAP.MSIX = 0, no BAR 2)
     */
    memory_region_init(&s->msix_bar, OBJECT(s), "iommu-emul-msix",
                       IOMMU_EMUL_MSIX_BAR_SIZE);
    ret = msix_init(pdev, IOMMU_EMUL_MSIX_VECTORS, &s->msix_bar,
                    IOMMU_EMUL_MSIX_BAR, 0, &s->msix_bar, IOMMU_EMUL_MSIX_BAR,
                    IOMMU_EMUL_MSIX_PBA_OFFSET, IOMMU_EMUL_MSIX_CAP_OFFSET,
                    &err);
    if (ret < 0 && ret != -ENOTSUP) {
        error_propagate(errp, err);
        iommu_emul_hpa_fini(s);
        return;
    }
    error_free(err);
    s->msix = ret == 0;
    if (s->msix) {
        pci_register_bar(pdev, IOMMU_EMUL_MSIX_BAR,
                         PCI_BASE_ADDRESS_SPACE_MEMORY |
                         PCI_BASE_ADDRESS_MEM_TYPE_64, &s->msix_bar);
        msix_vector_use(pdev, IOMMU_EMUL_VEC_FAULT);
        msix_vector_use(pdev, IOMMU_EMUL_VEC_CMD);
    }

    /*
     * A PCI Express (root complex integrated) endpoint on a PCI Express
     * bus, conventional PCI elsewhere; added last, so first in the list
     */
    if (pci_bus_is_express(bus)) {
        ret = pcie_endpoint_cap_init(pdev, IOMMU_EMUL_PCIE_CAP_OFFSET);
        if (ret < 0) {
            error_setg(errp, "cannot add the PCI Express capability");
            if (s->msix) {
                msix_uninit(pdev, &s->msix_bar, &s->msix_bar);
            }
            iommu_emul_hpa_fini(s);
            return;
        }
    } else {
        pdev->cap_present &= ~QEMU_PCI_CAP_EXPRESS;
    }

    qemu_mutex_init(&s->mutex);
    s->devs = g_ptr_array_new();
    s->cache = g_hash_table_new(NULL, NULL);
    g_queue_init(&s->cache_lru);
    /* With all of RAM locked already, there is nothing to save */
    s->cache_max = iommu_emul_do_mlock() ?
                   s->pin_cache >> IOMMU_EMUL_PAGE_SHIFT : 0;
    s->pins = g_hash_table_new(NULL, NULL);
    s->discard_pending = g_hash_table_new(NULL, NULL);
    s->discard_due = g_array_new(false, false, sizeof(uintptr_t));
    s->fault_bh = qemu_bh_new_guarded(iommu_emul_fault_bh, s,
                                      &DEVICE(s)->mem_reentrancy_guard);
    s->cmdq_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, iommu_emul_cmdq_timer,
                                 s);

    s->discard_veto.vetoed = iommu_emul_discard_vetoed;
    s->discard_veto.defer = iommu_emul_discard_defer;
    s->discard_veto.cancel = iommu_emul_discard_cancel;
    ram_block_discard_veto_add(&s->discard_veto);
    s->offline_pins.exposed = iommu_emul_offline_exposed;
    s->offline_pins.remapped = iommu_emul_offline_remapped;
    ram_offline_pin_holder_add(&s->offline_pins);
    s->machine_done.notify = iommu_emul_machine_done;
    qemu_add_machine_init_done_notifier(&s->machine_done);
    pci_setup_iommu(bus, &iommu_emul_iommu_ops, s);
    trace_iommu_emul_realize(IOMMU_EMUL_PCI_VENDOR_ID,
                             IOMMU_EMUL_PCI_DEVICE_ID);
}

static void iommu_emul_exit(PCIDevice *pdev)
{
    IOMMUEmulState *s = IOMMU_EMUL(pdev);
    PCIBus *bus = pci_get_bus(pdev);

    iommu_emul_release_all(s);
    iommu_emul_hpa_fini(s);
    ram_block_discard_veto_remove(&s->discard_veto);
    ram_offline_pin_holder_remove(&s->offline_pins);
    qemu_remove_machine_init_done_notifier(&s->machine_done);
    if (bus->iommu_ops == &iommu_emul_iommu_ops && bus->iommu_opaque == s) {
        bus->iommu_ops = NULL;
        bus->iommu_opaque = NULL;
    }
    /*
     * The requesters (now without mappings), their address spaces and
     * regions live as long as QEMU: PCI devices keep pointers to them.
     */
    qemu_bh_delete(s->fault_bh);
    timer_free(s->cmdq_timer);
    if (pci_is_express(pdev)) {
        pcie_cap_exit(pdev);
    }
    if (s->msix) {
        msix_uninit(pdev, &s->msix_bar, &s->msix_bar);
    }
    g_hash_table_destroy(s->pins);
    g_hash_table_destroy(s->cache);
    g_hash_table_destroy(s->discard_pending);
    g_array_free(s->discard_due, true);
    qemu_mutex_destroy(&s->mutex);
}

static void iommu_emul_reset_enter(Object *obj, ResetType type)
{
    IOMMUEmulState *s = IOMMU_EMUL(obj);

    /*
     * Unpin in the enter phase, so that reset-time discards (virtio-mem
     * unplug_all, qemu_ram_remap) find nothing pinned.
     */
    trace_iommu_emul_reset(s->mappings, s->pinned_pages);
    iommu_emul_release_all(s);
}

static void iommu_emul_reset_hold(Object *obj, ResetType type)
{
    IOMMUEmulState *s = IOMMU_EMUL(obj);

    s->ctrl = 0;
    s->cmdq.on = false;
    s->faultq.on = false;
    s->cmdq.error = 0;
    s->faultq.error = 0;
    s->cmdq.base = 0;
    s->cmdq.size = 0;
    s->cmdq.head = 0;
    s->cmdq.tail = 0;
    s->cmdq_detached = 0;
    timer_del(s->cmdq_timer);
    s->faultq.base = 0;
    s->faultq.size = 0;
    s->faultq.head = 0;
    s->faultq.tail = 0;
    WITH_QEMU_LOCK_GUARD(&s->mutex) {
        s->fault_overflow = 0;
        s->npending = 0;
        s->fault_seq = 0;
    }
}

static void iommu_emul_get_pinned_bytes(Object *obj, Visitor *v,
                                        const char *name, void *opaque,
                                        Error **errp)
{
    IOMMUEmulState *s = IOMMU_EMUL(obj);
    uint64_t bytes = qatomic_read(&s->pinned_pages) * IOMMU_EMUL_PAGE_SIZE;

    visit_type_uint64(v, name, &bytes, errp);
}

static void iommu_emul_instance_init(Object *obj)
{
    static const struct {
        const char *name;
        size_t offset;
        const char *desc;
    } counters[] = {
        { "mappings", offsetof(IOMMUEmulState, mappings),
          "Mappings that exist now (read-only counter)" },
        { "pinned-pages", offsetof(IOMMUEmulState, pinned_pages),
          "Distinct 4 KiB guest pages pinned now (read-only counter)" },
        { "maps", offsetof(IOMMUEmulState, maps),
          "Successful MAP commands since start (read-only counter)" },
        { "unmaps", offsetof(IOMMUEmulState, unmaps),
          "Mappings removed by UNMAP, DETACH or reset since start"
          " (read-only counter)" },
        { "faults", offsetof(IOMMUEmulState, faults),
          "Fault records generated for blocked DMA since start"
          " (read-only counter)" },
        { "invalidations", offsetof(IOMMUEmulState, invalidations),
          "Invalidations sent to IOMMU notifiers since start"
          " (read-only counter)" },
        { "vetoed-discards", offsetof(IOMMUEmulState, vetoed_discards),
          "Host pages a discard (balloon, free page reporting, virtio-mem)"
          " skipped because they were pinned, since start"
          " (read-only counter)" },
        { "deferred-discards", offsetof(IOMMUEmulState, deferred_discards),
          "Host pages ballooned while pinned and discarded when unpinned,"
          " since start (read-only counter)" },
        { "cached-pages", offsetof(IOMMUEmulState, cached_pages),
          "Pages the pin cache holds now, locked but not mapped"
          " (read-only counter)" },
        { "pin-cache-hits", offsetof(IOMMUEmulState, cache_hits),
          "Pages MAP took from the pin cache without a system call, since"
          " start (read-only counter)" },
        { "pin-cache-misses", offsetof(IOMMUEmulState, cache_misses),
          "Pages MAP had to lock, neither pinned nor cached, since start"
          " (read-only counter)" },
        { "pin-cache-evictions", offsetof(IOMMUEmulState, cache_evictions),
          "Pages that left the pin cache because it was full or emptied"
          " (reset, RLIMIT_MEMLOCK), since start (read-only counter)" },
        { "pin-cache-releases", offsetof(IOMMUEmulState, cache_releases),
          "Cached pages released to a discard (balloon, free page"
          " reporting, virtio-mem) or a page offline, since start"
          " (read-only counter)" },
        { "mlock-calls", offsetof(IOMMUEmulState, mlock_calls),
          "mlock system calls made to pin pages, since start"
          " (read-only counter)" },
        { "munlock-calls", offsetof(IOMMUEmulState, munlock_calls),
          "munlock system calls made to unpin pages, since start"
          " (read-only counter)" },
    };
    int i;

    /*
     * A hybrid device: PCI Express on a PCI Express bus. Realize clears
     * this on a conventional bus; it must be set before the PCI core
     * sizes the configuration space.
     */
    PCI_DEVICE(obj)->cap_present |= QEMU_PCI_CAP_EXPRESS;

    for (i = 0; i < ARRAY_SIZE(counters); i++) {
        object_property_add_uint64_ptr(obj, counters[i].name,
                                       (uint64_t *)((char *)obj +
                                                    counters[i].offset),
                                       OBJ_PROP_FLAG_READ);
        object_property_set_description(obj, counters[i].name,
                                        counters[i].desc);
    }
    object_property_add(obj, "pinned-bytes", "uint64",
                        iommu_emul_get_pinned_bytes, NULL, NULL, NULL);
    object_property_set_description(obj, "pinned-bytes",
                                    "Bytes pinned now, pinned-pages x 4096"
                                    " (read-only counter)");
}

static const Property iommu_emul_properties[] = {
    DEFINE_PROP_STRING("bus-addr", IOMMUEmulState, bus_addr),
    DEFINE_PROP_SIZE("max-pinned", IOMMUEmulState, max_pinned, 1 * GiB),
    DEFINE_PROP_SIZE("pin-cache", IOMMUEmulState, pin_cache, 0),
    DEFINE_PROP_UINT32("max-mappings", IOMMUEmulState, max_mappings, 4096),
    DEFINE_PROP_UINT8("cmdq-max-log2", IOMMUEmulState, cmdq_max_log2, 8),
    DEFINE_PROP_UINT8("faultq-max-log2", IOMMUEmulState, faultq_max_log2, 8),
    DEFINE_PROP_UINT8("aperture-bits", IOMMUEmulState, aperture_bits, 48),
};

/*
 * Migration. The stream is as untrusted as the guest: everything loaded
 * is checked, and bad values fail the load with an error.
 *
 * The domains go as three arrays of plain VMState fields, which pre_save
 * fills from the store and post_load turns back into mappings and pins:
 * the requesters that translate or have mappings (by bus name, as bus
 * numbers are guest-assigned and loaded later with the bridges, and
 * devfn), their mappings in creation order, and the guest-physical pages
 * whose discard is pending. Each count is checked before its array is
 * allocated.
 */

static void iommu_emul_mig_free(IOMMUEmulState *s)
{
    g_clear_pointer(&s->mig_devs, g_free);
    g_clear_pointer(&s->mig_maps, g_free);
    g_clear_pointer(&s->mig_marks, g_free);
    s->mig_ndevs = 0;
    s->mig_nmaps = 0;
    s->mig_nmarks = 0;
}

static bool iommu_emul_dev_in_use(IOMMUEmulDev *d, void *opaque)
{
    GPtrArray *devs = opaque;

    if (d->translate || d->nmaps) {
        g_ptr_array_add(devs, d);
    }
    return false;
}

static gint iommu_emul_seq_cmp(gconstpointer a, gconstpointer b)
{
    const IOMMUEmulMapping *x = *(IOMMUEmulMapping * const *)a;
    const IOMMUEmulMapping *y = *(IOMMUEmulMapping * const *)b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int iommu_emul_pre_save(void *opaque)
{
    IOMMUEmulState *s = opaque;
    g_autoptr(GPtrArray) devs = g_ptr_array_new();
    g_autoptr(GHashTable) marked = g_hash_table_new(NULL, NULL);
    g_autoptr(GArray) marks = g_array_new(false, false, sizeof(uint64_t));
    unsigned i, j, k = 0;

    iommu_emul_mig_free(s);
    iommu_emul_find_dev_if(s, iommu_emul_dev_in_use, devs);
    QEMU_LOCK_GUARD(&s->mutex);
    s->mig_devs = g_new0(IOMMUEmulMigDev, devs->len);
    s->mig_ndevs = devs->len;
    s->mig_nmaps = s->mappings;
    s->mig_maps = g_new0(IOMMUEmulMigMapping, s->mappings);
    for (i = 0; i < devs->len; i++) {
        IOMMUEmulDev *d = g_ptr_array_index(devs, i);
        IOMMUEmulMigDev *md = &s->mig_devs[i];
        g_autoptr(GPtrArray) maps = g_ptr_array_new();
        IntervalTreeNode *node;

        if (strlen(BUS(d->bus)->name) >= sizeof(md->bus)) {
            error_report("iommu-emul: PCI bus name '%s' is too long to"
                         " migrate", BUS(d->bus)->name);
            iommu_emul_mig_free(s);
            return -EINVAL;
        }
        pstrcpy((char *)md->bus, sizeof(md->bus), BUS(d->bus)->name);
        md->devfn = d->devfn;
        md->translate = d->translate;
        md->nmaps = d->nmaps;
        for (node = interval_tree_iter_first(&d->maps, 0, UINT64_MAX); node;
             node = interval_tree_iter_next(node, 0, UINT64_MAX)) {
            g_ptr_array_add(maps, container_of(node, IOMMUEmulMapping,
                                               node));
        }
        g_ptr_array_sort(maps, iommu_emul_seq_cmp);
        for (j = 0; j < maps->len; j++) {
            IOMMUEmulMapping *m = g_ptr_array_index(maps, j);
            uint64_t len = m->node.last - m->node.start + 1, p;

            s->mig_maps[k++] = (IOMMUEmulMigMapping) {
                .bus = m->node.start, .gpa = m->gpa, .len = len,
                .perm = m->perm,
            };
            for (p = 0; p < len >> IOMMU_EMUL_PAGE_SHIFT; p++) {
                gpointer host = (gpointer)m->hosts[p];
                uint64_t gpa = m->gpa + (p << IOMMU_EMUL_PAGE_SHIFT);

                if (g_hash_table_contains(s->discard_pending, host) &&
                    g_hash_table_add(marked, host)) {
                    g_array_append_val(marks, gpa);
                }
            }
        }
    }
    s->mig_nmarks = marks->len;
    s->mig_marks = (uint64_t *)g_array_free(g_steal_pointer(&marks), false);
    return 0;
}

static int iommu_emul_post_save(void *opaque)
{
    iommu_emul_mig_free(opaque);
    return 0;
}

/* Each count is checked before its array is allocated and loaded */
static bool iommu_emul_mig_ndevs_ok(void *opaque, int version_id)
{
    IOMMUEmulState *s = opaque;

    /* Each requester must exist here, so there are no more than here */
    if (s->mig_ndevs < 0 || s->mig_ndevs > s->devs->len) {
        error_report("iommu-emul: %d requesters with mappings, more than"
                     " exist here (%u)", s->mig_ndevs, s->devs->len);
        return false;
    }
    return true;
}

static bool iommu_emul_mig_nmaps_ok(void *opaque, int version_id)
{
    IOMMUEmulState *s = opaque;
    uint64_t sum = 0;
    int i;

    for (i = 0; i < s->mig_ndevs; i++) {
        if (s->mig_devs[i].nmaps > s->max_mappings) {
            error_report("iommu-emul: more than max-mappings (%u) mappings"
                         " for one requester", s->max_mappings);
            return false;
        }
        sum += s->mig_devs[i].nmaps;
    }
    if (s->mig_nmaps < 0 || s->mig_nmaps != sum) {
        error_report("iommu-emul: %d mappings, but the requesters have %"
                     PRIu64, s->mig_nmaps, sum);
        return false;
    }
    return true;
}

static bool iommu_emul_mig_nmarks_ok(void *opaque, int version_id)
{
    IOMMUEmulState *s = opaque;

    /* Marks are on pinned pages, so they fit in max-pinned */
    if (s->mig_nmarks > s->max_pinned >> IOMMU_EMUL_PAGE_SHIFT) {
        error_report("iommu-emul: %u pending discards, more pages than"
                     " max-pinned", s->mig_nmarks);
        return false;
    }
    return true;
}

static bool iommu_emul_dev_named(IOMMUEmulDev *d, void *opaque)
{
    IOMMUEmulMigDev *md = opaque;

    return d->devfn == md->devfn &&
           !strcmp(BUS(d->bus)->name, (const char *)md->bus);
}

/*
 * Rebuild one loaded mapping of @d: check it, pin its pages and add it to
 * the store. Called with s->mutex held.
 */
static bool iommu_emul_load_mapping(IOMMUEmulState *s, IOMMUEmulDev *d,
                                    const IOMMUEmulMigMapping *mm,
                                    const char *who)
{
    uint64_t bus = mm->bus, gpa = mm->gpa, len = mm->len;
    uintptr_t *hosts = NULL;
    IOMMUEmulMapping *m;
    uint16_t st;
    int err;

    if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA) {
        /*
         * Host-physical bus addresses do not survive a move to another
         * host or process; hpa mode blocks migration, so a stream with
         * mappings for it is not from us.
         */
        error_report("iommu-emul: %s: bus-addr=hpa mappings cannot be"
                     " migrated", who);
        return false;
    }
    if (!len || ((bus | gpa | len) & PAGE_MASK_EMUL) ||
        bus + (len - 1) < bus || gpa + (len - 1) < gpa ||
        mm->perm < IOMMU_RO || mm->perm > IOMMU_RW ||
        bus < s->aperture_start || bus + (len - 1) > s->aperture_end ||
        (s->mode == IOMMU_EMUL_BUS_ADDR_GPA && bus != gpa)) {
        error_report("iommu-emul: %s: bad mapping bus 0x%" PRIx64 " gpa 0x%"
                     PRIx64 " length 0x%" PRIx64 " perm %u", who, bus, gpa,
                     len, mm->perm);
        return false;
    }
    if (s->mode == IOMMU_EMUL_BUS_ADDR_IOVA &&
        (interval_tree_iter_first(&d->maps, bus, bus + len - 1) ||
         (bus <= IOMMU_EMUL_MSI_LAST &&
          bus + len - 1 >= IOMMU_EMUL_MSI_BASE))) {
        error_report("iommu-emul: %s: mapping at bus 0x%" PRIx64
                     " overlaps another one or the MSI window", who, bus);
        return false;
    }
    if (d->nmaps >= s->max_mappings) {
        error_report("iommu-emul: %s: more than max-mappings (%u) mappings",
                     who, s->max_mappings);
        return false;
    }
    st = iommu_emul_pin_range(s, gpa, len >> IOMMU_EMUL_PAGE_SHIFT, &hosts,
                              &err);
    if (st == IOMMU_EMUL_ST_NO_RAM) {
        error_report("iommu-emul: %s: mapping at bus 0x%" PRIx64 ": gpa 0x%"
                     PRIx64 " length 0x%" PRIx64 " is not guest RAM here",
                     who, bus, gpa, len);
        return false;
    }
    if (st != IOMMU_EMUL_ST_OK && !err) {
        error_report("iommu-emul: %s: the migrated mappings pin more than"
                     " max-pinned (%" PRIu64 " bytes)", who, s->max_pinned);
        return false;
    }
    if (st != IOMMU_EMUL_ST_OK) {
        error_report("iommu-emul: %s: cannot pin the pages of gpa 0x%"
                     PRIx64 " length 0x%" PRIx64 " (mlock: %s; is"
                     " RLIMIT_MEMLOCK too low?)", who, gpa, len,
                     strerror(err));
        return false;
    }
    m = g_new0(IOMMUEmulMapping, 1);
    m->node.start = bus;
    m->node.last = bus + len - 1;
    m->gpa = gpa;
    m->perm = mm->perm;
    m->hosts = hosts;
    iommu_emul_store_add(d, m);
    return true;
}

/* Rebuild the domains from the loaded arrays; false on bad input */
static bool iommu_emul_load_domains(IOMMUEmulState *s)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    int i, k = 0;
    uint32_t j;

    if (s->mig_nmaps && migration_in_incoming_postcopy()) {
        /*
         * Pinning would fault in pages that have not arrived, from the
         * thread that loads the device state: refuse instead of hanging.
         */
        error_report("iommu-emul: mappings cannot be migrated with"
                     " postcopy");
        return false;
    }
    for (i = 0; i < s->mig_ndevs; i++) {
        IOMMUEmulMigDev *md = &s->mig_devs[i];
        g_autofree char *who = NULL;
        IOMMUEmulDev *d;

        md->bus[sizeof(md->bus) - 1] = 0;
        who = g_strdup_printf("requester %s:%02x.%x", (char *)md->bus,
                              PCI_SLOT(md->devfn), PCI_FUNC(md->devfn));
        d = iommu_emul_find_dev_if(s, iommu_emul_dev_named, md);
        if (!d) {
            error_report("iommu-emul: %s does not exist on the destination",
                         who);
            return false;
        }
        if (!g_hash_table_add(seen, d) || md->translate > 1) {
            error_report("iommu-emul: %s: duplicate or bad domain (mode %u,"
                         " %u mappings)", who, md->translate, md->nmaps);
            return false;
        }
        WITH_QEMU_LOCK_GUARD(&s->mutex) {
            d->translate = md->translate;
            for (j = 0; j < md->nmaps; j++) {
                if (!iommu_emul_load_mapping(s, d, &s->mig_maps[k++], who)) {
                    return false;
                }
            }
        }
        iommu_emul_switch_as(d);
    }

    QEMU_LOCK_GUARD(&s->mutex);
    for (j = 0; j < s->mig_nmarks; j++) {
        uint64_t gpa = s->mig_marks[j];
        uintptr_t host = gpa & PAGE_MASK_EMUL ? 0 :
                         iommu_emul_host_page(gpa);

        if (!host || !g_hash_table_contains(s->pins, (gpointer)host)) {
            error_report("iommu-emul: pending discard of gpa 0x%" PRIx64
                         " is not on a mapped page", gpa);
            return false;
        }
        g_hash_table_add(s->discard_pending, (gpointer)host);
    }
    return true;
}

static int iommu_emul_pre_load(void *opaque)
{
    IOMMUEmulState *s = opaque;

    s->cmdq_detached = 0;       /* unless the stream has a partly done one */

    /* loadvm into a running device: start from nothing mapped */
    iommu_emul_release_all(s);
    iommu_emul_mig_free(s);
    return 0;
}

static bool iommu_emul_queue_valid(IOMMUEmulQueue *q, uint32_t max_log2,
                                   uint32_t esize)
{
    if (q->error > IOMMU_EMUL_QERR_DMA) {
        return false;
    }
    if (!q->on) {
        /* The indices restart from 0 when the ring is turned on */
        return true;
    }
    return iommu_emul_check_ring(q->base, q->size, max_log2, esize) ==
           IOMMU_EMUL_QERR_NONE &&
           q->head < iommu_emul_queue_entries(q) &&
           q->tail < iommu_emul_queue_entries(q);
}

static int iommu_emul_post_load(void *opaque, int version_id)
{
    IOMMUEmulState *s = opaque;
    unsigned i;

    if (s->ctrl & ~(R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK) ||
        !iommu_emul_queue_valid(&s->cmdq, s->cmdq_max_log2,
                                IOMMU_EMUL_CMD_SIZE) ||
        !iommu_emul_queue_valid(&s->faultq, s->faultq_max_log2,
                                IOMMU_EMUL_FAULT_SIZE)) {
        error_report("iommu-emul: bad register state in the migration"
                     " stream");
        goto fail;
    }
    if (s->npending > IOMMU_EMUL_PENDING_FAULTS) {
        error_report("iommu-emul: bad pending fault count %u", s->npending);
        goto fail;
    }
    for (i = 0; i < s->npending; i++) {
        IOMMUEmulFault *x = &s->pending[i];

        if (x->access < IOMMU_EMUL_ACCESS_READ ||
            x->access > IOMMU_EMUL_ACCESS_WRITE ||
            x->reason < IOMMU_EMUL_REASON_UNMAPPED ||
            x->reason > IOMMU_EMUL_REASON_PERM || !x->count) {
            error_report("iommu-emul: bad pending fault record");
            goto fail;
        }
    }

    /*
     * Pin, and let translation take effect: the store notifies listeners
     * of each mapping it adds. The mappings do not count as new MAPs.
     */
    if (!iommu_emul_load_domains(s)) {
        goto fail;
    }
    iommu_emul_mig_free(s);
    if (s->npending) {
        qemu_bh_schedule(s->fault_bh);
    }
    if (iommu_emul_cmdq_pending(s)) {
        /* The source had a batch over the budget still running */
        timer_mod(s->cmdq_timer, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 1);
    }
    return 0;

fail:
    iommu_emul_release_all(s);
    iommu_emul_mig_free(s);
    s->npending = 0;
    return -EINVAL;
}

static const VMStateDescription iommu_emul_queue_vmstate = {
    .name = "iommu-emul/queue",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_BOOL(on, IOMMUEmulQueue),
        VMSTATE_UINT32(error, IOMMUEmulQueue),
        VMSTATE_UINT64(base, IOMMUEmulQueue),
        VMSTATE_UINT32(size, IOMMUEmulQueue),
        VMSTATE_UINT32(head, IOMMUEmulQueue),
        VMSTATE_UINT32(tail, IOMMUEmulQueue),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription iommu_emul_fault_vmstate = {
    .name = "iommu-emul/fault",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT16(requester, IOMMUEmulFault),
        VMSTATE_UINT8(access, IOMMUEmulFault),
        VMSTATE_UINT8(reason, IOMMUEmulFault),
        VMSTATE_UINT32(count, IOMMUEmulFault),
        VMSTATE_UINT64(addr, IOMMUEmulFault),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription iommu_emul_mig_dev_vmstate = {
    .name = "iommu-emul/requester",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT8_ARRAY(bus, IOMMUEmulMigDev, IOMMU_EMUL_MIG_NAME),
        VMSTATE_UINT8(devfn, IOMMUEmulMigDev),
        VMSTATE_UINT8(translate, IOMMUEmulMigDev),
        VMSTATE_UINT32(nmaps, IOMMUEmulMigDev),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription iommu_emul_mig_mapping_vmstate = {
    .name = "iommu-emul/mapping",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(bus, IOMMUEmulMigMapping),
        VMSTATE_UINT64(gpa, IOMMUEmulMigMapping),
        VMSTATE_UINT64(len, IOMMUEmulMigMapping),
        VMSTATE_UINT8(perm, IOMMUEmulMigMapping),
        VMSTATE_END_OF_LIST()
    },
};

static bool iommu_emul_detach_needed(void *opaque)
{
    IOMMUEmulState *s = opaque;

    return s->cmdq_detached != 0;
}

/* A DETACH over the execution budget, in progress at CMDQ_HEAD */
static const VMStateDescription iommu_emul_detach_vmstate = {
    .name = "iommu-emul/cmdq-detach",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = iommu_emul_detach_needed,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT16(cmdq_detach_rid, IOMMUEmulState),
        VMSTATE_UINT32(cmdq_detached, IOMMUEmulState),
        VMSTATE_END_OF_LIST()
    },
};

/*
 * Version 2: the domains as VMState arrays (version 1 had a hand-written
 * stream of its own).
 */
static const VMStateDescription iommu_emul_vmstate = {
    .name = TYPE_IOMMU_EMUL,
    .version_id = 2,
    .minimum_version_id = 2,
    .priority = MIG_PRI_IOMMU,
    .pre_save = iommu_emul_pre_save,
    .post_save = iommu_emul_post_save,
    .pre_load = iommu_emul_pre_load,
    .post_load = iommu_emul_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, IOMMUEmulState),
        VMSTATE_MSIX(parent_obj, IOMMUEmulState),
        VMSTATE_UINT32_EQUAL(mode, IOMMUEmulState,
                             "bus-addr differs from the source"),
        VMSTATE_UINT32(ctrl, IOMMUEmulState),
        VMSTATE_STRUCT(cmdq, IOMMUEmulState, 1, iommu_emul_queue_vmstate,
                       IOMMUEmulQueue),
        VMSTATE_STRUCT(faultq, IOMMUEmulState, 1, iommu_emul_queue_vmstate,
                       IOMMUEmulQueue),
        VMSTATE_UINT32(fault_overflow, IOMMUEmulState),
        VMSTATE_UINT32(npending, IOMMUEmulState),
        VMSTATE_STRUCT_ARRAY(pending, IOMMUEmulState,
                             IOMMU_EMUL_PENDING_FAULTS, 1,
                             iommu_emul_fault_vmstate, IOMMUEmulFault),
        VMSTATE_UINT64(fault_seq, IOMMUEmulState),
        VMSTATE_UINT64(maps, IOMMUEmulState),
        VMSTATE_UINT64(unmaps, IOMMUEmulState),
        VMSTATE_UINT64(faults, IOMMUEmulState),
        VMSTATE_UINT64(invalidations, IOMMUEmulState),
        VMSTATE_UINT64(vetoed_discards, IOMMUEmulState),
        VMSTATE_UINT64(deferred_discards, IOMMUEmulState),
        VMSTATE_INT32(mig_ndevs, IOMMUEmulState),
        VMSTATE_VALIDATE("requester count", iommu_emul_mig_ndevs_ok),
        VMSTATE_STRUCT_VARRAY_ALLOC(mig_devs, IOMMUEmulState, mig_ndevs, 1,
                                    iommu_emul_mig_dev_vmstate,
                                    IOMMUEmulMigDev),
        VMSTATE_INT32(mig_nmaps, IOMMUEmulState),
        VMSTATE_VALIDATE("mapping count", iommu_emul_mig_nmaps_ok),
        VMSTATE_STRUCT_VARRAY_ALLOC(mig_maps, IOMMUEmulState, mig_nmaps, 1,
                                    iommu_emul_mig_mapping_vmstate,
                                    IOMMUEmulMigMapping),
        VMSTATE_UINT32(mig_nmarks, IOMMUEmulState),
        VMSTATE_VALIDATE("pending discard count", iommu_emul_mig_nmarks_ok),
        VMSTATE_VARRAY_UINT32_ALLOC(mig_marks, IOMMUEmulState, mig_nmarks, 1,
                                    vmstate_info_uint64, uint64_t),
        VMSTATE_END_OF_LIST()
    },
    .subsections = (const VMStateDescription * const []) {
        &iommu_emul_detach_vmstate,
        NULL
    },
};

static void iommu_emul_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);
    ResettableClass *rc = RESETTABLE_CLASS(klass);

    k->realize = iommu_emul_realize;
    k->exit = iommu_emul_exit;
    k->vendor_id = IOMMU_EMUL_PCI_VENDOR_ID;
    k->device_id = IOMMU_EMUL_PCI_DEVICE_ID;
    k->revision = IOMMU_EMUL_PCI_REVISION;
    k->class_id = IOMMU_EMUL_PCI_CLASS;
    rc->phases.enter = iommu_emul_reset_enter;
    rc->phases.hold = iommu_emul_reset_hold;
    dc->desc = "Paravirtual IOMMU that pins only mapped pages";
    dc->vmsd = &iommu_emul_vmstate;
    dc->hotpluggable = false;
    device_class_set_props(dc, iommu_emul_properties);
    object_class_property_set_description(klass, "bus-addr",
        "How MAP chooses bus addresses: iova (default; a per-device"
        " allocator), gpa (the guest-physical address) or hpa (the"
        " host-physical address of long-term pinned pages; needs io_uring"
        " and CAP_SYS_ADMIN, blocks migration)");
    object_class_property_set_description(klass, "max-pinned",
        "Most guest memory pinned at any time, for all devices together"
        " (rounded down to a multiple of 4 KiB, at least 4 KiB;"
        " default 1G)");
    object_class_property_set_description(klass, "pin-cache",
        "Most guest memory kept locked after its last mapping went away,"
        " so that mapping it again costs no system call; released at once"
        " to balloon, free page reporting and virtio-mem (rounded down to"
        " a multiple of 4 KiB; default 0, off)");
    object_class_property_set_description(klass, "max-mappings",
        "Most mappings one device (requester) may have (at least 1;"
        " default 4096)");
    object_class_property_set_description(klass, "cmdq-max-log2",
        "Largest command ring the guest may set up, as log2 of the number"
        " of entries (1 to 15; default 8)");
    object_class_property_set_description(klass, "faultq-max-log2",
        "Largest fault ring the guest may set up, as log2 of the number"
        " of entries (1 to 15; default 8)");
    object_class_property_set_description(klass, "aperture-bits",
        "Width in bits of the bus address space handed out (32 to 64;"
        " default 48)");
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static void iommu_emul_mr_class_init(ObjectClass *klass, void *data)
{
    IOMMUMemoryRegionClass *imrc = IOMMU_MEMORY_REGION_CLASS(klass);

    imrc->translate = iommu_emul_translate;
    imrc->replay = iommu_emul_replay;
    imrc->notify_flag_changed = iommu_emul_notify_flag_changed;
}

static const TypeInfo iommu_emul_types[] = {
    {
        .name = TYPE_IOMMU_EMUL,
        .parent = TYPE_PCI_DEVICE,
        .instance_size = sizeof(IOMMUEmulState),
        .instance_init = iommu_emul_instance_init,
        .class_init = iommu_emul_class_init,
        .interfaces = (InterfaceInfo[]) {
            { INTERFACE_PCIE_DEVICE },
            { INTERFACE_CONVENTIONAL_PCI_DEVICE },
            { },
        },
    }, {
        .name = TYPE_IOMMU_EMUL_MEMORY_REGION,
        .parent = TYPE_IOMMU_MEMORY_REGION,
        .class_init = iommu_emul_mr_class_init,
    },
};

DEFINE_TYPES(iommu_emul_types)
