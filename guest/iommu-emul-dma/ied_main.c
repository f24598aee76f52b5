// SPDX-License-Identifier: GPL-2.0
/*
 * iommu_emul_dma: the DMA API of unmodified PCI drivers through the qemu-zc
 * iommu-emul paravirtual IOMMU.
 *
 * iommu-emul chooses the bus address of every mapping (MAP returns it), and
 * in hpa mode that address is the host-physical one, which no guest could
 * choose. Linux's dma-iommu layer allocates IOVAs itself, so this driver
 * does not register with the IOMMU core: it installs its own dma_map_ops
 * on every PCI function behind the IOMMU, before the function's driver
 * binds, and hands the device-chosen bus address to the driver.
 *
 *  - map_page / map_sg: one MAP per page-aligned range, one ring doorbell
 *    per call (an sg list is one batch);
 *  - unmap, strict: UNMAP(s) + SYNC, one doorbell, before unmap returns;
 *  - unmap, lazy (default, like Linux's flush queue): the UNMAP entries are
 *    written to the ring but the doorbell is not rung; the next doorbell
 *    (a MAP, a full ring, or a timer after flush_ms) executes them with a
 *    SYNC. The window is the same as dma-iommu's lazy mode. A map_page of
 *    the same pages, device and permissions as a queued UNMAP takes that
 *    UNMAP back instead (reuse=1): no command, no doorbell.
 *
 * Written from docs/specs/iommu-emul.rst (rev. 1).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitfield.h>
#include <linux/debugfs.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/hash.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/string.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "ied.h"

static int strict = -1;
module_param(strict, int, 0444);
MODULE_PARM_DESC(strict,
		 "1: UNMAP before unmap returns; 0: lazy (batched, flush_ms); -1 (default): follow iommu.strict= on the kernel command line, else the kernel's default");

static int passthrough = -1;
module_param(passthrough, int, 0444);
MODULE_PARM_DESC(passthrough,
		 "1: leave every device in bypass (DMA direct); -1 (default): follow iommu.passthrough= / iommu=pt on the kernel command line");

static unsigned int flush_ms = 10;
module_param(flush_ms, uint, 0444);
MODULE_PARM_DESC(flush_ms, "lazy mode: longest delay of a queued UNMAP in ms (default 10)");

static bool use_msix = true;
module_param(use_msix, bool, 0444);
MODULE_PARM_DESC(use_msix, "use MSI-X for the fault ring when present (0: poll)");

static unsigned int cmdq_log2 = 8;
module_param(cmdq_log2, uint, 0444);
MODULE_PARM_DESC(cmdq_log2, "log2 of the command ring entries, capped by CAP (default 8)");

static unsigned int faultq_log2 = 6;
module_param(faultq_log2, uint, 0444);
MODULE_PARM_DESC(faultq_log2, "log2 of the fault ring entries, capped by CAP (default 6)");

static bool read_head;
module_param(read_head, bool, 0444);
MODULE_PARM_DESC(read_head,
		 "read CMDQ_HEAD after every doorbell (default 0: only when the last entry has no DONE yet)");

static bool reuse = true;
module_param(reuse, bool, 0444);
MODULE_PARM_DESC(reuse,
		 "lazy mode: a mapping of the same pages, device and permissions whose UNMAP is still queued is taken back instead of a new MAP (default 1)");

static bool attach_bound;
module_param(attach_bound, bool, 0444);
MODULE_PARM_DESC(attach_bound,
		 "also translate functions whose driver is bound at load (unsafe: their live mappings break); virtio-pci without a virtio driver is always taken");

DEFINE_STATIC_SRCU(ied_srcu);
static struct ied *ied_the;		/* one iommu-emul per machine */
static struct dentry *ied_debugfs_root;
static const struct dma_map_ops ied_dma_ops, ied_dma_ops_hpa;

static const char * const ied_status_names[] = {
	[IE_ST_OK] = "OK",
	[IE_ST_BAD_OPCODE] = "BAD_OPCODE",
	[IE_ST_BAD_ARG] = "BAD_ARG",
	[IE_ST_NO_DEVICE] = "NO_DEVICE",
	[IE_ST_NO_RAM] = "NO_RAM",
	[IE_ST_NO_SPACE] = "NO_SPACE",
	[IE_ST_PIN_LIMIT] = "PIN_LIMIT",
	[IE_ST_NOT_FOUND] = "NOT_FOUND",
	[IE_ST_NOT_CONTIGUOUS] = "NOT_CONTIGUOUS",
};

static const char *ied_status_name(u16 code)
{
	if (code == IE_ST_RING)
		return "ring failure";
	if (code < ARRAY_SIZE(ied_status_names) && ied_status_names[code])
		return ied_status_names[code];
	return "unknown";
}

static u32 ied_rd(struct ied *ie, unsigned int reg)
{
	return readl(ie->regs + reg);
}

static void ied_wr(struct ied *ie, unsigned int reg, u32 val)
{
	writel(val, ie->regs + reg);
}

/* ------------------------------------------------------------------ */
/* Command ring                                                        */
/* ------------------------------------------------------------------ */

static u32 ied_pending(struct ied *ie)
{
	return (ie->tail - ie->head) & (ie->cmdq_size - 1);
}

/* Entries that can still be written before a doorbell (one slot stays free). */
static u32 ied_room(struct ied *ie)
{
	return ie->cmdq_size - 1 - ied_pending(ie);
}

/* Drop one mapping from the accounting; the last one drops our module ref. */
static void ied_live_dec(struct ied *ie, struct ied_dom *dom)
{
	lockdep_assert_held(&ie->lock);
	if (dom && !WARN_ON_ONCE(!dom->live))
		dom->live--;
	if (!WARN_ON_ONCE(!ie->live) && !--ie->live)
		module_put(THIS_MODULE);
}

static void ied_live_inc(struct ied *ie, struct ied_dom *dom)
{
	lockdep_assert_held(&ie->lock);
	dom->live++;
	if (!ie->live++)
		__module_get(THIS_MODULE);
}

/* Write one command at the tail; the caller made room. Returns its slot. */
static u32 ied_put(struct ied *ie, u16 op, u16 flags, u16 rid, u64 addr,
		   u64 len, u64 limit, struct ied_dom *unmap_dom)
{
	u32 idx = ie->tail;
	struct ie_cmd *c = &ie->cmdq[idx];

	lockdep_assert_held(&ie->lock);
	memset(c, 0, sizeof(*c));
	c->opcode = cpu_to_le16(op);
	c->flags = cpu_to_le16(flags);
	c->requester = cpu_to_le16(rid);
	c->addr = cpu_to_le64(addr);
	c->length = cpu_to_le64(len);
	c->dma_limit = cpu_to_le64(limit);
	ie->slot_dom[idx] = unmap_dom;
	ie->slot_map[idx].bus = 0;
	ie->tail = (idx + 1) & (ie->cmdq_size - 1);
	ie->cmds++;
	return idx;
}

/* Status of an executed slot: the device's code, or IE_ST_RING. */
static u16 ied_slot_status(struct ied *ie, u32 idx)
{
	u16 st = le16_to_cpu(READ_ONCE(ie->cmdq[idx].status));

	return (st & IE_CMD_DONE) ? (st & IE_CMD_CODE) : IE_ST_RING;
}

static struct ied_recent *ied_recent_of(struct ied *ie, u16 rid, u64 bus)
{
	return &ie->recent[hash_64(bus ^ ((u64)rid << 48), IED_RECENT_BITS)];
}

/*
 * An executed MAP handed out a bus address: whatever the table said about
 * that address is stale now (ied_map_range() records its own MAP after
 * this). A DETACH removed every mapping of its requester: forget them all.
 */
static void ied_recent_forget(struct ied *ie, u32 i)
{
	const struct ie_cmd *c = &ie->cmdq[i];
	u16 op = le16_to_cpu(c->opcode);
	struct ied_recent *r;

	if (op == IE_OP_MAP && ied_slot_status(ie, i) == IE_ST_OK) {
		r = ied_recent_of(ie, le16_to_cpu(c->requester),
				  le64_to_cpu(c->out_addr));
		if (r->bus == le64_to_cpu(c->out_addr))
			r->bus = 0;
	} else if (op == IE_OP_DETACH) {
		memset(ie->recent, 0, sizeof(*ie->recent) << IED_RECENT_BITS);
	}
}

/* Account the UNMAPs among executed slots [from, to). */
static void ied_complete(struct ied *ie, u32 from, u32 to)
{
	u32 mask = ie->cmdq_size - 1;
	u32 i;

	for (i = from; i != to; i = (i + 1) & mask) {
		struct ied_dom *dom = ie->slot_dom[i];
		u16 st;

		ie->slot_map[i].bus = 0;
		ied_recent_forget(ie, i);
		if (!dom)
			continue;
		ie->slot_dom[i] = NULL;
		st = ied_slot_status(ie, i);
		if (st != IE_ST_OK) {
			ie->lost_unmaps++;
			dev_err_ratelimited(&ie->pdev->dev,
					    "UNMAP %#llx+%#llx of %s failed: %s\n",
					    le64_to_cpu(ie->cmdq[i].addr),
					    le64_to_cpu(ie->cmdq[i].length),
					    dom->name, ied_status_name(st));
		}
		dom->unmaps++;
		ie->unmaps++;
		ied_live_dec(ie, dom);
	}
}

