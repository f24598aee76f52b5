// SPDX-License-Identifier: GPL-2.0
/*
 * iommu-emul guest driver: binds to the qemu-zc paravirtual IOMMU, runs its
 * command ring and its fault ring, and offers a self-test (selftest=1 or
 * debugfs) that drives QEMU's "edu" device through it.
 *
 * Written only from docs/specs/iommu-emul.rst (rev. 1). It does not plug
 * into the Linux IOMMU API: it is a clean PCI driver for the rings.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/ktime.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/seq_file.h>
#include <linux/bitfield.h>

#include "iommu_emul.h"

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "Run the edu DMA self-test at probe time");

/* Ring sizes we ask for, capped by CAP (log2 of the number of entries). */
static bool use_msix = true;
module_param(use_msix, bool, 0444);
MODULE_PARM_DESC(use_msix, "Use MSI-X when the device has it (0: poll)");

static unsigned int cmdq_log2 = 6;
module_param(cmdq_log2, uint, 0444);
MODULE_PARM_DESC(cmdq_log2, "log2 of the command ring entries (default 6)");
static unsigned int faultq_log2 = 6;
module_param(faultq_log2, uint, 0444);
MODULE_PARM_DESC(faultq_log2, "log2 of the fault ring entries (default 6)");

static struct dentry *ie_debugfs_root;

static const char * const ie_status_names[] = {
	[IE_ST_OK] = "OK",
	[IE_ST_BAD_OPCODE] = "BAD_OPCODE",
	[IE_ST_BAD_ARG] = "BAD_ARG",
	[IE_ST_NO_DEVICE] = "NO_DEVICE",
	[IE_ST_NO_RAM] = "NO_RAM",
	[IE_ST_NO_SPACE] = "NO_SPACE",
	[IE_ST_PIN_LIMIT] = "PIN_LIMIT",
	[IE_ST_NOT_FOUND] = "NOT_FOUND",
};

const char *ie_status_name(u16 code)
{
	if (code < ARRAY_SIZE(ie_status_names) && ie_status_names[code])
		return ie_status_names[code];
	return "unknown";
}

static const char *ie_ring_err_name(u32 err)
{
	switch (err) {
	case IE_RING_ERR_NONE:
		return "NONE";
	case IE_RING_ERR_BAD_SIZE:
		return "BAD_SIZE";
	case IE_RING_ERR_BAD_BASE:
		return "BAD_BASE";
	case IE_RING_ERR_BAD_INDEX:
		return "BAD_INDEX";
	case IE_RING_ERR_DMA:
		return "DMA";
	}
	return "unknown";
}

static u32 ie_read32(struct ie_dev *ie, unsigned int reg)
{
	return readl(ie->regs + reg);
}

static void ie_write32(struct ie_dev *ie, unsigned int reg, u32 val)
{
	writel(val, ie->regs + reg);
}

/* 64-bit registers: one 8-byte access, or low half then high half. */
static u64 ie_read64(struct ie_dev *ie, unsigned int reg)
{
	return lo_hi_readq(ie->regs + reg);
}

static void ie_write64(struct ie_dev *ie, unsigned int reg, u64 val)
{
	lo_hi_writeq(val, ie->regs + reg);
}

/* CTRL holds both rings' enable bits: updates are serialised by ctrl_lock. */
static void ie_write_ctrl_locked(struct ie_dev *ie, u32 ctrl)
{
	lockdep_assert_held(&ie->ctrl_lock);
	ie->ctrl = ctrl;
	ie_write32(ie, IE_REG_CTRL, ctrl);
}

/*
 * Turn one ring off and on again after an error: the error is cleared while
 * the ring is off, so nothing is re-executed behind our back, and enabling
 * sets head and tail to 0.
 */
static int ie_restart_ring(struct ie_dev *ie, u32 en_bit, u32 err_reg,
			   u32 on_bit)
{
	unsigned long flags;
	u32 status;

	spin_lock_irqsave(&ie->ctrl_lock, flags);
	ie_write_ctrl_locked(ie, ie->ctrl & ~en_bit);
	ie_write32(ie, err_reg, 0);
	ie_write_ctrl_locked(ie, ie->ctrl | en_bit);
	status = ie_read32(ie, IE_REG_STATUS);
	spin_unlock_irqrestore(&ie->ctrl_lock, flags);
	if (!(status & on_bit)) {
		dev_err(&ie->pdev->dev, "ring did not restart (error %s)\n",
			ie_ring_err_name(ie_read32(ie, err_reg)));
		return -EIO;
	}
	return 0;
}

