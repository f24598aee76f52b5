// SPDX-License-Identifier: GPL-2.0
/*
 * iommu_emul_dma self-test (debugfs edu_test): drives QEMU's edu device
 * through the ordinary DMA API, which this module has routed through
 * iommu-emul, and checks that mapped memory is reached and that memory
 * whose mapping was removed is not (the device faults instead).
 *
 * edu (docs/specs/edu.rst): BAR 0 0x80 source, 0x88 destination, 0x90
 * count, 0x98 command (bit 0 run, bit 1 edu -> RAM); its buffer is at
 * 0x40000 (4 KiB); its DMA addresses are 28-bit.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": test: " fmt

#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "ied.h"

#define EDU_VENDOR		0x1234
#define EDU_DEVICE		0x11e8
#define EDU_REG_ID		0x00
#define EDU_REG_DMA_SRC		0x80
#define EDU_REG_DMA_DST		0x88
#define EDU_REG_DMA_CNT		0x90
#define EDU_REG_DMA_CMD		0x98
#define   EDU_DMA_RUN		BIT(0)
#define   EDU_DMA_TO_RAM	BIT(1)
#define EDU_BUF			0x40000ULL
#define EDU_BUF_SIZE		4096

static unsigned int edu_mask_bits = 28;
module_param(edu_mask_bits, uint, 0444);
MODULE_PARM_DESC(edu_mask_bits,
		 "self-test: DMA mask of edu, as its dma_mask property (default 28)");

struct edu_t {
	struct ied *ie;
	struct pci_dev *pdev;
	struct device *dev;
	void __iomem *regs;
	u16 rid;
	gfp_t gfp;
	int pass, fail;
};

static void t_result(struct edu_t *t, bool ok, const char *name,
		     const char *why)
{
	if (ok) {
		t->pass++;
		pr_info("PASS %s %s\n", pci_name(t->pdev), name);
	} else {
		t->fail++;
		pr_err("FAIL %s %s: %s\n", pci_name(t->pdev), name, why);
	}
}

/* 8-byte accesses: edu ignores 4-byte writes to the high halves */
static int edu_dma(struct edu_t *t, u64 src, u64 dst, u32 cnt, bool to_ram)
{
	unsigned long deadline = jiffies + 5 * HZ;

	writeq(src, t->regs + EDU_REG_DMA_SRC);
	writeq(dst, t->regs + EDU_REG_DMA_DST);
	writeq(cnt, t->regs + EDU_REG_DMA_CNT);
	writeq(EDU_DMA_RUN | (to_ram ? EDU_DMA_TO_RAM : 0),
		     t->regs + EDU_REG_DMA_CMD);
	while (readq(t->regs + EDU_REG_DMA_CMD) & EDU_DMA_RUN) {
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		msleep(5);
	}
	return 0;
}

/* edu reads @cnt bytes at bus address @bus into its buffer */
static int edu_read(struct edu_t *t, u64 bus, u32 cnt)
{
	return edu_dma(t, bus, EDU_BUF, cnt, false);
}

/* edu writes @cnt bytes of its buffer to bus address @bus */
static int edu_write(struct edu_t *t, u64 bus, u32 cnt)
{
	return edu_dma(t, EDU_BUF, bus, cnt, true);
}

static void fill(void *p, size_t n, u8 seed)
{
	u8 *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = seed + i * 7 + (i >> 8);
}

static bool all_bytes(const void *p, size_t n, u8 v)
{
	return !memchr_inv(p, v, n);
}

/*
 * Is there a fault record since @since for edu at @bus with @access
 * (1 read, 2 write) and @reason (1 not mapped, 2 permission)?
 */
static bool t_faulted(struct edu_t *t, unsigned int since, u64 bus,
		      u8 access, u8 reason)
{
	struct ied_fault_rec recs[IED_FAULT_LOG];
	unsigned int n, i;

	ied_drain_faults(t->ie);	/* reading FAULTQ_TAIL delivers */
	n = ied_fault_snapshot(t->ie, recs, IED_FAULT_LOG, since) - since;
	n = min_t(unsigned int, n, IED_FAULT_LOG);
	for (i = 0; i < n; i++)
		if (recs[i].requester == t->rid &&
		    (recs[i].address & IE_PAGE_MASK) == (bus & IE_PAGE_MASK) &&
		    recs[i].access == access && recs[i].reason == reason)
			return true;
	return false;
}

