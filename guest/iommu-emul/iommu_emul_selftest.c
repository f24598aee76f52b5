// SPDX-License-Identifier: GPL-2.0
/*
 * iommu-emul self-test: drives QEMU's "edu" device (docs/specs/edu.rst)
 * through the IOMMU and checks what docs/specs/iommu-emul.rst promises:
 * translation to the right pages in both directions, fault records for
 * unmapped and read-only bus addresses, UNMAP, QUERY, DETACH, SYNC and the
 * two interrupt vectors.
 *
 * Output: one "iommu-emul-selftest: PASS <name>" or "FAIL <name>: why"
 * line per check ("SKIP <name>: why" for the interrupt checks when the
 * driver polls), then "iommu-emul-selftest: SUMMARY <n> passed, <m> failed,
 * <k> skipped".
 */

#define pr_fmt(fmt) "iommu-emul-selftest: " fmt

#include <linux/bitfield.h>
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "iommu_emul.h"

#define EDU_VENDOR		0x1234
#define EDU_DEVICE		0x11e8
#define EDU_REG_ID		0x00
#define EDU_REG_DMA_SRC		0x80
#define EDU_REG_DMA_DST		0x88
#define EDU_REG_DMA_CNT		0x90
#define EDU_REG_DMA_CMD		0x98
#define   EDU_DMA_RUN		BIT(0)
#define   EDU_DMA_TO_RAM	BIT(1)
#define EDU_BUF			0x40000ULL	/* edu's 4 KiB DMA buffer */
#define EDU_BUF_SIZE		4096
#define EDU_DMA_MASK		DMA_BIT_MASK(28)	/* edu's default */

#define ST_PAGES		4	/* buffer pages: M0 M1 (RW), RO, Z */
#define ST_TIMEOUT		(5 * HZ)
#define ST_ABSENT_RID		0xff00	/* bus 255: nothing there in the demo */

struct st {
	struct ie_dev *ie;
	struct pci_dev *edu;
	void __iomem *edu_regs;
	u16 rid;
	struct pci_dev *edu2;		/* optional second edu: isolation */
	void __iomem *edu2_regs;
	u16 rid2;
	u64 last_sequence;
	bool fault_irq_seen;
	bool fault_without_irq;
	u8 *buf;			/* ST_PAGES pages */
	u8 *ref;			/* expected contents */
	phys_addr_t phys;
	int passed;
	int failed;
	int skipped;
	u32 overflow0;			/* FAULT_OVERFLOW at start */
	unsigned long gaps0;		/* driver's sequence gaps at start */
};

static DEFINE_MUTEX(st_lock);

static void st_pass(struct st *t, const char *name)
{
	pr_info("PASS %s\n", name);
	t->passed++;
}

static void st_skip(struct st *t, const char *name, const char *why)
{
	pr_info("SKIP %s: %s\n", name, why);
	t->skipped++;
}

static __printf(3, 4) void st_fail(struct st *t, const char *name,
				   const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	pr_info("FAIL %s: %pV\n", name, &vaf);
	va_end(args);
	t->failed++;
}

static u8 *st_page(struct st *t, u8 *base, int n)
{
	return base + n * IE_PAGE_SIZE;
}

static void st_fill(u8 *p, size_t len, u8 seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (u8)(seed + i * 13 + (i >> 8));
}

/* Set page n of the buffer (and of the reference copy) to a pattern. */
static void st_fill_page(struct st *t, int n, u8 seed)
{
	st_fill(st_page(t, t->buf, n), IE_PAGE_SIZE, seed);
	memcpy(st_page(t, t->ref, n), st_page(t, t->buf, n), IE_PAGE_SIZE);
}

/* Compare the whole buffer with the reference; describe the first diff. */
static bool st_buf_ok(struct st *t, char *why, size_t whylen)
{
	size_t i;

	for (i = 0; i < ST_PAGES * IE_PAGE_SIZE; i++) {
		if (t->buf[i] != t->ref[i]) {
			snprintf(why, whylen,
				 "page %zu offset %#zx is %#x, expected %#x",
				 i / IE_PAGE_SIZE, i % IE_PAGE_SIZE,
				 t->buf[i], t->ref[i]);
			return false;
		}
	}
	return true;
}

static int st_cmd(struct st *t, u16 op, u16 flags, u16 rid, u64 addr,
		  u64 length, u64 dma_limit, struct ie_req *r)
{
	memset(r, 0, sizeof(*r));
	r->opcode = op;
	r->flags = flags;
	r->requester = rid;
	r->addr = addr;
	r->length = length;
	r->dma_limit = dma_limit;
	return ie_exec(t->ie, r);
}

/* Run a command that must succeed; report a failure under @name. */
static bool st_cmd_ok(struct st *t, const char *name, u16 op, u16 flags,
		      u64 addr, u64 length, u64 dma_limit, struct ie_req *r)
{
	int ret = st_cmd(t, op, flags, t->rid, addr, length, dma_limit, r);

	if (ret) {
		st_fail(t, name, "opcode %u: ring error %d", op, ret);
		return false;
	}
	if (r->status != IE_ST_OK) {
		st_fail(t, name, "opcode %u: status %s (%#x)", op,
			ie_status_name(r->status), r->status);
		return false;
	}
	return true;
}

/* Run a command that must fail with @want. */
static bool st_cmd_status(struct st *t, const char *name, u16 op, u16 flags,
			  u16 rid, u64 addr, u64 length, u16 want)
{
	struct ie_req r;
	int ret = st_cmd(t, op, flags, rid, addr, length, 0, &r);

	if (ret) {
		st_fail(t, name, "opcode %u: ring error %d", op, ret);
		return false;
	}
	if (r.status != want) {
		st_fail(t, name, "opcode %u flags %#x addr %#llx len %#llx: status %s, expected %s",
			op, flags, addr, length, ie_status_name(r.status),
			ie_status_name(want));
		return false;
	}
	return true;
}

static int edu_dma_regs(void __iomem *regs, u64 src, u64 dst, u32 cnt,
			bool to_ram)
{
	unsigned long deadline = jiffies + ST_TIMEOUT;

	writeq(src, regs + EDU_REG_DMA_SRC);
	writeq(dst, regs + EDU_REG_DMA_DST);
	writeq(cnt, regs + EDU_REG_DMA_CNT);
	writeq(EDU_DMA_RUN | (to_ram ? EDU_DMA_TO_RAM : 0),
	       regs + EDU_REG_DMA_CMD);
	/*
	 * readq() orders the poll before our later loads of the buffer the
	 * device wrote.
	 */
	while (readq(regs + EDU_REG_DMA_CMD) & EDU_DMA_RUN) {
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		msleep(5);
	}
	return 0;
}