/* Restart a stopped command ring; called with cmd_lock held. */
static int ie_recover_cmdq(struct ie_dev *ie)
{
	lockdep_assert_held(&ie->cmd_lock);
	ie->cmd_errors++;
	ie->cmdq_tail = 0;
	return ie_restart_ring(ie, IE_CTRL_CMDQ_EN, IE_REG_CMDQ_ERROR,
			       IE_STATUS_CMDQ_ON);
}

/*
 * Self-test hook for the error path: write an out-of-range CMDQ_TAIL, which
 * the device must refuse with BAD_INDEX and a stopped ring, report what the
 * device showed, and recover as ie_exec() does.
 */
int ie_test_cmdq_error(struct ie_dev *ie, u32 *status, u32 *error)
{
	int ret;

	mutex_lock(&ie->cmd_lock);
	ie_write32(ie, IE_REG_CMDQ_TAIL, 1U << ie->cmdq_log2);
	*status = ie_read32(ie, IE_REG_STATUS);
	*error = ie_read32(ie, IE_REG_CMDQ_ERROR);
	ret = ie_recover_cmdq(ie);
	mutex_unlock(&ie->cmd_lock);
	return ret;
}

/*
 * Self-test hook: turn the fault ring off, or restart it with 2^@log2
 * entries (at most what was allocated). Records still in the ring are
 * dropped; the caller drains first.
 */
int ie_test_faultq_set(struct ie_dev *ie, bool on, u32 log2)
{
	unsigned long flags;
	u32 status;
	int ret = 0;

	if (log2 < 1 || log2 > ie->faultq_alloc_log2)
		return -EINVAL;
	spin_lock_irqsave(&ie->fault_lock, flags);
	spin_lock(&ie->ctrl_lock);
	ie_write_ctrl_locked(ie, ie->ctrl & ~IE_CTRL_FAULTQ_EN);
	if (on) {
		ie_write32(ie, IE_REG_FAULTQ_SIZE, log2);
		ie_write_ctrl_locked(ie, ie->ctrl | IE_CTRL_FAULTQ_EN);
	}
	status = ie_read32(ie, IE_REG_STATUS);
	spin_unlock(&ie->ctrl_lock);
	ie->faultq_log2 = log2;
	ie->faultq_head = 0;
	if (!!(status & IE_STATUS_FAULTQ_ON) != on)
		ret = -EIO;
	spin_unlock_irqrestore(&ie->fault_lock, flags);
	return ret;
}

/* Longest wait for a command the device executes in steps */
#define IE_CMD_TIMEOUT_MS 10000

/*
 * Execute one command and wait for its completion.
 *
 * Returns a negative errno when the ring itself failed (the command may or
 * may not have taken effect), otherwise 0 with req->status holding the
 * device's status code and the out_* fields its results.
 */