static unsigned int t_fault_mark(struct edu_t *t)
{
	ied_drain_faults(t->ie);
	return ied_fault_snapshot(t->ie, NULL, 0, 0);
}

static void t_coherent(struct edu_t *t)
{
	dma_addr_t h;
	u64 gpa = 0;
	u8 *buf;

	buf = dma_alloc_coherent(t->dev, 2 * EDU_BUF_SIZE, &h, GFP_KERNEL);
	if (!buf) {
		t_result(t, false, "coherent", "dma_alloc_coherent failed");
		return;
	}
	t_result(t, !ied_query(t->ie, t->rid, h, &gpa) &&
		 gpa == virt_to_phys(buf), "coherent-query",
		 "QUERY of the handle does not give the buffer's address");
	fill(buf, EDU_BUF_SIZE, 0x11);
	memset(buf + EDU_BUF_SIZE, 0, EDU_BUF_SIZE);
	if (edu_read(t, h, EDU_BUF_SIZE) ||
	    edu_write(t, h + EDU_BUF_SIZE, EDU_BUF_SIZE))
		t_result(t, false, "coherent", "edu DMA timed out");
	else
		t_result(t, !memcmp(buf, buf + EDU_BUF_SIZE, EDU_BUF_SIZE),
			 "coherent", "the copy differs");
	dma_free_coherent(t->dev, 2 * EDU_BUF_SIZE, buf, h);
}

static void t_streaming(struct edu_t *t)
{
	struct page *src = alloc_page(t->gfp), *dst = alloc_page(t->gfp);
	dma_addr_t hs = DMA_MAPPING_ERROR, hd = DMA_MAPPING_ERROR;
	unsigned int mark;

	if (!src || !dst)
		goto out;
	fill(page_address(src), PAGE_SIZE, 0x22);
	memset(page_address(dst), 0, PAGE_SIZE);
	hs = dma_map_page(t->dev, src, 0, PAGE_SIZE, DMA_TO_DEVICE);
	hd = dma_map_page(t->dev, dst, 0x100, 0x800, DMA_FROM_DEVICE);
	if (dma_mapping_error(t->dev, hs) || dma_mapping_error(t->dev, hd)) {
		t_result(t, false, "streaming", "dma_map_page failed");
		goto unmap;
	}
	if (edu_read(t, hs, EDU_BUF_SIZE) || edu_write(t, hd, 0x800)) {
		t_result(t, false, "streaming", "edu DMA timed out");
		goto unmap;
	}
	t_result(t, !memcmp(page_address(dst) + 0x100, page_address(src),
			    0x800) &&
		 all_bytes(page_address(dst), 0x100, 0) &&
		 all_bytes(page_address(dst) + 0x900, PAGE_SIZE - 0x900, 0),
		 "streaming", "the copy differs or landed outside the range");

	/* DMA_TO_DEVICE maps read-only: a device write faults */
	memcpy(page_address(dst), page_address(src), PAGE_SIZE);
	mark = t_fault_mark(t);
	/* edu's buffer holds src: a write landing at +0x40 would shift it */
	if (edu_write(t, hs + 0x40, 64)) {
		t_result(t, false, "to-device-read-only", "edu DMA timed out");
		goto unmap;
	}
	t_result(t, t_faulted(t, mark, hs, IE_FAULT_ACCESS_WRITE,
			      IE_FAULT_REASON_PERM),
		 "to-device-read-only-faults", "no permission fault recorded");
	t_result(t, !memcmp(page_address(dst), page_address(src), PAGE_SIZE),
		 "to-device-read-only-unchanged",
		 "the device wrote to a read-only mapping");
unmap:
	if (!dma_mapping_error(t->dev, hs))
		dma_unmap_page(t->dev, hs, PAGE_SIZE, DMA_TO_DEVICE);
	if (!dma_mapping_error(t->dev, hd))
		dma_unmap_page(t->dev, hd, 0x800, DMA_FROM_DEVICE);
out:
	if (!src || !dst)
		t_result(t, false, "streaming", "no memory");
	if (src)
		__free_page(src);
	if (dst)
		__free_page(dst);
}

