/*
 * iommu-emul bus-addr=hpa: host-physical bus addresses, long-term pins
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_IOMMU_EMUL_HPA_H
#define HW_IOMMU_EMUL_HPA_H

#include "hw/iommu-emul/iommu-emul.h"

/*
 * Open the io_uring instance and /proc/self/pagemap, and check on a page
 * of our own that a long-term pin and its host-physical address work.
 * Sets @errp and returns false if bus-addr=hpa cannot work on this host.
 */
bool iommu_emul_hpa_init(IOMMUEmulState *s, Error **errp);

/* Undo iommu_emul_hpa_init(); every pin must have been released */
void iommu_emul_hpa_fini(IOMMUEmulState *s);

/*
 * Take a long-term pin (FOLL_LONGTERM) on the @npages host pages @hosts of
 * one MAP, then choose its bus address: the host-physical address of the
 * first page. Returns IOMMU_EMUL_ST_OK with *@bus and *@pin set, or a
 * status code (PIN_LIMIT, NOT_CONTIGUOUS, NO_SPACE) with nothing pinned.
 * @limit is the highest bus address the requester accepts.
 * Called with s->mutex held.
 */
uint16_t iommu_emul_hpa_pin(IOMMUEmulState *s, const uintptr_t *hosts,
                            uint64_t npages, uint64_t limit, uint64_t *bus,
                            IOMMUEmulHpaPin **pin);

/* Release a pin from iommu_emul_hpa_pin(); NULL is a no-op. */
void iommu_emul_hpa_unpin(IOMMUEmulState *s, IOMMUEmulHpaPin *pin);

#endif