/*
 * Ring the doorbell for every written entry. A batch within the device's
 * execution budget (spec, "Execution budget") has run before the
 * CMDQ_TAIL write completes; a bigger one (e.g. a DETACH of many large
 * mappings) may still be running: CMDQ_HEAD != tail with CMDQ_ERROR 0.
 * Every CMDQ_HEAD read runs it further, so we spin on it, bounded by
 * IED_KICK_TIMEOUT_MS (also in atomic context). On a ring error or the
 * timeout the ring is restarted at index 0; entries that did not run have
 * no DONE bit, which their submitters see as IE_ST_RING.
 */
#define IED_KICK_TIMEOUT_MS 10000

static int ied_kick(struct ied *ie)
{
	u32 tail = ie->tail, head, err = 0, last;
	ktime_t deadline;

	lockdep_assert_held(&ie->lock);
	if (ie->head == tail)
		return 0;
	/* writel() orders the ring entry stores before the doorbell */
	ied_wr(ie, IE_REG_CMDQ_TAIL, tail);
	ie->kicks++;
	/*
	 * The device runs the entries in order and writes each one's DONE
	 * as it goes: a DONE in the last entry means all of them ran. Where
	 * the TAIL write is not posted (QEMU executes it before the vCPU
	 * goes on) that saves the HEAD read; otherwise reading HEAD waits
	 * for the execution, as the spec's notes say.
	 */
	last = (tail - 1) & (ie->cmdq_size - 1);
	if (!read_head &&
	    (le16_to_cpu(READ_ONCE(ie->cmdq[last].status)) & IE_CMD_DONE)) {
		dma_rmb();	/* DONE before the other results */
		head = tail;
	} else {
		head = ied_rd(ie, IE_REG_CMDQ_HEAD);
		ie->head_reads++;
	}
	if (unlikely(head != tail)) {
		/* Still executing (over the budget) unless CMDQ_ERROR is set */
		deadline = ktime_add_ms(ktime_get(), IED_KICK_TIMEOUT_MS);
		while (head != tail) {
			err = ied_rd(ie, IE_REG_CMDQ_ERROR);
			if (err || ktime_after(ktime_get(), deadline))
				break;
			cpu_relax();
			head = ied_rd(ie, IE_REG_CMDQ_HEAD);
			ie->head_reads++;
		}
	}
	if (likely(head == tail)) {
		ied_complete(ie, ie->head, tail);
		ie->head = tail;
		return 0;
	}

	ie->ring_errors++;
	dev_err_ratelimited(&ie->pdev->dev,
			    "command ring stopped: head %u tail %u error %u%s\n",
			    head, tail, err, err ? "" : " (timed out)");
	ied_complete(ie, ie->head, tail);	/* unexecuted ones count lost */
	/* off, clear, on: indices back to 0, nothing re-executed */
	ied_wr(ie, IE_REG_CTRL, IE_CTRL_FAULTQ_EN);
	ied_wr(ie, IE_REG_CMDQ_ERROR, 0);
	ied_wr(ie, IE_REG_CTRL, IE_CTRL_CMDQ_EN | IE_CTRL_FAULTQ_EN);
	if (!(ied_rd(ie, IE_REG_STATUS) & IE_STATUS_CMDQ_ON))
		dev_err_ratelimited(&ie->pdev->dev,
				    "command ring did not restart\n");
	ie->head = 0;
	ie->tail = 0;
	memset(ie->recent, 0, sizeof(*ie->recent) << IED_RECENT_BITS);
	return -EIO;
}

/* Make room for @n entries, ringing the doorbell for pending ones. */
static void ied_reserve(struct ied *ie, u32 n)
{
	if (ied_room(ie) < n) {
		if (ied_pending(ie))
			ie->flush_full_n++;
		ied_kick(ie);
	}
}

/* Pending (lazy) UNMAPs: append one SYNC and ring. */
static void ied_flush_locked(struct ied *ie)
{
	bool unmaps = false;
	u32 i;

	lockdep_assert_held(&ie->lock);
	for (i = ie->head; i != ie->tail; i = (i + 1) & (ie->cmdq_size - 1))
		unmaps |= !!ie->slot_dom[i];
	if (!ied_pending(ie))
		return;
	if (unmaps) {
		ied_reserve(ie, 1);
		ied_put(ie, IE_OP_SYNC, 0, 0, 0, 0, 0, NULL);
		ie->syncs++;
	}
	ied_kick(ie);
}

void ied_flush(struct ied *ie)
{
	unsigned long flags;

	spin_lock_irqsave(&ie->lock, flags);
	ie->flush_explicit_n++;
	ied_flush_locked(ie);
	spin_unlock_irqrestore(&ie->lock, flags);
}

static void ied_flush_timer(struct timer_list *t)
{
	struct ied *ie = from_timer(ie, t, flush_timer);
	unsigned long flags;

	spin_lock_irqsave(&ie->lock, flags);
	ie->timer_armed = false;
	if (ied_pending(ie)) {
		ie->flush_timer_n++;
		ied_flush_locked(ie);
	}
	spin_unlock_irqrestore(&ie->lock, flags);
}

/*
 * Execute one command synchronously (control path). Returns the status
 * code; *out_addr / *out_length get the results.
 */
static u16 ied_exec(struct ied *ie, u16 op, u16 flags, u16 rid, u64 addr,
		    u64 *out_addr, u64 *out_length)
{
	unsigned long irqf;
	u32 idx;
	u16 st;

	spin_lock_irqsave(&ie->lock, irqf);
	ied_reserve(ie, 1);
	idx = ied_put(ie, op, flags, rid, addr, 0, 0, NULL);
	ied_kick(ie);
	st = ied_slot_status(ie, idx);
	if (out_addr)
		*out_addr = le64_to_cpu(ie->cmdq[idx].out_addr);
	if (out_length)
		*out_length = le64_to_cpu(ie->cmdq[idx].out_length);
	spin_unlock_irqrestore(&ie->lock, irqf);
	return st;
}

int ied_query(struct ied *ie, u16 rid, u64 addr, u64 *gpa)
{
	u16 st = ied_exec(ie, IE_OP_QUERY, 0, rid, addr, gpa, NULL);

	return st == IE_ST_OK ? 0 : st == IE_ST_NOT_FOUND ? -ENOENT : -EIO;
}

/* ------------------------------------------------------------------ */
/* Requester IDs and domains                                           */
/* ------------------------------------------------------------------ */

/*
 * The requester ID the IOMMU sees: the function's own, unless a bridge on
 * the way up takes ownership: a conventional PCI-to-PCI bridge presents
 * its own ID, a PCIe-to-PCI bridge (secondary bus, devfn 0). This is
 * pci_for_each_dma_alias()'s last alias, which modules cannot call.
 */
u16 ied_rid(struct pci_dev *pdev)
{
	u16 rid = pci_dev_id(pdev);
	struct pci_bus *bus;

	for (bus = pdev->bus; !pci_is_root_bus(bus); bus = bus->parent) {
		struct pci_dev *br = bus->self;

		if (!br)
			break;
		if (!pci_is_pcie(br)) {
			rid = pci_dev_id(br);
		} else if (pci_pcie_type(br) == PCI_EXP_TYPE_PCI_BRIDGE) {
			rid = PCI_DEVID(br->subordinate->number, 0);
		}
	}
	return rid;
}

static struct ied_dom *ied_dom_of(struct ied *ie, struct device *dev)
{
	if (!dev_is_pci(dev))
		return NULL;
	return xa_load(&ie->doms, ied_rid(to_pci_dev(dev)));
}

bool ied_dev_translated(struct ied *ie, struct device *dev)
{
	return get_dma_ops(dev) == &ied_dma_ops ||
	       get_dma_ops(dev) == &ied_dma_ops_hpa;
}

static u64 ied_limit(struct device *dev, bool coherent)
{
	u64 mask = coherent ? dev->coherent_dma_mask :
		   (dev->dma_mask ? *dev->dma_mask : 0);

	if (dev->bus_dma_limit && (!mask || dev->bus_dma_limit < mask))
		mask = dev->bus_dma_limit;
	return mask;
}

static u16 ied_perm(enum dma_data_direction dir)
{
	switch (dir) {
	case DMA_TO_DEVICE:
		return IE_MAP_READ;
	case DMA_FROM_DEVICE:
		return IE_MAP_WRITE;
	default:
		return IE_MAP_READ | IE_MAP_WRITE;
	}
}

/*
 * The driver's own check of what MAP returned: page-aligned, inside the
 * aperture and the device's limit, and never in the MSI window (which the
 * device promises not to hand out).
 */
static bool ied_bus_ok(struct ied *ie, u64 bus, u64 len, u64 limit)
{
	u64 last = bus + len - 1;

	if ((bus & ~IE_PAGE_MASK) || last < bus)
		return false;
	if (bus < ie->ap_start || last > ie->ap_end)
		return false;
	if (limit && last > limit)
		return false;
	return last < IE_MSI_START || bus > IE_MSI_END;
}