int ie_exec(struct ie_dev *ie, struct ie_req *req)
{
	u32 mask = (1U << ie->cmdq_log2) - 1;
	struct ie_cmd *slot;
	u32 tail, next, head, err;
	ktime_t deadline;
	u16 status;
	int ret = 0;

	mutex_lock(&ie->cmd_lock);
	if (!(ie->ctrl & IE_CTRL_CMDQ_EN)) {
		ret = -ENODEV;
		goto out;
	}

	/*
	 * Only one command is ever outstanding and every submission waits for
	 * HEAD to reach TAIL, so the ring can never be full here.
	 */
	tail = ie->cmdq_tail;
	next = (tail + 1) & mask;
	slot = &ie->cmdq[tail];
	memset(slot, 0, sizeof(*slot));		/* clears status too */
	slot->opcode = cpu_to_le16(req->opcode);
	slot->flags = cpu_to_le16(req->flags);
	slot->requester = cpu_to_le16(req->requester);
	slot->addr = cpu_to_le64(req->addr);
	slot->length = cpu_to_le64(req->length);
	slot->dma_limit = cpu_to_le64(req->dma_limit);

	/*
	 * writel() orders the stores to the coherent ring entry before the
	 * doorbell reaches the device.
	 */
	ie_write32(ie, IE_REG_CMDQ_TAIL, next);
	ie->cmdq_tail = next;

	/*
	 * The device executes up to TAIL before the TAIL write completes;
	 * reading HEAD flushes the posted write, and readl() orders it before
	 * our loads of the completion below.
	 */
	head = ie_read32(ie, IE_REG_CMDQ_HEAD);
	/*
	 * A command over the execution budget (a DETACH of many large
	 * mappings) may still be running: CMDQ_HEAD != TAIL with CMDQ_ERROR
	 * 0. Each HEAD read executes the next step, so poll it, bounded.
	 */
	deadline = ktime_add_ms(ktime_get(), IE_CMD_TIMEOUT_MS);
	err = 0;
	while (head != next) {
		err = ie_read32(ie, IE_REG_CMDQ_ERROR);
		if (err || ktime_after(ktime_get(), deadline))
			break;
		cond_resched();
		head = ie_read32(ie, IE_REG_CMDQ_HEAD);
	}
	if (head != next) {
		dev_err(&ie->pdev->dev,
			"command ring stopped: head %u tail %u error %s (%u)\n",
			head, next, ie_ring_err_name(err), err);
		/*
		 * A DMA error on the completion write advances HEAD (the
		 * command took effect, its results are lost); otherwise the
		 * command did not run. Either way the caller gets -EIO and
		 * we restart the ring from index 0.
		 */
		ie_recover_cmdq(ie);
		ret = -EIO;
		goto out;
	}

	status = le16_to_cpu(READ_ONCE(slot->status));
	if (!(status & IE_CMD_DONE)) {
		/* HEAD moved past the entry but no completion: broken device */
		dev_err(&ie->pdev->dev, "command %u completed without DONE\n",
			req->opcode);
		ret = -EIO;
		goto out;
	}
	req->status = status & IE_CMD_CODE;
	req->out_flags = le32_to_cpu(slot->out_flags);
	req->out_addr = le64_to_cpu(slot->out_addr);
	req->out_base = le64_to_cpu(slot->out_base);
	req->out_length = le64_to_cpu(slot->out_length);
out:
	mutex_unlock(&ie->cmd_lock);
	return ret;
}

static void ie_log_fault(struct ie_dev *ie, const struct ie_fault *f)
{
	struct ie_fault_rec *rec;
	unsigned int idx;

	if (ie->log_count == IE_FAULT_LOG) {
		/* keep the newest records */
		ie->log_first = (ie->log_first + 1) % IE_FAULT_LOG;
		ie->log_count--;
		ie->fault_log_dropped++;
	}
	idx = (ie->log_first + ie->log_count) % IE_FAULT_LOG;
	rec = &ie->log[idx];
	rec->requester = le16_to_cpu(f->requester);
	rec->access = f->access;
	rec->reason = f->reason;
	rec->count = le32_to_cpu(f->count);
	rec->address = le64_to_cpu(f->address);
	rec->sequence = le64_to_cpu(f->sequence);
	rec->reserved = le64_to_cpu(f->reserved);
	ie->log_count++;

	/*
	 * Sequence numbers count from the device's reset, not from our
	 * probe (a reloaded driver finds them running): the first record we
	 * see sets the baseline.
	 */
	if (ie->fault_records && rec->sequence != ie->last_sequence + 1)
		ie->seq_gaps += rec->sequence > ie->last_sequence ?
				rec->sequence - ie->last_sequence - 1 : 1;
	ie->last_sequence = rec->sequence;
	ie->fault_records++;

	dev_info_ratelimited(&ie->pdev->dev,
			     "fault: requester %02x:%02x.%u %s %s at %#llx (count %u, seq %llu)\n",
			     rec->requester >> 8, PCI_SLOT(rec->requester & 0xff),
			     PCI_FUNC(rec->requester & 0xff),
			     rec->access == IE_FAULT_ACCESS_WRITE ? "write" : "read",
			     rec->reason == IE_FAULT_REASON_PERM ?
			     "permission" : "not-mapped",
			     rec->address, rec->count, rec->sequence);
}

/*
 * Consume every record between FAULTQ_HEAD and FAULTQ_TAIL. Called from the
 * vector 0 handler, and by polling users (no MSI-X, or to force delivery:
 * reading FAULTQ_TAIL first delivers pending records).
 */