static int edu_dma(struct st *t, u64 src, u64 dst, u32 cnt, bool to_ram)
{
	return edu_dma_regs(t->edu_regs, src, dst, cnt, to_ram);
}

/* edu reads @cnt bytes at bus address @bus into its buffer at @off. */
static int edu_from_ram(struct st *t, u64 bus, u32 off, u32 cnt)
{
	return edu_dma(t, bus, EDU_BUF + off, cnt, false);
}

/* edu writes @cnt bytes of its buffer at @off to bus address @bus. */
static int edu_to_ram(struct st *t, u32 off, u64 bus, u32 cnt)
{
	return edu_dma(t, EDU_BUF + off, bus, cnt, true);
}

static bool st_fault_available(struct ie_dev *ie)
{
	return READ_ONCE(ie->log_count) != 0;
}

/* Throw away records nobody expected (reported by the caller). */
static int st_discard_faults(struct st *t)
{
	struct ie_fault_rec rec;
	int n = 0;

	ie_drain_faults(t->ie);
	while (ie_fault_pop(t->ie, &rec)) {
		pr_info("unexpected fault record: requester %#x access %u reason %u address %#llx\n",
			rec.requester, rec.access, rec.reason, rec.address);
		n++;
	}
	return n;
}

/*
 * Check that the DMA just done produced exactly one fault (possibly merged
 * or split into several records for the same page) with these fields.
 */
/*
 * Check that the DMA just done produced exactly one fault (possibly merged
 * or split into several records for the same page) with these fields.
 * Returns false with @why filled in otherwise.
 */
static bool st_check_fault(struct st *t, u16 rid, u64 addr, u8 access,
			   u8 reason, char *why, size_t len)
{
	struct ie_dev *ie = t->ie;
	struct ie_fault_rec rec, extra;
	u64 last = t->last_sequence;
	bool by_irq = true;
	int unexpected = 0;

	if (ie->msix)
		wait_event_timeout(ie->fault_wq, st_fault_available(ie),
				   2 * HZ);
	if (!ie_fault_pop(ie, &rec)) {
		/* Reading FAULTQ_TAIL delivers any pending record. */
		by_irq = false;
		ie_drain_faults(ie);
		if (!ie_fault_pop(ie, &rec)) {
			snprintf(why, len, "no fault record for %#llx", addr);
			return false;
		}
	}
	if (by_irq)
		t->fault_irq_seen = true;
	else
		t->fault_without_irq = true;
	t->last_sequence = max(t->last_sequence, rec.sequence);

	/* Records of the same fault split by the memory core */
	ie_drain_faults(ie);
	while (ie_fault_pop(ie, &extra)) {
		if (extra.requester == rec.requester &&
		    extra.access == rec.access && extra.reason == rec.reason &&
		    extra.address >> 12 == addr >> 12 &&
		    extra.sequence > rec.sequence) {
			t->last_sequence = max(t->last_sequence,
					       extra.sequence);
			continue;
		}
		pr_info("unexpected fault record: requester %#x access %u reason %u address %#llx\n",
			extra.requester, extra.access, extra.reason,
			extra.address);
		unexpected++;
	}

	if (rec.requester != rid)
		snprintf(why, len, "requester %#x, expected %#x",
			 rec.requester, rid);
	else if (rec.access != access)
		snprintf(why, len, "access %u, expected %u", rec.access,
			 access);
	else if (rec.reason != reason)
		snprintf(why, len, "reason %u, expected %u", rec.reason,
			 reason);
	else if (rec.address != addr)
		snprintf(why, len, "address %#llx, expected %#llx",
			 rec.address, addr);
	else if (rec.count < 1)
		snprintf(why, len, "count 0");
	else if (rec.sequence <= last)
		snprintf(why, len, "sequence %llu not after %llu",
			 rec.sequence, last);
	else if (rec.reserved)
		snprintf(why, len, "reserved field %#llx", rec.reserved);
	else if (unexpected)
		snprintf(why, len, "%d unexpected fault records", unexpected);
	else
		return true;
	return false;
}

static void st_expect_fault_rid(struct st *t, const char *name, u16 rid,
				u64 addr, u8 access, u8 reason)
{
	char why[96];

	if (st_check_fault(t, rid, addr, access, reason, why, sizeof(why)))
		st_pass(t, name);
	else
		st_fail(t, name, "%s", why);
}

static bool st_dma(struct st *t, const char *name, int ret);

static void st_expect_fault(struct st *t, const char *name, u64 addr,
			    u8 access, u8 reason)
{
	st_expect_fault_rid(t, name, t->rid, addr, access, reason);
}

/*
 * A second edu has its own domain: in iova mode its first mapping gets the
 * same bus address as edu's, and DMA to that address reaches its page, not
 * edu's; edu's other bus addresses fault for it.
 */