/* ------------------------------------------------------------------ */
/* dma_map_ops                                                         */
/* ------------------------------------------------------------------ */

/*
 * Lazy mode: the newest queued UNMAPs (up to 64 back) of exactly this
 * range, requester and permissions are taken back: the entry becomes a
 * SYNC, the mapping stays, and its bus address is returned (0: none).
 * The device could reach the pages until the UNMAP ran anyway; now they
 * are mapped again for the same device, so nothing is reachable that
 * lazy mode would not leave reachable. No doorbell, no device work.
 */
static u64 ied_reuse(struct ied *ie, u16 rid, u64 base, u64 len, u16 perm)
{
	u32 mask = ie->cmdq_size - 1, n = min(ied_pending(ie), 64U);
	u32 i = ie->tail;
	u64 bus;

	lockdep_assert_held(&ie->lock);
	if (ie->strict || !reuse)
		return 0;
	while (n--) {
		struct ied_recent *m;
		struct ie_cmd *c;

		i = (i - 1) & mask;
		m = &ie->slot_map[i];
		if (!m->bus || m->base != base || m->len != len ||
		    m->rid != rid || m->perm != perm || !ie->slot_dom[i])
			continue;
		c = &ie->cmdq[i];
		c->opcode = cpu_to_le16(IE_OP_SYNC);
		c->requester = 0;
		c->addr = 0;
		c->length = 0;
		ie->slot_dom[i] = NULL;
		bus = m->bus;
		/* live again: its next UNMAP may be taken back too */
		*ied_recent_of(ie, rid, bus) = *m;
		m->bus = 0;
		return bus;
	}
	return 0;
}

/*
 * Map [phys, phys + size) as one mapping. Returns the bus address of phys,
 * or DMA_MAPPING_ERROR; *stp gets the device's status.
 */
static dma_addr_t ied_map_range(struct ied *ie, struct ied_dom *dom,
				phys_addr_t phys, size_t size, u16 perm,
				u64 limit, u16 *stp)
{
	u64 base = phys & IE_PAGE_MASK;
	u64 len = ALIGN((phys & ~IE_PAGE_MASK) + size, IE_PAGE_SIZE);
	dma_addr_t ret = DMA_MAPPING_ERROR;
	unsigned long flags;
	u64 bus;
	u32 idx;
	u16 st;

	spin_lock_irqsave(&ie->lock, flags);
	bus = ied_reuse(ie, dom->rid, base, len, perm);
	if (bus && (!limit || bus + len - 1 <= limit)) {
		ie->reuses++;
		spin_unlock_irqrestore(&ie->lock, flags);
		*stp = IE_ST_OK;
		return bus + (phys & ~IE_PAGE_MASK);
	}
	ied_reserve(ie, 1);
	idx = ied_put(ie, IE_OP_MAP, perm, dom->rid, base, len, limit, NULL);
	ied_kick(ie);		/* also runs queued lazy UNMAPs first */
	st = ied_slot_status(ie, idx);
	bus = le64_to_cpu(ie->cmdq[idx].out_addr);
	if (st == IE_ST_OK && !ie->strict && reuse)
		*ied_recent_of(ie, dom->rid, bus) = (struct ied_recent) {
			.bus = bus, .base = base, .len = len,
			.rid = dom->rid, .perm = perm,
		};
	if (st == IE_ST_OK && !ied_bus_ok(ie, bus, len, limit)) {
		dev_err_ratelimited(&ie->pdev->dev,
				    "MAP for %s returned bad bus address %#llx+%#llx\n",
				    dom->name, bus, len);
		ied_reserve(ie, 1);
		ied_put(ie, IE_OP_UNMAP, 0, dom->rid, bus, len, 0, NULL);
		ied_kick(ie);
		st = IE_ST_RING;
	}
	if (st == IE_ST_OK) {
		ied_live_inc(ie, dom);
		dom->maps++;
		ie->maps++;
		ret = bus + (phys & ~IE_PAGE_MASK);
	} else {
		dom->map_errors++;
		ie->map_errors++;
	}
	spin_unlock_irqrestore(&ie->lock, flags);
	*stp = st;
	return ret;
}

/* Queue (lazy) or execute (strict) the UNMAP of what ied_map_range() made. */
static void ied_unmap_locked(struct ied *ie, struct ied_dom *dom,
			     dma_addr_t dma, size_t size)
{
	u64 bus = dma & IE_PAGE_MASK;
	u64 len = ALIGN((dma & ~IE_PAGE_MASK) + size, IE_PAGE_SIZE);

	struct ied_recent *r = ied_recent_of(ie, dom->rid, bus);
	u32 idx;

	ied_reserve(ie, 1);
	idx = ied_put(ie, IE_OP_UNMAP, 0, dom->rid, bus, len, 0, dom);
	/* a page mapping: what it mapped, for ied_reuse() */
	if (r->bus == bus && r->rid == dom->rid && r->len == len) {
		ie->slot_map[idx] = *r;
		r->bus = 0;
	}
}

static void ied_unmap_done_locked(struct ied *ie)
{
	if (ie->strict) {
		ied_flush_locked(ie);
	} else if (!ie->timer_armed) {
		ie->timer_armed = true;
		mod_timer(&ie->flush_timer,
			  jiffies + max(1UL, msecs_to_jiffies(flush_ms)));
	}
}

static struct ied *ied_enter(struct device *dev, struct ied_dom **domp,
			     int *srcu_idx)
	__acquires(&ied_srcu)
{
	struct ied *ie;

	*srcu_idx = srcu_read_lock(&ied_srcu);
	ie = READ_ONCE(ied_the);
	if (!ie || READ_ONCE(ie->going))
		return NULL;
	*domp = ied_dom_of(ie, dev);
	return *domp ? ie : NULL;
}

static void ied_leave(int srcu_idx)
	__releases(&ied_srcu)
{
	srcu_read_unlock(&ied_srcu, srcu_idx);
}

/*
 * hpa mode: a buffer of at most one page that crosses into a host page
 * that is not adjacent cannot have one bus address (NOT_CONTIGUOUS). It
 * goes through a bounce page of its own instead, found again by bus
 * address at sync and unmap time.
 */
struct ied_bounce {
	struct page *page;
	phys_addr_t orig;
	size_t size;
	enum dma_data_direction dir;
};

static unsigned long ied_bkey(u16 rid, dma_addr_t dma)
{
	return ((unsigned long)rid << 40) | (dma >> PAGE_SHIFT);
}

static dma_addr_t ied_bounce_map(struct ied *ie, struct ied_dom *dom,
				 phys_addr_t phys, size_t size,
				 enum dma_data_direction dir, u64 limit,
				 u16 *stp)
{
	struct ied_bounce *b = kmalloc(sizeof(*b), GFP_ATOMIC);
	dma_addr_t h = DMA_MAPPING_ERROR;

	if (!b)
		return h;
	b->page = alloc_page(GFP_ATOMIC);
	if (!b->page)
		goto err;
	b->orig = phys;
	b->size = size;
	b->dir = dir;
	if (dir != DMA_FROM_DEVICE)
		memcpy(page_address(b->page), phys_to_virt(phys), size);
	h = ied_map_range(ie, dom, page_to_phys(b->page), size, ied_perm(dir),
			  limit, stp);
	if (h == DMA_MAPPING_ERROR)
		goto err_page;
	if (xa_err(xa_store(&ie->bounces, ied_bkey(dom->rid, h), b,
			    GFP_ATOMIC))) {
		unsigned long flags;

		spin_lock_irqsave(&ie->lock, flags);
		ied_unmap_locked(ie, dom, h, size);
		ied_flush_locked(ie);
		spin_unlock_irqrestore(&ie->lock, flags);
		h = DMA_MAPPING_ERROR;
		goto err_page;
	}
	atomic_long_inc(&ie->bounced);
	return h;
err_page:
	__free_page(b->page);
err:
	kfree(b);
	return DMA_MAPPING_ERROR;
}

/* Copy between the bounce page and the buffer for [dma, dma + size). */
static void ied_bounce_copy(struct ied_bounce *b, dma_addr_t base,
			    dma_addr_t dma, size_t size, bool to_cpu)
{
	size_t off = dma - base;

	if (off >= b->size)
		return;
	size = min(size, b->size - off);
	if (to_cpu)
		memcpy(phys_to_virt(b->orig + off),
		       page_address(b->page) + off, size);
	else
		memcpy(page_address(b->page) + off,
		       phys_to_virt(b->orig + off), size);
}

/* Unmap a bounced mapping, if @dma is one; true if it was. */
static bool ied_bounce_unmap(struct ied *ie, struct ied_dom *dom,
			     dma_addr_t dma)
{
	struct ied_bounce *b;
	unsigned long flags;

	if (ie->mode != IE_BUS_ADDR_HPA || xa_empty(&ie->bounces))
		return false;
	b = xa_erase(&ie->bounces, ied_bkey(dom->rid, dma));
	if (!b)
		return false;
	if (b->dir != DMA_TO_DEVICE)
		ied_bounce_copy(b, dma & PAGE_MASK, dma & PAGE_MASK, b->size,
				true);
	/* the page goes back to the allocator: strictly */
	spin_lock_irqsave(&ie->lock, flags);
	ied_unmap_locked(ie, dom, dma & PAGE_MASK, b->size);
	ied_flush_locked(ie);
	spin_unlock_irqrestore(&ie->lock, flags);
	__free_page(b->page);
	kfree(b);
	return true;
}

