/*
 * QTest testcase for iommu-emul
 *
 * Drives the device through its register BAR and command ring as a guest
 * driver would (docs/specs/iommu-emul.rst), with the edu device as the DMA
 * master behind it, on pc and q35.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "libqos/iommu-emul.h"
#include "libqos/qemu-zc-migrate.h"
#include "libqos/malloc-pc.h"
#include "libqos/virtio.h"
#include "libqos/virtio-pci.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_balloon.h"
#include "standard-headers/linux/virtio_mem.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define IOMMU_DEVFN     QPCI_DEVFN(4, 0)
#define EDU_DEVFN       QPCI_DEVFN(5, 0)
#define EDU_RID         EDU_DEVFN           /* bus 0 */

/* Guest memory used by the tests; no guest code runs under qtest */
#define CMDQ_GPA        0x200000ULL
#define CMDQ_LOG2       4
#define FAULTQ_GPA      0x210000ULL
#define FAULTQ_LOG2     3
#define DATA_GPA        0x300000ULL         /* a few pages of test data */
#define PAGE            0x1000ULL
#define BIG_GPA         0x1000000ULL        /* 16 MiB ... */
#define BIG_LEN         0xe000000ULL        /* ... to 240 MiB */

/* edu registers (hw/misc/edu.c) */
#define EDU_DMA_SRC     0x80
#define EDU_DMA_DST     0x88
#define EDU_DMA_CNT     0x90
#define EDU_DMA_CMD     0x98
#define EDU_BUF         0x40000
#define EDU_DMA_MASK    0x0fffffffULL       /* edu's default dma_mask */

typedef struct Fixture {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *iommu;
    QPCIDevice *edu;
    QPCIBar regs;
    QPCIBar edu_bar;
    QIOMMUEmulRing ring;
} Fixture;

typedef QIOMMUEmulCmdOut CmdOut;

static uint32_t rd32(Fixture *f, uint32_t reg)
{
    return qpci_io_readl(f->iommu, f->regs, reg);
}

static uint64_t rd64(Fixture *f, uint32_t reg)
{
    return qpci_io_readq(f->iommu, f->regs, reg);
}

static void wr32(Fixture *f, uint32_t reg, uint32_t val)
{
    qpci_io_writel(f->iommu, f->regs, reg, val);
}

static void wr64(Fixture *f, uint32_t reg, uint64_t val)
{
    qpci_io_writeq(f->iommu, f->regs, reg, val);
}

static uint64_t qom_u64(Fixture *f, const char *name)
{
    QDict *resp;
    uint64_t v;

    resp = qtest_qmp(f->qts, "{'execute': 'qom-get', 'arguments':"
                     " {'path': '/machine/peripheral/iommu0',"
                     "  'property': %s}}", name);
    g_assert(qdict_haskey(resp, "return"));
    v = qdict_get_int(resp, "return");
    qobject_unref(resp);
    return v;
}

static void fill(Fixture *f, uint64_t gpa, uint8_t byte, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);

    memset(buf, byte, len);
    qtest_memwrite(f->qts, gpa, buf, len);
}

/* True if all @len bytes at @gpa equal @byte */
static bool all_eq(Fixture *f, uint64_t gpa, uint8_t byte, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);
    size_t i;

    qtest_memread(f->qts, gpa, buf, len);
    for (i = 0; i < len; i++) {
        if (buf[i] != byte) {
            return false;
        }
    }
    return true;
}

static void rings_on(Fixture *f)
{
    wr64(f, A_FAULTQ_BASE, FAULTQ_GPA);
    wr32(f, A_FAULTQ_SIZE, FAULTQ_LOG2);
    qiommu_emul_cmdq_start(&f->ring, f->iommu, f->regs, CMDQ_GPA, CMDQ_LOG2,
                           R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmphex(rd32(f, A_STATUS), ==,
                    R_STATUS_CMDQ_ON_MASK | R_STATUS_FAULTQ_ON_MASK);
}

/* @props, @edu_props: extra properties of iommu-emul and edu (and more) */
static Fixture *fx_new(const char *machine, const char *props,
                       const char *edu_props)
{
    Fixture *f = g_new0(Fixture, 1);

    f->qts = qtest_initf("-machine %s -m 256M -device iommu-emul,id=iommu0,"
                         "addr=04.0%s -device edu,addr=05.0%s", machine,
                         props ? props : "", edu_props ? edu_props : "");
    f->bus = qpci_new_pc(f->qts, NULL);
    f->iommu = qpci_device_find(f->bus, IOMMU_DEVFN);
    f->edu = qpci_device_find(f->bus, EDU_DEVFN);
    g_assert_nonnull(f->iommu);
    g_assert_nonnull(f->edu);
    qpci_device_enable(f->iommu);
    qpci_device_enable(f->edu);
    f->regs = qpci_iomap(f->iommu, IOMMU_EMUL_REGS_BAR, NULL);
    f->edu_bar = qpci_iomap(f->edu, 0, NULL);
    return f;
}

static Fixture *fx_start(const char *machine, const char *props)
{
    Fixture *f = fx_new(machine, props, NULL);

    rings_on(f);
    return f;
}

static void fx_free(Fixture *f)
{
    g_free(f->iommu);
    g_free(f->edu);
    qpci_free_pc(f->bus);
    qtest_quit(f->qts);
    g_free(f);
}

/* Submit one command; returns its status code (DONE bit checked) */
static uint16_t cmd(Fixture *f, uint16_t op, uint16_t flags, uint16_t rid,
                    uint64_t addr, uint64_t len, uint64_t limit, CmdOut *out)
{
    QIOMMUEmulCmd c = {
        .opcode = op, .flags = flags, .requester = rid,
        .addr = addr, .length = len, .dma_limit = limit,
    };

    return qiommu_emul_cmd(&f->ring, &c, out);
}

static uint64_t map(Fixture *f, uint64_t gpa, uint64_t len, uint16_t perm)
{
    CmdOut out;

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, perm, EDU_RID, gpa, len,
                        EDU_DMA_MASK, &out), ==, IOMMU_EMUL_ST_OK);
    return out.addr;
}

static void unmap(Fixture *f, uint64_t bus, uint64_t len)
{
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, len, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
}

static void translate_on(Fixture *f)
{
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SET_MODE, IOMMU_EMUL_MODE_TRANSLATE,
                        EDU_RID, 0, 0, 0, NULL), ==, IOMMU_EMUL_ST_OK);
}

/* edu DMA of @cnt bytes between bus address @bus and its buffer */
static void edu_dma(Fixture *f, uint64_t bus, uint32_t cnt, bool to_ram)
{
    qpci_io_writeq(f->edu, f->edu_bar, EDU_DMA_SRC, to_ram ? EDU_BUF : bus);
    qpci_io_writeq(f->edu, f->edu_bar, EDU_DMA_DST, to_ram ? bus : EDU_BUF);
    qpci_io_writeq(f->edu, f->edu_bar, EDU_DMA_CNT, cnt);
    qpci_io_writeq(f->edu, f->edu_bar, EDU_DMA_CMD, to_ram ? 3 : 1);
    qtest_clock_step(f->qts, 200 * 1000 * 1000);
    g_assert_cmphex(qpci_io_readq(f->edu, f->edu_bar, EDU_DMA_CMD) & 1, ==, 0);
}

/* Fill edu's buffer with @byte, using a bypass-free path: RAM -> edu */
static void edu_load(Fixture *f, uint64_t bus, uint8_t byte, uint64_t gpa)
{
    fill(f, gpa, byte, PAGE);
    edu_dma(f, bus, PAGE, false);
}

typedef struct Fault {
    uint16_t requester;
    uint8_t access;
    uint8_t reason;
    uint32_t count;
    uint64_t addr;
    uint64_t seq;
} Fault;

static Fault fault_at(Fixture *f, uint32_t idx)
{
    uint8_t r[IOMMU_EMUL_FAULT_SIZE];
    Fault x;

    qtest_memread(f->qts, FAULTQ_GPA + idx * IOMMU_EMUL_FAULT_SIZE, r,
                  sizeof(r));
    x.requester = lduw_le_p(r + IOMMU_EMUL_FAULT_REQUESTER);
    x.access = r[IOMMU_EMUL_FAULT_ACCESS];
    x.reason = r[IOMMU_EMUL_FAULT_REASON];
    x.count = ldl_le_p(r + IOMMU_EMUL_FAULT_COUNT);
    x.addr = ldq_le_p(r + IOMMU_EMUL_FAULT_ADDR);
    x.seq = ldq_le_p(r + IOMMU_EMUL_FAULT_SEQ);
    return x;
}

/* Field @key ("Locked:", "VmRSS:", ...) of /proc/PID/@file of QEMU, in kB */
static uint64_t proc_kb(Fixture *f, const char *file, const char *key)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/%s",
                                            (int)qtest_pid(f->qts), file);
    g_autofree char *nkey = g_strconcat("\n", key, NULL);
    g_autofree char *text = NULL;
    char *p;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    p = strstr(text, nkey);
    g_assert_nonnull(p);
    return g_ascii_strtoull(p + strlen(nkey), NULL, 10);
}

/* Total "Locked:" of the QEMU process, in kB */
static uint64_t locked_kb(Fixture *f)
{
    return proc_kb(f, "smaps_rollup", "Locked:");
}

/*
 * Skip a test that needs what only a privileged run has (root's
 * capabilities, io_uring, util-linux). With QEMU_ZC_TEST_PRIVILEGED set
 * in the environment (for CI, which runs as root) the test fails
 * instead, so that such a run cannot skip it unnoticed.
 */
static void skip_unprivileged(const char *why)
{
    if (getenv("QEMU_ZC_TEST_PRIVILEGED")) {
        g_test_message("QEMU_ZC_TEST_PRIVILEGED is set, but %s", why);
        g_test_fail();
        return;
    }
    g_test_skip(why);
}

/* Tests */

static void test_reset_values(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);
    uint32_t cap;

    g_assert_cmphex(qpci_config_readw(f->iommu, PCI_VENDOR_ID), ==,
                    IOMMU_EMUL_PCI_VENDOR_ID);
    g_assert_cmphex(qpci_config_readw(f->iommu, PCI_DEVICE_ID), ==,
                    IOMMU_EMUL_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readw(f->iommu, PCI_CLASS_DEVICE), ==,
                    IOMMU_EMUL_PCI_CLASS);
    g_assert_cmphex(qpci_config_readb(f->iommu, PCI_REVISION_ID), ==,
                    IOMMU_EMUL_PCI_REVISION);
    g_assert_cmphex(qpci_config_readl(f->iommu, PCI_BASE_ADDRESS_0) &
                    (PCI_BASE_ADDRESS_SPACE | PCI_BASE_ADDRESS_MEM_TYPE_MASK),
                    ==, PCI_BASE_ADDRESS_SPACE_MEMORY |
                    PCI_BASE_ADDRESS_MEM_TYPE_64);
    g_assert_cmphex(qpci_find_capability(f->iommu, PCI_CAP_ID_MSIX, 0), !=, 0);

    g_assert_cmphex(rd32(f, A_MAGIC), ==, IOMMU_EMUL_MAGIC);
    g_assert_cmphex(rd32(f, A_VERSION), ==, IOMMU_EMUL_VERSION);
    cap = rd32(f, A_CAP);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, BUS_ADDR), ==,
                     IOMMU_EMUL_BUS_ADDR_IOVA);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, PAGE_SHIFT), ==, 12);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, CMDQ_MAX_LOG2), ==, 8);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, FAULTQ_MAX_LOG2), ==, 8);
    g_assert_cmpuint(FIELD_EX32(cap, CAP, MSIX), ==, 1);
    g_assert_cmpuint(rd32(f, A_LIMITS), ==, 4096);
    g_assert_cmphex(rd64(f, A_MAX_PINNED), ==, 1ULL << 30);
    g_assert_cmphex(rd64(f, A_PINNED), ==, 0);
    g_assert_cmphex(rd64(f, A_APERTURE_START), ==, 0x100000);
    g_assert_cmphex(rd64(f, A_APERTURE_END), ==, (1ULL << 48) - 1);
    /* 32-bit halves of a 64-bit register */
    g_assert_cmphex(rd32(f, A_APERTURE_END + 4), ==, 0xffff);
    g_assert_cmphex(rd32(f, A_CTRL), ==, 0);
    g_assert_cmphex(rd32(f, A_STATUS), ==, 0);
    g_assert_cmphex(rd32(f, A_CMDQ_ERROR), ==, 0);
    g_assert_cmphex(rd32(f, A_FAULTQ_ERROR), ==, 0);
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, 0);
    g_assert_cmphex(rd32(f, A_CMDQ_SIZE), ==, 0);
    g_assert_cmphex(rd32(f, A_CMDQ_HEAD), ==, 0);
    g_assert_cmphex(rd32(f, A_CMDQ_TAIL), ==, 0);
    g_assert_cmphex(rd64(f, A_FAULTQ_BASE), ==, 0);
    g_assert_cmphex(rd32(f, A_FAULTQ_SIZE), ==, 0);
    g_assert_cmphex(rd32(f, A_FAULTQ_HEAD), ==, 0);
    g_assert_cmphex(rd32(f, A_FAULTQ_TAIL), ==, 0);
    g_assert_cmphex(rd32(f, A_FAULT_OVERFLOW), ==, 0);
    /* Read-only registers ignore writes; unknown offsets read 0 */
    wr32(f, A_MAGIC, 0);
    wr64(f, A_APERTURE_START, 0);
    g_assert_cmphex(rd32(f, A_MAGIC), ==, IOMMU_EMUL_MAGIC);
    g_assert_cmphex(rd64(f, A_APERTURE_START), ==, 0x100000);
    g_assert_cmphex(rd32(f, 0xff0), ==, 0);
    /* Base registers take 32-bit halves */
    wr32(f, A_CMDQ_BASE, 0x1000);
    wr32(f, A_CMDQ_BASE + 4, 0x2);
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, 0x200001000ULL);

    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    fx_free(f);
}

static void test_not_hotpluggable(const void *data)
{
    QTestState *qts;
    QDict *resp;

    qts = qtest_initf("-machine %s", (const char *)data);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'iommu-emul', 'id': 'iommu0'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    qtest_quit(qts);
}

/* q35: the MCH's PCI Express configuration window (ECAM), bus 0 */
#define Q35_PCIEXBAR            0x60
#define Q35_ECAM_BASE           0xb0000000ULL

static uint32_t ecam_readl(Fixture *f, int devfn, uint32_t off)
{
    return qtest_readl(f->qts, Q35_ECAM_BASE + (devfn << 12) + off);
}

/*
 * Configuration space: a PCI Express integrated endpoint with a 4 KiB
 * configuration space on q35, conventional PCI on pc; the capability list
 * and both BARs as the spec gives them.
 */
static void test_pci_config(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);
    bool q35 = !strcmp(data, "q35");
    uint8_t msix = IOMMU_EMUL_MSIX_CAP_OFFSET;
    uint64_t size = 0;
    QPCIBar bar2;

    g_assert_cmphex(qpci_config_readw(f->iommu, PCI_STATUS) &
                    PCI_STATUS_CAP_LIST, ==, PCI_STATUS_CAP_LIST);
    if (q35) {
        uint8_t exp = IOMMU_EMUL_PCIE_CAP_OFFSET;
        uint16_t flags = qpci_config_readw(f->iommu, exp + PCI_EXP_FLAGS);
        QPCIDevice *host = qpci_device_find(f->bus, 0);

        g_assert_cmphex(qpci_config_readb(f->iommu, PCI_CAPABILITY_LIST), ==,
                        exp);
        g_assert_cmphex(qpci_config_readb(f->iommu, exp), ==, PCI_CAP_ID_EXP);
        g_assert_cmphex(qpci_config_readb(f->iommu, exp + PCI_CAP_LIST_NEXT),
                        ==, msix);
        g_assert_cmphex(flags & PCI_EXP_FLAGS_VERS, ==, 2);
        g_assert_cmphex((flags & PCI_EXP_FLAGS_TYPE) >> 4, ==,
                        PCI_EXP_TYPE_RC_END);

        /* The extended space exists (4 KiB) and has no capability */
        qpci_config_writel(host, Q35_PCIEXBAR, Q35_ECAM_BASE | 1);
        qpci_config_writel(host, Q35_PCIEXBAR + 4, 0);
        g_assert_cmphex(ecam_readl(f, IOMMU_DEVFN, PCI_VENDOR_ID), ==,
                        IOMMU_EMUL_PCI_VENDOR_ID |
                        IOMMU_EMUL_PCI_DEVICE_ID << 16);
        g_assert_cmphex(ecam_readl(f, IOMMU_DEVFN, exp), ==,
                        qpci_config_readl(f->iommu, exp));
        g_assert_cmphex(ecam_readl(f, IOMMU_DEVFN, PCI_CFG_SPACE_SIZE), ==, 0);
        g_free(host);
    } else {
        g_assert_cmphex(qpci_config_readb(f->iommu, PCI_CAPABILITY_LIST), ==,
                        msix);
        g_assert_cmphex(qpci_find_capability(f->iommu, PCI_CAP_ID_EXP, 0), ==,
                        0);
    }

    /* MSI-X: 2 vectors, table at 0 and PBA at 0x800 of BAR 2; the end */
    g_assert_cmphex(qpci_config_readb(f->iommu, msix), ==, PCI_CAP_ID_MSIX);
    g_assert_cmphex(qpci_config_readb(f->iommu, msix + PCI_CAP_LIST_NEXT), ==,
                    0);
    g_assert_cmphex(qpci_config_readw(f->iommu, msix + PCI_MSIX_FLAGS) &
                    PCI_MSIX_FLAGS_QSIZE, ==, IOMMU_EMUL_MSIX_VECTORS - 1);
    g_assert_cmphex(qpci_config_readl(f->iommu, msix + PCI_MSIX_TABLE), ==,
                    IOMMU_EMUL_MSIX_BAR);
    g_assert_cmphex(qpci_config_readl(f->iommu, msix + PCI_MSIX_PBA), ==,
                    IOMMU_EMUL_MSIX_PBA_OFFSET | IOMMU_EMUL_MSIX_BAR);

    /* BAR 0 and BAR 2: 4 KiB of 64-bit memory each, not prefetchable */
    g_assert_cmphex(qpci_config_readl(f->iommu, PCI_BASE_ADDRESS_0) & 0xf,
                    ==, PCI_BASE_ADDRESS_SPACE_MEMORY |
                    PCI_BASE_ADDRESS_MEM_TYPE_64);
    g_assert_cmphex(qpci_config_readl(f->iommu, PCI_BASE_ADDRESS_2) & 0xf,
                    ==, PCI_BASE_ADDRESS_SPACE_MEMORY |
                    PCI_BASE_ADDRESS_MEM_TYPE_64);
    bar2 = qpci_iomap(f->iommu, IOMMU_EMUL_MSIX_BAR, &size);
    g_assert_cmphex(size, ==, IOMMU_EMUL_MSIX_BAR_SIZE);
    g_assert_cmphex(bar2.addr, !=, 0);
    fx_free(f);
}