void ie_drain_faults(struct ie_dev *ie)
{
	unsigned long flags;
	u32 status, tail, head, mask;

	spin_lock_irqsave(&ie->fault_lock, flags);
	if (!(ie->ctrl & IE_CTRL_FAULTQ_EN))
		goto out;
	mask = (1U << ie->faultq_log2) - 1;

	status = ie_read32(ie, IE_REG_STATUS);
	if (status & IE_STATUS_FAULTQ_ERR) {
		dev_err_ratelimited(&ie->pdev->dev, "fault ring error %s\n",
				    ie_ring_err_name(ie_read32(ie,
							IE_REG_FAULTQ_ERROR)));
		/* Records in the ring are lost with the restart. */
		ie_restart_ring(ie, IE_CTRL_FAULTQ_EN, IE_REG_FAULTQ_ERROR,
				IE_STATUS_FAULTQ_ON);
		ie->faultq_head = 0;
		goto out;
	}

	/* readl() orders the TAIL read before the loads of the records. */
	tail = ie_read32(ie, IE_REG_FAULTQ_TAIL);
	if (tail > mask) {
		dev_err_ratelimited(&ie->pdev->dev,
				    "FAULTQ_TAIL %u out of range\n", tail);
		goto out;
	}
	head = ie->faultq_head;
	if (head == tail)
		goto out;
	while (head != tail) {
		ie_log_fault(ie, &ie->faultq[head]);
		head = (head + 1) & mask;
	}
	ie->faultq_head = head;
	/*
	 * Our loads of the records must be done before the device may reuse
	 * their slots; writel() only orders earlier stores, so use a full
	 * barrier.
	 */
	mb();
	ie_write32(ie, IE_REG_FAULTQ_HEAD, head);
	wake_up(&ie->fault_wq);
out:
	spin_unlock_irqrestore(&ie->fault_lock, flags);
}

bool ie_fault_pop(struct ie_dev *ie, struct ie_fault_rec *rec)
{
	unsigned long flags;
	bool found = false;

	spin_lock_irqsave(&ie->fault_lock, flags);
	if (ie->log_count) {
		*rec = ie->log[ie->log_first];
		ie->log_first = (ie->log_first + 1) % IE_FAULT_LOG;
		ie->log_count--;
		found = true;
	}
	spin_unlock_irqrestore(&ie->fault_lock, flags);
	return found;
}

static irqreturn_t ie_fault_irq(int irq, void *data)
{
	struct ie_dev *ie = data;

	WRITE_ONCE(ie->fault_irqs, ie->fault_irqs + 1);
	ie_drain_faults(ie);
	return IRQ_HANDLED;
}

static irqreturn_t ie_sync_irq(int irq, void *data)
{
	struct ie_dev *ie = data;

	WRITE_ONCE(ie->sync_irqs, ie->sync_irqs + 1);
	complete(&ie->sync_done);
	return IRQ_HANDLED;
}

static int ie_setup_irqs(struct ie_dev *ie)
{
	struct pci_dev *pdev = ie->pdev;
	int ret;

	if (!use_msix || !(ie->cap & IE_CAP_MSIX)) {
		dev_warn(&pdev->dev, "%s: faults are polled\n",
			 use_msix ? "no MSI-X" : "use_msix=0");
		return 0;
	}
	ret = pci_alloc_irq_vectors(pdev, IE_NR_VECTORS, IE_NR_VECTORS,
				    PCI_IRQ_MSIX);
	if (ret < 0) {
		dev_warn(&pdev->dev, "MSI-X setup failed (%d): faults are polled\n",
			 ret);
		return 0;
	}
	ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, IE_VEC_FAULT),
			       ie_fault_irq, 0, "iommu-emul-fault", ie);
	if (ret)
		return ret;
	ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, IE_VEC_SYNC),
			       ie_sync_irq, 0, "iommu-emul-sync", ie);
	if (ret)
		return ret;
	ie->msix = true;
	return 0;
}

/* devm action: stop both rings before their memory is freed. */
static void ie_stop_rings(void *data)
{
	struct ie_dev *ie = data;

	mutex_lock(&ie->cmd_lock);
	spin_lock_irq(&ie->fault_lock);
	spin_lock(&ie->ctrl_lock);
	ie_write_ctrl_locked(ie, 0);
	/* flush the posted write before the rings' memory goes away */
	ie_read32(ie, IE_REG_STATUS);
	spin_unlock(&ie->ctrl_lock);
	spin_unlock_irq(&ie->fault_lock);
	mutex_unlock(&ie->cmd_lock);
}