static void ied_sync_single(struct device *dev, dma_addr_t dma, size_t size,
			    bool to_cpu)
{
	struct ied_bounce *b;
	struct ied_dom *dom;
	struct ied *ie;
	int idx;

	ie = ied_enter(dev, &dom, &idx);
	if (ie && !xa_empty(&ie->bounces)) {
		b = xa_load(&ie->bounces, ied_bkey(dom->rid, dma));
		if (b && (to_cpu ? b->dir != DMA_TO_DEVICE :
			  b->dir != DMA_FROM_DEVICE))
			ied_bounce_copy(b, dma & PAGE_MASK, dma, size, to_cpu);
	}
	ied_leave(idx);
}

static void ied_sync_single_for_cpu(struct device *dev, dma_addr_t dma,
				    size_t size, enum dma_data_direction dir)
{
	ied_sync_single(dev, dma, size, true);
}

static void ied_sync_single_for_device(struct device *dev, dma_addr_t dma,
				       size_t size,
				       enum dma_data_direction dir)
{
	ied_sync_single(dev, dma, size, false);
}

static void ied_sync_sg_for_cpu(struct device *dev, struct scatterlist *sgl,
				int nents, enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ied_sync_single(dev, sg_dma_address(sg), sg_dma_len(sg), true);
}

static void ied_sync_sg_for_device(struct device *dev, struct scatterlist *sgl,
				   int nents, enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ied_sync_single(dev, sg_dma_address(sg), sg_dma_len(sg),
				false);
}

static dma_addr_t ied_map_page(struct device *dev, struct page *page,
			       unsigned long offset, size_t size,
			       enum dma_data_direction dir, unsigned long attrs)
{
	dma_addr_t ret = DMA_MAPPING_ERROR;
	struct ied_dom *dom;
	struct ied *ie;
	int idx;
	u16 st;

	ie = ied_enter(dev, &dom, &idx);
	if (ie && size) {
		ret = ied_map_range(ie, dom, page_to_phys(page) + offset, size,
				    ied_perm(dir), ied_limit(dev, false), &st);
		if (ret == DMA_MAPPING_ERROR && st == IE_ST_NOT_CONTIGUOUS &&
		    size <= PAGE_SIZE)
			ret = ied_bounce_map(ie, dom, page_to_phys(page) + offset,
					     size, dir, ied_limit(dev, false),
					     &st);
		if (ret == DMA_MAPPING_ERROR)
			dev_err_ratelimited(dev,
					    "iommu_emul_dma: MAP of %zu bytes failed: %s\n",
					    size, ied_status_name(st));
	}
	ied_leave(idx);
	return ret;
}

static void ied_unmap_page(struct device *dev, dma_addr_t dma, size_t size,
			   enum dma_data_direction dir, unsigned long attrs)
{
	struct ied_dom *dom;
	unsigned long flags;
	struct ied *ie;
	int idx;

	ie = ied_enter(dev, &dom, &idx);
	if (ie && size && !ied_bounce_unmap(ie, dom, dma)) {
		spin_lock_irqsave(&ie->lock, flags);
		ied_unmap_locked(ie, dom, dma, size);
		ied_unmap_done_locked(ie);
		spin_unlock_irqrestore(&ie->lock, flags);
	}
	ied_leave(idx);
}

/*
 * One MAP per segment, all in one ring batch (one doorbell) as long as the
 * list fits the ring. Segments are not merged: the device, not we, picks
 * every bus address, so two mappings are never known to be adjacent.
 */
static int ied_map_sg(struct device *dev, struct scatterlist *sgl, int nents,
		      enum dma_data_direction dir, unsigned long attrs)
{
	u16 perm = ied_perm(dir), st = IE_ST_OK, bst;
	u64 limit = ied_limit(dev, false);
	struct scatterlist *sg, *first;
	int i, done = 0, ret = nents, idx, nbounce = 0;
	struct ied_dom *dom;
	unsigned long flags;
	struct ied *ie;

	ie = ied_enter(dev, &dom, &idx);
	if (!ie) {
		ied_leave(idx);
		return -EIO;
	}

	spin_lock_irqsave(&ie->lock, flags);
	first = sgl;
	while (done < nents && st == IE_ST_OK) {
		u32 chunk = min_t(u32, nents - done, ie->cmdq_size - 1);
		u32 slot0;

		ied_reserve(ie, chunk);
		slot0 = ie->tail;
		for_each_sg(first, sg, chunk, i) {
			phys_addr_t phys = sg_phys(sg);

			ied_put(ie, IE_OP_MAP, perm, dom->rid,
				phys & IE_PAGE_MASK,
				ALIGN((phys & ~IE_PAGE_MASK) + sg->length,
				      IE_PAGE_SIZE), limit, NULL);
		}
		ied_kick(ie);
		for_each_sg(first, sg, chunk, i) {
			u32 s = (slot0 + i) & (ie->cmdq_size - 1);
			phys_addr_t phys = sg_phys(sg);
			u64 len = ALIGN((phys & ~IE_PAGE_MASK) + sg->length,
					IE_PAGE_SIZE);
			u16 sst = ied_slot_status(ie, s);
			u64 bus = le64_to_cpu(ie->cmdq[s].out_addr);

			sg_dma_address(sg) = DMA_MAPPING_ERROR;
			sg_dma_len(sg) = 0;
			if (sst == IE_ST_OK && !ied_bus_ok(ie, bus, len, limit)) {
				ied_reserve(ie, 1);
				ied_put(ie, IE_OP_UNMAP, 0, dom->rid, bus, len,
					0, NULL);
				sst = IE_ST_RING;
			}
			if (sst == IE_ST_NOT_CONTIGUOUS &&
			    sg->length <= PAGE_SIZE) {
				nbounce++;	/* below, without the lock */
				continue;
			}
			if (sst != IE_ST_OK) {
				/* keep going: later OK slots must be undone */
				if (st == IE_ST_OK)
					st = sst;
				continue;
			}
			ied_live_inc(ie, dom);
			dom->maps++;
			ie->maps++;
			sg_dma_address(sg) = bus + (phys & ~IE_PAGE_MASK);
			sg_dma_len(sg) = sg->length;
		}
		done += chunk;
		first = sg;
	}
	spin_unlock_irqrestore(&ie->lock, flags);

	/* hpa: page-crossing segments whose host pages are apart */
	for_each_sg(sgl, sg, done, i) {
		dma_addr_t h;

		if (st != IE_ST_OK || !nbounce)
			break;
		if (sg_dma_len(sg))
			continue;
		h = ied_bounce_map(ie, dom, sg_phys(sg), sg->length, dir,
				   limit, &bst);
		if (h == DMA_MAPPING_ERROR) {
			st = bst == IE_ST_OK ? IE_ST_RING : bst;
			break;
		}
		sg_dma_address(sg) = h;
		sg_dma_len(sg) = sg->length;
		nbounce--;
	}

	if (st != IE_ST_OK) {
		/* undo every mapping made, whatever chunk it was in */
		for_each_sg(sgl, sg, done, i) {
			if (!sg_dma_len(sg) ||
			    ied_bounce_unmap(ie, dom, sg_dma_address(sg)))
				continue;
			spin_lock_irqsave(&ie->lock, flags);
			ied_unmap_locked(ie, dom, sg_dma_address(sg),
					 sg_dma_len(sg));
			spin_unlock_irqrestore(&ie->lock, flags);
		}
		for_each_sg(sgl, sg, done, i) {
			sg_dma_address(sg) = DMA_MAPPING_ERROR;
			sg_dma_len(sg) = 0;
		}
		spin_lock_irqsave(&ie->lock, flags);
		ied_flush_locked(ie);
		dom->map_errors++;
		ie->map_errors++;
		spin_unlock_irqrestore(&ie->lock, flags);
		ret = (st == IE_ST_NO_SPACE || st == IE_ST_PIN_LIMIT) ?
		      -ENOMEM : -EIO;
		dev_err_ratelimited(dev,
				    "iommu_emul_dma: MAP of a %d-entry sg list failed: %s\n",
				    nents, ied_status_name(st));
	}
	ied_leave(idx);
	return ret;
}

