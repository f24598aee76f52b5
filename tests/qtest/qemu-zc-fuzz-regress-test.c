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
#include "libqos/qemu-zc-migrate.h"
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

static void ie_start_args(IE *t, const char *props)
{
    t->qts = qtest_initf("-machine q35 -m 256M -device iommu-emul,"
                         "id=iommu0,addr=04.0%s -device edu,addr=05.0",
                         props);
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

static void ie_start(IE *t)
{
    ie_start_args(t, "");
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

/*
 * The hang: a ring full of MAPs of one large range (200 MAPs of 496 MiB
 * in the fuzzer's input) was executed entirely in the CMDQ_TAIL write,
 * each MAP walking every page, holding the BQL for seconds (over a minute
 * under ASan). The spec now bounds a step by the execution budget (2^18
 * page units) and runs the rest later. Scaled down here so that it pins
 * only 4 MiB (RLIMIT_MEMLOCK of unprivileged users): 1000 MAPs of the same
 * 4 MiB cost 1000 * 1025 units, four steps of 256 MAPs. Then a DETACH of
 * those 1000 mappings (1024000 pages) runs in four steps too.
 *
 * QEMU runs the background steps on the virtual clock (one step per
 * nanosecond), which only qtest_clock_step() advances here: the steps the
 * test sees are exactly those of its register accesses until it steps
 * the clock, which then runs the rest.
 */
#define BIG_N           1000
#define BIG_GPA         0x1000000
#define BIG_LEN         (4 * 1024 * 1024)
#define BIG_PER_STEP    256     /* 255 * 1025 < 2^18 <= 256 * 1025 */

static void put_cmd(IE *t, unsigned idx, uint16_t op, uint16_t flags,
                    uint64_t addr, uint64_t len)
{
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };

    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, op);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, EDU_RID);
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, addr);
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, len);
    qtest_memwrite(t->qts, CMDQ_GPA + idx * IOMMU_EMUL_CMD_SIZE, e,
                   sizeof(e));
}

static void get_cmd(IE *t, unsigned idx, uint8_t *e)
{
    qtest_memread(t->qts, CMDQ_GPA + idx * IOMMU_EMUL_CMD_SIZE, e,
                  IOMMU_EMUL_CMD_SIZE);
}

/* Entries [from, to) that have DONE, checking that they are a prefix */
static unsigned done_prefix(IE *t, unsigned from, unsigned to)
{
    g_autofree uint8_t *ring = g_malloc((to - from) * IOMMU_EMUL_CMD_SIZE);
    unsigned i, n = 0;

    qtest_memread(t->qts, CMDQ_GPA + from * IOMMU_EMUL_CMD_SIZE, ring,
                  (to - from) * IOMMU_EMUL_CMD_SIZE);
    for (i = 0; i < to - from; i++) {
        if (lduw_le_p(ring + i * IOMMU_EMUL_CMD_SIZE +
                      IOMMU_EMUL_CMD_STATUS) & IOMMU_EMUL_STATUS_DONE) {
            g_assert_cmpuint(n, ==, i);
            n++;
        }
    }
    return n;
}

/* A QMP command is answered while a batch is pending */
static void qmp_answers(IE *t)
{
    QDict *resp = qtest_qmp(t->qts, "{'execute': 'query-status'}");

    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
}

