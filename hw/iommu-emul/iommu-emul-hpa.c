/*
 * iommu-emul bus-addr=hpa: host-physical bus addresses, long-term pins
 *
 * The bus address of a mapping is the host-physical address of its pages,
 * for DMA engines outside QEMU that have no host IOMMU. Such an address is
 * only worth handing out if the page stays where it is: mlock() keeps a
 * page resident but compaction may still migrate it. A FOLL_LONGTERM pin
 * does not move: we take it by registering the mapping as an io_uring
 * fixed buffer (the buffer table is registered sparse at realize, one slot
 * per host-virtual run of a mapping), and drop it by emptying the slot.
 * The host-physical address is read from /proc/self/pagemap only after
 * the pin is taken. See docs/specs/iommu-emul.rst, "Bus-address modes".
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "hw/iommu-emul/iommu-emul.h"
#include "iommu-emul-hpa.h"
#include "iommu-emul-regs.h"

#ifdef CONFIG_LINUX_IO_URING

#include <liburing.h>
#include "qemu/bitmap.h"
#include "qemu/units.h"
#include "migration/blocker.h"
#include "trace.h"

/* IORING_MAX_REG_BUFFERS: the kernel's limit on registered buffers */
#define HPA_SLOTS           (1u << 14)
/* The kernel refuses to register a buffer larger than 1 GiB */
#define HPA_MAX_RUN         (1 * GiB)

#define PAGEMAP_PRESENT     (1ULL << 63)
#define PAGEMAP_PFN_MASK    ((1ULL << 55) - 1)

struct IOMMUEmulHpa {
    struct io_uring ring;
    int pagemap_fd;
    unsigned long *used;        /* HPA_SLOTS bits: slots holding a buffer */
    Error *migration_blocker;
};

/* One MAP's long-term pin: the buffer slots of its host-virtual runs */
struct IOMMUEmulHpaPin {
    unsigned nslots;
    unsigned slot[];
};

/* Register [@host, @host + @len) into a free slot; -errno on failure */
static int hpa_register(IOMMUEmulHpa *h, uintptr_t host, uint64_t len,
                        unsigned *slot)
{
    struct iovec iov = { .iov_base = (void *)host, .iov_len = len };
    unsigned long i = find_first_zero_bit(h->used, HPA_SLOTS);
    int ret;

    if (i >= HPA_SLOTS) {
        return -ENOSPC;
    }
    ret = io_uring_register_buffers_update_tag(&h->ring, i, &iov, NULL, 1);
    if (ret < 0) {
        return ret;
    }
    if (ret != 1) {
        return -EIO;
    }
    set_bit(i, h->used);
    *slot = i;
    trace_iommu_emul_hpa_pin(host, len, i);
    return 0;
}

static void hpa_unregister(IOMMUEmulHpa *h, unsigned slot)
{
    struct iovec empty = { 0 };
    int ret;

    /* The kernel drops the pin when the slot is emptied */
    ret = io_uring_register_buffers_update_tag(&h->ring, slot, &empty,
                                               NULL, 1);
    if (ret != 1) {
        /* Keep the slot marked: its buffer may still be registered */
        error_report("iommu-emul: cannot release long-term pin %u: %s",
                     slot, strerror(ret < 0 ? -ret : EIO));
        return;
    }
    clear_bit(slot, h->used);
    trace_iommu_emul_hpa_unpin(slot);
}

/*
 * Page frame numbers of the @npages pages from @host, which must be pinned
 * already. Returns false if one is not present or its PFN reads as 0.
 */
static bool hpa_read_pfns(IOMMUEmulHpa *h, uintptr_t host, uint64_t npages,
                          uint64_t *pfns)
{
    size_t len = npages * sizeof(uint64_t);
    off_t off = (host >> IOMMU_EMUL_PAGE_SHIFT) * sizeof(uint64_t);
    uint64_t i;

    if (pread(h->pagemap_fd, pfns, len, off) != (ssize_t)len) {
        return false;
    }
    for (i = 0; i < npages; i++) {
        if (!(pfns[i] & PAGEMAP_PRESENT) || !(pfns[i] & PAGEMAP_PFN_MASK)) {
            return false;
        }
        pfns[i] &= PAGEMAP_PFN_MASK;
    }
    return true;
}