static void ied_unmap_sg(struct device *dev, struct scatterlist *sgl,
			 int nents, enum dma_data_direction dir,
			 unsigned long attrs)
{
	struct scatterlist *sg;
	struct ied_dom *dom;
	unsigned long flags;
	struct ied *ie;
	int i, idx;

	ie = ied_enter(dev, &dom, &idx);
	if (ie) {
		bool bounces = ie->mode == IE_BUS_ADDR_HPA &&
			       !xa_empty(&ie->bounces);

		spin_lock_irqsave(&ie->lock, flags);
		for_each_sg(sgl, sg, nents, i) {
			if (!sg_dma_len(sg))
				break;
			if (bounces) {
				/* takes the lock itself */
				spin_unlock_irqrestore(&ie->lock, flags);
				if (ied_bounce_unmap(ie, dom,
						     sg_dma_address(sg))) {
					spin_lock_irqsave(&ie->lock, flags);
					continue;
				}
				spin_lock_irqsave(&ie->lock, flags);
			}
			ied_unmap_locked(ie, dom, sg_dma_address(sg),
					 sg_dma_len(sg));
		}
		ied_unmap_done_locked(ie);
		spin_unlock_irqrestore(&ie->lock, flags);
	}
	ied_leave(idx);
}

/* Pages for coherent memory: anywhere in RAM in iova mode, the device
 * translates; in gpa/hpa modes the bus address is the memory's, so
 * honour a small coherent mask with a DMA zone.
 */
static struct page *ied_alloc_pages_gfp(struct ied *ie, struct device *dev,
					size_t size, gfp_t gfp)
{
	u64 mask = ied_limit(dev, true);

	gfp &= ~(__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM | __GFP_COMP);
	if (ie->mode != IE_BUS_ADDR_IOVA && mask && mask <= DMA_BIT_MASK(32))
		gfp |= GFP_DMA32;
	return alloc_pages_node(dev_to_node(dev), gfp | __GFP_ZERO,
				get_order(size));
}

/*
 * Allocate and map; hpa mode may need another try when the host pages of
 * a multi-page allocation are not contiguous.
 */
static struct page *ied_alloc_mapped(struct ied *ie, struct ied_dom *dom,
				     struct device *dev, size_t size,
				     dma_addr_t *handle, u16 perm, gfp_t gfp)
{
	int tries = ie->mode == IE_BUS_ADDR_HPA && size > PAGE_SIZE ? 8 : 1;
	struct page *page;
	u16 st = IE_ST_OK;

	size = PAGE_ALIGN(size);
	while (tries--) {
		page = ied_alloc_pages_gfp(ie, dev, size, gfp);
		if (!page)
			return NULL;
		*handle = ied_map_range(ie, dom, page_to_phys(page), size,
					perm, ied_limit(dev, true), &st);
		if (*handle != DMA_MAPPING_ERROR)
			return page;
		__free_pages(page, get_order(size));
		if (st != IE_ST_NOT_CONTIGUOUS)
			break;
	}
	dev_err_ratelimited(dev,
			    "iommu_emul_dma: MAP of %zu coherent bytes failed: %s\n",
			    size, ied_status_name(st));
	return NULL;
}

static void *ied_alloc(struct device *dev, size_t size, dma_addr_t *handle,
		       gfp_t gfp, unsigned long attrs)
{
	struct ied_dom *dom;
	struct page *page = NULL;
	struct ied *ie;
	int idx;

	ie = ied_enter(dev, &dom, &idx);
	if (ie)
		page = ied_alloc_mapped(ie, dom, dev, size, handle,
					IE_MAP_READ | IE_MAP_WRITE, gfp);
	ied_leave(idx);
	return page ? page_address(page) : NULL;
}

static void ied_free_mapped(struct device *dev, size_t size,
			    struct page *page, dma_addr_t handle)
{
	struct ied_dom *dom;
	unsigned long flags;
	struct ied *ie;
	int idx;

	size = PAGE_ALIGN(size);
	ie = ied_enter(dev, &dom, &idx);
	if (ie) {
		spin_lock_irqsave(&ie->lock, flags);
		ied_unmap_locked(ie, dom, handle, size);
		/*
		 * Coherent memory goes back to the page allocator right
		 * away: unmap it strictly, whatever the mode.
		 */
		ied_flush_locked(ie);
		spin_unlock_irqrestore(&ie->lock, flags);
	}
	ied_leave(idx);
	__free_pages(page, get_order(size));
}

static void ied_free(struct device *dev, size_t size, void *vaddr,
		     dma_addr_t handle, unsigned long attrs)
{
	ied_free_mapped(dev, size, virt_to_page(vaddr), handle);
}

static struct page *ied_alloc_pages_op(struct device *dev, size_t size,
				       dma_addr_t *handle,
				       enum dma_data_direction dir, gfp_t gfp)
{
	struct ied_dom *dom;
	struct page *page = NULL;
	struct ied *ie;
	int idx;

	ie = ied_enter(dev, &dom, &idx);
	if (ie)
		page = ied_alloc_mapped(ie, dom, dev, size, handle,
					ied_perm(dir), gfp);
	ied_leave(idx);
	return page;
}

static void ied_free_pages_op(struct device *dev, size_t size,
			      struct page *page, dma_addr_t handle,
			      enum dma_data_direction dir)
{
	ied_free_mapped(dev, size, page, handle);
}

static int ied_mmap(struct device *dev, struct vm_area_struct *vma,
		    void *cpu_addr, dma_addr_t handle, size_t size,
		    unsigned long attrs)
{
	unsigned long pages = PAGE_ALIGN(size) >> PAGE_SHIFT;
	unsigned long pfn = page_to_pfn(virt_to_page(cpu_addr));

	if (vma->vm_pgoff >= pages ||
	    vma_pages(vma) > pages - vma->vm_pgoff)
		return -ENXIO;
	return remap_pfn_range(vma, vma->vm_start, pfn + vma->vm_pgoff,
			       vma->vm_end - vma->vm_start, vma->vm_page_prot);
}

static int ied_get_sgtable(struct device *dev, struct sg_table *sgt,
			   void *cpu_addr, dma_addr_t handle, size_t size,
			   unsigned long attrs)
{
	int ret = sg_alloc_table(sgt, 1, GFP_KERNEL);

	if (!ret)
		sg_set_page(sgt->sgl, virt_to_page(cpu_addr), PAGE_ALIGN(size),
			    0);
	return ret;
}

static int ied_dma_supported(struct device *dev, u64 mask)
{
	struct ied *ie = READ_ONCE(ied_the);

	if (!ie)
		return 0;
	if (ie->mode == IE_BUS_ADDR_IOVA)
		return mask >= ie->ap_start + SZ_16M - 1;
	/* the bus address is where the memory is: DMA32 at least */
	return mask >= DMA_BIT_MASK(32);
}

static u64 ied_get_required_mask(struct device *dev)
{
	struct ied *ie = READ_ONCE(ied_the);

	if (ie && ie->mode == IE_BUS_ADDR_IOVA)
		return DMA_BIT_MASK(32);
	return DMA_BIT_MASK(64);
}

static size_t ied_max_mapping_size(struct device *dev)
{
	struct ied *ie = READ_ONCE(ied_the);

	/* hpa: one page is the only size that always maps */
	if (ie && ie->mode == IE_BUS_ADDR_HPA)
		return PAGE_SIZE;
	return SIZE_MAX;
}

#define IED_DMA_OPS_COMMON						\
	.alloc			= ied_alloc,				\
	.free			= ied_free,				\
	IED_ALLOC_PAGES_OP,						\
	.free_pages		= ied_free_pages_op,			\
	.mmap			= ied_mmap,				\
	.get_sgtable		= ied_get_sgtable,			\
	.map_page		= ied_map_page,				\
	.unmap_page		= ied_unmap_page,			\
	.map_sg			= ied_map_sg,				\
	.unmap_sg		= ied_unmap_sg,				\
	.dma_supported		= ied_dma_supported,			\
	.get_required_mask	= ied_get_required_mask,		\
	.max_mapping_size	= ied_max_mapping_size

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define IED_ALLOC_PAGES_OP	.alloc_pages_op = ied_alloc_pages_op
#else
#define IED_ALLOC_PAGES_OP	.alloc_pages = ied_alloc_pages_op
#endif

/* iova and gpa modes: no bounce pages, so no sync ops (nothing to sync) */
static const struct dma_map_ops ied_dma_ops = {
	IED_DMA_OPS_COMMON,
};

/* hpa mode: bounce pages need the sync ops */
static const struct dma_map_ops ied_dma_ops_hpa = {
	IED_DMA_OPS_COMMON,
	.sync_single_for_cpu	= ied_sync_single_for_cpu,
	.sync_single_for_device	= ied_sync_single_for_device,
	.sync_sg_for_cpu	= ied_sync_sg_for_cpu,
	.sync_sg_for_device	= ied_sync_sg_for_device,
};


/* ------------------------------------------------------------------ */
/* Fault ring                                                          */
/* ------------------------------------------------------------------ */