static int ie_setup_rings(struct ie_dev *ie)
{
	struct device *dev = &ie->pdev->dev;
	u32 cmax = FIELD_GET(IE_CAP_CMDQ_MAX_LOG2, ie->cap);
	u32 fmax = FIELD_GET(IE_CAP_FAULTQ_MAX_LOG2, ie->cap);
	u32 status;
	int ret;

	if (!cmax || !fmax) {
		dev_err(dev, "CAP allows no ring (cmdq %u, faultq %u)\n",
			cmax, fmax);
		return -ENODEV;
	}
	ie->cmdq_log2 = clamp(cmdq_log2, 1U, cmax);
	ie->faultq_log2 = clamp(faultq_log2, 1U, fmax);
	ie->faultq_alloc_log2 = ie->faultq_log2;

	/* Coherent memory is page-aligned: aligned to both entry sizes. */
	ie->cmdq = dmam_alloc_coherent(dev, sizeof(struct ie_cmd) <<
				       ie->cmdq_log2, &ie->cmdq_dma,
				       GFP_KERNEL);
	ie->faultq = dmam_alloc_coherent(dev, sizeof(struct ie_fault) <<
					 ie->faultq_log2, &ie->faultq_dma,
					 GFP_KERNEL);
	if (!ie->cmdq || !ie->faultq)
		return -ENOMEM;

	ie_write64(ie, IE_REG_CMDQ_BASE, ie->cmdq_dma);
	ie_write32(ie, IE_REG_CMDQ_SIZE, ie->cmdq_log2);
	ie_write64(ie, IE_REG_FAULTQ_BASE, ie->faultq_dma);
	ie_write32(ie, IE_REG_FAULTQ_SIZE, ie->faultq_log2);
	ie->cmdq_tail = 0;
	ie->faultq_head = 0;

	ret = devm_add_action_or_reset(dev, ie_stop_rings, ie);
	if (ret)
		return ret;
	spin_lock_irq(&ie->ctrl_lock);
	ie_write_ctrl_locked(ie, IE_CTRL_CMDQ_EN | IE_CTRL_FAULTQ_EN);
	spin_unlock_irq(&ie->ctrl_lock);

	status = ie_read32(ie, IE_REG_STATUS);
	if ((status & (IE_STATUS_CMDQ_ON | IE_STATUS_FAULTQ_ON)) !=
	    (IE_STATUS_CMDQ_ON | IE_STATUS_FAULTQ_ON)) {
		dev_err(dev, "rings did not start: STATUS %#x, CMDQ_ERROR %s, FAULTQ_ERROR %s\n",
			status,
			ie_ring_err_name(ie_read32(ie, IE_REG_CMDQ_ERROR)),
			ie_ring_err_name(ie_read32(ie, IE_REG_FAULTQ_ERROR)));
		return -EIO;
	}
	return 0;
}

static int ie_status_show(struct seq_file *s, void *unused)
{
	struct ie_dev *ie = s->private;

	seq_printf(s, "cap: %#x\nstatus: %#x\nbus-addr: %lu\n", ie->cap,
		   ie_read32(ie, IE_REG_STATUS),
		   FIELD_GET(IE_CAP_BUS_ADDR, ie->cap));
	seq_printf(s, "aperture: %#llx-%#llx\nlimits: %u\n",
		   ie->aperture_start, ie->aperture_end, ie->limits);
	seq_printf(s, "pinned: %llu of %llu\n", ie_read64(ie, IE_REG_PINNED),
		   ie_read64(ie, IE_REG_MAX_PINNED));
	seq_printf(s, "cmdq: %u entries, errors %lu\n", 1U << ie->cmdq_log2,
		   ie->cmd_errors);
	seq_printf(s, "faultq: %u entries, records %lu, irqs %lu, overflow %u, sequence gaps %lu\n",
		   1U << ie->faultq_log2, ie->fault_records,
		   READ_ONCE(ie->fault_irqs),
		   ie_read32(ie, IE_REG_FAULT_OVERFLOW), ie->seq_gaps);
	seq_printf(s, "sync irqs: %lu\nmsix: %s\n", READ_ONCE(ie->sync_irqs),
		   ie->msix ? "yes" : "no");
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ie_status);