static void t_sg(struct edu_t *t)
{
	static const unsigned int off[3] = { 0, 0x100, 0xe00 };
	static const unsigned int len[3] = { 0x1000, 0x300, 0x200 };
	struct page *pg[3] = { };
	struct scatterlist sgl[3], *sg;
	int i, n;
	bool ok = true;

	sg_init_table(sgl, 3);
	for (i = 0; i < 3; i++) {
		pg[i] = alloc_page(t->gfp);
		if (!pg[i]) {
			t_result(t, false, "sg", "no memory");
			goto out;
		}
		memset(page_address(pg[i]), 0, PAGE_SIZE);
		sg_set_page(&sgl[i], pg[i], len[i], off[i]);
	}
	n = dma_map_sg(t->dev, sgl, 3, DMA_FROM_DEVICE);
	if (n <= 0) {
		t_result(t, false, "sg", "dma_map_sg failed");
		goto out;
	}
	/* edu's buffer holds the 0x22 pattern of t_streaming */
	for_each_sg(sgl, sg, n, i)
		if (edu_write(t, sg_dma_address(sg), sg_dma_len(sg)))
			ok = false;
	dma_unmap_sg(t->dev, sgl, 3, DMA_FROM_DEVICE);
	for (i = 0; i < 3 && ok; i++) {
		u8 *p = page_address(pg[i]);
		u8 *expect = kmalloc(len[i], GFP_KERNEL);

		if (!expect) {
			ok = false;
			break;
		}
		fill(expect, len[i], 0x22);
		ok = !memcmp(p + off[i], expect, len[i]) &&
		     all_bytes(p, off[i], 0) &&
		     all_bytes(p + off[i] + len[i], PAGE_SIZE - off[i] - len[i],
			       0);
		kfree(expect);
	}
	t_result(t, ok, "sg", "data differs or landed outside the segments");
out:
	for (i = 0; i < 3; i++)
		if (pg[i])
			__free_page(pg[i]);
}

/*
 * Buffers of less than a page that cross a page boundary: one mapping of
 * two pages in iova and gpa modes; in hpa mode a bounce page when the two
 * host pages are not adjacent. The data must arrive either way, and a
 * dma_sync_single_for_cpu() must show it before the unmap.
 */
static void t_crossing(struct edu_t *t)
{
	struct page *sp = alloc_pages(t->gfp, 1), *dp = alloc_pages(t->gfp, 1);
	dma_addr_t hs = DMA_MAPPING_ERROR, hd = DMA_MAPPING_ERROR;
	long bounced = atomic_long_read(&t->ie->bounced);
	u8 *src, *dst;
	bool synced;

	if (!sp || !dp) {
		t_result(t, false, "page-crossing", "no memory");
		goto out;
	}
	src = page_address(sp);
	dst = page_address(dp);
	fill(src, 2 * PAGE_SIZE, 0x33);
	memset(dst, 0, 2 * PAGE_SIZE);
	hs = dma_map_single(t->dev, src + 0xf00, 0x200, DMA_TO_DEVICE);
	hd = dma_map_single(t->dev, dst + 0xf80, 0x200, DMA_FROM_DEVICE);
	if (dma_mapping_error(t->dev, hs) || dma_mapping_error(t->dev, hd)) {
		t_result(t, false, "page-crossing", "dma_map_single failed");
		goto unmap;
	}
	if (edu_read(t, hs, 0x200) || edu_write(t, hd, 0x200)) {
		t_result(t, false, "page-crossing", "edu DMA timed out");
		goto unmap;
	}
	dma_sync_single_for_cpu(t->dev, hd, 0x200, DMA_FROM_DEVICE);
	synced = !memcmp(dst + 0xf80, src + 0xf00, 0x200);
	dma_sync_single_for_device(t->dev, hd, 0x200, DMA_FROM_DEVICE);
	dma_unmap_single(t->dev, hd, 0x200, DMA_FROM_DEVICE);
	hd = DMA_MAPPING_ERROR;
	t_result(t, synced, "page-crossing-sync",
		 "the data is not there after dma_sync_single_for_cpu()");
	pr_info("note %s page-crossing: %ld of 2 mappings bounced\n",
		pci_name(t->pdev), atomic_long_read(&t->ie->bounced) - bounced);
	t_result(t, !memcmp(dst + 0xf80, src + 0xf00, 0x200) &&
		 all_bytes(dst, 0xf80, 0) &&
		 all_bytes(dst + 0x1180, 2 * PAGE_SIZE - 0x1180, 0),
		 "page-crossing", "the copy differs or landed outside the range");
unmap:
	if (!dma_mapping_error(t->dev, hs))
		dma_unmap_single(t->dev, hs, 0x200, DMA_TO_DEVICE);
	if (!dma_mapping_error(t->dev, hd))
		dma_unmap_single(t->dev, hd, 0x200, DMA_FROM_DEVICE);
out:
	if (sp)
		__free_pages(sp, 1);
	if (dp)
		__free_pages(dp, 1);
}