static bool st_isolation(struct st *t, u64 bus)
{
	struct ie_dev *ie = t->ie;
	bool gpa = FIELD_GET(IE_CAP_BUS_ADDR, ie->cap) == IE_BUS_ADDR_GPA;
	phys_addr_t p3 = t->phys + 3 * IE_PAGE_SIZE;
	struct ie_req r;
	char why[96];
	u64 bus2;
	int ret;

	if (!t->edu2) {
		st_skip(t, "isolation", "no second edu (add -device edu twice)");
		return true;
	}
	ret = st_cmd(t, IE_OP_MAP, IE_MAP_READ | IE_MAP_WRITE, t->rid2, p3,
		     IE_PAGE_SIZE, EDU_DMA_MASK, &r);
	if (ret || r.status != IE_ST_OK) {
		st_fail(t, "isolation", "MAP for %s: %d/%s", pci_name(t->edu2),
			ret, ie_status_name(r.status));
		return true;
	}
	bus2 = r.out_addr;
	if (st_cmd(t, IE_OP_SET_MODE, IE_MODE_TRANSLATE, t->rid2, 0, 0, 0,
		   &r) || r.status != IE_ST_OK) {
		st_fail(t, "isolation", "SET_MODE for %s", pci_name(t->edu2));
		return true;
	}
	if (!gpa && bus2 != bus) {
		st_fail(t, "isolation", "second edu's first mapping at %#llx, edu's at %#llx: not per-requester",
			bus2, bus);
		return true;
	}
	/* edu2 copies 64 bytes of its page to +0x10 of the same page */
	if (!st_dma(t, "isolation", edu_dma_regs(t->edu2_regs, bus2,
						 EDU_BUF, EDU_BUF_SIZE,
						 false)) ||
	    !st_dma(t, "isolation", edu_dma_regs(t->edu2_regs, EDU_BUF,
						 bus2 + 0x10, 64, true)))
		return false;
	memmove(t->ref + 3 * IE_PAGE_SIZE + 0x10, t->ref + 3 * IE_PAGE_SIZE,
		64);
	if (!st_buf_ok(t, why, sizeof(why)))
		st_fail(t, "isolation", "%s", why);
	else if (st_discard_faults(t))
		st_fail(t, "isolation", "its own mapping faulted");
	else
		st_pass(t, "isolation");

	/* edu's second page is not mapped for edu2 */
	if (!st_dma(t, "isolation-fault",
		    edu_dma_regs(t->edu2_regs, EDU_BUF, bus + IE_PAGE_SIZE + 0x20,
				 64, true)))
		return false;
	st_expect_fault_rid(t, "isolation-fault", t->rid2,
			    bus + IE_PAGE_SIZE + 0x20, IE_FAULT_ACCESS_WRITE,
			    IE_FAULT_REASON_UNMAPPED);
	if (!st_buf_ok(t, why, sizeof(why)))
		st_fail(t, "isolation-unchanged", "%s", why);
	else
		st_pass(t, "isolation-unchanged");

	ret = st_cmd(t, IE_OP_SET_MODE, 0, t->rid2, 0, 0, 0, &r);
	if (!ret && r.status == IE_ST_OK)
		ret = st_cmd(t, IE_OP_DETACH, 0, t->rid2, 0, 0, 0, &r);
	if (ret || r.status != IE_ST_OK || r.out_length != 1)
		st_fail(t, "isolation-detach", "%d/%s, %llu mappings removed",
			ret, ie_status_name(r.status), r.out_length);
	else
		st_pass(t, "isolation-detach");
	return true;
}

/*
 * The device reads and writes its rings by DMA: with Bus Master Enable off
 * both rings stop with a DMA error. The driver must see it, recover, and
 * work again once bus mastering is back.
 */
static bool st_ring_dma_errors(struct st *t, u64 u)
{
	struct ie_dev *ie = t->ie;
	unsigned long errors = ie->cmd_errors;
	u32 status, error;
	struct ie_req r;
	int ret;

	pci_clear_master(ie->pdev);
	ret = st_cmd(t, IE_OP_SYNC, 0, 0, 0, 0, 0, &r);
	pci_set_master(ie->pdev);
	if (ret != -EIO || ie->cmd_errors != errors + 1)
		st_fail(t, "cmdq-dma-error", "SYNC without bus mastering returned %d",
			ret);
	else if (st_cmd_ok(t, "cmdq-dma-error", IE_OP_SYNC, 0, 0, 0, 0, &r))
		st_pass(t, "cmdq-dma-error");

	if (st_discard_faults(t))
		st_fail(t, "faultq-dma-error", "stale fault records");
	pci_clear_master(ie->pdev);
	ret = edu_to_ram(t, 0, u, 64);
	/* Reading STATUS first delivers the record, which cannot be written. */
	status = readl(ie->regs + IE_REG_STATUS);
	error = readl(ie->regs + IE_REG_FAULTQ_ERROR);
	pci_set_master(ie->pdev);
	if (!st_dma(t, "faultq-dma-error", ret))
		return false;
	/* the driver notices the error and restarts the ring */
	ie_drain_faults(ie);
	status |= readl(ie->regs + IE_REG_STATUS) & IE_STATUS_FAULTQ_ERR;
	if (!(status & IE_STATUS_FAULTQ_ERR) || error != IE_RING_ERR_DMA) {
		st_fail(t, "faultq-dma-error", "STATUS %#x FAULTQ_ERROR %u without bus mastering",
			status, error);
		return true;
	}
	if (!st_dma(t, "faultq-dma-error",
		    edu_to_ram(t, 0, u + IE_PAGE_SIZE, 64)))
		return false;
	st_expect_fault(t, "faultq-dma-error", u + IE_PAGE_SIZE,
			IE_FAULT_ACCESS_WRITE, IE_FAULT_REASON_UNMAPPED);
	return true;
}

/*
 * Fault ring full and fault ring off. With 2 entries the ring holds one
 * record: three faults on three pages with the handler held off give one
 * record and FAULT_OVERFLOW + 2, and the next record's sequence shows the
 * gap of 2. With the ring off a fault is blocked but not recorded.
 */