/*
 * Accesses that are not naturally aligned are ignored as a whole: reads
 * return 0 and writes change nothing, whichever registers they cover.
 */
static void test_misaligned(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);
    uint64_t r = f->regs.addr;

    /* Aligned 8 bytes over two 32-bit registers act on both */
    g_assert_cmphex(qtest_readq(f->qts, r + A_MAGIC), ==,
                    IOMMU_EMUL_MAGIC |
                    (uint64_t)IOMMU_EMUL_VERSION << 32);

    /* 8 bytes at +0x4 (VERSION and CAP) read 0 */
    g_assert_cmphex(qtest_readq(f->qts, r + A_VERSION), ==, 0);
    /* 8 bytes at +0x44 (CMDQ_BASE high half, CMDQ_SIZE) write nothing */
    wr64(f, A_CMDQ_BASE, 0x12345000ULL);
    wr32(f, A_CMDQ_SIZE, 3);
    qtest_writeq(f->qts, r + A_CMDQ_BASE + 4, 0x0000000500000007ULL);
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, 0x12345000ULL);
    g_assert_cmphex(rd32(f, A_CMDQ_SIZE), ==, 3);
    g_assert_cmphex(qtest_readq(f->qts, r + A_CMDQ_BASE + 4), ==, 0);
    /* 4 bytes at +0x2 and +0x42 */
    g_assert_cmphex(qtest_readl(f->qts, r + A_MAGIC + 2), ==, 0);
    qtest_writel(f->qts, r + A_CMDQ_BASE + 2, 0xffffffff);
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, 0x12345000ULL);
    /* 1 and 2 bytes, even aligned */
    g_assert_cmphex(qtest_readw(f->qts, r + A_MAGIC), ==, 0);
    g_assert_cmphex(qtest_readb(f->qts, r + A_MAGIC), ==, 0);
    qtest_writeb(f->qts, r + A_CMDQ_SIZE, 5);
    qtest_writew(f->qts, r + A_CMDQ_SIZE, 5);
    g_assert_cmphex(rd32(f, A_CMDQ_SIZE), ==, 3);
    /* A misaligned write to CTRL does not start the ring */
    qtest_writeq(f->qts, r + A_CTRL - 4, 0x0000000300000000ULL);
    g_assert_cmphex(rd32(f, A_CTRL), ==, 0);
    g_assert_cmphex(rd32(f, A_STATUS), ==, 0);
    fx_free(f);
}

/* Before SET_MODE, a requester's bus addresses are guest-physical */
static void test_bypass(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);

    edu_load(f, DATA_GPA, 0x5a, DATA_GPA);
    fill(f, DATA_GPA + PAGE, 0, PAGE);
    edu_dma(f, DATA_GPA + PAGE, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0x5a, PAGE));
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    fx_free(f);
}

static void test_map_dma(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t bus;
    CmdOut out;

    translate_on(f);
    fill(f, DATA_GPA, 0x11, PAGE);
    fill(f, DATA_GPA + PAGE, 0x22, PAGE);
    fill(f, DATA_GPA + 2 * PAGE, 0x33, PAGE);
    fill(f, DATA_GPA + 3 * PAGE, 0x44, PAGE);

    /* Map the middle two pages */
    bus = map(f, DATA_GPA + PAGE, 2 * PAGE,
              IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    g_assert_cmphex(bus, >=, rd64(f, A_APERTURE_START));
    g_assert_cmphex(bus + 2 * PAGE - 1, <=, EDU_DMA_MASK);
    g_assert_cmphex(bus & (PAGE - 1), ==, 0);

    /* RAM -> edu through the second mapped page */
    edu_dma(f, bus + PAGE, PAGE, false);
    /* edu -> RAM through the first mapped page */
    edu_dma(f, bus, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0x11, PAGE));
    g_assert(all_eq(f, DATA_GPA + PAGE, 0x33, PAGE));
    g_assert(all_eq(f, DATA_GPA + 2 * PAGE, 0x33, PAGE));
    g_assert(all_eq(f, DATA_GPA + 3 * PAGE, 0x44, PAGE));

    /* A sub-page DMA at an offset keeps the offset */
    fill(f, DATA_GPA + 2 * PAGE, 0x77, PAGE);
    edu_dma(f, bus + PAGE + 0x100, 0x10, false);
    fill(f, DATA_GPA + PAGE, 0, PAGE);
    edu_dma(f, bus + 0x80, 0x10, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0, 0x80));
    g_assert(all_eq(f, DATA_GPA + PAGE + 0x80, 0x77, 0x10));
    g_assert(all_eq(f, DATA_GPA + PAGE + 0x90, 0, PAGE - 0x90));

    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "maps"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "pinned-bytes"), ==, 2 * PAGE);
    g_assert_cmphex(rd64(f, A_PINNED), ==, 2 * PAGE);

    /* QUERY reports the mapping */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus + PAGE + 8,
                        0, 0, &out), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.addr, ==, DATA_GPA + PAGE + PAGE + 8);
    g_assert_cmphex(out.base, ==, bus);
    g_assert_cmphex(out.length, ==, 2 * PAGE);
    g_assert_cmphex(out.flags, ==, IOMMU_EMUL_QUERY_READ |
                    IOMMU_EMUL_QUERY_WRITE | IOMMU_EMUL_QUERY_TRANSLATE);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus + 2 * PAGE,
                        0, 0, &out), ==, IOMMU_EMUL_ST_NOT_FOUND);
    fx_free(f);
}

static void test_fault_unmapped(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint32_t i;
    Fault x;

    /* MSI-X on, vector 0 masked: a delivery shows as its pending bit */
    qpci_msix_enable(f->iommu);
    g_assert(qpci_msix_masked(f->iommu, IOMMU_EMUL_VEC_FAULT));
    translate_on(f);
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_FAULT));
    /* Bus address == GPA of a page with known contents, but unmapped */
    fill(f, DATA_GPA, 0xa5, PAGE);
    edu_load(f, DATA_GPA + PAGE, 0xff, DATA_GPA + PAGE); /* faults: read */
    edu_dma(f, DATA_GPA, PAGE, true);                    /* faults: write */
    g_assert(all_eq(f, DATA_GPA, 0xa5, PAGE));

    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 2);
    x = fault_at(f, 0);
    g_assert_cmphex(x.requester, ==, EDU_RID);
    g_assert_cmpuint(x.access, ==, IOMMU_EMUL_ACCESS_READ);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(x.addr, ==, DATA_GPA + PAGE);
    g_assert_cmpuint(x.count, >=, 1);
    g_assert_cmpuint(x.seq, ==, 1);
    x = fault_at(f, 1);
    g_assert_cmphex(x.requester, ==, EDU_RID);
    g_assert_cmpuint(x.access, ==, IOMMU_EMUL_ACCESS_WRITE);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(x.addr, ==, DATA_GPA);
    g_assert_cmpuint(x.seq, ==, 2);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 2);
    /* Vector 0 was raised for the records; nothing overflowed */
    g_assert(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_FAULT));
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_CMD));
    g_assert_cmphex(rd32(f, A_FAULT_OVERFLOW), ==, 0);

    /*
     * The guest consumes the two records: the ring (8 entries, 7 usable)
     * has room for 7 new ones again, where 5 would fit without the
     * FAULTQ_HEAD write. An 8th fault overflows.
     */
    wr32(f, A_FAULTQ_HEAD, 2);
    for (i = 0; i < 8; i++) {
        edu_dma(f, DATA_GPA + (2 + i) * PAGE, 8, true);
    }
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmpuint(rd32(f, A_FAULT_OVERFLOW), ==, 1);
    for (i = 0; i < 7; i++) {
        x = fault_at(f, (2 + i) % (1u << FAULTQ_LOG2));
        g_assert_cmphex(x.addr, ==, DATA_GPA + (2 + i) * PAGE);
        g_assert_cmpuint(x.seq, ==, 3 + i);
    }
    fx_free(f);
}

static void test_readonly(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t bus;
    Fault x;

    translate_on(f);
    fill(f, DATA_GPA, 0x3c, PAGE);
    bus = map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ);
    /* Read works */
    edu_dma(f, bus, PAGE, false);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 0);
    /* Write is refused; memory untouched */
    fill(f, DATA_GPA + PAGE, 0x99, PAGE);
    edu_dma(f, DATA_GPA + PAGE, PAGE, false);   /* unmapped read faults */
    edu_dma(f, bus, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0x3c, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 2);
    x = fault_at(f, 1);
    g_assert_cmpuint(x.access, ==, IOMMU_EMUL_ACCESS_WRITE);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_PERM);
    g_assert_cmphex(x.addr, ==, bus);
    fx_free(f);
}

static void test_unmap(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t bus;
    Fault x;

    translate_on(f);
    fill(f, DATA_GPA, 0x10, PAGE);
    bus = map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    edu_load(f, DATA_GPA + PAGE, 0x20, DATA_GPA + PAGE);  /* faults */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, 2 * PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    edu_dma(f, bus, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0x10, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 2);
    x = fault_at(f, 1);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(x.addr, ==, bus);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "unmaps"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "invalidations"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    fx_free(f);
}

/*
 * UNMAP checks its arguments as MAP does (BAD_ARG), before the requester
 * (NO_DEVICE) and the lookup (NOT_FOUND); a refused UNMAP removes nothing.
 */
static void test_unmap_args(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    const uint16_t bad_rid = 0x1234;
    uint64_t bus;

    bus = map(f, DATA_GPA, 2 * PAGE, IOMMU_EMUL_MAP_READ);
    /* Not page multiples, empty, past 2^64, reserved flags */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus + 8,
                        2 * PAGE, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus,
                        2 * PAGE - 8, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, ~0xfffULL, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 1, EDU_RID, bus, 2 * PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    /* BAD_ARG before NO_DEVICE before NOT_FOUND */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, bad_rid, bus + 8,
                        2 * PAGE, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, bad_rid, bus, 2 * PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_NO_DEVICE);
    /* Well formed but not exactly one mapping */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus + PAGE, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, 3 * PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "unmaps"), ==, 0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, 2 * PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    fx_free(f);
}

static void test_detach(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t b1, b2;
    CmdOut out;

    translate_on(f);
    b1 = map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    b2 = map(f, DATA_GPA + 2 * PAGE, 2 * PAGE,
             IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    g_assert_cmphex(b1, !=, b2);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 3);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, &out),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(out.length, ==, 2);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "invalidations"), ==, 2);
    fill(f, DATA_GPA + 2 * PAGE, 0x61, PAGE);
    edu_dma(f, b2, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + 2 * PAGE, 0x61, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    /* Still translating: DETACH does not return to bypass */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, b1, 0, 0, &out),
                    ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(out.flags, ==, IOMMU_EMUL_QUERY_TRANSLATE);
    fx_free(f);
}

static void test_refcount(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t b1, b2;

    translate_on(f);
    b1 = map(f, DATA_GPA, 2 * PAGE, IOMMU_EMUL_MAP_READ);
    b2 = map(f, DATA_GPA + PAGE, 2 * PAGE,
             IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    /* Pages 0, 1, 2: page 1 is shared */
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 3);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 2);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b1, 2 * PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    /* The shared page is still reachable through the second mapping */
    fill(f, DATA_GPA + PAGE, 0x42, PAGE);
    edu_dma(f, b2, PAGE, false);
    fill(f, DATA_GPA + PAGE, 0, PAGE);
    edu_dma(f, b2, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0x42, PAGE));
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b2, 2 * PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    fx_free(f);
}

static void test_pinned_locked(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint64_t base, bus;

    translate_on(f);
    base = locked_kb(f);
    bus = map(f, DATA_GPA, 16 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(locked_kb(f), ==, base + 64);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, 16 * PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(locked_kb(f), ==, base);

    map(f, DATA_GPA, 8 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(locked_kb(f), ==, base + 32);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(locked_kb(f), ==, base);

    /* System reset releases everything and returns to bypass */
    map(f, DATA_GPA, 4 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(locked_kb(f), ==, base + 16);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(locked_kb(f), ==, base);
    /* Reset cleared the BARs: put the register BAR back */
    qpci_config_writel(f->iommu, PCI_BASE_ADDRESS_0, (uint32_t)f->regs.addr);
    qpci_config_writel(f->iommu, PCI_BASE_ADDRESS_1, f->regs.addr >> 32);
    qpci_device_enable(f->iommu);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmphex(rd32(f, A_CTRL), ==, 0);
    g_assert_cmphex(rd32(f, A_STATUS), ==, 0);
    fx_free(f);
}

static void test_max_pinned(const void *data)
{
    Fixture *f = fx_start(data, ",max-pinned=16K");
    CmdOut out;

    g_assert_cmphex(rd64(f, A_MAX_PINNED), ==, 16 * 1024);
    map(f, DATA_GPA, 3 * PAGE, IOMMU_EMUL_MAP_READ);
    /* Two more pages would exceed 16 KiB: nothing changes */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + 3 * PAGE, 2 * PAGE, 0, &out), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmphex(out.addr, ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 3);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "maps"), ==, 1);
    /* Re-mapping pinned pages costs nothing; one new page fits */
    map(f, DATA_GPA + PAGE, 3 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 4);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + 8 * PAGE, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmpuint(qom_u64(f, "pinned-bytes"), ==, 4 * PAGE);
    fx_free(f);
}

/* max-pinned is rounded down to a multiple of 4 KiB */
static void test_max_pinned_rounding(const void *data)
{
    Fixture *f = fx_start(data, ",max-pinned=12287");

    g_assert_cmphex(rd64(f, A_MAX_PINNED), ==, 2 * PAGE);
    map(f, DATA_GPA, 2 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + 2 * PAGE, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    fx_free(f);
}

/*
 * RLIMIT_MEMLOCK: QEMU runs with a 64 KiB limit and without CAP_IPC_LOCK
 * (the tests run as root, which would ignore the limit), through
 * QTEST_QEMU_BINARY-style wrapping: libqtest runs "exec BINARY ARGS" in a
 * shell, so the binary may carry a command prefix.
 */
#define MEMLOCK_WRAP "prlimit --memlock=65536:65536 setpriv" \
                     " --inh-caps=-ipc_lock --bounding-set=-ipc_lock"

/*
 * A started fixture whose QEMU runs with a 64 KiB RLIMIT_MEMLOCK and
 * without CAP_IPC_LOCK; NULL (test skipped) if that cannot be arranged.
 * @props: more iommu-emul properties.
 */
static Fixture *fx_memlock(const char *machine, const char *props)
{
    g_autofree char *wrapped = g_strdup_printf("%s %s", MEMLOCK_WRAP,
                                               getenv("QTEST_QEMU_BINARY"));
    g_autofree char *args = g_strdup_printf("-machine %s -m 256M -device"
                                            " iommu-emul,id=iommu0,addr=04.0"
                                            "%s -device edu,addr=05.0",
                                            machine, props);
    Fixture *f;
    int status = -1;

    if (!g_spawn_command_line_sync(MEMLOCK_WRAP " true", NULL, NULL,
                                   &status, NULL) ||
        !WIFEXITED(status) || WEXITSTATUS(status)) {
        skip_unprivileged("cannot run QEMU under prlimit/setpriv without"
                          " CAP_IPC_LOCK here (util-linux missing, or no"
                          " CAP_SETPCAP)");
        return NULL;
    }
    g_setenv("IOMMU_EMUL_TEST_MEMLOCK_QEMU", wrapped, true);
    f = g_new0(Fixture, 1);
    f->qts = qtest_init_with_env("IOMMU_EMUL_TEST_MEMLOCK_QEMU", args, true);
    f->bus = qpci_new_pc(f->qts, NULL);
    f->iommu = qpci_device_find(f->bus, IOMMU_DEVFN);
    f->edu = qpci_device_find(f->bus, EDU_DEVFN);
    qpci_device_enable(f->iommu);
    qpci_device_enable(f->edu);
    f->regs = qpci_iomap(f->iommu, IOMMU_EMUL_REGS_BAR, NULL);
    f->edu_bar = qpci_iomap(f->edu, 0, NULL);
    rings_on(f);
    return f;
}

static void test_memlock(const void *data)
{
    Fixture *f = fx_memlock(data, "");
    uint64_t base, bus;
    CmdOut out;

    if (!f) {
        return;
    }

    /* max-pinned (1 GiB) is far away: only the 64 KiB limit applies */
    base = locked_kb(f);
    bus = map(f, DATA_GPA, 8 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(locked_kb(f), ==, base + 32);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + 8 * PAGE, 16 * PAGE, 0, &out), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmphex(out.addr, ==, 0);

    /* Nothing of the failed MAP is left: pins, locks, mapping, bus range */
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 8);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "maps"), ==, 1);
    g_assert_cmpuint(locked_kb(f), ==, base + 32);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID,
                        bus + 8 * PAGE, 0, 0, NULL), ==,
                    IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(map(f, DATA_GPA + 8 * PAGE, 4 * PAGE,
                        IOMMU_EMUL_MAP_READ), ==, bus + 8 * PAGE);
    g_assert_cmpuint(locked_kb(f), ==, base + 48);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 12);
    fx_free(f);
}

