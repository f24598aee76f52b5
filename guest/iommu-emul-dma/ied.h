/* SPDX-License-Identifier: GPL-2.0 */
/*
 * iommu_emul_dma: the DMA API of unmodified PCI drivers through iommu-emul.
 *
 * Register map and ring layouts from docs/specs/iommu-emul.rst (rev. 1) of
 * qemu-zc, and the driver's state. Everything the device reads or writes
 * is little-endian.
 */
#ifndef IED_H
#define IED_H

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/types.h>
#include <linux/xarray.h>

#define IE_PCI_VENDOR		0x1af4
#define IE_PCI_DEVICE		0x10f0

/* BAR 0 registers */
#define IE_REG_MAGIC		0x000
#define   IE_MAGIC		0x4d454f49	/* "IOEM" */
#define IE_REG_VERSION		0x004
#define   IE_VERSION_MAJOR(v)	((v) >> 16)
#define   IE_VERSION_MINOR(v)	((v) & 0xffff)
#define IE_REG_CAP		0x008
#define   IE_CAP_BUS_ADDR	GENMASK(1, 0)
#define   IE_CAP_PAGE_SHIFT	GENMASK(13, 8)
#define   IE_CAP_CMDQ_MAX_LOG2	GENMASK(19, 16)
#define   IE_CAP_FAULTQ_MAX_LOG2 GENMASK(23, 20)
#define   IE_CAP_MSIX		BIT(24)
#define IE_REG_LIMITS		0x00c
#define IE_REG_MAX_PINNED	0x010	/* 64-bit */
#define IE_REG_PINNED		0x018	/* 64-bit */
#define IE_REG_APERTURE_START	0x020	/* 64-bit */
#define IE_REG_APERTURE_END	0x028	/* 64-bit */
#define IE_REG_CTRL		0x030
#define   IE_CTRL_CMDQ_EN	BIT(0)
#define   IE_CTRL_FAULTQ_EN	BIT(1)
#define IE_REG_STATUS		0x034
#define   IE_STATUS_CMDQ_ON	BIT(0)
#define   IE_STATUS_FAULTQ_ON	BIT(1)
#define   IE_STATUS_CMDQ_ERR	BIT(2)
#define   IE_STATUS_FAULTQ_ERR	BIT(3)
#define IE_REG_CMDQ_ERROR	0x038
#define IE_REG_FAULTQ_ERROR	0x03c
#define IE_REG_CMDQ_BASE	0x040	/* 64-bit */
#define IE_REG_CMDQ_SIZE	0x048
#define IE_REG_CMDQ_HEAD	0x050
#define IE_REG_CMDQ_TAIL	0x054
#define IE_REG_FAULTQ_BASE	0x060	/* 64-bit */
#define IE_REG_FAULTQ_SIZE	0x068
#define IE_REG_FAULTQ_HEAD	0x070
#define IE_REG_FAULTQ_TAIL	0x074
#define IE_REG_FAULT_OVERFLOW	0x078

#define IE_BUS_ADDR_IOVA	0
#define IE_BUS_ADDR_GPA		1
#define IE_BUS_ADDR_HPA		2

#define IE_VEC_FAULT		0

#define IE_OP_SET_MODE		0x01
#define IE_OP_MAP		0x02
#define IE_OP_UNMAP		0x03
#define IE_OP_DETACH		0x04
#define IE_OP_SYNC		0x05
#define IE_OP_QUERY		0x06

#define IE_MODE_TRANSLATE	BIT(0)
#define IE_MAP_READ		BIT(0)
#define IE_MAP_WRITE		BIT(1)

#define IE_CMD_DONE		BIT(15)
#define IE_CMD_CODE		GENMASK(14, 0)

#define IE_ST_OK		0x00
#define IE_ST_BAD_OPCODE	0x01
#define IE_ST_BAD_ARG		0x02
#define IE_ST_NO_DEVICE		0x03
#define IE_ST_NO_RAM		0x04
#define IE_ST_NO_SPACE		0x05
#define IE_ST_PIN_LIMIT		0x06
#define IE_ST_NOT_FOUND		0x07
#define IE_ST_NOT_CONTIGUOUS	0x08
#define IE_ST_RING		0xffff	/* driver's: the ring failed */

#define IE_FAULT_ACCESS_WRITE	2
#define IE_FAULT_REASON_PERM	2

#define IE_MSI_START		0xfee00000ULL
#define IE_MSI_END		0xfeefffffULL

#define IE_PAGE_SIZE		4096UL
#define IE_PAGE_MASK		(~(IE_PAGE_SIZE - 1))