/*
 * A failed MAP in the middle of a long sg list: ask for more than
 * MAX_PINNED (run-demo.sh gives the device max-pinned=32M), in far more
 * entries than the ring holds. dma_map_sgtable() must fail with -ENOMEM
 * and leave nothing mapped or pinned behind.
 */
static void t_sg_pin_limit(struct edu_t *t)
{
	u64 max = readq(t->ie->regs + IE_REG_MAX_PINNED);
	u64 pinned0 = readq(t->ie->regs + IE_REG_PINNED), pinned1;
	unsigned long errors0 = t->ie->map_errors, live0, live1;
	unsigned int n, i;
	struct sg_table sgt;
	struct scatterlist *sg;
	int ret;

	if (max > SZ_64M) {
		pr_info("note %s sg-pin-limit: skipped, max-pinned %llu is above 64 MiB\n",
			pci_name(t->pdev), max);
		return;
	}
	n = (max + SZ_4M) >> PAGE_SHIFT;
	if (sg_alloc_table(&sgt, n, GFP_KERNEL)) {
		t_result(t, false, "sg-pin-limit", "no memory for the table");
		return;
	}
	for_each_sg(sgt.sgl, sg, n, i) {
		struct page *p = alloc_page(t->gfp);

		if (!p) {
			t_result(t, false, "sg-pin-limit", "no memory");
			sgt.orig_nents = i;
			goto out;
		}
		sg_set_page(sg, p, PAGE_SIZE, 0);
	}
	live0 = READ_ONCE(t->ie->live);
	ret = dma_map_sgtable(t->dev, &sgt, DMA_FROM_DEVICE, 0);
	if (!ret)
		dma_unmap_sgtable(t->dev, &sgt, DMA_FROM_DEVICE, 0);
	ied_flush(t->ie);
	live1 = READ_ONCE(t->ie->live);
	pinned1 = readq(t->ie->regs + IE_REG_PINNED);
	t_result(t, ret == -ENOMEM, "sg-pin-limit-fails",
		 ret ? "dma_map_sgtable() did not return -ENOMEM" :
		 "dma_map_sgtable() succeeded beyond MAX_PINNED");
	t_result(t, live1 == live0 && pinned1 <= pinned0 &&
		 t->ie->map_errors > errors0, "sg-pin-limit-undone",
		 "mappings or pins left behind by the failed list");
	pr_info("note %s sg-pin-limit: %u entries, %llu bytes, MAX_PINNED %llu, PINNED %llu -> %llu\n",
		pci_name(t->pdev), n, (u64)n << PAGE_SHIFT, max, pinned0,
		pinned1);
out:
	for_each_sg(sgt.sgl, sg, sgt.orig_nents, i)
		if (sg_page(sg))
			__free_page(sg_page(sg));
	sg_free_table(&sgt);
}

/*
 * The negative check: after dma_unmap_page() (and, in lazy mode, once the
 * deferred UNMAPs have run) the device cannot reach the page any more.
 */