static void test_bad_commands(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint16_t rw = IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE;
    uint64_t bar = qpci_config_readl(f->iommu, PCI_BASE_ADDRESS_0) & ~0xfULL;

    g_assert_cmphex(cmd(f, 0, 0, EDU_RID, 0, 0, 0, NULL), ==,
                    IOMMU_EMUL_ST_BAD_OPCODE);
    g_assert_cmphex(cmd(f, 0xbeef, 0xffff, 0xffff, ~0ULL, ~0ULL, 0, NULL), ==,
                    IOMMU_EMUL_ST_BAD_OPCODE);
    /* length 0, misaligned, overflowing, no permission, unknown flag */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, DATA_GPA, 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, DATA_GPA + 8, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, DATA_GPA, 100, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, ~0xfffULL,
                        2 * PAGE, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, 0, EDU_RID, DATA_GPA, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw | 0x100, EDU_RID, DATA_GPA,
                        PAGE, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    /* addr + length is exactly 2^64: it does not fit in 64 bits */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, 1ULL << 63,
                        1ULL << 63, 0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, ~0xfffULL, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    /* huge length */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, 0,
                        1ULL << 62, 0, NULL), ==, IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, 1ULL << 63,
                        (1ULL << 63) - PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    /* no such requester */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, QPCI_DEVFN(31, 7) | 0x700,
                        DATA_GPA, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_NO_DEVICE);
    /* the IOMMU itself is not a requester */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, IOMMU_DEVFN, DATA_GPA, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_NO_DEVICE);
    /* outside RAM, on MMIO (our own BAR, the IOAPIC), straddling the end */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, 0x100000000000ULL,
                        PAGE, 0, NULL), ==, IOMMU_EMUL_ST_NO_RAM);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, bar, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_NO_RAM);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, 0xfec00000ULL,
                        PAGE, 0, NULL), ==, IOMMU_EMUL_ST_NO_RAM);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID,
                        256 * 1024 * 1024 - PAGE, 2 * PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_NO_RAM);
    /* DMA limit below the aperture */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, rw, EDU_RID, DATA_GPA, PAGE,
                        0xfff, NULL), ==, IOMMU_EMUL_ST_NO_SPACE);
    /* bad flags on other commands, unmapping nothing */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SET_MODE, 0x8000, EDU_RID, 0, 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SYNC, 0x2, 0, 0, 0, 0, NULL), ==,
                    IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, DATA_GPA, 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_BAD_ARG);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, DATA_GPA, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, 0x1234, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_NO_DEVICE);

    /* Nothing was left behind, and the ring still works */
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "maps"), ==, 0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SYNC, IOMMU_EMUL_SYNC_IRQ, 0, 0, 0,
                        0, NULL), ==, IOMMU_EMUL_ST_OK);
    map(f, DATA_GPA, PAGE, rw);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, 0);
    fx_free(f);
}

static void test_bad_rings(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);

    /* Size 0, size above the maximum */
    wr64(f, A_CMDQ_BASE, CMDQ_GPA);
    wr32(f, A_CMDQ_SIZE, 0);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmphex(rd32(f, A_STATUS), ==, R_STATUS_CMDQ_ERR_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_SIZE);
    wr32(f, A_CMDQ_ERROR, 0);
    wr32(f, A_CMDQ_SIZE, 9);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_SIZE);
    /* Base outside RAM, on MMIO, misaligned, wrapping */
    wr32(f, A_CMDQ_SIZE, CMDQ_LOG2);
    wr64(f, A_CMDQ_BASE, 0x4000000000ULL);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    wr64(f, A_CMDQ_BASE, 0xfec00000ULL);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    wr64(f, A_CMDQ_BASE, CMDQ_GPA + 8);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    wr64(f, A_CMDQ_BASE, ~0x3fULL);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    wr64(f, A_FAULTQ_BASE, 0xfec00000ULL);
    wr32(f, A_FAULTQ_SIZE, FAULTQ_LOG2);
    wr32(f, A_CTRL, R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_FAULTQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    g_assert_cmphex(rd32(f, A_STATUS), ==,
                    R_STATUS_CMDQ_ERR_MASK | R_STATUS_FAULTQ_ERR_MASK);
    /* Writes to the tail of a stopped ring are ignored */
    wr32(f, A_CMDQ_TAIL, 3);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 0);

    /* A good ring; then a tail out of range stops it until cleared */
    wr32(f, A_CMDQ_ERROR, 0);
    wr32(f, A_FAULTQ_ERROR, 0);
    rings_on(f);
    wr64(f, A_CMDQ_BASE, 0);        /* ignored while the ring is on */
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, CMDQ_GPA);
    wr32(f, A_CMDQ_TAIL, 1u << CMDQ_LOG2);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_INDEX);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 0);
    wr32(f, A_CMDQ_ERROR, 0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SYNC, 0, 0, 0, 0, 0, NULL), ==,
                    IOMMU_EMUL_ST_OK);
    /* Fill the whole ring with garbage and wrap around it twice */
    {
        int i;

        for (i = 0; i < 2 << CMDQ_LOG2; i++) {
            g_assert_cmphex(cmd(f, 0x7777, 0, 0, 0, 0, 0, NULL), ==,
                            IOMMU_EMUL_ST_BAD_OPCODE);
        }
    }
    /* A fault ring head out of range is ignored */
    wr32(f, A_FAULTQ_HEAD, 1u << FAULTQ_LOG2);
    g_assert_cmpuint(rd32(f, A_FAULTQ_HEAD), ==, 0);
    /* Misaligned and unknown accesses do not hurt */
    qtest_writel(f->qts, f->regs.addr + 2, 0xffffffff);
    g_assert_cmphex(rd32(f, A_MAGIC), ==, IOMMU_EMUL_MAGIC);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, 0);
    fx_free(f);
}

/* A command entry with @op and @flags at index @idx, status cleared */
static void put_entry(Fixture *f, uint32_t idx, uint16_t op, uint16_t flags)
{
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };

    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, op);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, flags);
    qtest_memwrite(f->qts, CMDQ_GPA + idx * IOMMU_EMUL_CMD_SIZE, e,
                   sizeof(e));
}

static uint16_t entry_status(Fixture *f, uint32_t idx)
{
    return qtest_readw(f->qts, CMDQ_GPA + idx * IOMMU_EMUL_CMD_SIZE +
                       IOMMU_EMUL_CMD_STATUS);
}

static void bus_master(Fixture *f, bool on)
{
    uint16_t c = qpci_config_readw(f->iommu, PCI_COMMAND);

    qpci_config_writew(f->iommu, PCI_COMMAND,
                       on ? c | PCI_COMMAND_MASTER : c & ~PCI_COMMAND_MASTER);
}

/*
 * Ring registers and errors: SIZE and BASE store any value until the
 * ring is turned on; BAD_SIZE is checked before BAD_BASE; turning a ring
 * on replaces its error with the result of the check; a pending command
 * ring error stays until cleared, whatever CMDQ_TAIL the guest writes.
 */
static void test_ring_errors(const void *data)
{
    Fixture *f = fx_new(data, NULL, NULL);
    const uint32_t ring_on = R_STATUS_CMDQ_ON_MASK;

    /* Any value is stored, and checked only when the ring is turned on */
    wr64(f, A_CMDQ_BASE, CMDQ_GPA + 8);
    wr32(f, A_CMDQ_SIZE, 0xdeadbeef);
    wr64(f, A_FAULTQ_BASE, 0xfec00000ULL);
    wr32(f, A_FAULTQ_SIZE, 0x80000001);
    g_assert_cmphex(rd64(f, A_CMDQ_BASE), ==, CMDQ_GPA + 8);
    g_assert_cmphex(rd32(f, A_CMDQ_SIZE), ==, 0xdeadbeef);
    g_assert_cmphex(rd64(f, A_FAULTQ_BASE), ==, 0xfec00000ULL);
    g_assert_cmphex(rd32(f, A_FAULTQ_SIZE), ==, 0x80000001);
    /* Bad size and bad base: BAD_SIZE */
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_SIZE);
    g_assert_cmpuint(rd32(f, A_FAULTQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_SIZE);
    wr32(f, A_CMDQ_SIZE, 0);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_SIZE);

    /* Turning on again replaces the pending error with the new result */
    wr32(f, A_CMDQ_SIZE, CMDQ_LOG2);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_BASE);
    wr64(f, A_CMDQ_BASE, CMDQ_GPA);
    wr64(f, A_FAULTQ_BASE, FAULTQ_GPA);
    wr32(f, A_FAULTQ_SIZE, FAULTQ_LOG2);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
    g_assert_cmpuint(rd32(f, A_FAULTQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
    g_assert_cmphex(rd32(f, A_STATUS), ==,
                    R_STATUS_CMDQ_ON_MASK | R_STATUS_FAULTQ_ON_MASK);

    /* A DMA error: the entry cannot be read with bus mastering off */
    put_entry(f, 0, IOMMU_EMUL_OP_SYNC, 0);
    bus_master(f, false);
    wr32(f, A_CMDQ_TAIL, 1);
    bus_master(f, true);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_DMA);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 0);
    /* Enabling a ring that is on changes nothing, the error stays */
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_DMA);
    g_assert_cmphex(rd32(f, A_STATUS) & (ring_on | R_STATUS_CMDQ_ERR_MASK),
                    ==, ring_on | R_STATUS_CMDQ_ERR_MASK);

    /* A tail out of range while the error is pending: dropped, DMA stays */
    wr32(f, A_CMDQ_TAIL, 1u << CMDQ_LOG2);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_DMA);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 1);
    /* A tail in range is stored; nothing runs until the error is cleared */
    put_entry(f, 1, IOMMU_EMUL_OP_SYNC, 0);
    wr32(f, A_CMDQ_TAIL, 2);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 2);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 0);
    g_assert_cmphex(entry_status(f, 0), ==, 0);
    g_assert_cmphex(entry_status(f, 1), ==, 0);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_DMA);
    wr32(f, A_CMDQ_ERROR, 0);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 2);
    g_assert_cmphex(entry_status(f, 0), ==, IOMMU_EMUL_STATUS_DONE);
    g_assert_cmphex(entry_status(f, 1), ==, IOMMU_EMUL_STATUS_DONE);

    /* Without a pending error, a tail out of range sets BAD_INDEX */
    wr32(f, A_CMDQ_TAIL, 1u << CMDQ_LOG2);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_INDEX);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 2);
    /* Off: error and indices stay; on again: a fresh start */
    wr32(f, A_CTRL, R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmphex(rd32(f, A_STATUS), ==,
                    R_STATUS_CMDQ_ERR_MASK | R_STATUS_FAULTQ_ON_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_BAD_INDEX);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 2);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 2);
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmpuint(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 0);
    g_assert_cmpuint(rd32(f, A_CMDQ_TAIL), ==, 0);
    put_entry(f, 0, IOMMU_EMUL_OP_SYNC, 0);
    wr32(f, A_CMDQ_TAIL, 1);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 1);
    g_assert_cmphex(entry_status(f, 0), ==, IOMMU_EMUL_STATUS_DONE);
    fx_free(f);
}

static void test_fault_ring_full(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint32_t n = 1u << FAULTQ_LOG2;
    uint32_t i;

    translate_on(f);
    /* n + 2 faults on distinct pages: n - 1 fit, 3 overflow */
    for (i = 0; i < n + 2; i++) {
        edu_dma(f, DATA_GPA + i * PAGE, 8, true);
    }
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, n - 1);
    g_assert_cmpuint(rd32(f, A_FAULT_OVERFLOW), ==, 3);
    g_assert_cmphex(fault_at(f, n - 2).addr, ==, DATA_GPA + (n - 2) * PAGE);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, n + 2);
    /* Consuming makes room again */
    wr32(f, A_FAULTQ_HEAD, n - 1);
    edu_dma(f, DATA_GPA + 40 * PAGE, 8, false);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 0);
    g_assert_cmphex(fault_at(f, n - 1).addr, ==, DATA_GPA + 40 * PAGE);
    g_assert_cmpuint(fault_at(f, n - 1).access, ==, IOMMU_EMUL_ACCESS_READ);
    /* With the fault ring off, faults are only counted */
    wr32(f, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    edu_dma(f, DATA_GPA + 41 * PAGE, 8, false);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 0);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, n + 4);
    fx_free(f);
}

static void test_gpa_mode(const void *data)
{
    Fixture *f = fx_start(data, ",bus-addr=gpa");
    uint64_t bus;

    g_assert_cmpuint(FIELD_EX32(rd32(f, A_CAP), CAP, BUS_ADDR), ==,
                     IOMMU_EMUL_BUS_ADDR_GPA);
    g_assert_cmphex(rd64(f, A_APERTURE_START), ==, 0);
    translate_on(f);
    fill(f, DATA_GPA + PAGE, 0x6b, PAGE);
    bus = map(f, DATA_GPA + PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmphex(bus, ==, DATA_GPA + PAGE);
    /* The same range twice is refcounted; UNMAP removes one */
    g_assert_cmphex(map(f, DATA_GPA + PAGE, PAGE, IOMMU_EMUL_MAP_READ), ==,
                    bus);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    edu_dma(f, bus, PAGE, false);
    edu_dma(f, DATA_GPA, PAGE, true);       /* unmapped: faults */
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SET_MODE, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, DATA_GPA, PAGE, true);       /* bypass again */
    g_assert(all_eq(f, DATA_GPA, 0x6b, PAGE));
    fx_free(f);
}

/*
 * gpa mode: where several mappings cover a page, their permissions add
 * up; UNMAP removes the most recent one; QUERY reports the oldest one.
 */
static void test_gpa_perm(const void *data)
{
    Fixture *f = fx_start(data, ",bus-addr=gpa");
    CmdOut out;
    Fault x;

    translate_on(f);
    fill(f, DATA_GPA, 0x3a, PAGE);
    g_assert_cmphex(map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ), ==,
                    DATA_GPA);
    g_assert_cmphex(map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_WRITE), ==,
                    DATA_GPA);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    /* Read through the first mapping, write through the second */
    edu_dma(f, DATA_GPA, PAGE, false);
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, DATA_GPA, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0x3a, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, DATA_GPA + 4, 0,
                        0, &out), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.flags, ==, IOMMU_EMUL_QUERY_READ |
                    IOMMU_EMUL_QUERY_TRANSLATE);
    g_assert_cmphex(out.addr, ==, DATA_GPA + 4);

    /* UNMAP takes the write mapping: writes fault (permission), reads go */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, DATA_GPA, PAGE,
                        0, NULL), ==, IOMMU_EMUL_ST_OK);
    fill(f, DATA_GPA, 0x5b, PAGE);
    edu_dma(f, DATA_GPA, PAGE, false);
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, DATA_GPA, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    x = fault_at(f, 0);
    g_assert_cmpuint(x.access, ==, IOMMU_EMUL_ACCESS_WRITE);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_PERM);
    g_assert_cmphex(x.addr, ==, DATA_GPA);

    /* Overlapping ranges: the shared page gets both permissions */
    map(f, DATA_GPA + PAGE, 2 * PAGE, IOMMU_EMUL_MAP_WRITE);
    g_assert_cmphex(map(f, DATA_GPA, 2 * PAGE, IOMMU_EMUL_MAP_READ), ==,
                    DATA_GPA);
    fill(f, DATA_GPA + PAGE, 0x6c, PAGE);
    edu_dma(f, DATA_GPA + PAGE, PAGE, false);
    fill(f, DATA_GPA + PAGE, 0, PAGE);
    edu_dma(f, DATA_GPA + PAGE, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0x6c, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 3);
    fx_free(f);
}

/* True if writing @bus through edu reaches RAM at @gpa; else it faulted */
static bool dma_writes(Fixture *f, uint64_t bus, uint64_t gpa, uint8_t byte)
{
    uint32_t tail = rd32(f, A_FAULTQ_TAIL);

    wr32(f, A_FAULTQ_HEAD, tail);       /* consume: room for the next */
    fill(f, DATA_GPA + 15 * PAGE, byte, PAGE);
    edu_dma(f, DATA_GPA + 15 * PAGE, PAGE, false);   /* bypass or mapped */
    fill(f, gpa, (uint8_t)~byte, PAGE);
    edu_dma(f, bus, PAGE, true);
    if (all_eq(f, gpa, byte, PAGE)) {
        g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, tail);
        return true;
    }
    g_assert(all_eq(f, gpa, (uint8_t)~byte, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), !=, tail);
    return false;
}

/* The reason of the newest fault record */
static uint8_t last_fault(Fixture *f)
{
    uint32_t tail = rd32(f, A_FAULTQ_TAIL);

    return fault_at(f, (tail + (1 << FAULTQ_LOG2) - 1) %
                       (1 << FAULTQ_LOG2)).reason;
}

/*
 * gpa mode, overlapping mappings: the translation is the union of the
 * mappings over each address, and changes only where a command changes
 * that union. IOMMU notifiers (counted in invalidations) hear only of
 * those changes: removing one of two identical mappings unmaps nothing.
 */
static void test_gpa_overlap(const void *data)
{
    Fixture *f = fx_start(data, ",bus-addr=gpa");
    const uint64_t a = DATA_GPA, rw = IOMMU_EMUL_MAP_READ |
                                      IOMMU_EMUL_MAP_WRITE;
    uint64_t inv;

    /* A bypass mapping for edu's source buffer in dma_writes() */
    map(f, DATA_GPA + 15 * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    translate_on(f);
    map(f, a, 8 * PAGE, IOMMU_EMUL_MAP_READ);                /* pages 0-7 */
    map(f, a + 2 * PAGE, 2 * PAGE, rw);                      /* 2-3 */
    /* Pages 2-3 and 6-7 changed permissions: UNMAP, then MAP anew */
    map(f, a + 6 * PAGE, 4 * PAGE, IOMMU_EMUL_MAP_WRITE);    /* 6-9 */
    g_assert_cmpuint(qom_u64(f, "invalidations"), ==, 2);

    g_assert_false(dma_writes(f, a, a, 0x11));
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_PERM);
    g_assert(dma_writes(f, a + 2 * PAGE, a + 2 * PAGE, 0x12));
    g_assert(dma_writes(f, a + 3 * PAGE, a + 3 * PAGE, 0x13));
    g_assert_false(dma_writes(f, a + 4 * PAGE, a + 4 * PAGE, 0x14));
    g_assert(dma_writes(f, a + 7 * PAGE, a + 7 * PAGE, 0x15));
    g_assert(dma_writes(f, a + 9 * PAGE, a + 9 * PAGE, 0x16));
    g_assert_false(dma_writes(f, a + 10 * PAGE, a + 10 * PAGE, 0x17));
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_UNMAPPED);
    /* Page 9 is write-only: reading it faults */
    edu_dma(f, a + 9 * PAGE, PAGE, false);
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_PERM);

    /* The same range mapped twice: removing one copy changes nothing */
    map(f, a + 6 * PAGE, 4 * PAGE, IOMMU_EMUL_MAP_WRITE);
    unmap(f, a + 6 * PAGE, 4 * PAGE);
    g_assert_cmpuint(qom_u64(f, "invalidations"), ==, 2);
    g_assert(dma_writes(f, a + 8 * PAGE, a + 8 * PAGE, 0x18));

    /* Pages 2-3 lose WRITE: one UNMAP for them (then MAP read-only) */
    unmap(f, a + 2 * PAGE, 2 * PAGE);
    g_assert_cmpuint(qom_u64(f, "invalidations"), ==, 3);
    g_assert_false(dma_writes(f, a + 2 * PAGE, a + 2 * PAGE, 0x19));
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_PERM);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 11);

    /* The outer mapping goes; pages 6-9 stay writable */
    inv = qom_u64(f, "invalidations");
    unmap(f, a, 8 * PAGE);
    g_assert_cmpuint(qom_u64(f, "invalidations"), >, inv);
    g_assert_false(dma_writes(f, a + 5 * PAGE, a + 5 * PAGE, 0x1a));
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert(dma_writes(f, a + 6 * PAGE, a + 6 * PAGE, 0x1b));
    edu_dma(f, a + 6 * PAGE, PAGE, false);
    g_assert_cmpuint(last_fault(f), ==, IOMMU_EMUL_REASON_PERM);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 5);
    fx_free(f);
}

