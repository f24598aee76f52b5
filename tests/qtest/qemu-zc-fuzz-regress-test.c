/*
 * QTest: regressions found by fuzzing iommu-emul and virtio-zc
 *
 * Each test replays, as plain qtest commands, an input with which a fuzz
 * target of tests/qtest/fuzz/ (docs/devel/qemu-zc-fuzzing.rst) made QEMU
 * crash or a sanitizer report an error, and checks the behaviour that
 * docs/specs/iommu-emul.rst or docs/specs/virtio-zc.rst documents for it.
 * Some of the bugs were undefined behaviour that only an --enable-ubsan
 * build reports; those tests pass in other builds too, so CI runs this
 * test in the sanitizer build as well.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qemu/bswap.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "qobject/qdict.h"
#include "hw/pci/pci_regs.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define IOMMU_DEVFN     QPCI_DEVFN(4, 0)
#define EDU_DEVFN       QPCI_DEVFN(5, 0)
#define EDU_RID         EDU_DEVFN
#define CMDQ_GPA        0x100000
#define PAGE            4096

typedef struct IE {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *iommu;
    QPCIDevice *edu;
    QPCIBar regs;
    QPCIBar edu_bar;
} IE;

static void ie_start(IE *t)
{
    t->qts = qtest_init("-machine q35 -m 256M -device iommu-emul,"
                        "id=iommu0,addr=04.0 -device edu,addr=05.0");
    t->bus = qpci_new_pc(t->qts, NULL);
    t->iommu = qpci_device_find(t->bus, IOMMU_DEVFN);
    t->edu = qpci_device_find(t->bus, EDU_DEVFN);
    g_assert_nonnull(t->iommu);
    g_assert_nonnull(t->edu);
    qpci_device_enable(t->iommu);
    qpci_device_enable(t->edu);
    t->regs = qpci_iomap(t->iommu, IOMMU_EMUL_REGS_BAR, NULL);
    t->edu_bar = qpci_iomap(t->edu, 0, NULL);
}

static void ie_stop(IE *t)
{
    g_free(t->iommu);
    g_free(t->edu);
    qpci_free_pc(t->bus);
    qtest_quit(t->qts);
}

static uint32_t rd32(IE *t, uint32_t reg)
{
    return qpci_io_readl(t->iommu, t->regs, reg);
}

static void wr32(IE *t, uint32_t reg, uint32_t val)
{
    qpci_io_writel(t->iommu, t->regs, reg, val);
}

static uint64_t qom_u64(IE *t, const char *name)
{
    QDict *resp;
    uint64_t v;

    resp = qtest_qmp(t->qts, "{'execute': 'qom-get', 'arguments':"
                     " {'path': '/machine/peripheral/iommu0',"
                     "  'property': %s}}", name);
    g_assert(qdict_haskey(resp, "return"));
    v = qdict_get_int(resp, "return");
    qobject_unref(resp);
    return v;
}

/*
 * Clearing CMDQ_ERROR while the command ring is off, with a CMDQ_SIZE
 * of 32 or more stored (the spec lets any 32-bit value be stored while
 * the ring is off), shifted 1 by CMDQ_SIZE: undefined behaviour. The
 * write clears the error and nothing runs; the size reads back as
 * written.
 */
static void test_cmdq_error_clear_big_size(void)
{
    IE t;

    ie_start(&t);
    wr32(&t, A_CMDQ_SIZE, 32);
    wr32(&t, A_CMDQ_ERROR, 0);
    g_assert_cmpuint(rd32(&t, A_CMDQ_SIZE), ==, 32);
    g_assert_cmpuint(rd32(&t, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, 0);
    g_assert_cmphex(rd32(&t, A_STATUS), ==, 0);
    wr32(&t, A_CMDQ_SIZE, 0xffffffff);
    wr32(&t, A_CMDQ_ERROR, 1);
    g_assert_cmphex(rd32(&t, A_STATUS), ==, 0);
    ie_stop(&t);
}

/*
 * A fault while the fault ring is off, with a FAULTQ_SIZE of 32 or more
 * stored, shifted 1 by FAULTQ_SIZE when the pending record was
 * delivered. The spec: such a fault is blocked and counted (QOM faults)
 * but not recorded.
 */
static void test_fault_ring_off_big_size(void)
{
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };
    IE t;

    ie_start(&t);
    /* a command ring of 2 entries; SET_MODE translate for edu */
    qpci_io_writeq(t.iommu, t.regs, A_CMDQ_BASE, CMDQ_GPA);
    wr32(&t, A_CMDQ_SIZE, 1);
    wr32(&t, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, IOMMU_EMUL_OP_SET_MODE);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, IOMMU_EMUL_MODE_TRANSLATE);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, EDU_RID);
    qtest_memwrite(t.qts, CMDQ_GPA, e, sizeof(e));
    wr32(&t, A_CMDQ_TAIL, 1);
    qtest_memread(t.qts, CMDQ_GPA, e, sizeof(e));
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                    IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);

    /* fault ring off, with an out-of-range size stored */
    wr32(&t, A_FAULTQ_SIZE, 40);
    /* edu reads unmapped bus address 0x200000: blocked */
    qpci_io_writeq(t.edu, t.edu_bar, 0x80, 0x200000);
    qpci_io_writeq(t.edu, t.edu_bar, 0x88, 0x40000);
    qpci_io_writeq(t.edu, t.edu_bar, 0x90, 8);
    qpci_io_writeq(t.edu, t.edu_bar, 0x98, 1);
    qtest_clock_step(t.qts, 200 * 1000 * 1000);
    g_assert_cmphex(qpci_io_readq(t.edu, t.edu_bar, 0x98) & 1, ==, 0);

    /* STATUS delivers pending records first: none is recorded */
    g_assert_cmphex(rd32(&t, A_STATUS), ==, R_STATUS_CMDQ_ON_MASK);
    g_assert_cmpuint(rd32(&t, A_FAULTQ_TAIL), ==, 0);
    g_assert_cmpuint(rd32(&t, A_FAULT_OVERFLOW), ==, 0);
    g_assert_cmpuint(rd32(&t, A_FAULTQ_SIZE), ==, 40);
    g_assert_cmpuint(qom_u64(&t, "faults"), ==, 1);
    ie_stop(&t);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-error-clear-big-size",
                   test_cmdq_error_clear_big_size);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/fault-ring-off-big-size",
                   test_fault_ring_off_big_size);
    return g_test_run();
}
