/* SPDX-License-Identifier: GPL-2.0 */
/*
 * iommu-emul guest driver: register map, ring layouts and driver state.
 *
 * Written only from docs/specs/iommu-emul.rst (rev. 1) of qemu-zc: every
 * name below is the spec's. Everything the device reads or writes is
 * little-endian.
 */
#ifndef IOMMU_EMUL_H
#define IOMMU_EMUL_H

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/completion.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>

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

/* CAP.BUS_ADDR */
#define IE_BUS_ADDR_IOVA	0
#define IE_BUS_ADDR_GPA		1
#define IE_BUS_ADDR_HPA		2

/* CMDQ_ERROR / FAULTQ_ERROR */
#define IE_RING_ERR_NONE	0
#define IE_RING_ERR_BAD_SIZE	1
#define IE_RING_ERR_BAD_BASE	2
#define IE_RING_ERR_BAD_INDEX	3
#define IE_RING_ERR_DMA		4

/* MSI-X vectors */
#define IE_VEC_FAULT		0
#define IE_VEC_SYNC		1
#define IE_NR_VECTORS		2

/* Command opcodes */
#define IE_OP_SET_MODE		0x01
#define IE_OP_MAP		0x02
#define IE_OP_UNMAP		0x03
#define IE_OP_DETACH		0x04
#define IE_OP_SYNC		0x05
#define IE_OP_QUERY		0x06

/* Command flags */
#define IE_MODE_TRANSLATE	BIT(0)	/* SET_MODE */
#define IE_MAP_READ		BIT(0)	/* MAP; also QUERY out_flags */
#define IE_MAP_WRITE		BIT(1)
#define IE_SYNC_IRQ		BIT(0)	/* SYNC */
#define IE_QUERY_TRANSLATES	BIT(8)	/* QUERY out_flags */

/* Command status: DONE | code */
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

/* Fault record fields */
#define IE_FAULT_ACCESS_READ	1
#define IE_FAULT_ACCESS_WRITE	2
#define IE_FAULT_REASON_UNMAPPED 1
#define IE_FAULT_REASON_PERM	2

/* The MSI window is never translated and never handed out. */
#define IE_MSI_WINDOW_START	0xfee00000ULL
#define IE_MSI_WINDOW_END	0xfeefffffULL

#define IE_PAGE_SIZE		4096UL

/* Command ring entry, 64 bytes */
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

/* Fault ring record, 32 bytes */
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

/* A command in CPU byte order, as the driver's callers see it. */
struct ie_req {
	u16 opcode;
	u16 flags;
	u16 requester;
	u64 addr;
	u64 length;
	u64 dma_limit;
	/* results */
	u16 status;		/* status code, without DONE */
	u32 out_flags;
	u64 out_addr;
	u64 out_base;
	u64 out_length;
};

/* A fault record in CPU byte order. */
struct ie_fault_rec {
	u16 requester;
	u8 access;
	u8 reason;
	u32 count;
	u64 address;
	u64 sequence;
	u64 reserved;
};

#define IE_FAULT_LOG		64	/* records kept for consumers */

struct ie_dev {
	struct pci_dev *pdev;
	void __iomem *regs;
	u32 cap;
	u32 limits;
	u64 aperture_start;
	u64 aperture_end;
	spinlock_t ctrl_lock;		/* CTRL and ring restarts */
	u32 ctrl;			/* last value written to CTRL */
	bool msix;

	/* Command ring: one command in flight, serialised by cmd_lock. */
	struct mutex cmd_lock;
	struct ie_cmd *cmdq;
	dma_addr_t cmdq_dma;
	u32 cmdq_log2;
	u32 cmdq_tail;			/* our copy of CMDQ_TAIL */
	unsigned long cmd_errors;	/* ring errors seen */

	/* Fault ring: drained by the vector 0 handler (or by polling). */
	spinlock_t fault_lock;
	struct ie_fault *faultq;
	dma_addr_t faultq_dma;
	u32 faultq_log2;
	u32 faultq_alloc_log2;		/* entries allocated */
	u32 faultq_head;		/* our copy of FAULTQ_HEAD */
	u64 last_sequence;
	unsigned long seq_gaps;		/* records we know were lost */
	unsigned long fault_records;	/* records read from the ring */
	unsigned long fault_irqs;
	unsigned long fault_log_dropped;
	struct ie_fault_rec log[IE_FAULT_LOG];
	unsigned int log_first, log_count;
	wait_queue_head_t fault_wq;

	/* SYNC with IRQ */
	struct completion sync_done;
	unsigned long sync_irqs;

	struct dentry *debugfs;
};

int ie_exec(struct ie_dev *ie, struct ie_req *req);
void ie_drain_faults(struct ie_dev *ie);
bool ie_fault_pop(struct ie_dev *ie, struct ie_fault_rec *rec);
const char *ie_status_name(u16 code);
int ie_test_cmdq_error(struct ie_dev *ie, u32 *status, u32 *error);
int ie_test_faultq_set(struct ie_dev *ie, bool on, u32 log2);
int ie_selftest(struct ie_dev *ie);

#endif /* IOMMU_EMUL_H */