/* A command ring of 4096 entries, for batches */
#define BIGQ_GPA        0xc00000ULL
#define BIGQ_LOG2       12
#define MANY            10000
#define MANY_GPA        0x2000000ULL        /* 32 MiB: 10000 pages above */
#define MANY_PROPS      ",max-mappings=12000,cmdq-max-log2=12"

static void big_ring(Fixture *f)
{
    wr32(f, A_CTRL, R_CTRL_FAULTQ_EN_MASK);
    qiommu_emul_cmdq_start(&f->ring, f->iommu, f->regs, BIGQ_GPA, BIGQ_LOG2,
                           R_CTRL_FAULTQ_EN_MASK);
    g_assert_cmphex(rd32(f, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
}

/*
 * MAP (@bus NULL: UNMAP @bus_in) @n single pages in batches; every
 * command must succeed. MAP stores the bus addresses in @bus_out.
 */
static void batch_pages(Fixture *f, bool do_map, const uint64_t *addr,
                        uint64_t *bus_out, unsigned n)
{
    unsigned max = (1u << BIGQ_LOG2) - 1, done, i;
    g_autofree QIOMMUEmulCmd *c = g_new0(QIOMMUEmulCmd, max);
    g_autofree CmdOut *out = g_new0(CmdOut, max);
    g_autofree uint16_t *st = g_new0(uint16_t, max);

    for (done = 0; done < n; done += i) {
        unsigned k = MIN(max, n - done);

        for (i = 0; i < k; i++) {
            c[i] = (QIOMMUEmulCmd) {
                .opcode = do_map ? IOMMU_EMUL_OP_MAP : IOMMU_EMUL_OP_UNMAP,
                .flags = do_map ? IOMMU_EMUL_MAP_READ |
                                  IOMMU_EMUL_MAP_WRITE : 0,
                .requester = EDU_RID, .addr = addr[done + i],
                .length = PAGE, .dma_limit = do_map ? EDU_DMA_MASK : 0,
            };
        }
        qiommu_emul_cmd_batch(&f->ring, c, k, st, out);
        for (i = 0; i < k; i++) {
            g_assert_cmphex(st[i], ==, IOMMU_EMUL_ST_OK);
            if (bus_out) {
                bus_out[done + i] = out[i].addr;
            }
        }
    }
}

/* @src's page through edu to @dst: both must translate */
static void dma_copy(Fixture *f, uint64_t src_bus, uint64_t dst_bus)
{
    edu_dma(f, src_bus, PAGE, false);
    edu_dma(f, dst_bus, PAGE, true);
}

/*
 * 10000 live mappings of one requester (iova mode): lowest-fit bus
 * addresses, DMA through the first, middle and last ones lands on the
 * right pages, holes fault and are reused, QUERY finds the mappings.
 */
static void test_many_mappings(const void *data)
{
    Fixture *f = fx_start(data, MANY_PROPS);
    g_autofree uint64_t *gpa = g_new(uint64_t, MANY);
    g_autofree uint64_t *bus = g_new(uint64_t, MANY);
    g_autofree uint64_t *holes = g_new(uint64_t, MANY);
    static const unsigned probe[] = { 0, 1, 4999, 5001, MANY - 1 };
    unsigned i, nholes = 0;
    CmdOut out;

    big_ring(f);
    translate_on(f);
    for (i = 0; i < MANY; i++) {
        gpa[i] = MANY_GPA + (uint64_t)i * PAGE;
    }
    batch_pages(f, true, gpa, bus, MANY);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, MANY);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, MANY);
    for (i = 0; i < MANY; i++) {
        g_assert_cmphex(bus[i], ==, 0x100000 + (uint64_t)i * PAGE);
    }

    /* Each probed page to the next probed one, through the IOMMU */
    for (i = 0; i < ARRAY_SIZE(probe); i++) {
        fill(f, gpa[probe[i]], 0x40 + i, PAGE);
    }
    for (i = 0; i + 1 < ARRAY_SIZE(probe); i++) {
        dma_copy(f, bus[probe[i]], bus[probe[i + 1]]);
        g_assert(all_eq(f, gpa[probe[i + 1]], 0x40, PAGE));
    }
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);

    /* Every 7th mapping goes: its bus address faults, its page is kept */
    for (i = 3; i < MANY; i += 7) {
        holes[nholes++] = bus[i];
    }
    batch_pages(f, false, holes, NULL, nholes);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, MANY - nholes);
    fill(f, gpa[4995], 0x77, PAGE);
    fill(f, gpa[4994], 0x55, PAGE);
    edu_dma(f, bus[4995], PAGE, false);
    edu_dma(f, bus[4994], PAGE, true);      /* 4994 = 3 + 7 * 713 */
    g_assert(all_eq(f, gpa[4994], 0x55, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmpuint(fault_at(f, 0).reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(fault_at(f, 0).addr, ==, bus[4994]);
    edu_dma(f, bus[4993], PAGE, true);
    g_assert(all_eq(f, gpa[4993], 0x77, PAGE));

    /* QUERY, and lowest fit: a page goes into the first hole */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID,
                        bus[MANY - 2] + 8, 0, 0, &out), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.addr, ==, gpa[MANY - 2] + 8);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus[3], 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmphex(map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ), ==, bus[3]);
    /* Two pages fit in no hole but the last one (9999), open-ended */
    g_assert_cmphex(map(f, DATA_GPA, 2 * PAGE, IOMMU_EMUL_MAP_READ), ==,
                    bus[MANY - 1]);
    g_assert_cmphex(map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ), ==,
                    bus[10]);

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, &out),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(out.length, ==, MANY - nholes + 3);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    fx_free(f);
}

/* Vector 0 on faults, vector 1 on SYNC with IRQ; masked: pending bits */
static void test_msix(const void *data)
{
    Fixture *f = fx_start(data, NULL);

    qpci_msix_enable(f->iommu);
    g_assert(qpci_msix_masked(f->iommu, IOMMU_EMUL_VEC_FAULT));
    g_assert(qpci_msix_masked(f->iommu, IOMMU_EMUL_VEC_CMD));
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_FAULT));
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_CMD));

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SYNC, 0, 0, 0, 0, 0, NULL), ==,
                    IOMMU_EMUL_ST_OK);
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_CMD));
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_SYNC, IOMMU_EMUL_SYNC_IRQ, 0, 0, 0,
                        0, NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_CMD));
    g_assert_false(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_FAULT));

    translate_on(f);
    edu_dma(f, DATA_GPA, 8, true);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert(qpci_msix_pending(f->iommu, IOMMU_EMUL_VEC_FAULT));
    fx_free(f);
}

/* The MSI window passes through for a translating requester */
static void test_msi_window(const void *data)
{
    Fixture *f = fx_new(data, NULL, ",dma_mask=0xffffffffffffffff");

    rings_on(f);
    translate_on(f);

    /* A zero-vector MSI to the local APIC window: not a fault */
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, DATA_GPA, 4, false);             /* faults: not mapped */
    edu_dma(f, IOMMU_EMUL_MSI_BASE, 4, true);   /* passes */
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmphex(fault_at(f, 0).addr, ==, DATA_GPA);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 1);
    /* and it is never handed out as a bus address */
    {
        uint64_t bus = 0;
        int i;

        /* 20 x 224 MiB of the same RAM, from 1 MiB up, cross 4 GiB */
        for (i = 0; i < 20; i++) {
            CmdOut out;

            g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ,
                                EDU_RID, BIG_GPA, BIG_LEN, 0, &out), ==,
                            IOMMU_EMUL_ST_OK);
            g_assert_false(out.addr <= IOMMU_EMUL_MSI_LAST &&
                           out.addr + BIG_LEN > IOMMU_EMUL_MSI_BASE);
            bus = MAX(bus, out.addr);
        }
        g_assert_cmphex(bus, >, IOMMU_EMUL_MSI_LAST);
    }
    fx_free(f);
}

static void test_limits(const void *data)
{
    Fixture *f = fx_start(data, ",max-mappings=2");
    uint64_t lo = 0x100000;

    g_assert_cmpuint(rd32(f, A_LIMITS), ==, 2);
    /* The DMA limit bounds the bus address: room for exactly one page */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA, 2 * PAGE, lo + PAGE - 1, NULL), ==,
                    IOMMU_EMUL_ST_NO_SPACE);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA, PAGE, lo + PAGE - 1, NULL), ==,
                    IOMMU_EMUL_ST_OK);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA, PAGE, lo + PAGE - 1, NULL), ==,
                    IOMMU_EMUL_ST_NO_SPACE);
    map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ);
    /* max-mappings per requester */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_NO_SPACE);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    fx_free(f);
}

/* Several entries, one tail write: all execute before the write returns */
static void test_batch(const void *data)
{
    Fixture *f = fx_start(data, NULL);
    uint8_t e[IOMMU_EMUL_CMD_SIZE];
    uint64_t b[3];
    int i;

    for (i = 0; i < 3; i++) {
        memset(e, 0, sizeof(e));
        stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, IOMMU_EMUL_OP_MAP);
        stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, IOMMU_EMUL_MAP_READ);
        stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, EDU_RID);
        stq_le_p(e + IOMMU_EMUL_CMD_ADDR, DATA_GPA + i * PAGE);
        stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, PAGE);
        qtest_memwrite(f->qts, CMDQ_GPA + i * IOMMU_EMUL_CMD_SIZE, e,
                       sizeof(e));
    }
    wr32(f, A_CMDQ_TAIL, 3);
    g_assert_cmpuint(rd32(f, A_CMDQ_HEAD), ==, 3);
    for (i = 0; i < 3; i++) {
        qtest_memread(f->qts, CMDQ_GPA + i * IOMMU_EMUL_CMD_SIZE, e,
                      sizeof(e));
        g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                        IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
        b[i] = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR);
        /* the guest's fields are left alone */
        g_assert_cmphex(ldq_le_p(e + IOMMU_EMUL_CMD_ADDR), ==,
                        DATA_GPA + i * PAGE);
    }
    g_assert_cmphex(b[0], !=, b[1]);
    g_assert_cmphex(b[1], !=, b[2]);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 3);
    fx_free(f);
}

/* After a system reset, a translating requester is back in bypass */
static void test_reset_bypass(const void *data)
{
    Fixture *f = fx_start(data, NULL);

    translate_on(f);
    map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "unmaps"), ==, 1);
    qpci_device_enable(f->edu);
    qpci_config_writel(f->edu, PCI_BASE_ADDRESS_0, (uint32_t)f->edu_bar.addr);
    edu_load(f, DATA_GPA, 0x2e, DATA_GPA);
    fill(f, DATA_GPA + PAGE, 0, PAGE);
    edu_dma(f, DATA_GPA + PAGE, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0x2e, PAGE));
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    fx_free(f);
}

/* Host address of guest RAM at @gpa (below 4 GiB), from info ramblock */
static uint64_t host_addr(Fixture *f, const char *block, uint64_t gpa)
{
    g_autofree char *out = qtest_hmp(f->qts, "info ramblock");
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    uint64_t hva = 0;
    int i;

    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) w = g_strsplit_set(g_strstrip(lines[i]), " ", -1);
        int n = 0, j;
        const char *col[8] = { NULL };

        for (j = 0; w[j] && n < 8; j++) {
            if (*w[j]) {
                col[n++] = w[j];
            }
        }
        /* Block Name, PSize (2 words), Offset, Used, Total, HVA, RO */
        if (n >= 7 && !strcmp(col[0], block)) {
            hva = g_ascii_strtoull(col[6], NULL, 16);
        }
    }
    g_assert_cmphex(hva, !=, 0);
    return hva + gpa;
}

/* Is the host page behind @gpa present in QEMU's page tables? */
static bool present(Fixture *f, const char *block, uint64_t gpa)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/pagemap",
                                            (int)qtest_pid(f->qts));
    uint64_t hva = host_addr(f, block, gpa);
    uint64_t ent = 0;
    int fd = open(path, O_RDONLY);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, &ent, sizeof(ent), (hva / PAGE) * 8), ==,
                    sizeof(ent));
    close(fd);
    return ent >> 63;
}

/*
 * Balloon inflation over pinned and unpinned pages: the unpinned pages go
 * back to the host, the pinned ones stay with their contents. With a memfd
 * backend, discarding punches holes, which mlock alone does not stop.
 */
static void balloon(const char *machine, bool memfd)
{
    Fixture *f = fx_new(machine, NULL, memfd ?
                        " -device virtio-balloon-pci,addr=06.0"
                        " -object memory-backend-memfd,id=ram0,size=256M"
                        " -machine memory-backend=ram0" :
                        " -device virtio-balloon-pci,addr=06.0");
    const char *block = memfd ? "ram0" : "pc.ram";
    QPCIAddress addr = { .devfn = QPCI_DEVFN(6, 0) };
    QGuestAllocator alloc;
    QVirtioPCIDevice *vb;
    QVirtQueue *vq;
    uint64_t pfns;
    uint32_t head;
    int i;

    rings_on(f);
    for (i = 0; i < 8; i++) {
        fill(f, DATA_GPA + i * PAGE, 0x80 + i, PAGE);
    }
    /* Even pages are pinned */
    for (i = 0; i < 8; i += 2) {
        map(f, DATA_GPA + i * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    }
    for (i = 0; i < 8; i++) {
        g_assert(present(f, block, DATA_GPA + i * PAGE));
    }

    pc_alloc_init(&alloc, f->qts, ALLOC_NO_FLAGS);
    vb = virtio_pci_new(f->bus, &addr);
    g_assert_nonnull(vb);
    qvirtio_pci_device_enable(vb);
    qvirtio_start_device(&vb->vdev);
    qvirtio_set_features(&vb->vdev, qvirtio_get_features(&vb->vdev) &
                         (1ull << VIRTIO_F_VERSION_1));
    vq = qvirtqueue_setup(&vb->vdev, &alloc, 0);
    qvirtio_set_driver_ok(&vb->vdev);

    pfns = guest_alloc(&alloc, 8 * 4);
    for (i = 0; i < 8; i++) {
        uint8_t le[4];

        stl_le_p(le, (DATA_GPA >> 12) + i);
        qtest_memwrite(f->qts, pfns + i * 4, le, 4);
    }
    head = qvirtqueue_add(f->qts, vq, pfns, 8 * 4, false, false);
    qvirtqueue_kick(f->qts, &vb->vdev, vq, head);
    qvirtio_wait_used_elem(f->qts, &vb->vdev, vq, head, NULL,
                           5 * 1000 * 1000);

    for (i = 0; i < 8; i++) {
        /* Check presence before reading: a read maps the zero page */
        if (i % 2) {
            g_assert_false(present(f, block, DATA_GPA + i * PAGE));
        } else {
            g_assert(present(f, block, DATA_GPA + i * PAGE));
            g_assert(all_eq(f, DATA_GPA + i * PAGE, 0x80 + i, PAGE));
        }
    }
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 4);

    qvirtqueue_cleanup(vb->vdev.bus, vq, &alloc);
    qvirtio_pci_device_disable(vb);
    g_free(vb->pdev);
    g_free(vb);
    alloc_destroy(&alloc);
    fx_free(f);
}

static void test_balloon(const void *data)
{
    balloon(data, false);
}

static void test_balloon_memfd(const void *data)
{
    balloon(data, true);
}

/* A virtio-balloon at 06.0 with its inflate (0) and deflate (1) queues */
typedef struct Balloon {
    QGuestAllocator alloc;
    QVirtioPCIDevice *vb;
    QVirtQueue *vq[2];
} Balloon;

static void balloon_start(Fixture *f, Balloon *b)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(6, 0) };

    pc_alloc_init(&b->alloc, f->qts, ALLOC_NO_FLAGS);
    b->vb = virtio_pci_new(f->bus, &addr);
    g_assert_nonnull(b->vb);
    qvirtio_pci_device_enable(b->vb);
    qvirtio_start_device(&b->vb->vdev);
    qvirtio_set_features(&b->vb->vdev, qvirtio_get_features(&b->vb->vdev) &
                         (1ull << VIRTIO_F_VERSION_1));
    b->vq[0] = qvirtqueue_setup(&b->vb->vdev, &b->alloc, 0);
    b->vq[1] = qvirtqueue_setup(&b->vb->vdev, &b->alloc, 1);
    qvirtio_set_driver_ok(&b->vb->vdev);
}

/* Inflate (@q 0) or deflate (@q 1) the pages at @gpas */
static void balloon_pages(Fixture *f, Balloon *b, int q, const uint64_t *gpas,
                          int n)
{
    uint64_t pfns = guest_alloc(&b->alloc, n * 4);
    uint32_t head;
    int i;

    for (i = 0; i < n; i++) {
        uint8_t le[4];

        stl_le_p(le, gpas[i] >> 12);
        qtest_memwrite(f->qts, pfns + i * 4, le, 4);
    }
    head = qvirtqueue_add(f->qts, b->vq[q], pfns, n * 4, false, false);
    qvirtqueue_kick(f->qts, &b->vb->vdev, b->vq[q], head);
    qvirtio_wait_used_elem(f->qts, &b->vb->vdev, b->vq[q], head, NULL,
                           5 * 1000 * 1000);
    guest_free(&b->alloc, pfns);
}

static void balloon_stop(Balloon *b)
{
    qvirtqueue_cleanup(b->vb->vdev.bus, b->vq[0], &b->alloc);
    qvirtqueue_cleanup(b->vb->vdev.bus, b->vq[1], &b->alloc);
    qvirtio_pci_device_disable(b->vb);
    g_free(b->vb->pdev);
    g_free(b->vb);
    alloc_destroy(&b->alloc);
}