static void test_cmdq_huge_batch(void)
{
    uint8_t e[IOMMU_EMUL_CMD_SIZE];
    g_autoptr(GHashTable) addrs = g_hash_table_new(g_int64_hash,
                                                   g_int64_equal);
    g_autofree uint64_t *out = g_new(uint64_t, BIG_N);
    unsigned i;
    IE t;

    ie_start_args(&t, ",cmdq-max-log2=10");
    qpci_io_writeq(t.iommu, t.regs, A_CMDQ_BASE, CMDQ_GPA);
    wr32(&t, A_CMDQ_SIZE, 10);
    wr32(&t, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    for (i = 0; i < BIG_N; i++) {
        put_cmd(&t, i, IOMMU_EMUL_OP_MAP,
                IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE, BIG_GPA, BIG_LEN);
    }
    put_cmd(&t, BIG_N, IOMMU_EMUL_OP_SYNC, 0, 0, 0);
    wr32(&t, A_CMDQ_TAIL, BIG_N + 1);

    /* The write ran one step: 256 MAPs; the rest is pending */
    g_assert_cmpuint(done_prefix(&t, 0, BIG_N + 1), ==, BIG_PER_STEP);
    /* QMP and other registers answer, and do not execute anything */
    qmp_answers(&t);
    g_assert_cmphex(rd32(&t, A_STATUS), ==, R_STATUS_CMDQ_ON_MASK);
    g_assert_cmpuint(rd32(&t, A_CMDQ_ERROR), ==, IOMMU_EMUL_QERR_NONE);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_PER_STEP);
    /* A CMDQ_HEAD read runs one step before it returns */
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, 2 * BIG_PER_STEP);
    g_assert_cmpuint(done_prefix(&t, 0, BIG_N + 1), ==, 2 * BIG_PER_STEP);
    /* The background steps finish it: the 2 left, and the SYNC */
    qtest_clock_step(t.qts, 1000 * 1000);
    g_assert_cmpuint(done_prefix(&t, 0, BIG_N + 1), ==, BIG_N + 1);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_N + 1);
    for (i = 0; i < BIG_N; i++) {
        get_cmd(&t, i, e);
        g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                        IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
        out[i] = ldq_le_p(e + IOMMU_EMUL_CMD_OUT_ADDR);
        g_assert_false(g_hash_table_contains(addrs, &out[i]));
        g_hash_table_add(addrs, &out[i]);
    }
    get_cmd(&t, BIG_N, e);
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                    IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_N);
    /* the same pages, pinned once */
    g_assert_cmpuint(qpci_io_readq(t.iommu, t.regs, A_PINNED), ==, BIG_LEN);

    /* DETACH of the 1000 mappings: 256 per step, then the SYNC */
    put_cmd(&t, BIG_N + 1, IOMMU_EMUL_OP_DETACH, 0, 0, 0);
    put_cmd(&t, BIG_N + 2, IOMMU_EMUL_OP_SYNC, 0, 0, 0);
    wr32(&t, A_CMDQ_TAIL, BIG_N + 3);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_N - BIG_PER_STEP);
    g_assert_cmpuint(done_prefix(&t, BIG_N + 1, BIG_N + 3), ==, 0);
    qmp_answers(&t);
    /* the driver's wait: three reads, each a step */
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_N + 1);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_N - 2 * BIG_PER_STEP);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_N + 1);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_N + 3);
    get_cmd(&t, BIG_N + 1, e);
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                    IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(ldq_le_p(e + IOMMU_EMUL_CMD_OUT_LENGTH), ==, BIG_N);
    get_cmd(&t, BIG_N + 2, e);
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                    IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, 0);
    g_assert_cmpuint(qpci_io_readq(t.iommu, t.regs, A_PINNED), ==, 0);
    ie_stop(&t);
}

/*
 * Turning the ring off stops a pending batch: the entries from CMDQ_HEAD
 * on do not run, also not in the background.
 */
static void test_cmdq_off_stops_batch(void)
{
    unsigned i;
    IE t;

    ie_start_args(&t, ",cmdq-max-log2=10");
    qpci_io_writeq(t.iommu, t.regs, A_CMDQ_BASE, CMDQ_GPA);
    wr32(&t, A_CMDQ_SIZE, 10);
    wr32(&t, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    for (i = 0; i < BIG_N; i++) {
        put_cmd(&t, i, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, BIG_GPA,
                BIG_LEN);
    }
    wr32(&t, A_CMDQ_TAIL, BIG_N);
    wr32(&t, A_CTRL, 0);
    qtest_clock_step(t.qts, 1000 * 1000);
    g_assert_cmpuint(done_prefix(&t, 0, BIG_N), ==, BIG_PER_STEP);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_PER_STEP);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_PER_STEP);
    g_assert_cmphex(rd32(&t, A_STATUS), ==, 0);
    ie_stop(&t);
}

/*
 * A batch within the budget still runs entirely in the CMDQ_TAIL write
 * (what guest/iommu-emul-dma relies on): 255 MAPs of 4 MiB and a SYNC
 * (255 * 1025 + 1 units) have DONE before anything else reads a register.
 */