static void ied_log_fault(struct ied *ie, const struct ie_fault *f)
{
	struct ied_fault_rec *r = &ie->flog[ie->flog_n % IED_FAULT_LOG];
	struct ied_dom *dom;

	r->requester = le16_to_cpu(f->requester);
	r->access = f->access;
	r->reason = f->reason;
	r->count = le32_to_cpu(f->count);
	r->address = le64_to_cpu(f->address);
	r->sequence = le64_to_cpu(f->sequence);
	ie->flog_n++;
	if (ie->fault_records && r->sequence != ie->last_seq + 1)
		dev_warn_ratelimited(&ie->pdev->dev,
				     "fault records lost: sequence %llu after %llu (overflow %u)\n",
				     r->sequence, ie->last_seq,
				     ied_rd(ie, IE_REG_FAULT_OVERFLOW));
	ie->last_seq = r->sequence;
	ie->fault_records++;
	dom = xa_load(&ie->doms, r->requester);
	if (dom)
		dom->faults++;
	/*
	 * No iommu_domain exists for these devices (the driver does not
	 * register with the IOMMU core), so there is nobody to pass the
	 * fault to with report_iommu_fault(): the log is the report.
	 */
	dev_err_ratelimited(&ie->pdev->dev,
			    "DMA fault: requester %02x:%02x.%u (%s) %s at bus address %#llx: %s (count %u, seq %llu)\n",
			    r->requester >> 8, PCI_SLOT(r->requester & 0xff),
			    PCI_FUNC(r->requester & 0xff),
			    dom ? dom->name : "not translated by us",
			    r->access == IE_FAULT_ACCESS_WRITE ? "write" : "read",
			    r->address,
			    r->reason == IE_FAULT_REASON_PERM ? "permission" :
			    "not mapped", r->count, r->sequence);
}

void ied_drain_faults(struct ied *ie)
{
	unsigned long flags;
	u32 status, tail, head, mask = ie->faultq_size - 1;

	spin_lock_irqsave(&ie->fault_lock, flags);
	status = ied_rd(ie, IE_REG_STATUS);
	if (status & IE_STATUS_FAULTQ_ERR) {
		dev_err_ratelimited(&ie->pdev->dev, "fault ring error %u: restarting it\n",
				    ied_rd(ie, IE_REG_FAULTQ_ERROR));
		spin_lock(&ie->lock);
		ied_wr(ie, IE_REG_CTRL, IE_CTRL_CMDQ_EN);
		ied_wr(ie, IE_REG_FAULTQ_ERROR, 0);
		ied_wr(ie, IE_REG_CTRL, IE_CTRL_CMDQ_EN | IE_CTRL_FAULTQ_EN);
		spin_unlock(&ie->lock);
		ie->faultq_head = 0;
		goto out;
	}
	tail = ied_rd(ie, IE_REG_FAULTQ_TAIL);
	if (tail > mask)
		goto out;
	head = ie->faultq_head;
	while (head != tail) {
		ied_log_fault(ie, &ie->faultq[head]);
		head = (head + 1) & mask;
	}
	if (head != ie->faultq_head) {
		ie->faultq_head = head;
		mb();	/* records read before the slots are given back */
		ied_wr(ie, IE_REG_FAULTQ_HEAD, head);
	}
out:
	spin_unlock_irqrestore(&ie->fault_lock, flags);
}

/*
 * Copy the fault records logged since record number @since (at most
 * @max, the newest IED_FAULT_LOG are kept). Returns the current number.
 */
unsigned int ied_fault_snapshot(struct ied *ie, struct ied_fault_rec *out,
				unsigned int max, unsigned int since)
{
	unsigned long flags;
	unsigned int n, i, k = 0;

	spin_lock_irqsave(&ie->fault_lock, flags);
	n = ie->flog_n;
	if (n - since > IED_FAULT_LOG)
		since = n - IED_FAULT_LOG;
	for (i = since; i != n && k < max; i++)
		out[k++] = ie->flog[i % IED_FAULT_LOG];
	spin_unlock_irqrestore(&ie->fault_lock, flags);
	return n;
}

static irqreturn_t ied_fault_irq(int irq, void *data)
{
	struct ied *ie = data;

	WRITE_ONCE(ie->fault_irqs, ie->fault_irqs + 1);
	ied_drain_faults(ie);
	return IRQ_HANDLED;
}

static void ied_poll_work(struct work_struct *w)
{
	struct ied *ie = container_of(to_delayed_work(w), struct ied,
				      poll_work);

	ied_drain_faults(ie);
	schedule_delayed_work(&ie->poll_work, HZ / 10);
}

/* ------------------------------------------------------------------ */
/* Attaching PCI functions                                             */
/* ------------------------------------------------------------------ */

static int ied_child_has_driver(struct device *dev, void *unused)
{
	return dev->driver ? 1 : 0;
}

/* Is this function behind the IOMMU and one we should translate? */
static bool ied_wants(struct ied *ie, struct pci_dev *pdev)
{
	if (pdev == ie->pdev)
		return false;	/* its own DMA is never translated */
	if (pci_domain_nr(pdev->bus) != pci_domain_nr(ie->pdev->bus))
		return false;
	/* bridges (host, ISA, PCI, ...) do no DMA of their own */
	return (pdev->class >> 16) != PCI_BASE_CLASS_BRIDGE;
}

/*
 * A function whose driver is bound already may have live direct mappings:
 * switching its ops now would break them. virtio-pci itself does no DMA;
 * its virtio driver does, through the PCI function, so virtio-pci is fine
 * while no virtio driver is bound (6.12 has virtio_pci built in).
 */
static bool ied_bound_ok(struct pci_dev *pdev)
{
	struct device *dev = &pdev->dev;

	if (!dev->driver)
		return true;
	if (!strcmp(dev->driver->name, "virtio-pci") &&
	    !device_for_each_child(dev, NULL, ied_child_has_driver))
		return true;
	return attach_bound;
}

static struct ied_devref *ied_find_ref(struct ied *ie, struct pci_dev *pdev)
{
	struct ied_devref *r;

	list_for_each_entry(r, &ie->devs, node)
		if (r->pdev == pdev)
			return r;
	return NULL;
}

static void ied_attach(struct ied *ie, struct pci_dev *pdev)
{
	u16 rid = ied_rid(pdev);
	struct ied_devref *ref;
	struct ied_dom *dom;
	u16 st;

	mutex_lock(&ie->devs_lock);
	if (!ied_wants(ie, pdev) || ied_find_ref(ie, pdev))
		goto out;
	if (!ied_bound_ok(pdev)) {
		ie->skipped++;
		pci_warn(pdev, "iommu_emul_dma: driver %s bound before us: left in bypass (direct DMA)\n",
			 pdev->dev.driver->name);
		goto out;
	}
	ref = kzalloc(sizeof(*ref), GFP_KERNEL);
	if (!ref)
		goto out;
	dom = xa_load(&ie->doms, rid);
	if (!dom) {
		dom = kzalloc(sizeof(*dom), GFP_KERNEL);
		if (!dom || xa_err(xa_store(&ie->doms, rid, dom, GFP_KERNEL))) {
			kfree(dom);
			kfree(ref);
			goto out;
		}
		dom->rid = rid;
		strscpy(dom->name, pci_name(pdev), sizeof(dom->name));
	}
	if (!dom->ndevs) {
		/* translate first: our ops hand out translated addresses */
		st = ied_exec(ie, IE_OP_SET_MODE, IE_MODE_TRANSLATE, rid, 0,
			      NULL, NULL);
		if (st != IE_ST_OK) {
			pci_err(pdev, "iommu_emul_dma: SET_MODE translate for requester %#06x failed: %s\n",
				rid, ied_status_name(st));
			kfree(ref);
			goto out;
		}
	}
	dom->ndevs++;
	ref->pdev = pci_dev_get(pdev);
	ref->dom = dom;
	list_add_tail(&ref->node, &ie->devs);
	if (ie->mode == IE_BUS_ADDR_HPA) {
		set_dma_ops(&pdev->dev, &ied_dma_ops_hpa);
#ifdef CONFIG_DMA_NEED_SYNC
		/* a bound virtio-pci computed "no sync needed" without us */
		dma_reset_need_sync(&pdev->dev);
#endif
	} else {
		set_dma_ops(&pdev->dev, &ied_dma_ops);
	}
	ie->attached++;
	pci_info(pdev, "iommu_emul_dma: DMA translated by %s (requester %#06x)\n",
		 pci_name(ie->pdev), rid);
out:
	mutex_unlock(&ie->devs_lock);
}

/* Called with devs_lock held; the function's driver is gone. */
static void ied_detach_ref(struct ied *ie, struct ied_devref *ref)
{
	struct ied_dom *dom = ref->dom;
	unsigned long flags;
	u64 removed = 0;
	u16 st;

	set_dma_ops(&ref->pdev->dev, NULL);
	list_del(&ref->node);
	if (!--dom->ndevs) {
		ied_flush(ie);
		ied_exec(ie, IE_OP_SET_MODE, 0, dom->rid, 0, NULL, NULL);
		st = ied_exec(ie, IE_OP_DETACH, 0, dom->rid, 0, NULL, &removed);
		spin_lock_irqsave(&ie->lock, flags);
		if (st == IE_ST_OK && removed) {
			pci_warn(ref->pdev, "iommu_emul_dma: %llu mappings left behind were removed\n",
				 removed);
			/* all of this domain's accounting goes with them */
			while (dom->live)
				ied_live_dec(ie, dom);
		}
		spin_unlock_irqrestore(&ie->lock, flags);
	}
	pci_dev_put(ref->pdev);
	kfree(ref);
}