static ssize_t ie_selftest_write(struct file *file, const char __user *buf,
				 size_t count, loff_t *ppos)
{
	struct ie_dev *ie = file->private_data;
	int ret;

	ret = ie_selftest(ie);
	return ret ? ret : count;
}

static const struct file_operations ie_selftest_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ie_selftest_write,
	.llseek = noop_llseek,
};

static int ie_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct ie_dev *ie;
	u32 magic, version;
	int ret;

	ie = devm_kzalloc(dev, sizeof(*ie), GFP_KERNEL);
	if (!ie)
		return -ENOMEM;
	ie->pdev = pdev;
	mutex_init(&ie->cmd_lock);
	spin_lock_init(&ie->fault_lock);
	spin_lock_init(&ie->ctrl_lock);
	init_waitqueue_head(&ie->fault_wq);
	init_completion(&ie->sync_done);
	pci_set_drvdata(pdev, ie);

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = pcim_iomap_regions(pdev, BIT(0), KBUILD_MODNAME);
	if (ret)
		return ret;
	ie->regs = pcim_iomap_table(pdev)[0];

	magic = ie_read32(ie, IE_REG_MAGIC);
	version = ie_read32(ie, IE_REG_VERSION);
	if (magic != IE_MAGIC || IE_VERSION_MAJOR(version) != 1) {
		dev_err(dev, "unsupported device: magic %#x version %#x\n",
			magic, version);
		return -ENODEV;
	}
	ie->cap = ie_read32(ie, IE_REG_CAP);
	if (FIELD_GET(IE_CAP_PAGE_SHIFT, ie->cap) != 12) {
		dev_err(dev, "unsupported page shift %lu\n",
			FIELD_GET(IE_CAP_PAGE_SHIFT, ie->cap));
		return -ENODEV;
	}
	ie->limits = ie_read32(ie, IE_REG_LIMITS);
	ie->aperture_start = ie_read64(ie, IE_REG_APERTURE_START);
	ie->aperture_end = ie_read64(ie, IE_REG_APERTURE_END);

	/* The device's own ring DMA is never translated. */
	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	pci_set_master(pdev);

	ret = ie_setup_irqs(ie);
	if (ret)
		return ret;
	ret = ie_setup_rings(ie);
	if (ret)
		return ret;

	dev_info(dev, "iommu-emul %u.%u, bus-addr %lu, aperture %#llx-%#llx, %u cmd / %u fault entries, %s\n",
		 IE_VERSION_MAJOR(version), IE_VERSION_MINOR(version),
		 FIELD_GET(IE_CAP_BUS_ADDR, ie->cap), ie->aperture_start,
		 ie->aperture_end, 1U << ie->cmdq_log2, 1U << ie->faultq_log2,
		 ie->msix ? "MSI-X" : "polled");

	ie->debugfs = debugfs_create_dir(pci_name(pdev), ie_debugfs_root);
	debugfs_create_file("status", 0444, ie->debugfs, ie, &ie_status_fops);
	debugfs_create_file("selftest", 0200, ie->debugfs, ie,
			    &ie_selftest_fops);

	if (selftest)
		ie_selftest(ie);
	return 0;
}

static void ie_remove(struct pci_dev *pdev)
{
	struct ie_dev *ie = pci_get_drvdata(pdev);

	debugfs_remove_recursive(ie->debugfs);
	/* rings stop in ie_stop_rings(), IRQs and memory go with devres */
}

static const struct pci_device_id ie_ids[] = {
	{ PCI_DEVICE(IE_PCI_VENDOR, IE_PCI_DEVICE) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ie_ids);

static struct pci_driver ie_driver = {
	.name = "iommu-emul",
	.id_table = ie_ids,
	.probe = ie_probe,
	.remove = ie_remove,
};

static int __init ie_init(void)
{
	int ret;

	ie_debugfs_root = debugfs_create_dir("iommu-emul", NULL);
	ret = pci_register_driver(&ie_driver);
	if (ret)
		debugfs_remove_recursive(ie_debugfs_root);
	return ret;
}

static void __exit ie_exit(void)
{
	pci_unregister_driver(&ie_driver);
	debugfs_remove_recursive(ie_debugfs_root);
}

module_init(ie_init);
module_exit(ie_exit);

MODULE_DESCRIPTION("qemu-zc iommu-emul paravirtual IOMMU: rings and self-test");
MODULE_LICENSE("GPL");
