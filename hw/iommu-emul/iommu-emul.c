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
 * Lock or unlock one page through the system call itself: the sanitizers
 * intercept mlock() and munlock() and turn them into no-ops, and pinning
 * is this device's job in every build.
 */
static int iommu_emul_mlock(uintptr_t host, bool lock)
{
    return syscall(lock ? SYS_mlock : SYS_munlock, (void *)host,
                   IOMMU_EMUL_PAGE_SIZE);
}

/* Called with s->mutex held */
static bool iommu_emul_pin_page(IOMMUEmulState *s, uintptr_t host)
{
    gpointer key = (gpointer)host;
    uintptr_t count = (uintptr_t)g_hash_table_lookup(s->pins, key);

    if (!count) {
        if (iommu_emul_do_mlock() &&
            iommu_emul_mlock(host, true) != 0) {
            trace_iommu_emul_pin_fail(host, errno);
            return false;
        }
        s->pinned_pages++;
    }
    g_hash_table_insert(s->pins, key, (gpointer)(count + 1));
    return true;
}

/* Called with s->mutex held */
static void iommu_emul_unpin_page(IOMMUEmulState *s, uintptr_t host)
{
    gpointer key = (gpointer)host;
    uintptr_t count = (uintptr_t)g_hash_table_lookup(s->pins, key);

    if (!count) {
        return;
    }
    if (count > 1) {
        g_hash_table_insert(s->pins, key, (gpointer)(count - 1));
        return;
    }
    g_hash_table_remove(s->pins, key);
    if (iommu_emul_do_mlock()) {
        iommu_emul_mlock(host, false);
    }
    s->pinned_pages--;
    /* The guest ballooned it while it was pinned: drop it, unlocked */
    if (g_hash_table_remove(s->discard_pending, key)) {
        g_array_append_val(s->discard_due, host);
    }
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

/* Called with s->mutex held: unpin @npages host pages */
static void iommu_emul_unpin_range(IOMMUEmulState *s, const uintptr_t *hosts,
                                   uint64_t npages)
{
    uint64_t i;

    for (i = 0; i < npages; i++) {
        iommu_emul_unpin_page(s, hosts[i]);
    }
}

static void iommu_emul_mapping_free(gpointer p)
{
    IOMMUEmulMapping *m = p;

    g_free(m->hosts);
    g_free(m);
}

/*
 * Discard veto: balloon inflation, free page reporting and virtio-mem must
 * not discard a pinned page. Called without the BQL possibly.
 */
static bool iommu_emul_discard_vetoed(RamDiscardVeto *veto, RAMBlock *rb,
                                      void *host, size_t length)
{
    IOMMUEmulState *s = container_of(veto, IOMMUEmulState, discard_veto);
    uintptr_t p = (uintptr_t)host & ~PAGE_MASK_EMUL;
    uintptr_t end = (uintptr_t)host + length;

    QEMU_LOCK_GUARD(&s->mutex);
    if (!g_hash_table_size(s->pins)) {
        return false;
    }
    for (; p < end; p += IOMMU_EMUL_PAGE_SIZE) {
        if (g_hash_table_contains(s->pins, (gpointer)p)) {
            s->vetoed_discards++;
            trace_iommu_emul_discard_vetoed((uintptr_t)host, length);
            return true;
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
 * Discard the pages whose last pin went away while a discard was pending.
 * Without s->mutex: ram_block_discard_range() asks our veto.
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
        ret = ram_block_discard_range(rb, QEMU_ALIGN_DOWN(offset, psize),
                                      psize);
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

static void iommu_emul_invalidate(IOMMUEmulDev *d, uint64_t bus, uint64_t len)
{
    d->s->invalidations++;
    trace_iommu_emul_invalidate(pci_bus_num(d->bus), d->devfn, bus,
                                bus + len - 1);
    iommu_emul_notify(d, NULL, bus, bus + len - 1, 0, IOMMU_NONE);
}

/* Address spaces */

static void iommu_emul_switch_as(IOMMUEmulDev *d)
{
    memory_region_set_enabled(&d->bypass_mr, !d->translate);
    memory_region_set_enabled(MEMORY_REGION(&d->iommu_mr), d->translate);
}

static AddressSpace *iommu_emul_find_add_as(PCIBus *bus, void *opaque,
                                            int devfn)
{
    IOMMUEmulState *s = opaque;
    PCIDevice *pdev = PCI_DEVICE(s);
    IOMMUEmulBus *sbus;
    IOMMUEmulDev *d;
    g_autofree char *name = NULL;

    /* The IOMMU's own DMA (its rings) is never translated */
    if (bus == pci_get_bus(pdev) && devfn == pdev->devfn) {
        return &address_space_memory;
    }

    sbus = g_hash_table_lookup(s->as_by_bus, bus);
    if (!sbus) {
        sbus = g_new0(IOMMUEmulBus, 1);
        sbus->bus = bus;
        g_hash_table_insert(s->as_by_bus, bus, sbus);
    }
    d = sbus->dev[devfn];
    if (d) {
        return &d->as;
    }

    d = g_new0(IOMMUEmulDev, 1);
    d->s = s;
    d->bus = bus;
    d->devfn = devfn;
    d->maps = g_ptr_array_new_with_free_func(iommu_emul_mapping_free);
    d->iova = iova_tree_new();
    if (s->aperture_start <= IOMMU_EMUL_MSI_BASE &&
        IOMMU_EMUL_MSI_LAST <= s->aperture_end) {
        DMAMap msi = {
            .iova = IOMMU_EMUL_MSI_BASE,
            .translated_addr = IOMMU_EMUL_MSI_BASE,
            .size = IOMMU_EMUL_MSI_LAST - IOMMU_EMUL_MSI_BASE,
            .perm = IOMMU_RW,
        };
        iova_tree_insert(d->iova, &msi);
    }

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
    sbus->dev[devfn] = d;
    trace_iommu_emul_add_as(pci_bus_num(bus), devfn);
    return &d->as;
}

static const PCIIOMMUOps iommu_emul_iommu_ops = {
    .get_address_space = iommu_emul_find_add_as,
};

static IOMMUEmulDev *iommu_emul_find_dev(IOMMUEmulState *s, uint16_t rid)
{
    GHashTableIter iter;
    IOMMUEmulBus *sbus;

    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        if (pci_bus_num(sbus->bus) == PCI_BUS_NUM(rid) &&
            sbus->dev[rid & 0xff]) {
            return sbus->dev[rid & 0xff];
        }
    }
    return NULL;
}

static uint16_t iommu_emul_rid(IOMMUEmulDev *d)
{
    return PCI_BUILD_BDF(pci_bus_num(d->bus), d->devfn);
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
    IOMMUEmulMapping *hit = NULL;
    bool covered = false;
    unsigned i;
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

    QEMU_LOCK_GUARD(&s->mutex);
    for (i = 0; i < d->maps->len; i++) {
        IOMMUEmulMapping *m = g_ptr_array_index(d->maps, i);

        if (addr < m->bus || addr - m->bus >= m->len) {
            continue;
        }
        covered = true;
        if ((m->perm & flag) == flag) {
            hit = m;
            break;
        }
        if (!hit) {
            hit = m;
        }
    }
    if (hit) {
        entry.translated_addr = hit->gpa +
                                ((addr - hit->bus) & ~PAGE_MASK_EMUL);
        entry.perm = hit->perm;
    }
    /* IOMMU_NONE comes from replay and lookups: never a fault */
    if (flag == IOMMU_NONE) {
        return entry;
    }
    if (!hit || (hit->perm & flag) != flag) {
        iommu_emul_record_fault(s, d, addr, flag,
                                covered ? IOMMU_EMUL_REASON_PERM :
                                          IOMMU_EMUL_REASON_UNMAPPED);
        entry.perm = IOMMU_NONE;
    }
    return entry;
}

static void iommu_emul_replay(IOMMUMemoryRegion *iommu_mr, IOMMUNotifier *n)
{
    IOMMUEmulDev *d = container_of(iommu_mr, IOMMUEmulDev, iommu_mr);
    unsigned i;

    QEMU_LOCK_GUARD(&d->s->mutex);
    for (i = 0; i < d->maps->len; i++) {
        IOMMUEmulMapping *m = g_ptr_array_index(d->maps, i);

        iommu_emul_notify(d, n, m->bus, m->bus + m->len - 1, m->gpa, m->perm);
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
        uint8_t rec[IOMMU_EMUL_FAULT_SIZE] = { 0 };
        uint32_t entries;
        dma_addr_t ea;

        if (!s->faultq.on || s->faultq.error) {
            continue;
        }
        /* FAULTQ_SIZE may hold anything while the ring is off */
        entries = 1u << s->faultq.size;
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
    uint64_t last, limit, npages, i;
    g_autofree uintptr_t *hosts = NULL;
    IOMMUEmulHpaPin *hpa_pin = NULL;
    IOMMUEmulMapping *m;
    IOMMUEmulDev *d;
    uint64_t bus;

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
    if (d->maps->len >= s->max_mappings) {
        return IOMMU_EMUL_ST_NO_SPACE;
    }

    /* Choose the bus address */
    if (s->mode == IOMMU_EMUL_BUS_ADDR_GPA) {
        last = c->addr + c->length - 1;
        if (c->addr < s->aperture_start || last > limit) {
            return IOMMU_EMUL_ST_NO_SPACE;
        }
        bus = c->addr;
    } else if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA) {
        bus = 0;    /* the pages' host-physical address, once pinned */
    } else {
        DMAMap map = {
            .translated_addr = c->addr,
            .size = c->length - 1,
            .perm = perm,
        };

        if (limit < s->aperture_start ||
            iova_tree_alloc_map(d->iova, &map, s->aperture_start,
                                limit) != IOVA_OK) {
            return IOMMU_EMUL_ST_NO_SPACE;
        }
        bus = map.iova;
    }

    /* Count the pages that are not pinned yet against max-pinned */
    {
        uint64_t fresh = 0;

        for (i = 0; i < npages; i++) {
            uintptr_t host = iommu_emul_host_page(c->addr +
                                                  i * IOMMU_EMUL_PAGE_SIZE);

            if (!g_hash_table_contains(s->pins, (gpointer)host)) {
                fresh++;
            }
        }
        if ((s->pinned_pages + fresh) * IOMMU_EMUL_PAGE_SIZE > s->max_pinned) {
            goto pin_limit;
        }
    }

    /*
     * Pin; on failure undo what this command pinned. The mapping keeps
     * the host pages it pinned, so that unpinning is exact even if the
     * guest changes its memory map meanwhile.
     */
    hosts = g_new(uintptr_t, npages);
    for (i = 0; i < npages; i++) {
        hosts[i] = iommu_emul_host_page(c->addr + i * IOMMU_EMUL_PAGE_SIZE);
        if (!hosts[i] || !iommu_emul_pin_page(s, hosts[i])) {
            iommu_emul_unpin_range(s, hosts, i);
            goto pin_limit;
        }
    }
    if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA) {
        uint16_t st = iommu_emul_hpa_pin(s, hosts, npages, limit, &bus,
                                         &hpa_pin);

        if (st != IOMMU_EMUL_ST_OK) {
            iommu_emul_unpin_range(s, hosts, npages);
            return st;
        }
    }

    m = g_new0(IOMMUEmulMapping, 1);
    m->hosts = g_steal_pointer(&hosts);
    m->hpa_pin = hpa_pin;
    m->bus = bus;
    m->gpa = c->addr;
    m->len = c->length;
    m->perm = perm;
    g_ptr_array_add(d->maps, m);
    s->mappings++;
    s->maps++;
    c->out_addr = bus;
    trace_iommu_emul_map(c->requester, c->addr, c->length, perm, bus);
    iommu_emul_notify(d, NULL, bus, bus + c->length - 1, c->addr, perm);
    return IOMMU_EMUL_ST_OK;

pin_limit:
    if (s->mode == IOMMU_EMUL_BUS_ADDR_IOVA) {
        DMAMap map = { .iova = bus, .size = c->length - 1 };

        iova_tree_remove(d->iova, map);
    }
    return IOMMU_EMUL_ST_PIN_LIMIT;
}

/* Called with s->mutex held: remove mapping @idx of @d */
static void iommu_emul_remove(IOMMUEmulDev *d, unsigned idx)
{
    IOMMUEmulState *s = d->s;
    IOMMUEmulMapping *m = g_ptr_array_index(d->maps, idx);

    trace_iommu_emul_unmap(iommu_emul_rid(d), m->bus, m->len);
    iommu_emul_hpa_unpin(s, m->hpa_pin);
    m->hpa_pin = NULL;
    iommu_emul_unpin_range(s, m->hosts, m->len >> IOMMU_EMUL_PAGE_SHIFT);
    if (s->mode == IOMMU_EMUL_BUS_ADDR_IOVA) {
        DMAMap map = { .iova = m->bus, .size = m->len - 1 };

        iova_tree_remove(d->iova, map);
    }
    iommu_emul_invalidate(d, m->bus, m->len);
    s->mappings--;
    s->unmaps++;
    g_ptr_array_remove_index(d->maps, idx);
}

static uint16_t iommu_emul_unmap(IOMMUEmulState *s, IOMMUEmulCmd *c)
{
    IOMMUEmulDev *d;
    int i;

    if (c->flags || !iommu_emul_range_valid(c->addr, c->length)) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    /* The most recent mapping wins, so gpa-mode duplicates go LIFO */
    for (i = d->maps->len - 1; i >= 0; i--) {
        IOMMUEmulMapping *m = g_ptr_array_index(d->maps, i);

        if (m->bus == c->addr && m->len == c->length) {
            iommu_emul_remove(d, i);
            return IOMMU_EMUL_ST_OK;
        }
    }
    return IOMMU_EMUL_ST_NOT_FOUND;
}

/* Called with s->mutex held */
static unsigned iommu_emul_detach_dev(IOMMUEmulDev *d)
{
    unsigned n = d->maps->len;

    while (d->maps->len) {
        iommu_emul_remove(d, d->maps->len - 1);
    }
    return n;
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
    IOMMUEmulDev *d;
    unsigned i;

    if (c->flags) {
        return IOMMU_EMUL_ST_BAD_ARG;
    }
    d = iommu_emul_find_dev(s, c->requester);
    if (!d) {
        return IOMMU_EMUL_ST_NO_DEVICE;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    c->out_flags = d->translate ? IOMMU_EMUL_QUERY_TRANSLATE : 0;
    for (i = 0; i < d->maps->len; i++) {
        IOMMUEmulMapping *m = g_ptr_array_index(d->maps, i);

        if (c->addr >= m->bus && c->addr - m->bus < m->len) {
            c->out_addr = m->gpa + (c->addr - m->bus);
            c->out_base = m->bus;
            c->out_length = m->len;
            c->out_flags |= (m->perm & IOMMU_RO ? IOMMU_EMUL_QUERY_READ : 0) |
                            (m->perm & IOMMU_WO ? IOMMU_EMUL_QUERY_WRITE : 0);
            return IOMMU_EMUL_ST_OK;
        }
    }
    return IOMMU_EMUL_ST_NOT_FOUND;
}

static uint16_t iommu_emul_exec(IOMMUEmulState *s, IOMMUEmulCmd *c,
                                bool *irq)
{
    IOMMUEmulDev *d;

    switch (c->opcode) {
    case IOMMU_EMUL_OP_SET_MODE:
        return iommu_emul_set_mode(s, c);
    case IOMMU_EMUL_OP_MAP:
        return iommu_emul_map(s, c);
    case IOMMU_EMUL_OP_UNMAP:
        return iommu_emul_unmap(s, c);
    case IOMMU_EMUL_OP_DETACH:
        if (c->flags) {
            return IOMMU_EMUL_ST_BAD_ARG;
        }
        d = iommu_emul_find_dev(s, c->requester);
        if (!d) {
            return IOMMU_EMUL_ST_NO_DEVICE;
        }
        WITH_QEMU_LOCK_GUARD(&s->mutex) {
            c->out_length = iommu_emul_detach_dev(d);
        }
        return IOMMU_EMUL_ST_OK;
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

static void iommu_emul_cmdq_drain(IOMMUEmulState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    uint32_t entries;

    /* CMDQ_SIZE may hold anything while the ring is off */
    if (!s->cmdq.on) {
        return;
    }
    entries = 1u << s->cmdq.size;
    while (s->cmdq.on && !s->cmdq.error && s->cmdq.head != s->cmdq.tail) {
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

        status = iommu_emul_exec(s, &c, &irq);
        iommu_emul_flush_discards(s);
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
        iommu_emul_cmdq_drain(s);
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
        if (val >= (1u << s->cmdq.size)) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: CMDQ_TAIL %u out of range\n",
                          __func__, val);
            /* The first error stays until the guest clears it */
            if (!s->cmdq.error) {
                s->cmdq.error = IOMMU_EMUL_QERR_BAD_INDEX;
            }
            break;
        }
        s->cmdq.tail = val;
        iommu_emul_cmdq_drain(s);
        break;
    case A_FAULTQ_HEAD:
        if (!s->faultq.on || val >= (1u << s->faultq.size)) {
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

static void iommu_emul_release_all(IOMMUEmulState *s)
{
    GHashTableIter iter;
    IOMMUEmulBus *sbus;
    int devfn;

    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        for (devfn = 0; devfn < PCI_DEVFN_MAX; devfn++) {
            IOMMUEmulDev *d = sbus->dev[devfn];

            if (!d) {
                continue;
            }
            WITH_QEMU_LOCK_GUARD(&s->mutex) {
                iommu_emul_detach_dev(d);
                d->translate = false;
            }
            iommu_emul_switch_as(d);
        }
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
    s->as_by_bus = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    s->pins = g_hash_table_new(NULL, NULL);
    s->discard_pending = g_hash_table_new(NULL, NULL);
    s->discard_due = g_array_new(false, false, sizeof(uintptr_t));
    s->fault_bh = qemu_bh_new_guarded(iommu_emul_fault_bh, s,
                                      &DEVICE(s)->mem_reentrancy_guard);

    s->discard_veto.vetoed = iommu_emul_discard_vetoed;
    s->discard_veto.defer = iommu_emul_discard_defer;
    s->discard_veto.cancel = iommu_emul_discard_cancel;
    ram_block_discard_veto_add(&s->discard_veto);
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
    GHashTableIter iter;
    IOMMUEmulBus *sbus;
    int devfn;

    iommu_emul_release_all(s);
    iommu_emul_hpa_fini(s);
    ram_block_discard_veto_remove(&s->discard_veto);
    qemu_remove_machine_init_done_notifier(&s->machine_done);
    if (bus->iommu_ops == &iommu_emul_iommu_ops && bus->iommu_opaque == s) {
        bus->iommu_ops = NULL;
        bus->iommu_opaque = NULL;
    }
    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        for (devfn = 0; devfn < PCI_DEVFN_MAX; devfn++) {
            IOMMUEmulDev *d = sbus->dev[devfn];

            if (d) {
                g_ptr_array_free(d->maps, true);
                iova_tree_destroy(d->iova);
                /* The address space and regions live as long as QEMU */
            }
        }
    }
    qemu_bh_delete(s->fault_bh);
    if (pci_is_express(pdev)) {
        pcie_cap_exit(pdev);
    }
    if (s->msix) {
        msix_uninit(pdev, &s->msix_bar, &s->msix_bar);
    }
    g_hash_table_destroy(s->pins);
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
    DEFINE_PROP_UINT32("max-mappings", IOMMUEmulState, max_mappings, 4096),
    DEFINE_PROP_UINT8("cmdq-max-log2", IOMMUEmulState, cmdq_max_log2, 8),
    DEFINE_PROP_UINT8("faultq-max-log2", IOMMUEmulState, faultq_max_log2, 8),
    DEFINE_PROP_UINT8("aperture-bits", IOMMUEmulState, aperture_bits, 48),
};

/*
 * Migration. The stream is as untrusted as the guest: everything loaded
 * is checked, and bad values fail the load with an error.
 *
 * Domains go as a custom field: for each requester that translates or
 * has mappings, its bus (by name, as bus numbers are guest-assigned and
 * loaded later with the bridges) and devfn, its mode and its mappings in
 * order; each mapping with its pinned host pages as runs of (RAM block,
 * offset, pages), exactly what the source pinned, and the indices of its
 * pages whose discard is pending.
 */

#define IOMMU_EMUL_MIG_MAGIC    0x494f4d4dU     /* "IOMM" */

typedef struct IOMMUEmulRun {
    RAMBlock *rb;
    ram_addr_t offset;
    uint64_t pages;
} IOMMUEmulRun;

static int iommu_emul_put_mapping(QEMUFile *f, IOMMUEmulState *s,
                                  IOMMUEmulMapping *m)
{
    uint64_t npages = m->len >> IOMMU_EMUL_PAGE_SHIFT, i;
    g_autoptr(GArray) runs = g_array_new(false, false, sizeof(IOMMUEmulRun));
    g_autoptr(GArray) marks = g_array_new(false, false, sizeof(uint32_t));
    IOMMUEmulRun *r = NULL;

    for (i = 0; i < npages; i++) {
        ram_addr_t off;
        RAMBlock *rb = qemu_ram_block_from_host((void *)m->hosts[i], false,
                                                &off);

        if (!rb) {
            error_report("iommu-emul: pinned page 0x%" PRIxPTR " is no"
                         " longer guest RAM", m->hosts[i]);
            return -EINVAL;
        }
        if (r && r->rb == rb &&
            off == r->offset + (r->pages << IOMMU_EMUL_PAGE_SHIFT)) {
            r->pages++;
        } else {
            IOMMUEmulRun run = { .rb = rb, .offset = off, .pages = 1 };

            g_array_append_val(runs, run);
            r = &g_array_index(runs, IOMMUEmulRun, runs->len - 1);
        }
        if (g_hash_table_contains(s->discard_pending,
                                  (gpointer)m->hosts[i])) {
            uint32_t idx = i;

            g_array_append_val(marks, idx);
        }
    }
    qemu_put_be64(f, m->bus);
    qemu_put_be64(f, m->gpa);
    qemu_put_be64(f, m->len);
    qemu_put_byte(f, m->perm);
    qemu_put_be32(f, runs->len);
    for (i = 0; i < runs->len; i++) {
        r = &g_array_index(runs, IOMMUEmulRun, i);
        qemu_put_counted_string(f, qemu_ram_get_idstr(r->rb));
        qemu_put_be64(f, r->offset);
        qemu_put_be64(f, r->pages);
    }
    qemu_put_be32(f, marks->len);
    for (i = 0; i < marks->len; i++) {
        qemu_put_be32(f, g_array_index(marks, uint32_t, i));
    }
    return 0;
}

static int iommu_emul_put_domains(QEMUFile *f, void *pv, size_t size,
                                  const VMStateField *field, JSONWriter *vmdesc)
{
    IOMMUEmulState *s = pv;
    g_autoptr(GPtrArray) devs = g_ptr_array_new();
    GHashTableIter iter;
    IOMMUEmulBus *sbus;
    unsigned i, j;
    int devfn, ret;

    QEMU_LOCK_GUARD(&s->mutex);
    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        for (devfn = 0; devfn < PCI_DEVFN_MAX; devfn++) {
            IOMMUEmulDev *d = sbus->dev[devfn];

            if (d && (d->translate || d->maps->len)) {
                g_ptr_array_add(devs, d);
            }
        }
    }
    qemu_put_be32(f, IOMMU_EMUL_MIG_MAGIC);
    qemu_put_be32(f, devs->len);
    for (i = 0; i < devs->len; i++) {
        IOMMUEmulDev *d = g_ptr_array_index(devs, i);

        qemu_put_counted_string(f, BUS(d->bus)->name);
        qemu_put_byte(f, d->devfn);
        qemu_put_byte(f, d->translate);
        qemu_put_be32(f, d->maps->len);
        for (j = 0; j < d->maps->len; j++) {
            ret = iommu_emul_put_mapping(f, s, g_ptr_array_index(d->maps, j));
            if (ret) {
                return ret;
            }
        }
    }
    return 0;
}

static IOMMUEmulDev *iommu_emul_find_dev_by_name(IOMMUEmulState *s,
                                                 const char *bus, int devfn)
{
    GHashTableIter iter;
    IOMMUEmulBus *sbus;

    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        if (!strcmp(BUS(sbus->bus)->name, bus)) {
            return sbus->dev[devfn];
        }
    }
    return NULL;
}

/*
 * Load one mapping of @d and pin its pages; on error nothing of it is
 * left. Called with s->mutex held.
 */
static int iommu_emul_get_mapping(QEMUFile *f, IOMMUEmulState *s,
                                  IOMMUEmulDev *d, const char *who)
{
    g_autofree uintptr_t *hosts = NULL;
    g_autofree uint32_t *marks = NULL;
    uint64_t bus, gpa, len, npages, n = 0, fresh = 0, i;
    uint32_t nruns, nmarks;
    IOMMUEmulMapping *m;
    DMAMap map = { 0 };
    uint8_t perm;

    bus = qemu_get_be64(f);
    gpa = qemu_get_be64(f);
    len = qemu_get_be64(f);
    perm = qemu_get_byte(f);
    if (migration_in_incoming_postcopy()) {
        /*
         * Pinning would fault in pages that have not arrived, from the
         * thread that loads the device state: refuse instead of hanging.
         */
        error_report("iommu-emul: %s: mappings cannot be migrated with"
                     " postcopy", who);
        return -EINVAL;
    }
    if (s->mode == IOMMU_EMUL_BUS_ADDR_HPA) {
        /*
         * Host-physical bus addresses do not survive a move to another
         * host or process; hpa mode blocks migration, so a stream with
         * mappings for it is not from us.
         */
        error_report("iommu-emul: %s: bus-addr=hpa mappings cannot be"
                     " migrated", who);
        return -EINVAL;
    }
    if (!len || ((bus | gpa | len) & PAGE_MASK_EMUL) ||
        bus + (len - 1) < bus || gpa + (len - 1) < gpa ||
        perm < IOMMU_RO || perm > IOMMU_RW ||
        bus < s->aperture_start || bus + (len - 1) > s->aperture_end ||
        (s->mode == IOMMU_EMUL_BUS_ADDR_GPA && bus != gpa)) {
        error_report("iommu-emul: %s: bad mapping bus 0x%" PRIx64 " gpa 0x%"
                     PRIx64 " length 0x%" PRIx64 " perm %u", who, bus, gpa,
                     len, perm);
        return -EINVAL;
    }
    if (len > s->max_pinned) {
        error_report("iommu-emul: %s: the migrated mappings pin more than"
                     " max-pinned (%" PRIu64 " bytes)", who, s->max_pinned);
        return -EINVAL;
    }
    npages = len >> IOMMU_EMUL_PAGE_SHIFT;
    hosts = g_try_new0(uintptr_t, npages);
    if (!hosts) {
        error_report("iommu-emul: %s: out of memory", who);
        return -ENOMEM;
    }

    nruns = qemu_get_be32(f);
    for (; nruns; nruns--) {
        char idstr[256];
        ram_addr_t off;
        uint64_t pages;
        RAMBlock *rb;

        if (!qemu_get_counted_string(f, idstr)) {
            return -EINVAL;
        }
        off = qemu_get_be64(f);
        pages = qemu_get_be64(f);
        rb = qemu_ram_block_by_name(idstr);
        if (!rb || (off & PAGE_MASK_EMUL) || !pages || pages > npages - n ||
            off >= qemu_ram_get_used_length(rb) ||
            pages > (qemu_ram_get_used_length(rb) - off) >>
                    IOMMU_EMUL_PAGE_SHIFT) {
            error_report("iommu-emul: %s: mapping at bus 0x%" PRIx64 ": bad"
                         " pages (RAM block '%s', offset 0x%" PRIx64 ", %"
                         PRIu64 " pages)", who, bus, idstr, (uint64_t)off,
                         pages);
            return -EINVAL;
        }
        for (i = 0; i < pages; i++) {
            hosts[n++] = (uintptr_t)qemu_ram_get_host_addr(rb) + off +
                         (i << IOMMU_EMUL_PAGE_SHIFT);
        }
    }
    nmarks = qemu_get_be32(f);
    if (n != npages || nmarks > npages) {
        error_report("iommu-emul: %s: mapping at bus 0x%" PRIx64 ": %" PRIu64
                     " pages, %u marks for %" PRIu64 " pages", who, bus, n,
                     nmarks, npages);
        return -EINVAL;
    }
    marks = g_new(uint32_t, nmarks);
    for (i = 0; i < nmarks; i++) {
        marks[i] = qemu_get_be32(f);
        if (marks[i] >= npages) {
            error_report("iommu-emul: %s: bad discard mark %u", who,
                         marks[i]);
            return -EINVAL;
        }
    }
    if (qemu_file_get_error(f)) {
        return qemu_file_get_error(f);
    }

    if (d->maps->len >= s->max_mappings) {
        error_report("iommu-emul: %s: more than max-mappings (%u) mappings",
                     who, s->max_mappings);
        return -EINVAL;
    }
    if (s->mode != IOMMU_EMUL_BUS_ADDR_GPA) {
        map = (DMAMap) {
            .iova = bus, .translated_addr = gpa, .size = len - 1,
            .perm = perm,
        };
        if (iova_tree_insert(d->iova, &map) != IOVA_OK) {
            error_report("iommu-emul: %s: mapping at bus 0x%" PRIx64
                         " overlaps another one or the MSI window", who, bus);
            return -EINVAL;
        }
    }
    for (i = 0; i < npages; i++) {
        fresh += !g_hash_table_contains(s->pins, (gpointer)hosts[i]);
    }
    if ((s->pinned_pages + fresh) * IOMMU_EMUL_PAGE_SIZE > s->max_pinned) {
        error_report("iommu-emul: %s: the migrated mappings pin more than"
                     " max-pinned (%" PRIu64 " bytes)", who, s->max_pinned);
        goto fail;
    }
    for (i = 0; i < npages; i++) {
        if (!iommu_emul_pin_page(s, hosts[i])) {
            error_report("iommu-emul: %s: cannot pin the page of gpa 0x%"
                         PRIx64 " (mlock: %s; is RLIMIT_MEMLOCK too low?)",
                         who, gpa + (i << IOMMU_EMUL_PAGE_SHIFT),
                         strerror(errno));
            iommu_emul_unpin_range(s, hosts, i);
            goto fail;
        }
    }
    for (i = 0; i < nmarks; i++) {
        g_hash_table_add(s->discard_pending, (gpointer)hosts[marks[i]]);
    }

    m = g_new0(IOMMUEmulMapping, 1);
    m->hosts = g_steal_pointer(&hosts);
    m->bus = bus;
    m->gpa = gpa;
    m->len = len;
    m->perm = perm;
    g_ptr_array_add(d->maps, m);
    s->mappings++;
    return 0;

fail:
    if (s->mode != IOMMU_EMUL_BUS_ADDR_GPA) {
        iova_tree_remove(d->iova, map);
    }
    return -EINVAL;
}

static int iommu_emul_get_domains(QEMUFile *f, void *pv, size_t size,
                                  const VMStateField *field)
{
    IOMMUEmulState *s = pv;
    uint32_t ndevs, nmaps, magic;
    int ret;

    magic = qemu_get_be32(f);
    ndevs = qemu_get_be32(f);
    if (magic != IOMMU_EMUL_MIG_MAGIC) {
        error_report("iommu-emul: bad domain section in the migration"
                     " stream");
        return -EINVAL;
    }
    QEMU_LOCK_GUARD(&s->mutex);
    for (; ndevs; ndevs--) {
        g_autofree char *who = NULL;
        char name[256];
        IOMMUEmulDev *d;
        uint8_t devfn, translate;

        if (!qemu_get_counted_string(f, name)) {
            return -EINVAL;
        }
        devfn = qemu_get_byte(f);
        translate = qemu_get_byte(f);
        nmaps = qemu_get_be32(f);
        who = g_strdup_printf("requester %s:%02x.%x", name, PCI_SLOT(devfn),
                              PCI_FUNC(devfn));
        d = iommu_emul_find_dev_by_name(s, name, devfn);
        if (!d) {
            error_report("iommu-emul: %s does not exist on the destination",
                         who);
            return -EINVAL;
        }
        if (d->translate || d->maps->len || translate > 1 ||
            nmaps > s->max_mappings) {
            error_report("iommu-emul: %s: duplicate or bad domain (mode %u,"
                         " %u mappings)", who, translate, nmaps);
            return -EINVAL;
        }
        d->translate = translate;
        for (; nmaps; nmaps--) {
            ret = iommu_emul_get_mapping(f, s, d, who);
            if (ret) {
                return ret;
            }
        }
    }
    return qemu_file_get_error(f);
}

static const VMStateInfo iommu_emul_domains_info = {
    .name = "iommu-emul-domains",
    .get = iommu_emul_get_domains,
    .put = iommu_emul_put_domains,
};

static int iommu_emul_pre_load(void *opaque)
{
    IOMMUEmulState *s = opaque;

    /* loadvm into a running device: start from nothing mapped */
    iommu_emul_release_all(s);
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
           q->head < (1u << q->size) && q->tail < (1u << q->size);
}

static int iommu_emul_post_load(void *opaque, int version_id)
{
    IOMMUEmulState *s = opaque;
    GHashTableIter iter;
    IOMMUEmulBus *sbus;
    unsigned i;
    int devfn;

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

    /* Translation takes effect and listeners learn the mappings */
    g_hash_table_iter_init(&iter, s->as_by_bus);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&sbus)) {
        for (devfn = 0; devfn < PCI_DEVFN_MAX; devfn++) {
            IOMMUEmulDev *d = sbus->dev[devfn];

            if (!d) {
                continue;
            }
            iommu_emul_switch_as(d);
            WITH_QEMU_LOCK_GUARD(&s->mutex) {
                for (i = 0; i < d->maps->len; i++) {
                    IOMMUEmulMapping *m = g_ptr_array_index(d->maps, i);

                    iommu_emul_notify(d, NULL, m->bus, m->bus + m->len - 1,
                                      m->gpa, m->perm);
                }
            }
        }
    }
    if (s->npending) {
        qemu_bh_schedule(s->fault_bh);
    }
    return 0;

fail:
    iommu_emul_release_all(s);
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

static const VMStateDescription iommu_emul_vmstate = {
    .name = TYPE_IOMMU_EMUL,
    .version_id = 1,
    .minimum_version_id = 1,
    .priority = MIG_PRI_IOMMU,
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
        {
            .name = "domains",
            .info = &iommu_emul_domains_info,
            .flags = VMS_SINGLE,
        },
        VMSTATE_END_OF_LIST()
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