static int ied_bus_notify(struct notifier_block *nb, unsigned long action,
			  void *data)
{
	struct ied *ie = container_of(nb, struct ied, nb);
	struct pci_dev *pdev = to_pci_dev(data);
	struct ied_devref *ref;

	switch (action) {
	case BUS_NOTIFY_ADD_DEVICE:
		/* before any driver binds */
		ied_attach(ie, pdev);
		break;
	case BUS_NOTIFY_REMOVED_DEVICE:
		mutex_lock(&ie->devs_lock);
		ref = ied_find_ref(ie, pdev);
		if (ref) {
			pci_info(pdev, "iommu_emul_dma: removed: domain detached\n");
			ied_detach_ref(ie, ref);
		}
		mutex_unlock(&ie->devs_lock);
		break;
	}
	return NOTIFY_DONE;
}

/* ------------------------------------------------------------------ */
/* Command line: iommu.strict= and iommu.passthrough=                   */
/* ------------------------------------------------------------------ */

/*
 * The IOMMU core keeps these in static variables, and the command line is
 * not exported to modules; /proc/cmdline is the one place to read them.
 */
static void ied_read_cmdline(int *cl_strict, int *cl_pt)
{
	char *buf, *p, *tok;
	struct file *f;
	loff_t pos = 0;
	ssize_t n;
	bool b;

	*cl_strict = -1;
	*cl_pt = -1;
	buf = kzalloc(PAGE_SIZE, GFP_KERNEL);
	if (!buf)
		return;
	f = filp_open("/proc/cmdline", O_RDONLY, 0);
	if (IS_ERR(f))
		goto out;
	n = kernel_read(f, buf, PAGE_SIZE - 1, &pos);
	filp_close(f, NULL);
	if (n <= 0)
		goto out;
	p = strim(buf);
	while ((tok = strsep(&p, " \t\n"))) {
		if (!strncmp(tok, "iommu.strict=", 13) && !kstrtobool(tok + 13, &b))
			*cl_strict = b;
		else if (!strncmp(tok, "iommu.passthrough=", 18) &&
			 !kstrtobool(tok + 18, &b))
			*cl_pt = b;
		else if (!strcmp(tok, "iommu=pt"))
			*cl_pt = 1;
		else if (!strcmp(tok, "iommu=nopt"))
			*cl_pt = 0;
	}
out:
	kfree(buf);
}

/* ------------------------------------------------------------------ */
/* debugfs                                                             */
/* ------------------------------------------------------------------ */

static int ied_status_show(struct seq_file *s, void *unused)
{
	struct ied *ie = s->private;
	static const char * const modes[] = { "iova", "gpa", "hpa", "?" };
	struct ied_devref *r;
	unsigned long flags;

	seq_printf(s, "bus-addr: %s\nunmap: %s (flush_ms %u)\npassthrough: %d\n",
		   modes[ie->mode & 3], ie->strict ? "strict" : "lazy",
		   flush_ms, ie->passthrough);
	seq_printf(s, "msix: %s\ncmdq: %u entries\nfaultq: %u entries\n",
		   ie->msix ? "yes" : "no", ie->cmdq_size, ie->faultq_size);
	seq_printf(s, "pinned: %llu bytes\n",
		   lo_hi_readq(ie->regs + IE_REG_PINNED));
	spin_lock_irqsave(&ie->lock, flags);
	seq_printf(s, "live: %lu\nmaps: %lu\nunmaps: %lu\nmap-errors: %lu\n",
		   ie->live, ie->maps, ie->unmaps, ie->map_errors);
	seq_printf(s, "commands: %lu\ndoorbells: %lu\nhead-reads: %lu\nsyncs: %lu\npending: %u\n",
		   ie->cmds, ie->kicks, ie->head_reads, ie->syncs,
		   ied_pending(ie));
	seq_printf(s, "flushes: timer %lu, ring-full %lu, explicit %lu\n",
		   ie->flush_timer_n, ie->flush_full_n, ie->flush_explicit_n);
	seq_printf(s, "ring-errors: %lu\nlost-unmaps: %lu\nbounced: %ld\n",
		   ie->ring_errors, ie->lost_unmaps,
		   atomic_long_read(&ie->bounced));
	seq_printf(s, "reuses: %lu\n", ie->reuses);
	spin_unlock_irqrestore(&ie->lock, flags);
	seq_printf(s, "fault-records: %lu\nfault-irqs: %lu\nfault-overflow: %u\n",
		   ie->fault_records, READ_ONCE(ie->fault_irqs),
		   ied_rd(ie, IE_REG_FAULT_OVERFLOW));
	mutex_lock(&ie->devs_lock);
	seq_printf(s, "attached: %lu\nskipped: %lu\n", ie->attached,
		   ie->skipped);
	list_for_each_entry(r, &ie->devs, node)
		seq_printf(s, "dev %s rid %#06x live %lu maps %lu unmaps %lu map-errors %lu faults %lu\n",
			   pci_name(r->pdev), r->dom->rid, r->dom->live,
			   r->dom->maps, r->dom->unmaps, r->dom->map_errors,
			   r->dom->faults);
	mutex_unlock(&ie->devs_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ied_status);

static ssize_t ied_flush_write(struct file *file, const char __user *buf,
			       size_t count, loff_t *ppos)
{
	ied_flush(file->private_data);
	return count;
}

static const struct file_operations ied_flush_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ied_flush_write,
	.llseek = noop_llseek,
};

static ssize_t ied_test_write(struct file *file, const char __user *buf,
			      size_t count, loff_t *ppos)
{
	int ret = ied_edu_test(file->private_data);

	return ret ? ret : count;
}

static const struct file_operations ied_test_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ied_test_write,
	.llseek = noop_llseek,
};

/* ------------------------------------------------------------------ */
/* Probe and remove                                                    */
/* ------------------------------------------------------------------ */

static int ied_setup_rings(struct ied *ie)
{
	struct device *dev = &ie->pdev->dev;
	u32 cmax = FIELD_GET(IE_CAP_CMDQ_MAX_LOG2, ie->cap);
	u32 fmax = FIELD_GET(IE_CAP_FAULTQ_MAX_LOG2, ie->cap);
	u32 cl, fl, status;

	if (!cmax || !fmax)
		return -ENODEV;
	cl = clamp(cmdq_log2, 1U, cmax);
	fl = clamp(faultq_log2, 1U, fmax);
	ie->cmdq_size = 1U << cl;
	ie->faultq_size = 1U << fl;
	ie->slot_dom = kcalloc(ie->cmdq_size, sizeof(*ie->slot_dom),
			       GFP_KERNEL);
	ie->slot_map = kcalloc(ie->cmdq_size, sizeof(*ie->slot_map),
			       GFP_KERNEL);
	ie->recent = kcalloc(1U << IED_RECENT_BITS, sizeof(*ie->recent),
			     GFP_KERNEL);
	ie->cmdq = dma_alloc_coherent(dev, sizeof(struct ie_cmd) * ie->cmdq_size,
				      &ie->cmdq_dma, GFP_KERNEL);
	ie->faultq = dma_alloc_coherent(dev, sizeof(struct ie_fault) *
					ie->faultq_size, &ie->faultq_dma,
					GFP_KERNEL);
	if (!ie->slot_dom || !ie->slot_map || !ie->recent || !ie->cmdq ||
	    !ie->faultq)
		return -ENOMEM;

	/* A driver before us may have left the rings on: restart them. */
	ied_wr(ie, IE_REG_CTRL, 0);
	ied_wr(ie, IE_REG_CMDQ_ERROR, 0);
	ied_wr(ie, IE_REG_FAULTQ_ERROR, 0);
	lo_hi_writeq(ie->cmdq_dma, ie->regs + IE_REG_CMDQ_BASE);
	ied_wr(ie, IE_REG_CMDQ_SIZE, cl);
	lo_hi_writeq(ie->faultq_dma, ie->regs + IE_REG_FAULTQ_BASE);
	ied_wr(ie, IE_REG_FAULTQ_SIZE, fl);
	ied_wr(ie, IE_REG_CTRL, IE_CTRL_CMDQ_EN | IE_CTRL_FAULTQ_EN);
	status = ied_rd(ie, IE_REG_STATUS);
	if ((status & 3) != 3) {
		dev_err(dev, "rings did not start: STATUS %#x CMDQ_ERROR %u FAULTQ_ERROR %u\n",
			status, ied_rd(ie, IE_REG_CMDQ_ERROR),
			ied_rd(ie, IE_REG_FAULTQ_ERROR));
		return -EIO;
	}
	ie->head = ie->tail = 0;
	ie->faultq_head = 0;
	return 0;
}

static void ied_free_rings(struct ied *ie)
{
	struct device *dev = &ie->pdev->dev;

	if (ie->regs) {
		ied_wr(ie, IE_REG_CTRL, 0);
		ied_rd(ie, IE_REG_STATUS);	/* flush before freeing */
	}
	if (ie->cmdq)
		dma_free_coherent(dev, sizeof(struct ie_cmd) * ie->cmdq_size,
				  ie->cmdq, ie->cmdq_dma);
	if (ie->faultq)
		dma_free_coherent(dev, sizeof(struct ie_fault) *
				  ie->faultq_size, ie->faultq, ie->faultq_dma);
	kfree(ie->slot_dom);
	kfree(ie->slot_map);
	kfree(ie->recent);
}