/*
 * Deferred discard: a page ballooned while pinned is discarded when its
 * last mapping goes away, unless the guest deflated it or reset the
 * balloon meanwhile.
 */
static void test_balloon_deferred(const void *data)
{
    Fixture *f = fx_new(data, NULL, " -device virtio-balloon-pci,addr=06.0");
    uint64_t gpa[8], bus[8];
    Balloon b;
    int i;

    rings_on(f);
    for (i = 0; i < 8; i++) {
        gpa[i] = DATA_GPA + i * PAGE;
        fill(f, gpa[i], 0x80 + i, PAGE);
    }
    /* Even pages are pinned, page 0 twice (two mappings) */
    for (i = 0; i < 8; i += 2) {
        bus[i] = map(f, gpa[i], PAGE, IOMMU_EMUL_MAP_READ);
    }
    bus[1] = map(f, gpa[0], PAGE, IOMMU_EMUL_MAP_WRITE);

    balloon_start(f, &b);
    balloon_pages(f, &b, 0, gpa, 8);
    for (i = 0; i < 8; i++) {
        if (i % 2) {
            g_assert_false(present(f, "pc.ram", gpa[i]));
        } else {
            g_assert(present(f, "pc.ram", gpa[i]));
            g_assert(all_eq(f, gpa[i], 0x80 + i, PAGE));
        }
    }
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 0);

    /* Page 2: its only mapping goes, so does the page */
    unmap(f, bus[2], PAGE);
    g_assert_false(present(f, "pc.ram", gpa[2]));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 1);

    /* Page 0: only when its second mapping goes */
    unmap(f, bus[0], PAGE);
    g_assert(present(f, "pc.ram", gpa[0]));
    g_assert(all_eq(f, gpa[0], 0x80, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 1);
    unmap(f, bus[1], PAGE);
    g_assert_false(present(f, "pc.ram", gpa[0]));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 2);

    /* Page 4: deflated before it is unpinned, so it is kept */
    balloon_pages(f, &b, 1, &gpa[4], 1);
    unmap(f, bus[4], PAGE);
    g_assert(present(f, "pc.ram", gpa[4]));
    g_assert(all_eq(f, gpa[4], 0x84, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 2);

    /* Page 6: a balloon reset gives every page back to the guest */
    qvirtio_reset(&b.vb->vdev);
    unmap(f, bus[6], PAGE);
    g_assert(present(f, "pc.ram", gpa[6]));
    g_assert(all_eq(f, gpa[6], 0x86, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 4);

    balloon_stop(&b);
    fx_free(f);
}

/*
 * DETACH and a system reset: a device reset drops the deferred discards
 * (the rebooting guest owns its memory), DETACH performs them.
 */
static void test_balloon_deferred_detach(const void *data)
{
    Fixture *f = fx_new(data, NULL, " -device virtio-balloon-pci,addr=06.0");
    uint64_t gpa[4];
    Balloon b;
    int i;

    rings_on(f);
    for (i = 0; i < 4; i++) {
        gpa[i] = DATA_GPA + i * PAGE;
        fill(f, gpa[i], 0x40 + i, PAGE);
        map(f, gpa[i], PAGE, IOMMU_EMUL_MAP_READ);
    }
    balloon_start(f, &b);
    balloon_pages(f, &b, 0, gpa, 2);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_false(present(f, "pc.ram", gpa[0]));
    g_assert_false(present(f, "pc.ram", gpa[1]));
    g_assert(all_eq(f, gpa[2], 0x42, PAGE));
    g_assert(all_eq(f, gpa[3], 0x43, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 2);

    map(f, gpa[2], PAGE, IOMMU_EMUL_MAP_READ);
    balloon_pages(f, &b, 0, &gpa[2], 1);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 3);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert(present(f, "pc.ram", gpa[2]));
    g_assert(all_eq(f, gpa[2], 0x42, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 2);

    balloon_stop(&b);
    fx_free(f);
}

/*
 * virtio-mem: a virtio-mem-pci at 06.0 over a memfd memory backend "mem1"
 * of VMEM_SIZE, all of which the device may plug (requested-size)
 */
#define VMEM_SIZE       (64ULL << 20)
#define VMEM_ARGS       " -m 256M,maxmem=1G -object memory-backend-memfd," \
                        "id=mem1,size=64M -device virtio-mem-pci,id=vm0," \
                        "memdev=mem1,requested-size=64M,addr=06.0"
#define VMEM_BLOCK      "0000:00:06.0/mem1"     /* its RAM block */

typedef struct VMem {
    QGuestAllocator alloc;
    QVirtioPCIDevice *vm;
    QVirtQueue *vq;
    uint64_t addr;          /* guest-physical start of its memory */
    uint64_t block;         /* block size */
} VMem;

static void vmem_start(Fixture *f, VMem *m)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(6, 0) };
    uint64_t want = (1ull << VIRTIO_F_VERSION_1) |
                    (1ull << VIRTIO_MEM_F_ACPI_PXM) |
                    (1ull << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);

    pc_alloc_init(&m->alloc, f->qts, ALLOC_NO_FLAGS);
    m->vm = virtio_pci_new(f->bus, &addr);
    g_assert_nonnull(m->vm);
    qvirtio_pci_device_enable(m->vm);
    qvirtio_start_device(&m->vm->vdev);
    qvirtio_set_features(&m->vm->vdev,
                         qvirtio_get_features(&m->vm->vdev) & want);
    m->vq = qvirtqueue_setup(&m->vm->vdev, &m->alloc, 0);
    qvirtio_set_driver_ok(&m->vm->vdev);
    m->addr = qvirtio_config_readq(&m->vm->vdev,
                                   offsetof(struct virtio_mem_config, addr));
    m->block = qvirtio_config_readq(&m->vm->vdev,
                                    offsetof(struct virtio_mem_config,
                                             block_size));
    g_assert_cmphex(m->addr, !=, 0);
    g_assert_cmphex(m->block, >=, PAGE);
}

/* One request (PLUG, UNPLUG, UNPLUG_ALL); returns the response type */
static uint16_t vmem_req(Fixture *f, VMem *m, uint16_t type, uint64_t gpa,
                         uint16_t nb_blocks)
{
    uint8_t req[sizeof(struct virtio_mem_req)] = { 0 };
    uint8_t resp[sizeof(struct virtio_mem_resp)];
    uint64_t rq = guest_alloc(&m->alloc, sizeof(req));
    uint64_t rs = guest_alloc(&m->alloc, sizeof(resp));
    uint32_t head;

    stw_le_p(req + offsetof(struct virtio_mem_req, type), type);
    stq_le_p(req + offsetof(struct virtio_mem_req, u.plug.addr), gpa);
    stw_le_p(req + offsetof(struct virtio_mem_req, u.plug.nb_blocks),
             nb_blocks);
    qtest_memwrite(f->qts, rq, req, sizeof(req));
    qtest_memset(f->qts, rs, 0xff, sizeof(resp));
    head = qvirtqueue_add(f->qts, m->vq, rq, sizeof(req), false, true);
    qvirtqueue_add(f->qts, m->vq, rs, sizeof(resp), true, false);
    qvirtqueue_kick(f->qts, &m->vm->vdev, m->vq, head);
    qvirtio_wait_used_elem(f->qts, &m->vm->vdev, m->vq, head, NULL,
                           5 * 1000 * 1000);
    qtest_memread(f->qts, rs, resp, sizeof(resp));
    guest_free(&m->alloc, rq);
    guest_free(&m->alloc, rs);
    return lduw_le_p(resp + offsetof(struct virtio_mem_resp, type));
}

static void vmem_stop(VMem *m)
{
    qvirtqueue_cleanup(m->vm->vdev.bus, m->vq, &m->alloc);
    qvirtio_pci_device_disable(m->vm);
    g_free(m->vm->pdev);
    g_free(m->vm);
    alloc_destroy(&m->alloc);
}

/*
 * virtio-mem unplug opts into the discard veto: a block with a pinned page
 * is refused as a whole (BUSY, nothing discarded, even on memfd memory
 * where mlock would not stop the hole punch), and goes once unpinned.
 */
static void test_virtio_mem_veto(const void *data)
{
    Fixture *f = fx_new(data, NULL, VMEM_ARGS);
    uint64_t b0, b1, page0, page1, bus0, bus1;
    VMem m;

    rings_on(f);
    vmem_start(f, &m);
    b0 = m.addr;
    b1 = m.addr + m.block;
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_PLUG, b0, 2), ==,
                     VIRTIO_MEM_RESP_ACK);
    page0 = b0 + 3 * PAGE;
    page1 = b1 + 5 * PAGE;
    fill(f, page0, 0x3c, PAGE);
    fill(f, page1, 0x3d, PAGE);
    fill(f, b0, 0x3e, PAGE);
    bus0 = map(f, page0, PAGE, IOMMU_EMUL_MAP_READ);
    bus1 = map(f, page1, PAGE, IOMMU_EMUL_MAP_READ);

    /* Block 0 holds a pinned page: refused, nothing of it discarded */
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG, b0, 1), ==,
                     VIRTIO_MEM_RESP_BUSY);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 1);
    g_assert(present(f, VMEM_BLOCK, b0 - m.addr));
    g_assert(all_eq(f, b0, 0x3e, PAGE));
    g_assert(all_eq(f, page0, 0x3c, PAGE));
    /* So is unplugging everything */
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0), ==,
                     VIRTIO_MEM_RESP_BUSY);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 2);
    g_assert(all_eq(f, page1, 0x3d, PAGE));

    /* Unpinned, block 0 goes back to the host */
    unmap(f, bus0, PAGE);
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG, b0, 1), ==,
                     VIRTIO_MEM_RESP_ACK);
    g_assert_false(present(f, VMEM_BLOCK, page0 - m.addr));
    g_assert_false(present(f, VMEM_BLOCK, b0 - m.addr));
    g_assert(all_eq(f, page1, 0x3d, PAGE));
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0), ==,
                     VIRTIO_MEM_RESP_BUSY);
    unmap(f, bus1, PAGE);
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0), ==,
                     VIRTIO_MEM_RESP_ACK);
    g_assert_false(present(f, VMEM_BLOCK, page1 - m.addr));
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 3);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);

    vmem_stop(&m);
    fx_free(f);
}

/*
 * The pin cache: unmapped pages stay locked (up to pin-cache), invisible
 * to the guest, and mapping them again is a hit that makes no system
 * call; DETACH caches too, a reset empties the cache.
 */
static void test_pin_cache(const void *data)
{
    Fixture *f = fx_start(data, ",pin-cache=64K");
    uint64_t base, bus, mlocks;
    CmdOut out;

    translate_on(f);
    base = locked_kb(f);
    bus = map(f, DATA_GPA, 4 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "pin-cache-misses"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "pin-cache-hits"), ==, 0);
    /* Four adjacent host pages: one mlock */
    g_assert_cmpuint(qom_u64(f, "mlock-calls"), ==, 1);
    g_assert_cmpuint(locked_kb(f), ==, base + 16);

    unmap(f, bus, 4 * PAGE);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmphex(rd64(f, A_PINNED), ==, 0);
    g_assert_cmpuint(qom_u64(f, "munlock-calls"), ==, 0);
    g_assert_cmpuint(locked_kb(f), ==, base + 16);
    /* A cached page is not mapped */
    edu_dma(f, bus, PAGE, true);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmpuint(fault_at(f, 0).reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus, 0, 0, &out),
                    ==, IOMMU_EMUL_ST_NOT_FOUND);

    /* Hits: no system call */
    mlocks = qom_u64(f, "mlock-calls");
    bus = map(f, DATA_GPA, 4 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "pin-cache-hits"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "mlock-calls"), ==, mlocks);
    g_assert_cmpuint(qom_u64(f, "munlock-calls"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 4);
    g_assert_cmphex(rd64(f, A_PINNED), ==, 4 * PAGE);
    g_assert_cmpuint(locked_kb(f), ==, base + 16);
    /* It is mapped again, for real */
    fill(f, DATA_GPA + PAGE, 0x4d, PAGE);
    edu_dma(f, bus + PAGE, PAGE, false);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);

    /* One cached page and one new one: one hit, one miss, one mlock */
    unmap(f, bus, 4 * PAGE);
    map(f, DATA_GPA + 3 * PAGE, 2 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "pin-cache-hits"), ==, 5);
    g_assert_cmpuint(qom_u64(f, "pin-cache-misses"), ==, 5);
    g_assert_cmpuint(qom_u64(f, "mlock-calls"), ==, mlocks + 1);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 3);
    g_assert_cmpuint(locked_kb(f), ==, base + 20);

    /* DETACH caches; a system reset empties the cache */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 5);
    g_assert_cmpuint(qom_u64(f, "munlock-calls"), ==, 0);
    g_assert_cmpuint(locked_kb(f), ==, base + 20);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pin-cache-evictions"), ==, 5);
    g_assert_cmpuint(locked_kb(f), ==, base);
    fx_free(f);
}

/* The bound: the least recently unpinned pages leave the cache first */
static void test_pin_cache_bound(const void *data)
{
    Fixture *f = fx_start(data, ",pin-cache=16K");
    uint64_t base, bus[8], mlocks;
    int i;

    base = locked_kb(f);
    for (i = 0; i < 8; i++) {
        bus[i] = map(f, DATA_GPA + i * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    }
    g_assert_cmpuint(locked_kb(f), ==, base + 32);
    for (i = 0; i < 8; i++) {
        unmap(f, bus[i], PAGE);
        g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, MIN(i + 1, 4));
    }
    g_assert_cmpuint(qom_u64(f, "pin-cache-evictions"), ==, 4);
    g_assert_cmpuint(qom_u64(f, "munlock-calls"), ==, 4);
    g_assert_cmpuint(locked_kb(f), ==, base + 16);

    /* Pages 4-7 are cached, 0-3 are not */
    mlocks = qom_u64(f, "mlock-calls");
    map(f, DATA_GPA + 7 * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "mlock-calls"), ==, mlocks);
    g_assert_cmpuint(qom_u64(f, "pin-cache-hits"), ==, 1);
    map(f, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "mlock-calls"), ==, mlocks + 1);
    g_assert_cmpuint(qom_u64(f, "pin-cache-misses"), ==, 9);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 3);
    g_assert_cmpuint(locked_kb(f), ==, base + 20);
    fx_free(f);
}

/*
 * RLIMIT_MEMLOCK counts cached pages: a MAP that hits the limit empties
 * the cache and succeeds.
 */
static void test_pin_cache_memlock(const void *data)
{
    Fixture *f = fx_memlock(data, ",pin-cache=64K");
    uint64_t bus;

    if (!f) {
        return;
    }
    bus = map(f, DATA_GPA, 8 * PAGE, IOMMU_EMUL_MAP_READ);
    unmap(f, bus, 8 * PAGE);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 8);
    /* 16 more pages do not fit in 64 KiB next to the 8 cached ones */
    map(f, DATA_GPA + 8 * PAGE, 16 * PAGE, IOMMU_EMUL_MAP_READ);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pin-cache-evictions"), ==, 8);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 16);
    fx_free(f);
}

/* Features and queues of a virtio-balloon at 06.0 for these tests */
static void balloon_start_features(Fixture *f, Balloon *b, uint64_t features,
                                   int vq, int nvq)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(6, 0) };
    int i;

    pc_alloc_init(&b->alloc, f->qts, ALLOC_NO_FLAGS);
    b->vb = virtio_pci_new(f->bus, &addr);
    g_assert_nonnull(b->vb);
    qvirtio_pci_device_enable(b->vb);
    qvirtio_start_device(&b->vb->vdev);
    qvirtio_set_features(&b->vb->vdev, qvirtio_get_features(&b->vb->vdev) &
                         features);
    for (i = 0; i < nvq; i++) {
        b->vq[i] = qvirtqueue_setup(&b->vb->vdev, &b->alloc, vq + i);
    }
    qvirtio_set_driver_ok(&b->vb->vdev);
}

/*
 * Balloon inflation over pages that only the pin cache holds returns all
 * of them to the host (the host's pagemap says so); a page that is still
 * mapped stays, as without the cache.
 */
static void test_pin_cache_balloon(const void *data)
{
    Fixture *f = fx_new(data, ",pin-cache=64M",
                        " -device virtio-balloon-pci,addr=06.0");
    const uint64_t lo = 64 << 20, n = (16 << 20) / PAGE;
    const uint64_t kept = lo + 1000 * PAGE;
    g_autofree uint64_t *gpa = g_new(uint64_t, n);
    g_autofree uint64_t *pm = g_new(uint64_t, n);
    g_autofree char *path = NULL;
    uint64_t bus[16], base, i, present_pages = 0;
    Balloon b;
    int fd;

    rings_on(f);
    qtest_memset(f->qts, lo, 0x5a, n * PAGE);
    base = locked_kb(f);
    for (i = 0; i < 16; i++) {
        bus[i] = map(f, lo + (i << 20), 1 << 20, IOMMU_EMUL_MAP_READ);
    }
    map(f, kept, PAGE, IOMMU_EMUL_MAP_READ);
    for (i = 0; i < 16; i++) {
        unmap(f, bus[i], 1 << 20);
    }
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, n - 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    g_assert_cmpuint(locked_kb(f), ==, base + n * 4);

    for (i = 0; i < n; i++) {
        gpa[i] = lo + i * PAGE;
    }
    balloon_start_features(f, &b, 1ull << VIRTIO_F_VERSION_1, 0, 2);
    balloon_pages(f, &b, 0, gpa, n);

    path = g_strdup_printf("/proc/%d/pagemap", (int)qtest_pid(f->qts));
    fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, pm, n * 8,
                          (host_addr(f, "pc.ram", lo) / PAGE) * 8), ==, n * 8);
    close(fd);
    for (i = 0; i < n; i++) {
        if (gpa[i] != kept) {
            present_pages += pm[i] >> 63;
        }
    }
    g_test_message("%" PRIu64 " cached pages ballooned: %" PRIu64 " still"
                   " present, pin-cache-releases %" PRIu64, n - 1,
                   present_pages, qom_u64(f, "pin-cache-releases"));
    g_assert_cmpuint(present_pages, ==, 0);
    g_assert(present(f, "pc.ram", kept));
    g_assert(all_eq(f, kept, 0x5a, PAGE));
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pin-cache-releases"), ==, n - 1);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 1);
    g_assert_cmpuint(locked_kb(f), ==, base + 4);
    balloon_stop(&b);
    fx_free(f);
}

/*
 * Free page reporting releases cached pages too; a mapped page is skipped
 * and, as free page reporting never defers, stays after its unmap.
 */