bool iommu_emul_hpa_init(IOMMUEmulState *s, Error **errp)
{
    g_autofree IOMMUEmulHpa *h = g_new0(IOMMUEmulHpa, 1);
    bool ring = false, readable;
    void *page = MAP_FAILED;
    uint64_t pfn;
    unsigned slot;
    int ret;

    if (qemu_real_host_page_size() != IOMMU_EMUL_PAGE_SIZE) {
        error_setg(errp, "iommu-emul: bus-addr=hpa needs 4 KiB host pages");
        return false;
    }
    h->pagemap_fd = -1;
    ret = io_uring_queue_init(1, &h->ring, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "iommu-emul: bus-addr=hpa needs"
                         " io_uring for its long-term pins, and io_uring"
                         " is not available (kernel.io_uring_disabled?)");
        goto fail;
    }
    ring = true;
    ret = io_uring_register_buffers_sparse(&h->ring, HPA_SLOTS);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "iommu-emul: bus-addr=hpa cannot"
                         " register an io_uring buffer table (Linux 5.19"
                         " or later is needed)");
        goto fail;
    }
    h->used = bitmap_new(HPA_SLOTS);

    /* The capability to see PFNs is checked when pagemap is opened */
    h->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (h->pagemap_fd < 0) {
        error_setg_errno(errp, errno, "iommu-emul: bus-addr=hpa cannot open"
                         " /proc/self/pagemap");
        goto fail;
    }

    /* Check the whole path on a page of our own: pin, read, unpin */
    page = mmap(NULL, IOMMU_EMUL_PAGE_SIZE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        error_setg_errno(errp, errno, "iommu-emul: bus-addr=hpa");
        goto fail;
    }
    ret = hpa_register(h, (uintptr_t)page, IOMMU_EMUL_PAGE_SIZE, &slot);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "iommu-emul: bus-addr=hpa cannot take"
                         " a long-term pin with io_uring (RLIMIT_MEMLOCK?)");
        goto fail;
    }
    readable = hpa_read_pfns(h, (uintptr_t)page, 1, &pfn);
    hpa_unregister(h, slot);
    if (!readable) {
        error_setg(errp, "iommu-emul: bus-addr=hpa cannot read host-physical"
                   " addresses from /proc/self/pagemap (this needs"
                   " CAP_SYS_ADMIN)");
        goto fail;
    }
    munmap(page, IOMMU_EMUL_PAGE_SIZE);
    page = MAP_FAILED;

    error_setg(&h->migration_blocker, "iommu-emul: bus-addr=hpa hands out"
               " host-physical addresses, which do not survive migration");
    if (migrate_add_blocker(&h->migration_blocker, errp) < 0) {
        goto fail;
    }
    s->hpa = g_steal_pointer(&h);
    return true;

fail:
    if (page != MAP_FAILED) {
        munmap(page, IOMMU_EMUL_PAGE_SIZE);
    }
    if (h->pagemap_fd >= 0) {
        close(h->pagemap_fd);
    }
    g_free(h->used);
    if (ring) {
        io_uring_queue_exit(&h->ring);
    }
    return false;
}

void iommu_emul_hpa_fini(IOMMUEmulState *s)
{
    IOMMUEmulHpa *h = s->hpa;

    if (!h) {
        return;
    }
    migrate_del_blocker(&h->migration_blocker);
    /* Closing the ring drops any pin that is still registered */
    io_uring_queue_exit(&h->ring);
    close(h->pagemap_fd);
    g_free(h->used);
    g_free(h);
    s->hpa = NULL;
}

void iommu_emul_hpa_unpin(IOMMUEmulState *s, IOMMUEmulHpaPin *pin)
{
    unsigned i;

    if (!pin) {
        return;
    }
    for (i = 0; i < pin->nslots; i++) {
        hpa_unregister(s->hpa, pin->slot[i]);
    }
    g_free(pin);
}