static bool st_fault_ring_limits(struct st *t)
{
	struct ie_dev *ie = t->ie;
	u32 log2 = ie->faultq_log2;
	u64 u = ie->aperture_start + 0x300000;
	unsigned long gaps;
	struct ie_fault_rec rec;
	u64 seq, seq_off;
	struct ie_req r;
	char why[96];
	u32 ovf;
	int i, n;

	/* Nothing is mapped for edu now: in translate every access faults. */
	if (!st_cmd_ok(t, "fault-overflow", IE_OP_SET_MODE, IE_MODE_TRANSLATE,
		       0, 0, 0, &r))
		return false;
	if (st_discard_faults(t))
		st_fail(t, "fault-overflow", "stale fault records");
	ovf = readl(ie->regs + IE_REG_FAULT_OVERFLOW);
	gaps = ie->seq_gaps;

	if (ie->msix)
		disable_irq(pci_irq_vector(ie->pdev, IE_VEC_FAULT));
	if (ie_test_faultq_set(ie, true, 1)) {
		if (ie->msix)
			enable_irq(pci_irq_vector(ie->pdev, IE_VEC_FAULT));
		st_fail(t, "fault-overflow", "cannot restart the fault ring with 2 entries");
		return false;
	}
	for (i = 0; i < 3; i++)
		if (edu_to_ram(t, 0, u + i * IE_PAGE_SIZE, 64))
			break;
	/* Reading FAULT_OVERFLOW first delivers pending records. */
	ovf = readl(ie->regs + IE_REG_FAULT_OVERFLOW) - ovf;
	if (ie->msix)
		enable_irq(pci_irq_vector(ie->pdev, IE_VEC_FAULT));
	ie_drain_faults(ie);
	n = 0;
	seq = 0;
	while (ie_fault_pop(ie, &rec)) {
		if (!n++ && rec.address == u)
			seq = rec.sequence;
	}
	if (i != 3)
		st_fail(t, "fault-overflow", "edu DMA did not complete");
	else if (n != 1 || !seq)
		st_fail(t, "fault-overflow", "%d records (expected 1, for %#llx)",
			n, u);
	else if (ovf != 2)
		st_fail(t, "fault-overflow", "FAULT_OVERFLOW went up by %u, expected 2",
			ovf);
	else
		st_pass(t, "fault-overflow");

	if (ie_test_faultq_set(ie, true, log2)) {
		st_fail(t, "fault-overflow", "cannot restore the fault ring");
		return false;
	}
	if (!st_dma(t, "fault-sequence-gap",
		    edu_to_ram(t, 0, u + 3 * IE_PAGE_SIZE, 64)))
		return false;
	t->last_sequence = seq;
	st_expect_fault(t, "fault-after-overflow", u + 3 * IE_PAGE_SIZE,
			IE_FAULT_ACCESS_WRITE, IE_FAULT_REASON_UNMAPPED);
	if (t->last_sequence != seq + 3 || ie->seq_gaps != gaps + 2)
		st_fail(t, "fault-sequence-gap", "sequence %llu after %llu, driver counted %lu lost",
			t->last_sequence, seq, ie->seq_gaps - gaps);
	else
		st_pass(t, "fault-sequence-gap");

	/*
	 * A 4-entry ring and ten faults, each consumed before the next: head
	 * and tail wrap twice, and every record must still come out right.
	 */
	if (ie_test_faultq_set(ie, true, 2)) {
		st_fail(t, "fault-ring-wrap", "cannot restart the fault ring with 4 entries");
		return false;
	}
	for (i = 0; i < 10; i++) {
		u64 a = u + 0x10000 + i * IE_PAGE_SIZE + 8 * i;

		if (!st_dma(t, "fault-ring-wrap", edu_to_ram(t, 0, a, 32)))
			return false;
		if (!st_check_fault(t, t->rid, a, IE_FAULT_ACCESS_WRITE,
				    IE_FAULT_REASON_UNMAPPED, why,
				    sizeof(why)))
			break;
	}
	if (i < 10)
		st_fail(t, "fault-ring-wrap", "fault %d: %s", i, why);
	else
		st_pass(t, "fault-ring-wrap");
	if (ie_test_faultq_set(ie, true, log2)) {
		st_fail(t, "fault-ring-wrap", "cannot restore the fault ring");
		return false;
	}

	/* Fault ring off: blocked, not recorded, no interrupt. */
	seq = t->last_sequence;
	gaps = ie->seq_gaps;
	if (ie_test_faultq_set(ie, false, log2))
		st_fail(t, "fault-ring-off", "cannot turn the fault ring off");
	i = edu_to_ram(t, 0, u + 4 * IE_PAGE_SIZE, 64);
	if (ie_test_faultq_set(ie, true, log2)) {
		st_fail(t, "fault-ring-off", "cannot turn the fault ring on");
		return false;
	}
	if (!st_dma(t, "fault-ring-off", i))
		return false;
	if (st_discard_faults(t))
		st_fail(t, "fault-ring-off", "a fault was recorded with the ring off");
	else
		st_pass(t, "fault-ring-off");
	/* The spec does not say whether that fault took a sequence number. */
	if (!st_dma(t, "fault-ring-on", edu_to_ram(t, 0, u + 5 * IE_PAGE_SIZE,
						   64)))
		return false;
	st_expect_fault(t, "fault-ring-on", u + 5 * IE_PAGE_SIZE,
			IE_FAULT_ACCESS_WRITE, IE_FAULT_REASON_UNMAPPED);
	seq_off = t->last_sequence - seq;
	pr_info("note: a fault with the fault ring off advanced the sequence by %llu\n",
		seq_off - 1);
	/* Faults nobody could record are not lost records: don't count them. */
	spin_lock_irq(&ie->fault_lock);
	ie->seq_gaps = gaps;
	spin_unlock_irq(&ie->fault_lock);

	if (!st_ring_dma_errors(t, u + 6 * IE_PAGE_SIZE))
		return false;
	return st_cmd_ok(t, "fault-ring-on", IE_OP_SET_MODE, 0, 0, 0, 0, &r);
}

static bool st_dma(struct st *t, const char *name, int ret)
{
	if (ret)
		st_fail(t, name, "edu DMA did not complete (%d)", ret);
	return !ret;
}