static void test_cmdq_budget_sync(void)
{
    unsigned i;
    IE t;

    ie_start_args(&t, ",cmdq-max-log2=10");
    qpci_io_writeq(t.iommu, t.regs, A_CMDQ_BASE, CMDQ_GPA);
    wr32(&t, A_CMDQ_SIZE, 10);
    wr32(&t, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    for (i = 0; i < BIG_PER_STEP - 1; i++) {
        put_cmd(&t, i, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, BIG_GPA,
                BIG_LEN);
    }
    put_cmd(&t, i, IOMMU_EMUL_OP_SYNC, 0, 0, 0);
    wr32(&t, A_CMDQ_TAIL, BIG_PER_STEP);
    g_assert_cmpuint(done_prefix(&t, 0, BIG_PER_STEP), ==, BIG_PER_STEP);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_PER_STEP - 1);
    g_assert_cmpuint(rd32(&t, A_CMDQ_HEAD), ==, BIG_PER_STEP);
    ie_stop(&t);
}

/*
 * A DETACH partly done migrates (the optional subsection) and goes on at
 * the destination, where it completes once with the count of both sides.
 */
static void test_cmdq_detach_migrates(void)
{
    const char *args = "-machine q35 -m 256M -device iommu-emul,"
                       "id=iommu0,addr=04.0,cmdq-max-log2=10"
                       " -device edu,addr=05.0";
    uint8_t e[IOMMU_EMUL_CMD_SIZE];
    QPCIDevice *iommu;
    QPCIBus *bus;
    unsigned i;
    IE t, d;

    ie_start_args(&t, ",cmdq-max-log2=10");
    qpci_io_writeq(t.iommu, t.regs, A_CMDQ_BASE, CMDQ_GPA);
    wr32(&t, A_CMDQ_SIZE, 10);
    wr32(&t, A_CTRL, R_CTRL_CMDQ_EN_MASK);
    for (i = 0; i < BIG_N; i++) {
        put_cmd(&t, i, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, BIG_GPA,
                BIG_LEN);
    }
    wr32(&t, A_CMDQ_TAIL, BIG_N);
    qtest_clock_step(t.qts, 1000 * 1000);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_N);
    put_cmd(&t, BIG_N, IOMMU_EMUL_OP_DETACH, 0, 0, 0);
    wr32(&t, A_CMDQ_TAIL, BIG_N + 1);
    g_assert_cmpuint(qom_u64(&t, "mappings"), ==, BIG_N - BIG_PER_STEP);

    /* The destination: the BARs as the source's guest programmed them */
    d = t;
    d.qts = qzc_migrate(t.qts, args);
    bus = qpci_new_pc(d.qts, NULL);
    iommu = qpci_device_find(bus, IOMMU_DEVFN);
    g_assert_nonnull(iommu);
    d.iommu = iommu;
    g_assert_cmpuint(qom_u64(&d, "mappings"), ==, BIG_N - BIG_PER_STEP);
    get_cmd(&d, BIG_N, e);
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==, 0);
    /* two more steps: 256, then the last 488 */
    g_assert_cmpuint(rd32(&d, A_CMDQ_HEAD), ==, BIG_N);
    g_assert_cmpuint(rd32(&d, A_CMDQ_HEAD), ==, BIG_N);
    g_assert_cmpuint(rd32(&d, A_CMDQ_HEAD), ==, BIG_N + 1);
    get_cmd(&d, BIG_N, e);
    g_assert_cmphex(lduw_le_p(e + IOMMU_EMUL_CMD_STATUS), ==,
                    IOMMU_EMUL_STATUS_DONE | IOMMU_EMUL_ST_OK);
    g_assert_cmpuint(ldq_le_p(e + IOMMU_EMUL_CMD_OUT_LENGTH), ==, BIG_N);
    g_assert_cmpuint(qom_u64(&d, "mappings"), ==, 0);
    g_assert_cmpuint(qpci_io_readq(d.iommu, d.regs, A_PINNED), ==, 0);
    g_free(iommu);
    qpci_free_pc(bus);
    qtest_quit(d.qts);
    ie_stop(&t);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-error-clear-big-size",
                   test_cmdq_error_clear_big_size);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/fault-ring-off-big-size",
                   test_fault_ring_off_big_size);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-huge-batch",
                   test_cmdq_huge_batch);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-budget-sync",
                   test_cmdq_budget_sync);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-off-stops-batch",
                   test_cmdq_off_stops_batch);
    qtest_add_func("/qemu-zc-fuzz-regress/iommu-emul/cmdq-detach-migrates",
                   test_cmdq_detach_migrates);
    return g_test_run();
}