static void test_pin_cache_fpr(const void *data)
{
    Fixture *f = fx_new(data, ",pin-cache=1M",
                        " -device virtio-balloon-pci,addr=06.0,"
                        "free-page-reporting=on");
    const uint64_t rep_vq = 3;   /* inflate, deflate, stats, reporting */
    uint64_t bus, bus5;
    uint32_t head;
    Balloon b;
    int i;

    rings_on(f);
    for (i = 0; i < 8; i++) {
        fill(f, DATA_GPA + i * PAGE, 0x60 + i, PAGE);
    }
    bus = map(f, DATA_GPA, 8 * PAGE, IOMMU_EMUL_MAP_READ);
    bus5 = map(f, DATA_GPA + 5 * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    unmap(f, bus, 8 * PAGE);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 7);

    balloon_start_features(f, &b, (1ull << VIRTIO_F_VERSION_1) |
                           (1ull << VIRTIO_BALLOON_F_REPORTING), rep_vq, 1);
    head = qvirtqueue_add(f->qts, b.vq[0], DATA_GPA, 8 * PAGE, true, false);
    qvirtqueue_kick(f->qts, &b.vb->vdev, b.vq[0], head);
    qvirtio_wait_used_elem(f->qts, &b.vb->vdev, b.vq[0], head, NULL,
                           5 * 1000 * 1000);
    for (i = 0; i < 8; i++) {
        if (i == 5) {
            g_assert(present(f, "pc.ram", DATA_GPA + i * PAGE));
            g_assert(all_eq(f, DATA_GPA + i * PAGE, 0x65, PAGE));
        } else {
            g_assert_false(present(f, "pc.ram", DATA_GPA + i * PAGE));
        }
    }
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pin-cache-releases"), ==, 7);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 1);
    unmap(f, bus5, PAGE);
    g_assert(present(f, "pc.ram", DATA_GPA + 5 * PAGE));
    g_assert(all_eq(f, DATA_GPA + 5 * PAGE, 0x65, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 1);

    qvirtqueue_cleanup(b.vb->vdev.bus, b.vq[0], &b.alloc);
    qvirtio_pci_device_disable(b.vb);
    g_free(b.vb->pdev);
    g_free(b.vb);
    alloc_destroy(&b.alloc);
    fx_free(f);
}

/*
 * A page ballooned while pinned is discarded when it is unpinned, never
 * cached; deflated, it is cached as any other.
 */
static void test_pin_cache_deferred(const void *data)
{
    Fixture *f = fx_new(data, ",pin-cache=1M",
                        " -device virtio-balloon-pci,addr=06.0");
    uint64_t gpa[2] = { DATA_GPA, DATA_GPA + PAGE }, bus[2];
    Balloon b;
    int i;

    rings_on(f);
    for (i = 0; i < 2; i++) {
        fill(f, gpa[i], 0x70 + i, PAGE);
        bus[i] = map(f, gpa[i], PAGE, IOMMU_EMUL_MAP_READ);
    }
    balloon_start(f, &b);
    balloon_pages(f, &b, 0, gpa, 2);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 2);
    balloon_pages(f, &b, 1, &gpa[1], 1);

    unmap(f, bus[0], PAGE);
    g_assert_false(present(f, "pc.ram", gpa[0]));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 1);
    unmap(f, bus[1], PAGE);
    g_assert(all_eq(f, gpa[1], 0x71, PAGE));
    g_assert_cmpuint(qom_u64(f, "deferred-discards"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    balloon_stop(&b);
    fx_free(f);
}

/* virtio-mem unplug releases a page that only the pin cache holds */
static void test_pin_cache_virtio_mem(const void *data)
{
    Fixture *f = fx_new(data, ",pin-cache=1M", VMEM_ARGS);
    uint64_t page, bus;
    VMem m;

    rings_on(f);
    vmem_start(f, &m);
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_PLUG, m.addr, 1), ==,
                     VIRTIO_MEM_RESP_ACK);
    page = m.addr + 9 * PAGE;
    fill(f, page, 0x2f, PAGE);
    bus = map(f, page, PAGE, IOMMU_EMUL_MAP_READ);
    unmap(f, bus, PAGE);
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 1);
    g_assert_cmpuint(vmem_req(f, &m, VIRTIO_MEM_REQ_UNPLUG, m.addr, 1), ==,
                     VIRTIO_MEM_RESP_ACK);
    g_assert_false(present(f, VMEM_BLOCK, page - m.addr));
    g_assert_cmpuint(qom_u64(f, "cached-pages"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pin-cache-releases"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 0);
    vmem_stop(&m);
    fx_free(f);
}

static uint64_t vmrss_kb(Fixture *f)
{
    return proc_kb(f, "status", "VmRSS:");
}

/*
 * The acceptance figure: 64 MiB pinned out of 512 MiB, the balloon inflated
 * over all RAM above 16 MiB. Every unpinned page goes back to the host, no
 * pinned byte is lost.
 */
static void test_overcommit(const void *data)
{
    Fixture *f = fx_new(data, NULL,
                        " -m 512M -device virtio-balloon-pci,addr=06.0");
    QPCIAddress addr = { .devfn = QPCI_DEVFN(6, 0) };
    const uint64_t lo = 16 << 20, hi = (uint64_t)512 << 20;
    const uint64_t plo = 128 << 20, phi = 192 << 20;
    uint64_t n = (hi - lo) / PAGE, i, gone = 0, kept = 0, bad = 0, lost = 0;
    QGuestAllocator alloc;
    QVirtioPCIDevice *vb;
    QVirtQueue *vq;
    uint64_t pfns, rss0, rss1, hva;
    uint32_t head;
    g_autofree uint32_t *pf = g_new(uint32_t, n);
    g_autofree uint64_t *pm = g_new(uint64_t, n);
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    g_autofree char *path = NULL;
    int fd;
    gint64 t0, t1;

    rings_on(f);
    qtest_memset(f->qts, lo, 0x5a, hi - lo);
    for (i = 0; i < 64; i++) {
        map(f, plo + (i << 20), 1 << 20, IOMMU_EMUL_MAP_READ);
    }
    g_assert_cmpuint(qom_u64(f, "pinned-bytes"), ==, 64 << 20);
    rss0 = vmrss_kb(f);

    pc_alloc_init(&alloc, f->qts, ALLOC_NO_FLAGS);
    vb = virtio_pci_new(f->bus, &addr);
    qvirtio_pci_device_enable(vb);
    qvirtio_start_device(&vb->vdev);
    qvirtio_set_features(&vb->vdev, qvirtio_get_features(&vb->vdev) &
                         (1ull << VIRTIO_F_VERSION_1));
    vq = qvirtqueue_setup(&vb->vdev, &alloc, 0);
    qvirtio_set_driver_ok(&vb->vdev);
    pfns = guest_alloc(&alloc, n * 4);
    g_assert_cmphex(pfns + n * 4, <=, 0x200000);
    for (i = 0; i < n; i++) {
        pf[i] = cpu_to_le32((lo >> 12) + i);
    }
    qtest_memwrite(f->qts, pfns, pf, n * 4);
    t0 = g_get_monotonic_time();
    head = qvirtqueue_add(f->qts, vq, pfns, n * 4, false, false);
    qvirtqueue_kick(f->qts, &vb->vdev, vq, head);
    qvirtio_wait_used_elem(f->qts, &vb->vdev, vq, head, NULL,
                           60 * 1000 * 1000);
    t1 = g_get_monotonic_time();
    rss1 = vmrss_kb(f);

    hva = host_addr(f, "pc.ram", lo);
    path = g_strdup_printf("/proc/%d/pagemap", (int)qtest_pid(f->qts));
    fd = open(path, O_RDONLY);
    g_assert_cmpint(pread(fd, pm, n * 8, (hva / PAGE) * 8), ==, n * 8);
    close(fd);
    for (i = 0; i < n; i++) {
        uint64_t gpa = lo + i * PAGE;
        bool p = pm[i] >> 63;

        if (gpa >= plo && gpa < phi) {
            kept += p;
            bad += !p;
        } else {
            gone += !p;
            bad += p;
        }
    }
    for (i = plo; i < phi; i += 1 << 20) {
        uint64_t j;

        qtest_memread(f->qts, i, buf, 1 << 20);
        for (j = 0; j < (1 << 20); j++) {
            lost += buf[j] != 0x5a;
        }
    }
    g_test_message("inflated %" PRIu64 " pages (%" PRIu64 " MiB) in %.3f s;"
                   " unpinned discarded %" PRIu64 "/%" PRIu64 ", pinned kept"
                   " %" PRIu64 "/%" PRIu64 ", wrong %" PRIu64 ", pinned bytes"
                   " lost %" PRIu64 ", vetoed-discards %" PRIu64 ", VmRSS"
                   " %" PRIu64 " -> %" PRIu64 " MiB",
                   n, (hi - lo) >> 20, (t1 - t0) / 1e6,
                   gone, (uint64_t)(n - (phi - plo) / PAGE), kept,
                   (uint64_t)((phi - plo) / PAGE),
                   bad, lost, qom_u64(f, "vetoed-discards"),
                   rss0 >> 10, rss1 >> 10);
    g_assert_cmpuint(bad, ==, 0);
    g_assert_cmpuint(lost, ==, 0);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, (phi - plo) / PAGE);

    qvirtqueue_cleanup(vb->vdev.bus, vq, &alloc);
    qvirtio_pci_device_disable(vb);
    g_free(vb->pdev);
    g_free(vb);
    alloc_destroy(&alloc);
    fx_free(f);
}

/* Is the host page behind @gpa in a VMA locked with mlock (smaps)? */
static bool page_locked(Fixture *f, const char *block, uint64_t gpa)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps",
                                            (int)qtest_pid(f->qts));
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t hva = host_addr(f, block, gpa);
    bool in = false;
    int i;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        uint64_t lo, hi;
        char *end;

        /* A VMA header: "start-end perms offset dev inode [path]" */
        lo = g_ascii_strtoull(lines[i], &end, 16);
        if (*end == '-' && end != lines[i]) {
            hi = g_ascii_strtoull(end + 1, NULL, 16);
            in = hva >= lo && hva < hi;
        } else if (in && g_str_has_prefix(lines[i], "VmFlags:")) {
            return strstr(lines[i], " lo") != NULL;
        }
    }
    g_assert_not_reached();
}

/* A fixture for a QEMU migrated from @src */
static Fixture *fx_adopt(QTestState *qts, Fixture *src)
{
    Fixture *f = g_new0(Fixture, 1);

    f->qts = qts;
    f->bus = qpci_new_pc(qts, NULL);
    f->iommu = qpci_device_find(f->bus, IOMMU_DEVFN);
    f->edu = qpci_device_find(f->bus, EDU_DEVFN);
    g_assert_nonnull(f->iommu);
    g_assert_nonnull(f->edu);
    f->regs.addr = (qpci_config_readl(f->iommu, PCI_BASE_ADDRESS_0) &
                    ~0xfULL) |
                   (uint64_t)qpci_config_readl(f->iommu,
                                               PCI_BASE_ADDRESS_1) << 32;
    g_assert_cmphex(f->regs.addr, ==, src->regs.addr);
    /* edu has no migration state: program it as on the source */
    qpci_config_writel(f->edu, PCI_BASE_ADDRESS_0, src->edu_bar.addr);
    qpci_device_enable(f->edu);
    f->edu_bar = src->edu_bar;
    f->ring = src->ring;
    f->ring.dev = f->iommu;
    f->ring.bar = f->regs;
    return f;
}

/*
 * Migration: the domains, mappings, registers, fault state and pending
 * discards move to the destination, which re-pins the pages; DMA through
 * an existing mapping works there, unmapped addresses still fault.
 */
static void test_migrate(const void *data)
{
    g_autofree char *args = g_strdup_printf(
        "-machine %s -m 256M -device iommu-emul,id=iommu0,addr=04.0"
        " -device edu,addr=05.0 -device virtio-balloon-pci,addr=06.0",
        (const char *)data);
    const uint64_t a = DATA_GPA, b = DATA_GPA + PAGE;
    const uint64_t c = DATA_GPA + 4 * PAGE, dpage = DATA_GPA + 6 * PAGE;
    const uint64_t nomap = 0x200000;
    uint64_t bus_ab, bus_c, bus_d;
    Fixture *f = fx_start(data, " -device virtio-balloon-pci,addr=06.0");
    Fixture *t;
    QTestState *to;
    Balloon bl;
    Fault x;

    fill(f, a, 0x11, PAGE);
    fill(f, b, 0x22, PAGE);
    fill(f, DATA_GPA + 2 * PAGE, 0x77, PAGE);
    fill(f, c, 0x33, PAGE);
    fill(f, dpage, 0x44, PAGE);
    bus_ab = map(f, a, 2 * PAGE, IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    bus_c = map(f, c, PAGE, IOMMU_EMUL_MAP_READ);
    bus_d = map(f, dpage, PAGE, IOMMU_EMUL_MAP_READ);
    translate_on(f);
    /* A fault before migration: the destination continues the sequence */
    edu_dma(f, nomap, PAGE, true);
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    /* Page D is ballooned while pinned: its discard is pending */
    balloon_start(f, &bl);
    balloon_pages(f, &bl, 0, &dpage, 1);
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 4);

    to = qzc_migrate(f->qts, args);
    t = fx_adopt(to, f);

    /* State and counters */
    g_assert_cmpuint(qom_u64(t, "mappings"), ==, 3);
    g_assert_cmpuint(qom_u64(t, "pinned-pages"), ==, 4);
    g_assert_cmpuint(qom_u64(t, "maps"), ==, 3);
    g_assert_cmpuint(qom_u64(t, "faults"), ==, 1);
    g_assert_cmpuint(qom_u64(t, "vetoed-discards"), ==, 1);
    g_assert_cmphex(rd32(t, A_CTRL), ==, 3);
    g_assert_cmphex(rd32(t, A_STATUS), ==,
                    R_STATUS_CMDQ_ON_MASK | R_STATUS_FAULTQ_ON_MASK);
    g_assert_cmpuint(rd32(t, A_CMDQ_HEAD), ==, f->ring.tail);
    g_assert_cmpuint(rd32(t, A_FAULTQ_TAIL), ==, 1);

    /* The pages are locked on the destination, only they */
    g_assert(page_locked(t, "pc.ram", a));
    g_assert(page_locked(t, "pc.ram", b));
    g_assert(page_locked(t, "pc.ram", c));
    g_assert(page_locked(t, "pc.ram", dpage));
    g_assert_false(page_locked(t, "pc.ram", DATA_GPA + 2 * PAGE));
    g_assert_cmpuint(locked_kb(t), >=, 16);

    /* DMA through the existing mapping, both ways: A -> edu -> B */
    edu_dma(t, bus_ab, PAGE, false);
    edu_dma(t, bus_ab + PAGE, PAGE, true);
    g_assert(all_eq(t, b, 0x11, PAGE));
    g_assert(all_eq(t, a, 0x11, PAGE));
    g_assert(all_eq(t, DATA_GPA + 2 * PAGE, 0x77, PAGE));
    /* QUERY finds the mappings */
    g_assert_cmphex(cmd(t, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus_c, 0, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);

    /* Read-only stays read-only; unmapped still faults, sequence 2, 3 */
    edu_dma(t, bus_c, PAGE, true);
    g_assert(all_eq(t, c, 0x33, PAGE));
    edu_dma(t, nomap, PAGE, true);
    g_assert_cmpuint(rd32(t, A_FAULTQ_TAIL), ==, 3);
    x = fault_at(t, 1);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_PERM);
    g_assert_cmphex(x.addr, ==, bus_c);
    g_assert_cmpuint(x.seq, ==, 2);
    x = fault_at(t, 2);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(x.addr, ==, nomap);
    g_assert_cmpuint(x.seq, ==, 3);
    g_assert_cmpuint(qom_u64(t, "faults"), ==, 3);

    /* The pending discard moved too: unmapping D discards it there */
    g_assert(present(t, "pc.ram", dpage));
    unmap(t, bus_d, PAGE);
    g_assert_false(present(t, "pc.ram", dpage));
    g_assert_cmpuint(qom_u64(t, "deferred-discards"), ==, 1);

    /* New mappings go on from the migrated allocator state */
    g_assert_cmphex(map(t, DATA_GPA + 8 * PAGE, PAGE, IOMMU_EMUL_MAP_READ),
                    ==, bus_d);
    unmap(t, bus_ab, 2 * PAGE);
    g_assert_false(page_locked(t, "pc.ram", a));
    g_assert_cmpuint(qom_u64(t, "pinned-pages"), ==, 2);

    fx_free(t);
    balloon_stop(&bl);
    fx_free(f);
}

/*
 * A destination that cannot take the state refuses the stream and exits;
 * @dest_props: its iommu-emul properties, @dest_edu: its edu device.
 */
static void migrate_refused(const char *machine, const char *dest_props,
                            const char *dest_edu)
{
    g_autofree char *dir = g_dir_make_tmp("iommu-emul-mig-XXXXXX", NULL);
    g_autofree char *sock = g_build_filename(dir, "sock", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    Fixture *f = fx_start(machine, NULL);
    QTestState *to;

    map(f, DATA_GPA, 4 * PAGE, IOMMU_EMUL_MAP_READ);
    to = qtest_initf("-machine %s -m 256M -device iommu-emul,id=iommu0,"
                     "addr=04.0%s %s -incoming %s", machine, dest_props,
                     dest_edu, uri);
    qtest_set_expected_status(to, EXIT_FAILURE);
    qtest_qmp_assert_success(f->qts, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    qtest_wait_qemu(to);
    qtest_quit(to);
    /* The source is unharmed: it still has its mapping */
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 1);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 4);
    unlink(sock);
    rmdir(dir);
    fx_free(f);
}

static void test_migrate_refused(const void *data)
{
    /* Too small a max-pinned */
    migrate_refused(data, ",max-pinned=8K", "-device edu,addr=05.0");
    /* Another bus-address mode */
    migrate_refused(data, ",bus-addr=gpa", "-device edu,addr=05.0");
    /* The requester does not exist there */
    migrate_refused(data, "", "-device edu,addr=06.0");
}

/*
 * Migration of a large store: 10000 mappings, and in gpa mode the order
 * of overlapping mappings (UNMAP takes the most recent, QUERY reports the
 * oldest) survives too.
 */