static void t_unmapped(struct edu_t *t, bool explicit_flush)
{
	const char *w = explicit_flush ? "unmapped-write-blocked" :
			t->ie->strict ? "strict-unmap-immediate" :
			"lazy-unmap-after-flush_ms";
	struct page *victim = alloc_page(t->gfp);
	unsigned int mark;
	dma_addr_t h;
	u8 *p;

	if (!victim) {
		t_result(t, false, w, "no memory");
		return;
	}
	p = page_address(victim);
	memset(p, 0x5a, PAGE_SIZE);
	h = dma_map_page(t->dev, victim, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(t->dev, h)) {
		t_result(t, false, w, "dma_map_page failed");
		goto out;
	}
	if (edu_write(t, h + 0x200, 256)) {
		t_result(t, false, w, "edu DMA timed out");
		dma_unmap_page(t->dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
		goto out;
	}
	if (explicit_flush)
		t_result(t, !all_bytes(p + 0x200, 256, 0x5a),
			 "mapped-write-lands", "the mapped page was not written");
	memset(p, 0x5a, PAGE_SIZE);
	dma_unmap_page(t->dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (explicit_flush)
		ied_flush(t->ie);
	else if (!t->ie->strict)
		msleep(200);	/* well past flush_ms */

	mark = t_fault_mark(t);
	if (edu_write(t, h + 0x200, 256) || edu_read(t, h, 256)) {
		t_result(t, false, w, "edu DMA timed out");
		goto out;
	}
	t_result(t, all_bytes(p, PAGE_SIZE, 0x5a), w,
		 "the device wrote to a page after its mapping was removed");
	if (explicit_flush) {
		t_result(t, t_faulted(t, mark, h, IE_FAULT_ACCESS_WRITE, 1),
			 "unmapped-write-faults",
			 "no not-mapped write fault recorded for the address");
		t_result(t, t_faulted(t, mark, h, 1, 1),
			 "unmapped-read-faults",
			 "no not-mapped read fault recorded for the address");
	}
out:
	__free_page(victim);
}

static int t_edu_open(struct edu_t *t, struct pci_dev *pdev)
{
	int ret;

	t->pdev = pdev;
	t->dev = &pdev->dev;
	/* behind a conventional PCI bridge the requester is the bridge's */
	t->rid = ied_rid(pdev);
	ret = pci_enable_device(pdev);
	if (ret)
		return ret;
	ret = pci_request_region(pdev, 0, "iommu_emul_dma-test");
	if (ret)
		goto err_disable;
	t->regs = pci_iomap(pdev, 0, 0);
	if (!t->regs) {
		ret = -ENOMEM;
		goto err_release;
	}
	if ((readl(t->regs + EDU_REG_ID) & 0xff) != 0xed) {
		ret = -ENODEV;
		goto err_unmap;
	}
	ret = dma_set_mask_and_coherent(t->dev,
					DMA_BIT_MASK(clamp(edu_mask_bits, 24U, 64U)));
	if (ret)
		goto err_unmap;
	pci_set_master(pdev);
	return 0;
err_unmap:
	pci_iounmap(pdev, t->regs);
err_release:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
	return ret;
}

static void t_edu_close(struct edu_t *t)
{
	pci_clear_master(t->pdev);
	pci_iounmap(t->pdev, t->regs);
	pci_release_region(t->pdev, 0);
	pci_disable_device(t->pdev);
}

int ied_edu_test(struct ied *ie)
{
	struct pci_dev *pdev = NULL;
	int pass = 0, fail = 0, n = 0;

	while ((pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, pdev))) {
		struct edu_t t = { .ie = ie };

		n++;
		t.pdev = pdev;
		/*
		 * gpa/hpa: the bus address is the page's (guest- or
		 * host-physical), which edu must reach: run-demo.sh gives edu
		 * a 64-bit dma_mask there.
		 */
		t.gfp = GFP_KERNEL;
		if (!ied_dev_translated(ie, &pdev->dev)) {
			t_result(&t, false, "translated",
				 "edu does not use this module's DMA ops");
			fail++;
			continue;
		}
		if (t_edu_open(&t, pdev)) {
			t_result(&t, false, "open", "cannot enable edu");
			fail++;
			continue;
		}
		t_result(&t, true, "translated", "");
		pr_info("note %s requester %02x:%02x.%u\n", pci_name(pdev),
			t.rid >> 8, PCI_SLOT(t.rid & 0xff), PCI_FUNC(t.rid & 0xff));
		t_coherent(&t);
		t_streaming(&t);
		t_sg(&t);
		t_crossing(&t);
		t_sg_pin_limit(&t);
		t_unmapped(&t, true);
		t_unmapped(&t, false);
		t_edu_close(&t);
		pass += t.pass;
		fail += t.fail;
	}
	if (!n) {
		pr_err("FAIL no edu device\n");
		fail++;
	}
	pr_info("SUMMARY %d passed, %d failed\n", pass, fail);
	return fail ? -EIO : 0;
}