static int ied_bypass_all_cb(struct pci_dev *pdev, void *data)
{
	struct ied *ie = data;
	u16 rid;

	if (pdev == ie->pdev ||
	    pci_domain_nr(pdev->bus) != pci_domain_nr(ie->pdev->bus))
		return 0;
	rid = ied_rid(pdev);
	/* NO_DEVICE for IDs the IOMMU never saw is fine */
	ied_exec(ie, IE_OP_SET_MODE, 0, rid, 0, NULL, NULL);
	ied_exec(ie, IE_OP_DETACH, 0, rid, 0, NULL, NULL);
	return 0;
}

static int ied_attach_cb(struct pci_dev *pdev, void *data)
{
	ied_attach(data, pdev);
	return 0;
}

static int ied_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	int cl_strict, cl_pt, ret;
	u32 magic, version;
	struct ied *ie;

	if (ied_the) {
		dev_err(dev, "one iommu-emul only; %s is in use\n",
			pci_name(ied_the->pdev));
		return -EBUSY;
	}
	ie = kzalloc(sizeof(*ie), GFP_KERNEL);
	if (!ie)
		return -ENOMEM;
	ie->pdev = pdev;
	spin_lock_init(&ie->lock);
	spin_lock_init(&ie->fault_lock);
	mutex_init(&ie->devs_lock);
	xa_init(&ie->doms);
	xa_init(&ie->bounces);
	INIT_LIST_HEAD(&ie->devs);
	timer_setup(&ie->flush_timer, ied_flush_timer, 0);
	INIT_DELAYED_WORK(&ie->poll_work, ied_poll_work);
	pci_set_drvdata(pdev, ie);

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_free;
	ret = pci_request_region(pdev, 0, KBUILD_MODNAME);
	if (ret)
		goto err_disable;
	ie->regs = pci_iomap(pdev, 0, 0);
	if (!ie->regs) {
		ret = -ENOMEM;
		goto err_release;
	}
	magic = ied_rd(ie, IE_REG_MAGIC);
	version = ied_rd(ie, IE_REG_VERSION);
	ie->cap = ied_rd(ie, IE_REG_CAP);
	if (magic != IE_MAGIC || IE_VERSION_MAJOR(version) != 1 ||
	    FIELD_GET(IE_CAP_PAGE_SHIFT, ie->cap) != 12) {
		dev_err(dev, "unsupported device: magic %#x version %#x cap %#x\n",
			magic, version, ie->cap);
		ret = -ENODEV;
		goto err_unmap;
	}
	ie->mode = FIELD_GET(IE_CAP_BUS_ADDR, ie->cap);
	ie->limits = ied_rd(ie, IE_REG_LIMITS);
	ie->ap_start = lo_hi_readq(ie->regs + IE_REG_APERTURE_START);
	ie->ap_end = lo_hi_readq(ie->regs + IE_REG_APERTURE_END);

	ied_read_cmdline(&cl_strict, &cl_pt);
	ie->strict = strict >= 0 ? strict :
		     cl_strict >= 0 ? cl_strict :
		     IS_ENABLED(CONFIG_IOMMU_DEFAULT_DMA_STRICT);
	ie->passthrough = passthrough >= 0 ? passthrough :
			  cl_pt >= 0 ? cl_pt :
			  IS_ENABLED(CONFIG_IOMMU_DEFAULT_PASSTHROUGH);

	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64));
	if (ret)
		goto err_unmap;
	pci_set_master(pdev);
	ret = ied_setup_rings(ie);
	if (ret)
		goto err_rings;

	if (use_msix && (ie->cap & IE_CAP_MSIX) &&
	    pci_alloc_irq_vectors(pdev, 1, 2, PCI_IRQ_MSIX) > 0) {
		ret = request_irq(pci_irq_vector(pdev, IE_VEC_FAULT),
				  ied_fault_irq, 0, "iommu-emul-fault", ie);
		if (ret) {
			pci_free_irq_vectors(pdev);
			goto err_rings;
		}
		ie->msix = true;
	} else {
		schedule_delayed_work(&ie->poll_work, HZ / 10);
	}

	/* What an earlier driver left: every requester to bypass, no mappings */
	pci_walk_bus(pdev->bus, ied_bypass_all_cb, ie);

	WRITE_ONCE(ied_the, ie);
	ie->debugfs = debugfs_create_dir(pci_name(pdev), ied_debugfs_root);
	debugfs_create_file("status", 0444, ie->debugfs, ie, &ied_status_fops);
	debugfs_create_file("flush", 0200, ie->debugfs, ie, &ied_flush_fops);
	debugfs_create_file("edu_test", 0200, ie->debugfs, ie, &ied_test_fops);

	dev_info(dev, "iommu-emul %u.%u, bus-addr %s, aperture %#llx-%#llx, %u command / %u fault entries, %s; unmap %s, %s\n",
		 IE_VERSION_MAJOR(version), IE_VERSION_MINOR(version),
		 ie->mode == IE_BUS_ADDR_IOVA ? "iova" :
		 ie->mode == IE_BUS_ADDR_GPA ? "gpa" : "hpa",
		 ie->ap_start, ie->ap_end, ie->cmdq_size, ie->faultq_size,
		 ie->msix ? "MSI-X" : "polled", ie->strict ? "strict" : "lazy",
		 ie->passthrough ? "passthrough: devices left in bypass" :
		 "translating");
	if (ie->passthrough)
		return 0;

	/* functions added later: before their driver binds */
	ie->nb.notifier_call = ied_bus_notify;
	ret = bus_register_notifier(&pci_bus_type, &ie->nb);
	if (ret)
		dev_warn(dev, "no bus notifier (%d): hot-added functions stay in bypass\n",
			 ret);
	pci_walk_bus(pdev->bus, ied_attach_cb, ie);
	return 0;

err_rings:
	ied_free_rings(ie);
	pci_clear_master(pdev);
err_unmap:
	pci_iounmap(pdev, ie->regs);
err_release:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
err_free:
	kfree(ie);
	return ret;
}

/*
 * Module unload: the module reference taken while any mapping is live
 * means no translated function has DMA in flight through us (its driver
 * is unbound, or holds no mapping). Every function goes back to bypass
 * with direct DMA ops.
 */
static void ied_remove(struct pci_dev *pdev)
{
	struct ied *ie = pci_get_drvdata(pdev);
	struct ied_devref *ref, *tmp;
	struct ied_bounce *b;
	struct ied_dom *dom;
	unsigned long i;

	if (ie->nb.notifier_call)
		bus_unregister_notifier(&pci_bus_type, &ie->nb);
	WRITE_ONCE(ie->going, true);
	mutex_lock(&ie->devs_lock);
	list_for_each_entry(ref, &ie->devs, node)
		set_dma_ops(&ref->pdev->dev, NULL);
	mutex_unlock(&ie->devs_lock);
	synchronize_srcu(&ied_srcu);	/* no op of ours runs any more */
	del_timer_sync(&ie->flush_timer);
	ied_flush(ie);

	mutex_lock(&ie->devs_lock);
	list_for_each_entry_safe(ref, tmp, &ie->devs, node)
		ied_detach_ref(ie, ref);
	mutex_unlock(&ie->devs_lock);
	WRITE_ONCE(ied_the, NULL);
	synchronize_srcu(&ied_srcu);

	debugfs_remove_recursive(ie->debugfs);
	if (ie->msix) {
		free_irq(pci_irq_vector(pdev, IE_VEC_FAULT), ie);
		pci_free_irq_vectors(pdev);
	} else {
		cancel_delayed_work_sync(&ie->poll_work);
	}
	ied_free_rings(ie);
	pci_clear_master(pdev);
	pci_iounmap(pdev, ie->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	xa_for_each(&ie->doms, i, dom)
		kfree(dom);
	xa_destroy(&ie->doms);
	xa_for_each(&ie->bounces, i, b) {
		__free_page(b->page);
		kfree(b);
	}
	xa_destroy(&ie->bounces);
	if (ie->live)
		dev_err(&pdev->dev, "%lu mappings still counted at unload\n",
			ie->live);
	kfree(ie);
}

static const struct pci_device_id ied_ids[] = {
	{ PCI_DEVICE(IE_PCI_VENDOR, IE_PCI_DEVICE) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ied_ids);

static struct pci_driver ied_driver = {
	.name = "iommu_emul_dma",
	.id_table = ied_ids,
	.probe = ied_probe,
	.remove = ied_remove,
	.driver.suppress_bind_attrs = true,
};

static int __init ied_init(void)
{
	int ret;

	ied_debugfs_root = debugfs_create_dir("iommu_emul_dma", NULL);
	ret = pci_register_driver(&ied_driver);
	if (ret)
		debugfs_remove_recursive(ied_debugfs_root);
	return ret;
}

static void __exit ied_exit(void)
{
	pci_unregister_driver(&ied_driver);
	debugfs_remove_recursive(ied_debugfs_root);
}

module_init(ied_init);
module_exit(ied_exit);

MODULE_DESCRIPTION("DMA API of PCI drivers through the qemu-zc iommu-emul IOMMU");
MODULE_LICENSE("GPL");