static void test_migrate_many(const void *data)
{
    g_autofree char *args = g_strdup_printf(
        "-machine %s -m 256M -device iommu-emul,id=iommu0,addr=04.0"
        MANY_PROPS " -device edu,addr=05.0", (const char *)data);
    Fixture *f = fx_start(data, MANY_PROPS);
    g_autofree uint64_t *gpa = g_new(uint64_t, MANY);
    g_autofree uint64_t *bus = g_new(uint64_t, MANY);
    Fixture *t;
    unsigned i;

    big_ring(f);
    translate_on(f);
    for (i = 0; i < MANY; i++) {
        gpa[i] = MANY_GPA + (uint64_t)i * PAGE;
    }
    batch_pages(f, true, gpa, bus, MANY);
    batch_pages(f, false, &bus[100], NULL, 1);
    fill(f, gpa[0], 0x21, PAGE);
    fill(f, gpa[MANY - 1], 0, PAGE);

    t = fx_adopt(qzc_migrate(f->qts, args), f);
    g_assert_cmpuint(qom_u64(t, "mappings"), ==, MANY - 1);
    g_assert_cmpuint(qom_u64(t, "pinned-pages"), ==, MANY - 1);
    g_assert_cmpuint(qom_u64(t, "maps"), ==, MANY);
    dma_copy(t, bus[0], bus[MANY - 1]);
    g_assert(all_eq(t, gpa[MANY - 1], 0x21, PAGE));
    edu_dma(t, bus[100], PAGE, true);
    g_assert_cmpuint(rd32(t, A_FAULTQ_TAIL), ==, 1);
    g_assert_cmphex(fault_at(t, 0).addr, ==, bus[100]);
    /* The allocator goes on from the migrated store: the hole first */
    g_assert_cmphex(map(t, DATA_GPA, PAGE, IOMMU_EMUL_MAP_READ), ==,
                    bus[100]);
    fx_free(t);
    fx_free(f);
}

static void test_migrate_gpa_order(const void *data)
{
    g_autofree char *args = g_strdup_printf(
        "-machine %s -m 256M -device iommu-emul,id=iommu0,addr=04.0,"
        "bus-addr=gpa -device edu,addr=05.0", (const char *)data);
    Fixture *f = fx_start(data, ",bus-addr=gpa");
    const uint64_t a = DATA_GPA;
    Fixture *t;
    CmdOut out;

    map(f, DATA_GPA + 15 * PAGE, PAGE, IOMMU_EMUL_MAP_READ);
    translate_on(f);
    map(f, a, 2 * PAGE, IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    map(f, a, 2 * PAGE, IOMMU_EMUL_MAP_READ);
    map(f, a + PAGE, PAGE, IOMMU_EMUL_MAP_WRITE);

    t = fx_adopt(qzc_migrate(f->qts, args), f);
    g_assert_cmpuint(qom_u64(t, "mappings"), ==, 4);
    g_assert_cmpuint(qom_u64(t, "pinned-pages"), ==, 3);
    g_assert_cmpuint(qom_u64(t, "invalidations"), ==, 0);
    /* QUERY: the oldest of the three over page 1 */
    g_assert_cmphex(cmd(t, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, a + PAGE, 0, 0,
                        &out), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.flags, ==, IOMMU_EMUL_QUERY_READ |
                    IOMMU_EMUL_QUERY_WRITE | IOMMU_EMUL_QUERY_TRANSLATE);
    g_assert_cmphex(out.length, ==, 2 * PAGE);
    /* UNMAP of [a, a + 2 pages): the read-only one, the most recent */
    unmap(t, a, 2 * PAGE);
    g_assert(dma_writes(t, a, a, 0x31));
    unmap(t, a, 2 * PAGE);
    g_assert_false(dma_writes(t, a, a, 0x32));
    g_assert(dma_writes(t, a + PAGE, a + PAGE, 0x33));
    fx_free(t);
    fx_free(f);
}

/* Run QEMU to completion and expect it to fail with @msg on stderr */
static void expect_fail(const char *args, const char *msg)
{
    /* In case QEMU wrongly starts, -S and timeout(1) end it */
    g_autofree char *cmdline = g_strdup_printf(
        "timeout 60 %s -accel qtest -display none -nodefaults -S %s",
        getenv("QTEST_QEMU_BINARY"), args);
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_auto(GStrv) argv = NULL;
    int status = 0;

    g_assert(g_shell_parse_argv(cmdline, NULL, &argv, NULL));
    g_assert(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                          &out, &err, &status, NULL));
    g_assert_cmpint(status, !=, 0);
    if (!strstr(err, msg)) {
        g_test_message("stderr: %s", err);
    }
    g_assert_nonnull(strstr(err, msg));
}

/*
 * A discard that did not opt into the veto behaves exactly as upstream,
 * also over a pinned page. virtio-mem's migration destination discards
 * all its unplugged memory without asking iommu-emul, which has re-pinned
 * (locked) a page of it there. As upstream with a locked page, madvise()
 * refuses the range, ram_block_discard_range() reports it and virtio-mem
 * fails the load. (With the veto inside ram_block_discard_range() it
 * returned -EBUSY without trying, and without this message.)
 */
static void test_discard_not_opted_in(const void *data)
{
    g_autofree char *dir = g_dir_make_tmp("iommu-emul-mig-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "state", NULL);
    g_autofree char *uri = g_strdup_printf("file:%s", file);
    g_autofree char *dest = g_strdup_printf(
        "-machine %s -device iommu-emul,id=iommu0,addr=04.0"
        " -device edu,addr=05.0" VMEM_ARGS " -incoming %s",
        (const char *)data, uri);
    /* expect_fail() runs the destination with -nodefaults */
    Fixture *f = fx_start(data, VMEM_ARGS " -nodefaults");
    const uint64_t page = (4ULL << 30) + 7 * PAGE;   /* memaddr: 4 GiB */
    const char *status = NULL;
    QDict *rsp = NULL;
    int i;

    /* A page of (unplugged) virtio-mem memory */
    fill(f, page, 0x6b, PAGE);
    map(f, page, PAGE, IOMMU_EMUL_MAP_READ);
    qtest_qmp_assert_success(f->qts, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    /* A guard against a hung migration, not a timing expectation */
    for (i = 0; i < 12000; i++) {
        rsp = qtest_qmp_assert_success_ref(f->qts,
                                           "{'execute': 'query-migrate'}");
        status = qdict_get_try_str(rsp, "status");
        if (status && (!strcmp(status, "completed") ||
                       !strcmp(status, "failed"))) {
            break;
        }
        qobject_unref(rsp);
        rsp = NULL;
        g_usleep(10 * 1000);
    }
    g_assert_nonnull(rsp);
    g_assert_cmpstr(status, ==, "completed");
    qobject_unref(rsp);

    expect_fail(dest, "ram_block_discard_range: Failed to discard range "
                VMEM_BLOCK);
    /* The source is unaffected */
    g_assert_cmpuint(qom_u64(f, "vetoed-discards"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    unlink(file);
    rmdir(dir);
    fx_free(f);
}

static void test_bad_config(const void *data)
{
    g_autofree char *a = NULL;
    g_autofree char *b = NULL;
    g_autofree char *c = NULL;
    g_autofree char *d = NULL;
    g_autofree char *e = NULL;

    a = g_strdup_printf("-machine %s -device virtio-iommu-pci"
                        " -device iommu-emul", (const char *)data);
    expect_fail(a, "already has an IOMMU");
    b = g_strdup_printf("-machine %s -device iommu-emul"
                        " -device virtio-iommu-pci", (const char *)data);
    expect_fail(b, "another IOMMU took over");
    c = g_strdup_printf("-machine %s -device iommu-emul,bus-addr=foo",
                        (const char *)data);
    expect_fail(c, "bus-addr must be iova, gpa or hpa");
    d = g_strdup_printf("-machine %s -device iommu-emul -device iommu-emul",
                        (const char *)data);
    expect_fail(d, "only one iommu-emul device per machine");
    e = g_strdup_printf("-machine %s -device iommu-emul,max-pinned=4095",
                        (const char *)data);
    expect_fail(e, "max-pinned at least 4 KiB");
}

/*
 * bus-addr=hpa: bus addresses are host-physical addresses of long-term
 * pinned pages. The test reads QEMU's page tables itself.
 */

#define PAGEMAP_PRESENT     (1ULL << 63)
#define PAGEMAP_PFN_MASK    ((1ULL << 55) - 1)
#define KPF_COMPOUND_HEAD   (1ULL << 15)
#define KPF_COMPOUND_TAIL   (1ULL << 16)
#define HPA_RAM_SIZE        (256ULL << 20)  /* fx_new's -m */

/* Skip unless QEMU can run bus-addr=hpa on this host at all */
static bool hpa_skip_no_io_uring(void)
{
#ifndef CONFIG_LINUX_IO_URING
    skip_unprivileged("QEMU is built without io_uring: bus-addr=hpa is"
                      " refused");
    return true;
#else
    g_autofree char *dis = NULL;

    if (g_file_get_contents("/proc/sys/kernel/io_uring_disabled", &dis,
                            NULL, NULL) && atoi(dis) == 2) {
        skip_unprivileged("io_uring is disabled on this host");
        return true;
    }
    return false;
#endif
}

/* Can we (and so QEMU, run by us) read PFNs from /proc/PID/pagemap? */
static bool hpa_pfns_readable(void)
{
    g_autofree uint64_t *page = g_malloc0(PAGE);
    uint64_t ent = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    bool ok;

    page[0] = 1;
    ok = fd >= 0 && pread(fd, &ent, sizeof(ent),
                          ((uintptr_t)page / PAGE) * 8) == sizeof(ent) &&
         (ent & PAGEMAP_PFN_MASK);
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Skip unless this host can run bus-addr=hpa and show us PFNs */
static bool hpa_skip(void)
{
    if (hpa_skip_no_io_uring()) {
        return true;
    }
    if (!hpa_pfns_readable()) {
        skip_unprivileged("reading PFNs from /proc/PID/pagemap needs"
                          " CAP_SYS_ADMIN (run as root)");
        return true;
    }
    return false;
}

/* MAP read-write for the edu with no DMA limit (host addresses are high) */
static uint64_t hpa_map(Fixture *f, uint64_t gpa, uint64_t len)
{
    CmdOut out;

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ |
                        IOMMU_EMUL_MAP_WRITE, EDU_RID, gpa, len, 0, &out), ==,
                    IOMMU_EMUL_ST_OK);
    return out.addr;
}

/*
 * QEMU's virtual address of guest RAM block @block, as "info ramblock"
 * reports it, checked against the kernel's view: /proc/PID/maps must
 * have a read-write mapping of exactly the RAM size there, anonymous or
 * (@file) of that file. Call before any MAP: locking a page splits the
 * mapping.
 */
static uint64_t hpa_ram_hva(Fixture *f, const char *block, const char *file)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps",
                                            (int)qtest_pid(f->qts));
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t hva = host_addr(f, block, 0);
    int i, found = 0;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        unsigned long long start, end, off;
        char perm[8], dev[16];
        unsigned long long inode;
        int name = 0;

        if (sscanf(lines[i], "%llx-%llx %7s %llx %15s %llu %n", &start, &end,
                   perm, &off, dev, &inode, &name) < 6 ||
            start != hva || end - start != HPA_RAM_SIZE ||
            strncmp(perm, "rw", 2)) {
            continue;
        }
        if (file ? name && g_str_has_prefix(lines[i] + name, file) :
            !strcmp(perm, "rw-p") && inode == 0 &&
            (!name || !lines[i][name])) {
            found++;
        }
    }
    g_assert_cmpint(found, ==, 1);
    return hva;
}

/* /proc/PID/pagemap entries of @n guest pages from @gpa */
static void hpa_pagemap(Fixture *f, uint64_t ram, uint64_t gpa, uint64_t n,
                        uint64_t *ent)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/pagemap",
                                            (int)qtest_pid(f->qts));
    int fd = open(path, O_RDONLY);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, ent, n * 8, ((ram + gpa) / PAGE) * 8), ==,
                    n * 8);
    close(fd);
}

/* Host-physical address of the (present) guest page at @gpa */
static uint64_t hpa_of(Fixture *f, uint64_t ram, uint64_t gpa)
{
    uint64_t ent;

    hpa_pagemap(f, ram, gpa, 1, &ent);
    g_assert(ent & PAGEMAP_PRESENT);
    g_assert_cmphex(ent & PAGEMAP_PFN_MASK, !=, 0);
    return (ent & PAGEMAP_PFN_MASK) * PAGE;
}

static uint64_t kpageflags(int fd, uint64_t pfn)
{
    uint64_t flags = 0;

    g_assert_cmpint(pread(fd, &flags, 8, pfn * 8), ==, 8);
    return flags;
}

/*
 * Host pages that a long-term pin of the page at @pfn accounts in VmPin:
 * the kernel (io_uring) charges a compound page (THP) in full.
 */
static uint64_t hpa_charged_pages(uint64_t pfn)
{
    int fd = open("/proc/kpageflags", O_RDONLY);
    uint64_t head = pfn, n = 1;

    g_assert_cmpint(fd, >=, 0);
    if (kpageflags(fd, pfn) & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL)) {
        while (!(kpageflags(fd, head) & KPF_COMPOUND_HEAD)) {
            g_assert_cmpuint(pfn - head, <, 1 << 18);
            head--;
        }
        while (kpageflags(fd, head + n) & KPF_COMPOUND_TAIL) {
            n++;
        }
    }
    close(fd);
    return n;
}

/* VmPin of the QEMU process (long-term pinned memory), in kB */
static uint64_t vmpin_kb(Fixture *f)
{
    return proc_kb(f, "status", "VmPin:");
}

/* Start an hpa-mode fixture; *@ram: QEMU's address of guest RAM */
static Fixture *hpa_start(const char *machine, uint64_t *ram)
{
    Fixture *f = fx_new(machine, ",bus-addr=hpa",
                        ",dma_mask=0xffffffffffffffff");

    *ram = hpa_ram_hva(f, "pc.ram", NULL);
    rings_on(f);
    return f;
}

/* MAP one page: the bus address is its host-physical address */
static void test_hpa_map_dma(const void *data)
{
    Fixture *f;
    uint64_t ram, bus;
    CmdOut out;
    Fault x;

    if (hpa_skip()) {
        return;
    }
    f = hpa_start(data, &ram);
    g_assert_cmpuint(FIELD_EX32(rd32(f, A_CAP), CAP, BUS_ADDR), ==,
                     IOMMU_EMUL_BUS_ADDR_HPA);
    g_assert_cmphex(rd64(f, A_APERTURE_START), ==, 0);
    translate_on(f);
    fill(f, DATA_GPA, 0x5c, PAGE);
    fill(f, DATA_GPA + PAGE, 0xc5, PAGE);

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ |
                        IOMMU_EMUL_MAP_WRITE, EDU_RID, DATA_GPA, PAGE, 0,
                        &out), ==, IOMMU_EMUL_ST_OK);
    bus = out.addr;
    g_assert_cmphex(bus, ==, hpa_of(f, ram, DATA_GPA));
    g_assert_false(bus <= IOMMU_EMUL_MSI_LAST &&
                   bus + PAGE > IOMMU_EMUL_MSI_BASE);

    /* RAM -> edu, then edu -> RAM, both through the host-physical address */
    edu_dma(f, bus, PAGE, false);
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, bus + 0x80, 0x40, true);
    g_assert(all_eq(f, DATA_GPA, 0, 0x80));
    g_assert(all_eq(f, DATA_GPA + 0x80, 0x5c, 0x40));
    g_assert(all_eq(f, DATA_GPA + 0xc0, 0, PAGE - 0xc0));
    g_assert(all_eq(f, DATA_GPA + PAGE, 0xc5, PAGE));
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);

    /* QUERY translates the bus address back to the guest page */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus + 8, 0, 0,
                        &out), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.addr, ==, DATA_GPA + 8);
    g_assert_cmphex(out.base, ==, bus);
    g_assert_cmphex(out.length, ==, PAGE);

    /* The next host page is not mapped: its HPA faults */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, bus + PAGE, 0, 0,
                        &out), ==, IOMMU_EMUL_ST_NOT_FOUND);
    edu_dma(f, bus + PAGE, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + PAGE, 0xc5, PAGE));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 1);
    x = fault_at(f, 0);
    g_assert_cmphex(x.requester, ==, EDU_RID);
    g_assert_cmpuint(x.access, ==, IOMMU_EMUL_ACCESS_WRITE);
    g_assert_cmpuint(x.reason, ==, IOMMU_EMUL_REASON_UNMAPPED);
    g_assert_cmphex(x.addr, ==, bus + PAGE);

    /* After UNMAP the HPA faults too */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    edu_dma(f, bus, PAGE, true);
    g_assert(all_eq(f, DATA_GPA + 0x80, 0x5c, 0x40));
    g_assert_cmpuint(rd32(f, A_FAULTQ_TAIL), ==, 2);
    g_assert_cmphex(fault_at(f, 1).addr, ==, bus);
    fx_free(f);
}

/* Map one page and check VmPin grew by what the kernel pinned for it */
static uint64_t hpa_map_pinned(Fixture *f, uint64_t ram, uint64_t gpa,
                               uint64_t vmpin0)
{
    uint64_t bus = hpa_map(f, gpa, PAGE);
    uint64_t charged = hpa_charged_pages(bus / PAGE);

    g_assert_cmphex(bus, ==, hpa_of(f, ram, gpa));
    g_test_message("one page at HPA 0x%" PRIx64 ": VmPin %" PRIu64 " -> %"
                   PRIu64 " kB (host folio of %" PRIu64 " pages)", bus,
                   vmpin0, vmpin_kb(f), charged);
    g_assert_cmpuint(vmpin_kb(f), ==, vmpin0 + charged * (PAGE / 1024));
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    return bus;
}

/* The pin is a real long-term pin, dropped by UNMAP, DETACH and reset */
static void test_hpa_longterm_pin(const void *data)
{
    Fixture *f;
    uint64_t ram, v0, bus;

    if (hpa_skip()) {
        return;
    }
    f = hpa_start(data, &ram);
    fill(f, DATA_GPA, 0x17, PAGE);
    v0 = vmpin_kb(f);

    bus = hpa_map_pinned(f, ram, DATA_GPA, v0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);

    hpa_map_pinned(f, ram, DATA_GPA, v0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);

    hpa_map_pinned(f, ram, DATA_GPA, v0);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert(all_eq(f, DATA_GPA, 0x17, PAGE));
    fx_free(f);
}

