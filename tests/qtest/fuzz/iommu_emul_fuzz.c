/*
 * iommu-emul fuzz target: valid rings, random commands, DMA through them
 *
 * generic-fuzz-iommu-emul rarely builds a valid command ring and a MAP
 * whose requester and guest-physical address exist. This target sets up
 * the command and fault rings as a driver does (docs/specs/iommu-emul.rst)
 * and spends the input on what lies behind them: command entries with
 * fuzzed fields (mostly valid opcodes, real requesters, guest RAM and bus
 * addresses the device handed out), DMA of two edu devices through the
 * mappings, register writes, ring errors and recovery, fault ring
 * consumption, bus mastering and MSI-X on and off, and resets.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/libqos/pci.h"
#include "tests/qtest/libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "hw/iommu-emul/iommu-emul-regs.h"
#include "fuzz.h"
#include "qemu_zc_fuzz.h"
#include "iommu_emul_fuzz.h"

/* At most this many actions per input, to bound the time of one run */
#define MAX_ACTIONS         256
/* Bus addresses the device handed out, remembered for later commands */
#define MAX_BUS_ADDRS       16

typedef struct IEFuzz {
    QTestState *s;
    QPCIBus *bus;
    QPCIDevice *iommu;
    QPCIDevice *edu[2];
    QPCIBar regs;
    QPCIBar edu_bar[2];
    uint32_t cmdq_log2;
    uint32_t tail;
    uint64_t bus_addrs[MAX_BUS_ADDRS];
    unsigned nbus;
} IEFuzz;

enum {
    ACT_CMD,
    ACT_CMD_BATCH,
    ACT_RAW_CMD,
    ACT_EDU_DMA,
    ACT_REG_WRITE,
    ACT_REG_READ,
    ACT_FAULTQ_CONSUME,
    ACT_CMDQ_ERROR_CLEAR,
    ACT_CTRL,
    ACT_PCI_COMMAND,
    ACT_CLOCK,
    ACT_RESET,
    ACT__MAX,
};

const char *iommu_emul_fuzz_cmdline =
    " -machine q35,accel=qtest -nodefaults -display none -m 512M"
    " -device iommu-emul,addr=04.0,max-pinned=16M,max-mappings=64"
    " -device edu,addr=05.0 -device edu,addr=06.0";

static uint16_t ie_requester(ZCFuzzInput *in)
{
    static const uint16_t rids[] = {
        IEF_EDU0_DEVFN, IEF_EDU1_DEVFN, 0x00 /* host bridge */,
        QPCI_DEVFN(0x1f, 0) /* LPC */, IEF_IOMMU_DEVFN /* itself */,
    };
    uint8_t k = zcf_u8(in);

    if (k < 0xf0) {
        return rids[k % ARRAY_SIZE(rids)];
    }
    return zcf_u16(in);
}

/* A guest-physical or bus address, mostly one that means something */
static uint64_t ie_addr(IEFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);

    switch (k % 8) {
    case 0:
    case 1:
    case 2:
        /* a page of the buffer area: mappings overlap and share pins */
        return IEF_BUF_BASE + (uint64_t)(zcf_u8(in) % IEF_BUF_PAGES) *
               IOMMU_EMUL_PAGE_SIZE;
    case 3:
        /* anywhere in RAM, the rings included */
        return ((uint64_t)zcf_u16(in) << IOMMU_EMUL_PAGE_SHIFT) &
               (IEF_RAM_SIZE - 1);
    case 4:
    case 5:
        if (f->nbus) {
            return f->bus_addrs[zcf_u8(in) % f->nbus];
        }
        return 1 * MiB;
    case 6:
        /* MMIO, holes, the MSI window, the top of the address space */
        return (uint64_t)zcf_u32(in) << IOMMU_EMUL_PAGE_SHIFT;
    default:
        return zcf_u64(in);
    }
}

static uint64_t ie_length(ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);

    if (k < 0xe0) {
        return (uint64_t)(k % 16 + 1) * IOMMU_EMUL_PAGE_SIZE;
    }
    if (k < 0xf0) {
        return (uint64_t)(zcf_u16(in) + 1) * IOMMU_EMUL_PAGE_SIZE;
    }
    return zcf_u64(in);
}

static void ie_build_cmd(IEFuzz *f, ZCFuzzInput *in, uint8_t *e)
{
    uint8_t op = zcf_u8(in);
    uint8_t fl = zcf_u8(in);
    uint16_t flags;

    memset(e, 0, IOMMU_EMUL_CMD_SIZE);
    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE,
             op < 0xf0 ? op % IOMMU_EMUL_OP_QUERY + 1 : zcf_u16(in));
    flags = fl < 0xf0 ? fl & 3 : zcf_u16(in);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, ie_requester(in));
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, ie_addr(f, in));
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, ie_length(in));
    if (zcf_u8(in) >= 0xe0) {
        stq_le_p(e + IOMMU_EMUL_CMD_DMA_LIMIT, zcf_u64(in));
    }
    /* status and out fields: the device overwrites them */
    if (zcf_u8(in) >= 0xf0) {
        stw_le_p(e + IOMMU_EMUL_CMD_STATUS, zcf_u16(in));
    }
}