/* The checks proper; returns false when it cannot go on. */
static bool st_run(struct st *t)
{
	struct ie_dev *ie = t->ie;
	phys_addr_t p = t->phys;
	bool gpa = FIELD_GET(IE_CAP_BUS_ADDR, ie->cap) == IE_BUS_ADDR_GPA;
	u64 pinned0, bus, ro, z, unmapped, again;
	u32 status, error;
	struct ie_req r;
	char why[96];
	u8 tmp[200];

	status = readl(ie->regs + IE_REG_STATUS);
	if ((status & (IE_STATUS_CMDQ_ON | IE_STATUS_FAULTQ_ON |
		       IE_STATUS_CMDQ_ERR | IE_STATUS_FAULTQ_ERR)) !=
	    (IE_STATUS_CMDQ_ON | IE_STATUS_FAULTQ_ON)) {
		st_fail(t, "rings-on", "STATUS %#x", status);
		return false;
	}
	st_pass(t, "rings-on");
	if (st_discard_faults(t))
		st_fail(t, "no-stale-faults", "fault records before the test");
	pinned0 = lo_hi_readq(ie->regs + IE_REG_PINNED);
	t->overflow0 = readl(ie->regs + IE_REG_FAULT_OVERFLOW);
	t->gaps0 = ie->seq_gaps;

	/* Every requester starts in bypass. */
	if (st_cmd_status(t, "query-bypass", IE_OP_QUERY, 0, t->rid,
			  ie->aperture_start, 0, IE_ST_NOT_FOUND)) {
		st_cmd(t, IE_OP_QUERY, 0, t->rid, ie->aperture_start, 0, 0, &r);
		if (r.out_flags & IE_QUERY_TRANSLATES)
			st_fail(t, "query-bypass", "out_flags %#x: translating",
				r.out_flags);
		else
			st_pass(t, "query-bypass");
	}

	if (st_cmd_status(t, "map-bad-arg", IE_OP_MAP, 0, t->rid, p,
			  IE_PAGE_SIZE, IE_ST_BAD_ARG) &&
	    st_cmd_status(t, "map-bad-arg", IE_OP_MAP, IE_MAP_READ, t->rid,
			  p + 1, IE_PAGE_SIZE, IE_ST_BAD_ARG) &&
	    st_cmd_status(t, "map-bad-arg", IE_OP_MAP, IE_MAP_READ, t->rid,
			  p, 100, IE_ST_BAD_ARG) &&
	    st_cmd_status(t, "map-bad-arg", IE_OP_MAP, IE_MAP_READ, t->rid,
			  p, 0, IE_ST_BAD_ARG) &&
	    st_cmd_status(t, "map-bad-arg", IE_OP_MAP, IE_MAP_READ | BIT(2),
			  t->rid, p, IE_PAGE_SIZE, IE_ST_BAD_ARG))
		st_pass(t, "map-bad-arg");

	/* MMIO (edu's BAR 0) is not RAM. */
	if (st_cmd_status(t, "map-no-ram", IE_OP_MAP, IE_MAP_READ, t->rid,
			  pci_resource_start(t->edu, 0), IE_PAGE_SIZE,
			  IE_ST_NO_RAM))
		st_pass(t, "map-no-ram");

	/*
	 * A length beyond MAX_PINNED fails with PIN_LIMIT before the range
	 * is even looked at (it runs past the end of RAM here).
	 */
	if (st_cmd_status(t, "map-pin-limit", IE_OP_MAP, IE_MAP_READ, t->rid,
			  p, (lo_hi_readq(ie->regs + IE_REG_MAX_PINNED) &
			      ~(IE_PAGE_SIZE - 1)) + IE_PAGE_SIZE,
			  IE_ST_PIN_LIMIT))
		st_pass(t, "map-pin-limit");

	/* The IOMMU itself is not a requester. */
	if (st_cmd_status(t, "map-no-device", IE_OP_MAP, IE_MAP_READ,
			  pci_dev_id(ie->pdev), p, IE_PAGE_SIZE,
			  IE_ST_NO_DEVICE))
		st_pass(t, "map-no-device");

	/*
	 * Not checks: the spec gives NO_DEVICE for "no PCI function with that
	 * requester ID" but also keeps an unplugged function's mappings until
	 * DETACH, so which commands refuse an absent requester is open.
	 */
	st_cmd(t, IE_OP_DETACH, 0, ST_ABSENT_RID, 0, 0, 0, &r);
	pr_info("note: DETACH of requester %#x (no device): %s\n",
		ST_ABSENT_RID, ie_status_name(r.status));
	st_cmd(t, IE_OP_SET_MODE, 0, ST_ABSENT_RID, 0, 0, 0, &r);
	pr_info("note: SET_MODE of requester %#x (no device): %s\n",
		ST_ABSENT_RID, ie_status_name(r.status));

	/* Two pages, read-write, below edu's 28-bit DMA limit */
	if (!st_cmd_ok(t, "map", IE_OP_MAP, IE_MAP_READ | IE_MAP_WRITE, p,
		       2 * IE_PAGE_SIZE, EDU_DMA_MASK, &r))
		return false;
	bus = r.out_addr;
	if (bus & (IE_PAGE_SIZE - 1) || bus < ie->aperture_start ||
	    bus + 2 * IE_PAGE_SIZE - 1 > min_t(u64, EDU_DMA_MASK,
					       ie->aperture_end) ||
	    (bus <= IE_MSI_WINDOW_END &&
	     bus + 2 * IE_PAGE_SIZE - 1 >= IE_MSI_WINDOW_START)) {
		st_fail(t, "map", "bus address %#llx outside [%#llx, %#llx]",
			bus, ie->aperture_start,
			min_t(u64, EDU_DMA_MASK, ie->aperture_end));
		return false;
	}
	if (gpa && bus != p)
		st_fail(t, "map", "gpa mode: bus address %#llx for %#llx", bus,
			(u64)p);
	else if (lo_hi_readq(ie->regs + IE_REG_PINNED) !=
		 pinned0 + 2 * IE_PAGE_SIZE)
		st_fail(t, "map", "PINNED %llu, expected %llu",
			lo_hi_readq(ie->regs + IE_REG_PINNED),
			pinned0 + 2 * IE_PAGE_SIZE);
	else
		st_pass(t, "map");
	pr_info("mapped %#llx+8K at bus %#llx for %s\n", (u64)p, bus,
		pci_name(t->edu));

	if (st_cmd_ok(t, "set-mode-translate", IE_OP_SET_MODE,
		      IE_MODE_TRANSLATE, 0, 0, 0, &r) &&
	    st_cmd_ok(t, "set-mode-translate", IE_OP_QUERY, 0, bus, 0, 0, &r)) {
		if (r.out_flags & IE_QUERY_TRANSLATES)
			st_pass(t, "set-mode-translate");
		else
			st_fail(t, "set-mode-translate", "QUERY out_flags %#x",
				r.out_flags);
	}

	/* Not a check: the spec leaves out_flags of a NOT_FOUND QUERY open. */
	if (!st_cmd(t, IE_OP_QUERY, 0, t->rid, bus + 0x200000, 0, 0, &r))
		pr_info("note: QUERY of an unmapped address while translating: status %s, out_flags %#x\n",
			ie_status_name(r.status), r.out_flags);

	if (st_cmd_ok(t, "query", IE_OP_QUERY, 0, bus + IE_PAGE_SIZE + 0x10,
		      0, 0, &r)) {
		if (r.out_addr != p + IE_PAGE_SIZE + 0x10 ||
		    r.out_base != bus || r.out_length != 2 * IE_PAGE_SIZE ||
		    r.out_flags != (IE_QUERY_TRANSLATES | IE_MAP_READ |
				    IE_MAP_WRITE))
			st_fail(t, "query", "addr %#llx base %#llx length %#llx flags %#x",
				r.out_addr, r.out_base, r.out_length,
				r.out_flags);
		else
			st_pass(t, "query");
	}

	/*
	 * The same page again: iova gives another bus range, gpa the same
	 * address; either way the page is pinned once, and UNMAP of the new
	 * mapping leaves the first one alone.
	 */
	if (st_cmd_ok(t, "map-again", IE_OP_MAP, IE_MAP_READ | IE_MAP_WRITE, p,
		      IE_PAGE_SIZE, EDU_DMA_MASK, &r)) {
		again = r.out_addr;
		if (gpa ? again != p : (again < bus + 2 * IE_PAGE_SIZE &&
					again + IE_PAGE_SIZE > bus))
			st_fail(t, "map-again", "bus address %#llx (first map at %#llx)",
				again, bus);
		else if (lo_hi_readq(ie->regs + IE_REG_PINNED) !=
			 pinned0 + 2 * IE_PAGE_SIZE)
			st_fail(t, "map-again", "PINNED %llu, expected %llu",
				lo_hi_readq(ie->regs + IE_REG_PINNED),
				pinned0 + 2 * IE_PAGE_SIZE);
		else if (st_cmd_ok(t, "map-again", IE_OP_UNMAP, 0, again,
				   IE_PAGE_SIZE, 0, &r) &&
			 st_cmd_ok(t, "map-again", IE_OP_QUERY, 0, bus, 0, 0,
				   &r)) {
			if (r.out_base != bus ||
			    r.out_length != 2 * IE_PAGE_SIZE)
				st_fail(t, "map-again", "UNMAP removed the first mapping (QUERY base %#llx length %#llx)",
					r.out_base, r.out_length);
			else
				st_pass(t, "map-again");
		}
	}

	/*
	 * A stopped command ring (BAD_INDEX) is recovered and keeps the
	 * mappings: the ring is not the domain.
	 */
	if (ie_test_cmdq_error(ie, &status, &error))
		st_fail(t, "cmdq-error-recovery", "the ring did not restart");
	else if (!(status & IE_STATUS_CMDQ_ERR) ||
		 error != IE_RING_ERR_BAD_INDEX)
		st_fail(t, "cmdq-error-recovery", "STATUS %#x CMDQ_ERROR %u after a bad CMDQ_TAIL",
			status, error);
	else if (st_cmd_ok(t, "cmdq-error-recovery", IE_OP_QUERY, 0, bus, 0,
			   0, &r))
		st_pass(t, "cmdq-error-recovery");

	/*
	 * Whole page: edu reads bus page 1 and writes it to bus page 0. If
	 * either direction hit the wrong page, page 0 keeps pattern A.
	 */
	st_fill_page(t, 0, 0xa0);
	st_fill_page(t, 1, 0xb1);
	st_fill_page(t, 2, 0xc2);
	st_fill_page(t, 3, 0xd3);
	if (!st_dma(t, "dma-page", edu_from_ram(t, bus + IE_PAGE_SIZE, 0,
						EDU_BUF_SIZE)) ||
	    !st_dma(t, "dma-page", edu_to_ram(t, 0, bus, EDU_BUF_SIZE)))
		return false;
	memcpy(st_page(t, t->ref, 0), st_page(t, t->ref, 1), IE_PAGE_SIZE);
	if (st_buf_ok(t, why, sizeof(why)))
		st_pass(t, "dma-page");
	else
		st_fail(t, "dma-page", "%s", why);

	/* Byte offsets: 200 bytes from page 0 + 100 to page 1 + 1000 */
	st_fill_page(t, 0, 0xa4);
	if (!st_dma(t, "dma-offsets", edu_from_ram(t, bus + 100, 0x800, 200)) ||
	    !st_dma(t, "dma-offsets", edu_to_ram(t, 0x800,
						 bus + IE_PAGE_SIZE + 1000,
						 200)))
		return false;
	memcpy(st_page(t, t->ref, 1) + 1000, st_page(t, t->ref, 0) + 100, 200);
	if (st_buf_ok(t, why, sizeof(why)))
		st_pass(t, "dma-offsets");
	else
		st_fail(t, "dma-offsets", "%s", why);

	/* Across the page boundary, both ways: byte i is at bus + i. */
	memcpy(tmp, t->ref + IE_PAGE_SIZE - 100, sizeof(tmp));
	if (!st_dma(t, "dma-page-crossing",
		    edu_from_ram(t, bus + IE_PAGE_SIZE - 100, 0xc00,
				 sizeof(tmp))) ||
	    !st_dma(t, "dma-page-crossing",
		    edu_to_ram(t, 0xc00, bus + IE_PAGE_SIZE - 50,
			       sizeof(tmp))))
		return false;
	memcpy(t->ref + IE_PAGE_SIZE - 50, tmp, sizeof(tmp));
	if (st_buf_ok(t, why, sizeof(why)))
		st_pass(t, "dma-page-crossing");
	else
		st_fail(t, "dma-page-crossing", "%s", why);

	if (st_discard_faults(t))
		st_fail(t, "dma-no-fault", "mapped DMA faulted");
	else
		st_pass(t, "dma-no-fault");

	if (!st_isolation(t, bus))
		return false;

	/* An unmapped bus address, still below edu's DMA limit */
	unmapped = bus + 0x200000;
	if (st_cmd_status(t, "fault-unmapped-write", IE_OP_QUERY, 0, t->rid,
			  unmapped, 0, IE_ST_NOT_FOUND)) {
		if (st_dma(t, "fault-unmapped-write",
			   edu_to_ram(t, 0, unmapped + 0x40, 64)))
			st_expect_fault(t, "fault-unmapped-write",
					unmapped + 0x40, IE_FAULT_ACCESS_WRITE,
					IE_FAULT_REASON_UNMAPPED);
		if (st_dma(t, "fault-unmapped-read",
			   edu_from_ram(t, unmapped + 0x80, 0, 64)))
			st_expect_fault(t, "fault-unmapped-read",
					unmapped + 0x80, IE_FAULT_ACCESS_READ,
					IE_FAULT_REASON_UNMAPPED);
	}
	if (!ie->msix)
		st_skip(t, "fault-interrupt", "polled, no MSI-X");
	else if (t->fault_without_irq)
		st_fail(t, "fault-interrupt", "a record arrived without vector 0");
	else if (!t->fault_irq_seen)
		st_fail(t, "fault-interrupt", "no fault record seen");
	else
		st_pass(t, "fault-interrupt");

	/* Read-only mapping of page 2 */
	if (st_cmd_ok(t, "map-read-only", IE_OP_MAP, IE_MAP_READ,
		      p + 2 * IE_PAGE_SIZE, IE_PAGE_SIZE, EDU_DMA_MASK, &r)) {
		ro = r.out_addr;
		if (st_cmd_ok(t, "map-read-only", IE_OP_QUERY, 0, ro, 0, 0,
			      &r)) {
			if (r.out_flags != (IE_QUERY_TRANSLATES | IE_MAP_READ) ||
			    r.out_addr != p + 2 * IE_PAGE_SIZE)
				st_fail(t, "map-read-only", "QUERY flags %#x addr %#llx",
					r.out_flags, r.out_addr);
			else
				st_pass(t, "map-read-only");
		}
		/* reading it works: copy it into page 0 through the RW map */
		if (!st_dma(t, "read-only-read", edu_from_ram(t, ro, 0,
							       EDU_BUF_SIZE)) ||
		    !st_dma(t, "read-only-read",
			    edu_to_ram(t, 0, bus, EDU_BUF_SIZE)))
			return false;
		memcpy(st_page(t, t->ref, 0), st_page(t, t->ref, 2),
		       IE_PAGE_SIZE);
		if (!st_buf_ok(t, why, sizeof(why)))
			st_fail(t, "read-only-read", "%s", why);
		else if (st_discard_faults(t))
			st_fail(t, "read-only-read", "reading faulted");
		else
			st_pass(t, "read-only-read");

		/* writing it faults, and the page keeps its bytes */
		st_fill(t->buf, IE_PAGE_SIZE, 0xe5);
		memcpy(t->ref, t->buf, IE_PAGE_SIZE);
		if (!st_dma(t, "read-only-write-faults",
			    edu_from_ram(t, bus, 0, EDU_BUF_SIZE)) ||
		    !st_dma(t, "read-only-write-faults",
			    edu_to_ram(t, 0, ro + 0x100, 256)))
			return false;
		st_expect_fault(t, "read-only-write-faults", ro + 0x100,
				IE_FAULT_ACCESS_WRITE, IE_FAULT_REASON_PERM);
		if (st_buf_ok(t, why, sizeof(why)))
			st_pass(t, "read-only-unchanged");
		else
			st_fail(t, "read-only-unchanged", "%s", why);
	} else {
		ro = 0;
	}

	/* UNMAP must name the mapping exactly */
	if (st_cmd_status(t, "unmap-partial", IE_OP_UNMAP, 0, t->rid, bus,
			  IE_PAGE_SIZE, IE_ST_NOT_FOUND) &&
	    st_cmd_ok(t, "unmap-partial", IE_OP_QUERY, 0, bus, 0, 0, &r))
		st_pass(t, "unmap-partial");

	if (st_cmd_ok(t, "unmap", IE_OP_UNMAP, 0, bus, 2 * IE_PAGE_SIZE, 0,
		      &r) &&
	    st_cmd_status(t, "unmap", IE_OP_QUERY, 0, t->rid, bus, 0,
			  IE_ST_NOT_FOUND) &&
	    st_cmd_status(t, "unmap", IE_OP_QUERY, 0, t->rid,
			  bus + IE_PAGE_SIZE, 0, IE_ST_NOT_FOUND))
		st_pass(t, "unmap");

	/* DMA after UNMAP faults and does not reach the old pages */
	st_fill(t->buf, IE_PAGE_SIZE, 0xf6);
	memcpy(t->ref, t->buf, IE_PAGE_SIZE);
	if (!st_dma(t, "fault-after-unmap", edu_to_ram(t, 0, bus, 128)))
		return false;
	st_expect_fault(t, "fault-after-unmap", bus, IE_FAULT_ACCESS_WRITE,
			IE_FAULT_REASON_UNMAPPED);
	if (st_buf_ok(t, why, sizeof(why)))
		st_pass(t, "unmapped-unchanged");
	else
		st_fail(t, "unmapped-unchanged", "%s", why);

	/* Mode changes keep mappings; DETACH removes them all. */
	if (st_cmd_ok(t, "detach", IE_OP_MAP, IE_MAP_READ | IE_MAP_WRITE,
		      p + 3 * IE_PAGE_SIZE, IE_PAGE_SIZE, EDU_DMA_MASK, &r)) {
		z = r.out_addr;
		if (st_cmd_ok(t, "set-mode-bypass", IE_OP_SET_MODE, 0, 0, 0, 0,
			      &r) &&
		    st_cmd_ok(t, "set-mode-bypass", IE_OP_QUERY, 0, z, 0, 0,
			      &r)) {
			if (r.out_flags & IE_QUERY_TRANSLATES ||
			    r.out_addr != p + 3 * IE_PAGE_SIZE)
				st_fail(t, "set-mode-bypass", "QUERY flags %#x addr %#llx",
					r.out_flags, r.out_addr);
			else
				st_pass(t, "set-mode-bypass");
		}
		if (st_cmd_ok(t, "detach", IE_OP_DETACH, 0, 0, 0, 0, &r)) {
			u64 want = ro ? 2 : 1;

			if (r.out_length != want)
				st_fail(t, "detach", "removed %llu mappings, expected %llu",
					r.out_length, want);
			else if (st_cmd_status(t, "detach", IE_OP_QUERY, 0,
					       t->rid, z, 0, IE_ST_NOT_FOUND) &&
				 (!ro ||
				  st_cmd_status(t, "detach", IE_OP_QUERY, 0,
						t->rid, ro, 0, IE_ST_NOT_FOUND)))
				st_pass(t, "detach");
		}
	}
	if (lo_hi_readq(ie->regs + IE_REG_PINNED) != pinned0)
		st_fail(t, "unpinned", "PINNED %llu, expected %llu",
			lo_hi_readq(ie->regs + IE_REG_PINNED), pinned0);
	else
		st_pass(t, "unpinned");

	/* SYNC with IRQ raises vector 1 */
	reinit_completion(&ie->sync_done);
	if (!ie->msix) {
		if (st_cmd_ok(t, "sync", IE_OP_SYNC, 0, 0, 0, 0, &r))
			st_pass(t, "sync");
		st_skip(t, "sync-irq", "polled, no MSI-X");
	} else if (st_cmd_ok(t, "sync-irq", IE_OP_SYNC, IE_SYNC_IRQ, 0, 0, 0,
			     &r)) {
		if (!wait_for_completion_timeout(&ie->sync_done, 2 * HZ))
			st_fail(t, "sync-irq", "no interrupt on vector 1");
		else
			st_pass(t, "sync-irq");
	}

	if (readl(ie->regs + IE_REG_FAULT_OVERFLOW) != t->overflow0 ||
	    ie->seq_gaps != t->gaps0)
		st_fail(t, "no-lost-faults", "FAULT_OVERFLOW %u (was %u), sequence gaps %lu (were %lu)",
			readl(ie->regs + IE_REG_FAULT_OVERFLOW), t->overflow0,
			ie->seq_gaps, t->gaps0);
	else
		st_pass(t, "no-lost-faults");

	return st_fault_ring_limits(t);
}