struct ie_cmd {
	__le16 opcode;
	__le16 flags;
	__le16 requester;
	__le16 status;
	__le32 reserved;
	__le32 out_flags;
	__le64 addr;
	__le64 length;
	__le64 dma_limit;
	__le64 out_addr;
	__le64 out_base;
	__le64 out_length;
};
static_assert(sizeof(struct ie_cmd) == 64);

struct ie_fault {
	__le16 requester;
	u8 access;
	u8 reason;
	__le32 count;
	__le64 address;
	__le64 sequence;
	__le64 reserved;
};
static_assert(sizeof(struct ie_fault) == 32);

/* A fault record in CPU byte order, kept for the self-test. */
struct ied_fault_rec {
	u16 requester;
	u8 access;
	u8 reason;
	u32 count;
	u64 address;
	u64 sequence;
};

#define IED_FAULT_LOG		16

/*
 * A requester ID's domain. Several functions behind one conventional
 * PCI bridge share it; it lives until the driver goes.
 */
struct ied_dom {
	u16 rid;
	unsigned int ndevs;	/* attached functions using this rid */
	char name[16];		/* first function's pci_name() */
	/* under ied.lock */
	unsigned long live;	/* mappings made through us, not unmapped */
	unsigned long maps, unmaps, map_errors;
	unsigned long faults;	/* under fault_lock */
};

/*
 * Lazy mode: what a page mapping (map_page) mapped, by bus address, so
 * that its queued UNMAP can be taken back by a MAP of the same range.
 */
struct ied_recent {
	u64 bus;		/* 0: empty (0 is never a bus address) */
	u64 base, len;		/* page-aligned guest-physical range */
	u16 rid, perm;
};

#define IED_RECENT_BITS		10

/* A function whose DMA ops we installed. */
struct ied_devref {
	struct list_head node;
	struct pci_dev *pdev;
	struct ied_dom *dom;
};

struct ied {
	struct pci_dev *pdev;
	void __iomem *regs;
	u32 cap;
	u32 mode;		/* CAP.BUS_ADDR */
	u32 limits;
	u64 ap_start, ap_end;
	bool msix;
	bool strict;
	bool passthrough;
	bool going;		/* unloading: refuse new mappings */

	/* Command ring, its pending entries and all accounting: lock. */
	spinlock_t lock;
	struct ie_cmd *cmdq;
	dma_addr_t cmdq_dma;
	u32 cmdq_size;		/* entries */
	u32 head, tail;		/* kicked up to head; written up to tail */
	struct ied_dom **slot_dom;	/* domain of an UNMAP in a slot */
	struct ied_recent *slot_map;	/* what a queued UNMAP unmaps (bus 0: unknown) */
	struct ied_recent *recent;	/* 1 << IED_RECENT_BITS, by bus address */
	unsigned long live;	/* all mappings: holds a module reference */
	struct timer_list flush_timer;
	bool timer_armed;
	/* counters */
	unsigned long kicks, head_reads, cmds, maps, unmaps, map_errors, syncs;
	unsigned long flush_timer_n, flush_full_n, flush_explicit_n;
	unsigned long ring_errors, lost_unmaps;
	unsigned long reuses;	/* MAPs served by taking back a queued UNMAP */

	/* Fault ring */
	spinlock_t fault_lock;
	struct ie_fault *faultq;
	dma_addr_t faultq_dma;
	u32 faultq_size;
	u32 faultq_head;
	unsigned long fault_records, fault_irqs;
	u64 last_seq;
	struct ied_fault_rec flog[IED_FAULT_LOG];
	unsigned int flog_n;	/* records ever logged (index mod size) */
	struct delayed_work poll_work;	/* no MSI-X: poll the fault ring */

	/* hpa mode: bounce pages by (rid, bus page) */
	struct xarray bounces;
	atomic_long_t bounced;

	/* Domains (by rid) and attached functions */
	struct mutex devs_lock;
	struct xarray doms;
	struct list_head devs;
	unsigned long attached, skipped;

	struct notifier_block nb;
	struct dentry *debugfs;
};

/* ied_main.c */
u16 ied_rid(struct pci_dev *pdev);
void ied_flush(struct ied *ie);
void ied_drain_faults(struct ied *ie);
unsigned int ied_fault_snapshot(struct ied *ie, struct ied_fault_rec *out,
				unsigned int max, unsigned int since);
bool ied_dev_translated(struct ied *ie, struct device *dev);
int ied_query(struct ied *ie, u16 rid, u64 addr, u64 *gpa);

/* ied_test.c */
int ied_edu_test(struct ied *ie);

#endif /* IED_H */