static void ie_put_cmd(IEFuzz *f, const uint8_t *e)
{
    uint64_t ea = IEF_CMDQ_BASE + (uint64_t)f->tail * IOMMU_EMUL_CMD_SIZE;

    qtest_memwrite(f->s, ea, e, IOMMU_EMUL_CMD_SIZE);
    f->tail = (f->tail + 1) % (1u << f->cmdq_log2);
}

/* Ring the doorbell, then learn the bus addresses of completed MAPs */
static void ie_doorbell(IEFuzz *f, uint32_t from)
{
    uint32_t i;

    qpci_io_writel(f->iommu, f->regs, A_CMDQ_TAIL, f->tail);
    for (i = from; i != f->tail; i = (i + 1) % (1u << f->cmdq_log2)) {
        uint8_t e[IOMMU_EMUL_CMD_SIZE];
        uint64_t ea = IEF_CMDQ_BASE + (uint64_t)i * IOMMU_EMUL_CMD_SIZE;

        qtest_memread(f->s, ea, e, sizeof(e));
        if (lduw_le_p(e + IOMMU_EMUL_CMD_OPCODE) == IOMMU_EMUL_OP_MAP &&
            lduw_le_p(e + IOMMU_EMUL_CMD_STATUS) ==
            (IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK)) {
            f->bus_addrs[f->nbus++ % MAX_BUS_ADDRS] =
                ldq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR);
            f->nbus = MIN(f->nbus, MAX_BUS_ADDRS);
        }
    }
}

static void ie_edu_dma(IEFuzz *f, ZCFuzzInput *in)
{
    uint8_t k = zcf_u8(in);
    int i = k & 1;
    bool to_pci = k & 2;
    uint64_t bus = ie_addr(f, in) + (zcf_u16(in) & 0xfff);
    uint64_t cnt = zcf_u8(in) >= 0xf0 ? zcf_u16(in) : zcf_u8(in) * 16 + 1;
    uint64_t local = 0x40000 + (zcf_u8(in) % 16) * 256;

    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x80, to_pci ? local : bus);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x88, to_pci ? bus : local);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x90, cnt);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x98,
                   1 | (to_pci ? 2 : 0) | (k & 4));
    /* edu runs the transfer from a 100 ms virtual-clock timer */
    qtest_clock_step(f->s, 100 * SCALE_MS + 1);
}

static void ie_start(IEFuzz *f, ZCFuzzInput *in)
{
    uint8_t setup = zcf_u8(in);
    int i;

    f->bus = qpci_new_pc(f->s, NULL);
    f->iommu = qpci_device_find(f->bus, IEF_IOMMU_DEVFN);
    f->edu[0] = qpci_device_find(f->bus, IEF_EDU0_DEVFN);
    f->edu[1] = qpci_device_find(f->bus, IEF_EDU1_DEVFN);
    g_assert(f->iommu && f->edu[0] && f->edu[1]);
    qpci_device_enable(f->iommu);
    f->regs = qpci_iomap(f->iommu, IOMMU_EMUL_REGS_BAR, NULL);
    for (i = 0; i < 2; i++) {
        qpci_device_enable(f->edu[i]);
        f->edu_bar[i] = qpci_iomap(f->edu[i], 0, NULL);
    }
    if (setup & 0x80) {
        qpci_msix_enable(f->iommu);
    }

    /* Command ring of 2..256 entries, fault ring of 2..16 */
    f->cmdq_log2 = (setup & 7) + 1;
    f->tail = 0;
    f->nbus = 0;
    qpci_io_writeq(f->iommu, f->regs, A_CMDQ_BASE, IEF_CMDQ_BASE);
    qpci_io_writel(f->iommu, f->regs, A_CMDQ_SIZE, f->cmdq_log2);
    qpci_io_writeq(f->iommu, f->regs, A_FAULTQ_BASE, IEF_FAULTQ_BASE);
    qpci_io_writel(f->iommu, f->regs, A_FAULTQ_SIZE, ((setup >> 3) & 3) + 1);
    qpci_io_writel(f->iommu, f->regs, A_CTRL, R_CTRL_CMDQ_EN_MASK |
                   (setup & 0x40 ? 0 : R_CTRL_FAULTQ_EN_MASK));
}

static void ie_stop(IEFuzz *f)
{
    int i;

    for (i = 0; i < 2; i++) {
        g_free(f->edu[i]);
    }
    g_free(f->iommu);
    qpci_free_pc(f->bus);
}