static int st_edu_open(struct st *t)
{
	int ret;

	t->edu = pci_get_device(EDU_VENDOR, EDU_DEVICE, NULL);
	if (!t->edu) {
		st_fail(t, "edu", "no edu device (add -device edu)");
		return -ENODEV;
	}
	ret = pci_enable_device(t->edu);
	if (ret) {
		st_fail(t, "edu", "cannot enable %s (%d)", pci_name(t->edu),
			ret);
		goto err_put;
	}
	ret = pci_request_region(t->edu, 0, "iommu-emul-selftest");
	if (ret) {
		st_fail(t, "edu", "BAR 0 of %s is busy (%d)", pci_name(t->edu),
			ret);
		goto err_disable;
	}
	t->edu_regs = pci_iomap(t->edu, 0, 0);
	if (!t->edu_regs) {
		ret = -ENOMEM;
		st_fail(t, "edu", "cannot map BAR 0 of %s", pci_name(t->edu));
		goto err_release;
	}
	if ((readl(t->edu_regs + EDU_REG_ID) & 0xff) != 0xed) {
		ret = -ENODEV;
		st_fail(t, "edu", "identification %#x",
			readl(t->edu_regs + EDU_REG_ID));
		goto err_unmap;
	}
	pci_set_master(t->edu);
	t->rid = pci_dev_id(t->edu);
	st_pass(t, "edu");
	pr_info("edu %s, requester %#06x\n", pci_name(t->edu), t->rid);
	return 0;

err_unmap:
	pci_iounmap(t->edu, t->edu_regs);
err_release:
	pci_release_region(t->edu, 0);
err_disable:
	pci_disable_device(t->edu);
err_put:
	pci_dev_put(t->edu);
	return ret;
}