/* Failures after the pin (NOT_CONTIGUOUS, NO_SPACE) leave nothing behind */
static void hpa_expect_nothing(Fixture *f, uint64_t vmpin0, uint64_t lck0,
                               uint64_t maps)
{
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 0);
    g_assert_cmpuint(qom_u64(f, "maps"), ==, maps);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmphex(rd64(f, A_PINNED), ==, 0);
    g_assert_cmpuint(vmpin_kb(f), ==, vmpin0);
    g_assert_cmpuint(locked_kb(f), ==, lck0);
}

/*
 * A multi-page MAP needs physically adjacent pages: otherwise it fails
 * with NOT_CONTIGUOUS and the guest maps page by page.
 */
static void test_hpa_not_contiguous(const void *data)
{
    const uint64_t lo = 16 << 20, n = (64 << 20) / PAGE;
    g_autofree uint64_t *ent = g_new(uint64_t, n);
    Fixture *f;
    uint64_t ram, v0, l0, i, split = 0, adj = 0, b0, b1;
    CmdOut out;

    if (hpa_skip()) {
        return;
    }
    f = hpa_start(data, &ram);
    qtest_memset(f->qts, lo, 0x3d, n * PAGE);
    v0 = vmpin_kb(f);
    l0 = locked_kb(f);

    /* Beyond the DMA limit: NO_SPACE, found only once pinned */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        lo, PAGE, 1, &out), ==, IOMMU_EMUL_ST_NO_SPACE);
    hpa_expect_nothing(f, v0, l0, 0);

    /* Find adjacent guest pages that are, and are not, adjacent in RAM */
    hpa_pagemap(f, ram, lo, n, ent);
    for (i = 0; i + 1 < n; i++) {
        uint64_t a = ent[i] & PAGEMAP_PFN_MASK;
        uint64_t b = ent[i + 1] & PAGEMAP_PFN_MASK;

        g_assert(ent[i] & PAGEMAP_PRESENT);
        if (!split && b != a + 1) {
            split = lo + i * PAGE;
        }
        if (!adj && b == a + 1) {
            adj = lo + i * PAGE;
        }
    }
    g_test_message("guest pages 0x%" PRIx64 "/+4K: not adjacent in host"
                   " RAM; 0x%" PRIx64 "/+4K: adjacent", split, adj);
    if (!split) {
        g_test_skip("64 MiB of guest RAM is physically contiguous");
        fx_free(f);
        return;
    }

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        split, 2 * PAGE, 0, &out), ==,
                    IOMMU_EMUL_ST_NOT_CONTIGUOUS);
    hpa_expect_nothing(f, v0, l0, 0);

    /* Page by page works; each page has its own bus address */
    b0 = hpa_map(f, split, PAGE);
    b1 = hpa_map(f, split + PAGE, PAGE);
    g_assert_cmphex(b0, ==, hpa_of(f, ram, split));
    g_assert_cmphex(b1, ==, hpa_of(f, ram, split + PAGE));
    g_assert_cmphex(b1, !=, b0 + PAGE);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    hpa_expect_nothing(f, v0, l0, 2);

    /* Physically adjacent pages (THP, or luck) map as one range */
    if (adj) {
        b0 = hpa_map(f, adj, 2 * PAGE);
        g_assert_cmphex(b0, ==, hpa_of(f, ram, adj));
        g_assert_cmphex(hpa_of(f, ram, adj + PAGE), ==, b0 + PAGE);
        g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    }
    fx_free(f);
}

/*
 * Shared memfd RAM (4 KiB shmem pages here): long-term pins work on it,
 * the same page mapped twice has one bus address and two pins, and each
 * MAP needs its own UNMAP.
 */
static void test_hpa_memfd_twice(const void *data)
{
    Fixture *f;
    uint64_t ram, v0, b1, b2, charged;
    CmdOut out;

    if (hpa_skip()) {
        return;
    }
    f = fx_new(data, ",bus-addr=hpa", ",dma_mask=0xffffffffffffffff"
               " -object memory-backend-memfd,id=ram0,size=256M"
               " -machine memory-backend=ram0");
    ram = hpa_ram_hva(f, "ram0", "/memfd:memory-backend-memfd");
    rings_on(f);
    translate_on(f);
    fill(f, DATA_GPA, 0x9e, PAGE);
    v0 = vmpin_kb(f);

    b1 = hpa_map(f, DATA_GPA, PAGE);
    g_assert_cmphex(b1, ==, hpa_of(f, ram, DATA_GPA));
    charged = hpa_charged_pages(b1 / PAGE) * (PAGE / 1024);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + charged);
    b2 = hpa_map(f, DATA_GPA, PAGE);
    g_test_message("memfd page at HPA 0x%" PRIx64 " charged %" PRIu64 " kB;"
                   " mapped twice: VmPin %" PRIu64 " -> %" PRIu64 " kB", b1,
                   charged, v0, vmpin_kb(f));
    g_assert_cmphex(b2, ==, b1);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    /* The kernel charges a compound page once, a small page per pin */
    g_assert_cmpuint(vmpin_kb(f), ==,
                     v0 + (charged == PAGE / 1024 ? 2 : 1) * charged);

    /* edu -> RAM through the shared page */
    edu_load(f, b1, 0x4f, DATA_GPA);
    fill(f, DATA_GPA, 0, PAGE);
    edu_dma(f, b2, PAGE, true);
    g_assert(all_eq(f, DATA_GPA, 0x4f, PAGE));

    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b1, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + charged);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_QUERY, 0, EDU_RID, b1, 0, 0, &out),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(out.addr, ==, DATA_GPA);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b1, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b1, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_NOT_FOUND);
    g_assert_cmpuint(qom_u64(f, "faults"), ==, 0);
    fx_free(f);
}

/*
 * THP-backed guest RAM (anonymous; QEMU advises MADV_HUGEPAGE): the
 * kernel charges a huge page to VmPin in full, once, to the first mapping
 * that pins part of it, and drops the charge with that mapping even while
 * other mappings still pin the huge page.
 */
static void test_hpa_thp(const void *data)
{
    Fixture *f;
    uint64_t ram, v0, a1, a2, b, huge_kb;

    if (hpa_skip()) {
        return;
    }
    f = hpa_start(data, &ram);
    fill(f, DATA_GPA, 0x71, 2 * PAGE);
    huge_kb = hpa_charged_pages(hpa_of(f, ram, DATA_GPA) / PAGE) *
              (PAGE / 1024);
    if (huge_kb == PAGE / 1024) {
        g_test_skip("guest RAM is not in a transparent huge page here"
                    " (THP disabled, or none could be allocated)");
        fx_free(f);
        return;
    }
    v0 = vmpin_kb(f);

    /* Page A twice and page B of the same huge page: charged once */
    a1 = hpa_map(f, DATA_GPA, PAGE);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + huge_kb);
    a2 = hpa_map(f, DATA_GPA, PAGE);
    b = hpa_map(f, DATA_GPA + PAGE, PAGE);
    g_test_message("huge page of %" PRIu64 " kB; 3 mappings of 2 of its"
                   " pages: VmPin %" PRIu64 " -> %" PRIu64 " kB", huge_kb,
                   v0, vmpin_kb(f));
    g_assert_cmphex(a2, ==, a1);
    g_assert_cmphex(b, ==, a1 + PAGE);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + huge_kb);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);

    /* UNMAP takes the most recent mapping of A, which was not charged */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, a1, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + huge_kb);
    /* The charged one: VmPin drops although B still pins the huge page */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, a1, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    g_assert_cmphex(rd64(f, A_PINNED), ==, PAGE);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, b, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 0);
    fx_free(f);
}

/*
 * When the host refuses a long-term pin (here: all 16384 io_uring buffer
 * slots are taken), and when max-pinned is reached, MAP fails with
 * PIN_LIMIT and leaves nothing behind. Memfd RAM: 4 KiB pages.
 */
static void test_hpa_pin_limit(const void *data)
{
    const int slots = 16384;
    Fixture *f;
    uint64_t ram, v0, l0, bus = 0, charged;
    int i;

    if (hpa_skip()) {
        return;
    }
    f = fx_new(data, ",bus-addr=hpa,max-pinned=8K,max-mappings=20000",
               " -object memory-backend-memfd,id=ram0,size=256M"
               " -machine memory-backend=ram0");
    ram = hpa_ram_hva(f, "ram0", "/memfd:memory-backend-memfd");
    rings_on(f);
    fill(f, DATA_GPA, 0x21, 3 * PAGE);
    v0 = vmpin_kb(f);
    l0 = locked_kb(f);

    /* One page, pinned once per mapping, until the slots run out */
    for (i = 0; i < slots; i++) {
        bus = hpa_map(f, DATA_GPA, PAGE);
    }
    charged = hpa_charged_pages(hpa_of(f, ram, DATA_GPA) / PAGE) *
              (PAGE / 1024);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + (charged == 4 ? slots : 1) *
                     charged);
    g_assert_cmpuint(locked_kb(f), ==, l0 + 4);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA, PAGE, 0, NULL), ==, IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + PAGE, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, slots);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 1);
    g_assert_cmpuint(vmpin_kb(f), ==, v0 + (charged == 4 ? slots : 1) *
                     charged);
    g_assert_cmpuint(locked_kb(f), ==, l0 + 4);
    /* Releasing one pin makes room for one */
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_UNMAP, 0, EDU_RID, bus, PAGE, 0,
                        NULL), ==, IOMMU_EMUL_ST_OK);
    g_assert_cmphex(hpa_map(f, DATA_GPA + PAGE, PAGE), ==,
                    hpa_of(f, ram, DATA_GPA + PAGE));
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_DETACH, 0, EDU_RID, 0, 0, 0, NULL),
                    ==, IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(locked_kb(f), ==, l0);

    /* max-pinned (8 KiB): a third distinct page is refused */
    hpa_map(f, DATA_GPA, PAGE);
    hpa_map(f, DATA_GPA + PAGE, PAGE);
    g_assert_cmphex(cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, EDU_RID,
                        DATA_GPA + 2 * PAGE, PAGE, 0, NULL), ==,
                    IOMMU_EMUL_ST_PIN_LIMIT);
    g_assert_cmpuint(qom_u64(f, "mappings"), ==, 2);
    g_assert_cmpuint(qom_u64(f, "pinned-pages"), ==, 2);
    g_assert_cmpuint(locked_kb(f), ==, l0 + 8);
    qtest_system_reset(f->qts);
    g_assert_cmpuint(vmpin_kb(f), ==, v0);
    g_assert_cmpuint(locked_kb(f), ==, l0);
    fx_free(f);
}

/*
 * Without CAP_SYS_ADMIN the PFNs read as 0: realize fails with a clear
 * error. When we can read PFNs ourselves, setpriv(1) starts QEMU with no
 * capabilities at all.
 */
static void test_hpa_no_pfn(const void *data)
{
    g_autofree char *setpriv = g_find_program_in_path("setpriv");
    g_autofree char *drop = NULL;
    g_autofree char *cmdline = NULL;
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_auto(GStrv) argv = NULL;
    int status = 0;

    if (hpa_skip_no_io_uring()) {
        return;
    }
    if (hpa_pfns_readable()) {
        if (!setpriv) {
            skip_unprivileged("setpriv(1) is needed to drop capabilities");
            return;
        }
        drop = g_strdup_printf("%s --bounding-set=-all --inh-caps=-all"
                               " --ambient-caps=-all", setpriv);
    }
    cmdline = g_strdup_printf("%s timeout 60 %s -accel qtest -display none"
                              " -nodefaults -S -machine %s"
                              " -device iommu-emul,bus-addr=hpa",
                              drop ? drop : "", getenv("QTEST_QEMU_BINARY"),
                              (const char *)data);
    g_assert(g_shell_parse_argv(cmdline, NULL, &argv, NULL));
    g_assert(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                          &out, &err, &status, NULL));
    g_assert_cmpint(status, !=, 0);
    if (!strstr(err, "cannot read host-physical addresses")) {
        g_test_message("stderr: %s", err);
    }
    g_assert_nonnull(strstr(err, "cannot read host-physical addresses"));
}

/* Properties of device @type and their descriptions ("" if none) */
static GHashTable *device_props(QTestState *qts, const char *type)
{
    GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    QDict *resp = qtest_qmp(qts, "{'execute': 'device-list-properties',"
                            " 'arguments': {'typename': %s}}", type);
    const QListEntry *e;

    g_assert(qdict_haskey(resp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(resp, "return"), e) {
        QDict *prop = qobject_to(QDict, qlist_entry_obj(e));
        const char *desc = qdict_haskey(prop, "description") ?
                           qdict_get_str(prop, "description") : "";

        g_hash_table_insert(names, g_strdup(qdict_get_str(prop, "name")),
                            g_strdup(desc));
    }
    qobject_unref(resp);
    return names;
}

/*
 * Every property of iommu-emul's own (configuration and counters, not
 * the generic PCI ones that edu has too) has a description, so that
 * "-device iommu-emul,help" explains it.
 */
static void test_property_descriptions(void)
{
    static const char *const documented[] = {
        "bus-addr", "max-pinned", "max-mappings", "cmdq-max-log2",
        "faultq-max-log2", "aperture-bits", "mappings", "pinned-pages",
        "pinned-bytes", "maps", "unmaps", "faults", "invalidations",
        "vetoed-discards", "deferred-discards", "pin-cache", "cached-pages",
        "pin-cache-hits", "pin-cache-misses", "pin-cache-evictions",
        "pin-cache-releases", "mlock-calls", "munlock-calls",
    };
    QTestState *qts = qtest_init("-machine none");
    g_autoptr(GHashTable) own = device_props(qts, "iommu-emul");
    g_autoptr(GHashTable) pci = device_props(qts, "edu");
    GHashTableIter iter;
    const char *name, *desc;
    int i, n = 0;

    for (i = 0; i < ARRAY_SIZE(documented); i++) {
        g_assert(g_hash_table_contains(own, documented[i]));
        g_assert_false(g_hash_table_contains(pci, documented[i]));
    }
    g_hash_table_iter_init(&iter, own);
    while (g_hash_table_iter_next(&iter, (gpointer *)&name,
                                  (gpointer *)&desc)) {
        if (g_hash_table_contains(pci, name)) {
            continue;
        }
        if (!*desc) {
            g_test_message("iommu-emul property '%s' has no description",
                           name);
        }
        g_assert_cmpstr(desc, !=, "");
        n++;
    }
    g_assert_cmpint(n, >=, ARRAY_SIZE(documented));
    qtest_quit(qts);
}

static void add(const char *machine, const char *name,
                void (*fn)(const void *))
{
    g_autofree char *path = g_strdup_printf("/iommu-emul/%s/%s", machine,
                                            name);

    qtest_add_data_func(path, machine, fn);
}

int main(int argc, char **argv)
{
    static const char *machines[] = { "pc", "q35" };
    int i;

    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/iommu-emul/property-descriptions",
                   test_property_descriptions);
    for (i = 0; i < ARRAY_SIZE(machines); i++) {
        add(machines[i], "reset-values", test_reset_values);
        add(machines[i], "no-hotplug", test_not_hotpluggable);
        add(machines[i], "pci-config", test_pci_config);
        add(machines[i], "misaligned", test_misaligned);
        add(machines[i], "bypass", test_bypass);
        add(machines[i], "map-dma", test_map_dma);
        add(machines[i], "fault-unmapped", test_fault_unmapped);
        add(machines[i], "read-only", test_readonly);
        add(machines[i], "unmap", test_unmap);
        add(machines[i], "unmap-args", test_unmap_args);
        add(machines[i], "detach", test_detach);
        add(machines[i], "refcount", test_refcount);
        add(machines[i], "pinned-locked", test_pinned_locked);
        add(machines[i], "max-pinned", test_max_pinned);
        add(machines[i], "max-pinned-rounding", test_max_pinned_rounding);
        add(machines[i], "memlock", test_memlock);
        add(machines[i], "bad-commands", test_bad_commands);
        add(machines[i], "bad-rings", test_bad_rings);
        add(machines[i], "ring-errors", test_ring_errors);
        add(machines[i], "fault-ring-full", test_fault_ring_full);
        add(machines[i], "gpa-mode", test_gpa_mode);
        add(machines[i], "gpa-perm", test_gpa_perm);
        add(machines[i], "bad-config", test_bad_config);
        add(machines[i], "gpa-overlap", test_gpa_overlap);
        add(machines[i], "many-mappings", test_many_mappings);
        add(machines[i], "msix", test_msix);
        add(machines[i], "msi-window", test_msi_window);
        add(machines[i], "limits", test_limits);
        add(machines[i], "batch", test_batch);
        add(machines[i], "reset-bypass", test_reset_bypass);
        add(machines[i], "balloon", test_balloon);
        add(machines[i], "balloon-memfd", test_balloon_memfd);
        add(machines[i], "balloon-64m-of-512m", test_overcommit);
        add(machines[i], "balloon-deferred", test_balloon_deferred);
        add(machines[i], "balloon-deferred-detach",
            test_balloon_deferred_detach);
        add(machines[i], "virtio-mem-veto", test_virtio_mem_veto);
        add(machines[i], "pin-cache", test_pin_cache);
        add(machines[i], "pin-cache-bound", test_pin_cache_bound);
        add(machines[i], "pin-cache-memlock", test_pin_cache_memlock);
        add(machines[i], "pin-cache-balloon", test_pin_cache_balloon);
        add(machines[i], "pin-cache-fpr", test_pin_cache_fpr);
        add(machines[i], "pin-cache-deferred", test_pin_cache_deferred);
        add(machines[i], "pin-cache-virtio-mem", test_pin_cache_virtio_mem);
        add(machines[i], "discard-not-opted-in", test_discard_not_opted_in);
        add(machines[i], "migrate", test_migrate);
        add(machines[i], "migrate-refused", test_migrate_refused);
        add(machines[i], "migrate-many", test_migrate_many);
        add(machines[i], "migrate-gpa-order", test_migrate_gpa_order);
        add(machines[i], "hpa-map-dma", test_hpa_map_dma);
        add(machines[i], "hpa-longterm-pin", test_hpa_longterm_pin);
        add(machines[i], "hpa-not-contiguous", test_hpa_not_contiguous);
        add(machines[i], "hpa-no-pfn", test_hpa_no_pfn);
        add(machines[i], "hpa-memfd-twice", test_hpa_memfd_twice);
        add(machines[i], "hpa-thp", test_hpa_thp);
        add(machines[i], "hpa-pin-limit", test_hpa_pin_limit);
    }
    return g_test_run();
}
