/*
 * iommu-emul: paravirtual IOMMU that pins only what is mapped
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_IOMMU_EMUL_H
#define HW_IOMMU_EMUL_H

#include "hw/pci/pci_device.h"
#include "exec/memory.h"
#include "qemu/interval-tree.h"
#include "qemu/notify.h"
#include "qemu/thread.h"
#include "qom/object.h"
#include "system/ram-discard-veto.h"
#include "system/ram-offline.h"

#define TYPE_IOMMU_EMUL "iommu-emul"
OBJECT_DECLARE_SIMPLE_TYPE(IOMMUEmulState, IOMMU_EMUL)

#define TYPE_IOMMU_EMUL_MEMORY_REGION "iommu-emul-iommu-memory-region"

/* Faults recorded by translate() before they reach the fault ring */
#define IOMMU_EMUL_PENDING_FAULTS 64

/* bus-addr=hpa state and one mapping's long-term pin (iommu-emul-hpa.c) */
typedef struct IOMMUEmulHpa IOMMUEmulHpa;
typedef struct IOMMUEmulHpaPin IOMMUEmulHpaPin;

/*
 * One mapping of a requester: bus addresses [node.start, node.last] ->
 * guest-physical [gpa, gpa + node.last - node.start]
 */
typedef struct IOMMUEmulMapping {
    IntervalTreeNode node;      /* in IOMMUEmulDev.maps */
    uint64_t gpa;
    IOMMUAccessFlags perm;
    uint64_t seq;               /* creation order among the requester's */
    uintptr_t *hosts;           /* the pinned host page of each page */
    IOMMUEmulHpaPin *hpa_pin;   /* bus-addr=hpa: its long-term pin */
} IOMMUEmulMapping;

/*
 * A range of bus addresses [node.start, node.last] that translates
 * uniformly: to bus address + delta, with the union of the permissions of
 * the mappings that cover it. Derived from the mappings; never overlaps.
 */
typedef struct IOMMUEmulXlate {
    IntervalTreeNode node;      /* in IOMMUEmulDev.xlate */
    uint64_t delta;             /* guest-physical - bus address, mod 2^64 */
    IOMMUAccessFlags perm;
} IOMMUEmulXlate;

/* One requester (PCIBus *, devfn): its address space and its domain */
typedef struct IOMMUEmulDev {
    IOMMUEmulState *s;
    PCIBus *bus;
    int devfn;
    bool translate;
    MemoryRegion root;
    MemoryRegion bypass_mr;
    IOMMUMemoryRegion iommu_mr;
    AddressSpace as;

    /* The mapping store, under s->mutex */
    IntervalTreeRoot maps;      /* IOMMUEmulMapping, by bus address */
    IntervalTreeRoot xlate;     /* IOMMUEmulXlate: what translate() sees */
    uint32_t nmaps;
    uint64_t next_seq;
    uint64_t iova_hint;         /* iova mode: no free bus page below it */
} IOMMUEmulDev;

/* Migration: a requester that translates or has mappings */
#define IOMMU_EMUL_MIG_NAME 256

typedef struct IOMMUEmulMigDev {
    uint8_t bus[IOMMU_EMUL_MIG_NAME];   /* PCI bus name, NUL-terminated */
    uint8_t devfn;
    uint8_t translate;
    uint32_t nmaps;             /* its mappings, next in mig_maps */
} IOMMUEmulMigDev;

/* Migration: one mapping, in the requester's creation order */
typedef struct IOMMUEmulMigMapping {
    uint64_t bus;
    uint64_t gpa;
    uint64_t len;
    uint8_t perm;
} IOMMUEmulMigMapping;

typedef struct IOMMUEmulFault {
    uint16_t requester;
    uint8_t access;
    uint8_t reason;
    uint32_t count;
    uint64_t addr;
} IOMMUEmulFault;

/* A ring in guest memory, as the guest programmed it */
typedef struct IOMMUEmulQueue {
    bool on;
    uint32_t error;         /* IOMMU_EMUL_QERR_*, 0: none */
    uint64_t base;
    uint32_t size;          /* log2 of the number of entries */
    uint32_t head;
    uint32_t tail;
} IOMMUEmulQueue;

struct IOMMUEmulState {
    PCIDevice parent_obj;

    /* Properties */
    char *bus_addr;
    uint64_t max_pinned;
    uint64_t pin_cache;
    uint32_t max_mappings;
    uint8_t cmdq_max_log2;
    uint8_t faultq_max_log2;
    uint8_t aperture_bits;

    /* Internal state */
    MemoryRegion regs;
    MemoryRegion msix_bar;
    QemuMutex mutex;            /* translation state, pins, pending faults */
    GPtrArray *devs;            /* every IOMMUEmulDev, oldest first (BQL) */
    GHashTable *pins;           /* host page address -> pin count */
    GHashTable *discard_pending; /* pinned host pages the guest ballooned */
    GHashTable *cache;          /* pin cache: host page -> its cache_lru link */
    GQueue cache_lru;           /* cached host pages, oldest unpin first */
    uint64_t cache_max;         /* pages */
    GArray *discard_due;        /* unpinned host pages to discard now */
    unsigned mode;              /* IOMMU_EMUL_BUS_ADDR_* */
    bool msix;
    uint64_t aperture_start;
    uint64_t aperture_end;
    Notifier machine_done;
    QEMUBH *fault_bh;
    QEMUTimer *cmdq_timer;      /* virtual clock: the next command step */
    RamDiscardVeto discard_veto;
    RamOfflinePinHolder offline_pins;

    /* Registers (BQL) */
    uint32_t ctrl;
    IOMMUEmulQueue cmdq;
    IOMMUEmulQueue faultq;
    uint32_t fault_overflow;    /* under mutex */
    /* A DETACH at CMDQ_HEAD done in part: its requester, mappings removed */
    uint16_t cmdq_detach_rid;
    uint32_t cmdq_detached;

    /* Pending faults (under mutex) */
    IOMMUEmulFault pending[IOMMU_EMUL_PENDING_FAULTS];
    unsigned npending;
    uint64_t fault_seq;
    int64_t log_window;
    unsigned log_count;

    /* Counters, read-only QOM properties */
    uint64_t mappings;
    uint64_t pinned_pages;
    uint64_t maps;
    uint64_t unmaps;
    uint64_t faults;
    uint64_t invalidations;
    uint64_t vetoed_discards;
    uint64_t deferred_discards;
    uint64_t cached_pages;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t cache_evictions;
    uint64_t cache_releases;
    uint64_t mlock_calls;
    uint64_t munlock_calls;

    IOMMUEmulHpa *hpa;          /* bus-addr=hpa only, under mutex */

    /* Migration: the domains as arrays, from pre_save/pre_load to post_* */
    int32_t mig_ndevs;
    IOMMUEmulMigDev *mig_devs;
    int32_t mig_nmaps;
    IOMMUEmulMigMapping *mig_maps;
    uint32_t mig_nmarks;
    uint64_t *mig_marks;        /* guest-physical pages, discard pending */
};

#endif