/* A second edu, if any, for the isolation checks; silently optional. */
static void st_edu2_open(struct st *t)
{
	struct pci_dev *pdev;

	pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, pci_dev_get(t->edu));
	if (!pdev)
		return;
	if (pci_enable_device(pdev))
		goto err_put;
	if (pci_request_region(pdev, 0, "iommu-emul-selftest"))
		goto err_disable;
	t->edu2_regs = pci_iomap(pdev, 0, 0);
	if (!t->edu2_regs)
		goto err_release;
	pci_set_master(pdev);
	t->edu2 = pdev;
	t->rid2 = pci_dev_id(pdev);
	pr_info("second edu %s, requester %#06x\n", pci_name(pdev), t->rid2);
	return;

err_release:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
err_put:
	pci_dev_put(pdev);
}

static void st_edu2_close(struct st *t)
{
	if (!t->edu2)
		return;
	pci_clear_master(t->edu2);
	pci_iounmap(t->edu2, t->edu2_regs);
	pci_release_region(t->edu2, 0);
	pci_disable_device(t->edu2);
	pci_dev_put(t->edu2);
}

static void st_edu_close(struct st *t)
{
	pci_clear_master(t->edu);
	pci_iounmap(t->edu, t->edu_regs);
	pci_release_region(t->edu, 0);
	pci_disable_device(t->edu);
	pci_dev_put(t->edu);
}