static void iommu_emul_fuzz(QTestState *s, const unsigned char *data,
                            size_t size)
{
    ZCFuzzInput in = { data, size };
    IEFuzz f = { .s = s };
    uint8_t e[IOMMU_EMUL_CMD_SIZE];
    unsigned n, i;
    uint32_t from;

    ie_start(&f, &in);
    for (n = 0; in.n && n < MAX_ACTIONS; n++) {
        switch (zcf_u8(&in) % ACT__MAX) {
        case ACT_CMD:
            from = f.tail;
            ie_build_cmd(&f, &in, e);
            ie_put_cmd(&f, e);
            ie_doorbell(&f, from);
            break;
        case ACT_CMD_BATCH:
            /* several entries, one doorbell (it may wrap or overflow) */
            from = f.tail;
            for (i = zcf_u8(&in) % 8 + 1; i; i--) {
                ie_build_cmd(&f, &in, e);
                ie_put_cmd(&f, e);
            }
            ie_doorbell(&f, from);
            break;
        case ACT_RAW_CMD:
            from = f.tail;
            zcf_bytes(&in, e, sizeof(e));
            ie_put_cmd(&f, e);
            ie_doorbell(&f, from);
            break;
        case ACT_EDU_DMA:
            ie_edu_dma(&f, &in);
            break;
        case ACT_REG_WRITE: {
            uint8_t k = zcf_u8(&in);
            uint64_t off = (k & 0x3f) * 4;
            uint64_t val = zcf_u64(&in);

            if (k & 0x80) {
                qpci_io_writeq(f.iommu, f.regs, off & ~7ULL, val);
            } else {
                qpci_io_writel(f.iommu, f.regs, off, val);
            }
            /* the guest owns the ring state after this */
            if (off == A_CMDQ_SIZE || off == A_CTRL) {
                f.tail = 0;
            }
            break;
        }
        case ACT_REG_READ: {
            uint8_t k = zcf_u8(&in);

            if (k & 0x80) {
                qpci_io_readq(f.iommu, f.regs, (k & 0x1f) * 8);
            } else {
                qpci_io_readl(f.iommu, f.regs, (k & 0x3f) * 4);
            }
            break;
        }
        case ACT_FAULTQ_CONSUME: {
            uint32_t head = zcf_u8(&in) < 0xf0 ?
                qpci_io_readl(f.iommu, f.regs, A_FAULTQ_TAIL) : zcf_u32(&in);

            qpci_io_writel(f.iommu, f.regs, A_FAULTQ_HEAD, head);
            break;
        }
        case ACT_CMDQ_ERROR_CLEAR:
            qpci_io_writel(f.iommu, f.regs, A_CMDQ_ERROR, 0);
            break;
        case ACT_CTRL:
            qpci_io_writel(f.iommu, f.regs, A_CTRL, zcf_u8(&in) & 3);
            f.tail = 0;
            break;
        case ACT_PCI_COMMAND: {
            uint8_t k = zcf_u8(&in);
            QPCIDevice *d = k % 3 == 0 ? f.iommu : f.edu[k % 3 - 1];
            uint16_t cmd = PCI_COMMAND_MEMORY |
                           (k & 4 ? 0 : PCI_COMMAND_MASTER);

            qpci_config_writew(d, PCI_COMMAND, cmd);
            if ((k & 8) && f.iommu->msix_enabled) {
                qpci_msix_disable(f.iommu);
            }
            break;
        }
        case ACT_CLOCK:
            qtest_clock_step(s, ((uint64_t)zcf_u8(&in) + 1) * SCALE_MS);
            break;
        case ACT_RESET:
            /* what a guest reboot does, then the driver starts again */
            ie_stop(&f);
            fuzz_reset(s);
            ie_start(&f, &in);
            break;
        }
        flush_events(s);
    }
    ie_stop(&f);
    if (getenv("QEMU_ZC_FUZZ_DEBUG")) {
        /* how deep the input got: the device's counters (since start) */
        Object *o = object_resolve_path_type("", "iommu-emul", NULL);

        fprintf(stderr, "iommu-emul: maps %" PRIu64 " unmaps %" PRIu64
                " faults %" PRIu64 " invalidations %" PRIu64
                " mappings %" PRIu64 " pinned-pages %" PRIu64 "\n",
                object_property_get_uint(o, "maps", NULL),
                object_property_get_uint(o, "unmaps", NULL),
                object_property_get_uint(o, "faults", NULL),
                object_property_get_uint(o, "invalidations", NULL),
                object_property_get_uint(o, "mappings", NULL),
                object_property_get_uint(o, "pinned-pages", NULL));
    }
    fuzz_reset(s);
}

static GString *iommu_emul_fuzz_argv(FuzzTarget *t)
{
    return g_string_new(TARGET_NAME);
}

static GString *iommu_emul_fuzz_cmdline_get(FuzzTarget *t)
{
    GString *cmd = iommu_emul_fuzz_argv(t);

    g_string_append(cmd, iommu_emul_fuzz_cmdline);
    return cmd;
}

static void register_iommu_emul_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "qemu-zc-iommu-emul-fuzz",
        .description = "Fuzz iommu-emul through valid command and fault"
                       " rings, with two edu doing DMA through it",
        .get_init_cmdline = iommu_emul_fuzz_cmdline_get,
        .fuzz = iommu_emul_fuzz,
    });
}

fuzz_target_init(register_iommu_emul_fuzz_targets);