uint16_t iommu_emul_hpa_pin(IOMMUEmulState *s, const uintptr_t *hosts,
                            uint64_t npages, uint64_t limit, uint64_t *bus,
                            IOMMUEmulHpaPin **pinp)
{
    const uint64_t run_pages = HPA_MAX_RUN >> IOMMU_EMUL_PAGE_SHIFT;
    IOMMUEmulHpa *h = s->hpa;
    g_autofree uint64_t *pfns = g_new(uint64_t, npages);
    IOMMUEmulHpaPin *pin;
    uint64_t i, start, nruns = 0, last;
    int ret;

    /* Runs of pages that are contiguous in our virtual address space */
    for (i = 0; i < npages; i++) {
        if (i == 0 || i % run_pages == 0 ||
            hosts[i] != hosts[i - 1] + IOMMU_EMUL_PAGE_SIZE) {
            nruns++;
        }
    }
    pin = g_malloc0(sizeof(*pin) + nruns * sizeof(pin->slot[0]));

    /* Pin first, then read the addresses: an unpinned page may move */
    for (start = 0; start < npages; start = i) {
        for (i = start + 1; i < npages && i % run_pages &&
             hosts[i] == hosts[i - 1] + IOMMU_EMUL_PAGE_SIZE; i++) {
            /* extend the run */
        }
        ret = hpa_register(h, hosts[start],
                           (i - start) << IOMMU_EMUL_PAGE_SHIFT,
                           &pin->slot[pin->nslots]);
        if (ret < 0) {
            trace_iommu_emul_hpa_pin_fail(hosts[start],
                                          (i - start) << IOMMU_EMUL_PAGE_SHIFT,
                                          -ret);
            iommu_emul_hpa_unpin(s, pin);
            return IOMMU_EMUL_ST_PIN_LIMIT;
        }
        pin->nslots++;
        if (!hpa_read_pfns(h, hosts[start], i - start, pfns + start)) {
            /* Pinned but not visible: the host hides PFNs now */
            error_report_once("iommu-emul: cannot read host-physical"
                              " addresses from /proc/self/pagemap");
            iommu_emul_hpa_unpin(s, pin);
            return IOMMU_EMUL_ST_PIN_LIMIT;
        }
    }

    /* One bus address per mapping: the pages must be physically adjacent */
    for (i = 1; i < npages; i++) {
        if (pfns[i] != pfns[0] + i) {
            trace_iommu_emul_hpa_not_contiguous(i, pfns[0], pfns[i]);
            iommu_emul_hpa_unpin(s, pin);
            return IOMMU_EMUL_ST_NOT_CONTIGUOUS;
        }
    }
    *bus = pfns[0] << IOMMU_EMUL_PAGE_SHIFT;
    last = *bus + (npages << IOMMU_EMUL_PAGE_SHIFT) - 1;
    if (last > limit || last < *bus ||
        (*bus <= IOMMU_EMUL_MSI_LAST && last >= IOMMU_EMUL_MSI_BASE)) {
        iommu_emul_hpa_unpin(s, pin);
        return IOMMU_EMUL_ST_NO_SPACE;
    }
    *pinp = pin;
    return IOMMU_EMUL_ST_OK;
}

#else /* !CONFIG_LINUX_IO_URING */

bool iommu_emul_hpa_init(IOMMUEmulState *s, Error **errp)
{
    error_setg(errp, "iommu-emul: bus-addr=hpa needs io_uring for its"
               " long-term pins: QEMU was built without"
               " --enable-linux-io-uring");
    return false;
}

void iommu_emul_hpa_fini(IOMMUEmulState *s)
{
}

uint16_t iommu_emul_hpa_pin(IOMMUEmulState *s, const uintptr_t *hosts,
                            uint64_t npages, uint64_t limit, uint64_t *bus,
                            IOMMUEmulHpaPin **pin)
{
    return IOMMU_EMUL_ST_PIN_LIMIT;
}

void iommu_emul_hpa_unpin(IOMMUEmulState *s, IOMMUEmulHpaPin *pin)
{
}

#endif