int ie_selftest(struct ie_dev *ie)
{
	struct page *pages;
	bool leak = false;
	struct ie_req r;
	struct st *t;
	int ret = 0;

	t = kzalloc(sizeof(*t), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	t->ie = ie;
	mutex_lock(&st_lock);
	pr_info("start on %s\n", pci_name(ie->pdev));

	pages = alloc_pages(GFP_KERNEL | __GFP_ZERO, get_order(ST_PAGES *
							       IE_PAGE_SIZE));
	t->ref = kzalloc(ST_PAGES * IE_PAGE_SIZE, GFP_KERNEL);
	if (!pages || !t->ref) {
		st_fail(t, "setup", "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	t->buf = page_address(pages);
	t->phys = page_to_phys(pages);

	if (st_edu_open(t)) {
		ret = -ENODEV;
		goto out;
	}
	st_edu2_open(t);
	t->last_sequence = ie->last_sequence;
	if (!st_run(t))
		st_fail(t, "aborted", "cannot go on after the failure above");

	/* Whatever happened: edu back to bypass, no mapping left behind. */
	if (st_cmd(t, IE_OP_SET_MODE, 0, t->rid, 0, 0, 0, &r) ||
	    r.status != IE_ST_OK ||
	    st_cmd(t, IE_OP_DETACH, 0, t->rid, 0, 0, 0, &r) ||
	    r.status != IE_ST_OK) {
		/* the pages may still be mapped: never give them back */
		st_fail(t, "cleanup", "cannot reset the edu's domain");
		leak = true;
	}
	if (t->edu2 &&
	    (st_cmd(t, IE_OP_SET_MODE, 0, t->rid2, 0, 0, 0, &r) ||
	     r.status != IE_ST_OK ||
	     st_cmd(t, IE_OP_DETACH, 0, t->rid2, 0, 0, 0, &r) ||
	     r.status != IE_ST_OK)) {
		st_fail(t, "cleanup", "cannot reset the second edu's domain");
		leak = true;
	}
	st_edu2_close(t);
	st_edu_close(t);
out:
	pr_info("SUMMARY %d passed, %d failed, %d skipped\n", t->passed,
		t->failed, t->skipped);
	if (!ret && t->failed)
		ret = -EIO;
	mutex_unlock(&st_lock);
	if (pages && !leak)
		__free_pages(pages, get_order(ST_PAGES * IE_PAGE_SIZE));
	kfree(t->ref);
	kfree(t);
	return ret;
}
