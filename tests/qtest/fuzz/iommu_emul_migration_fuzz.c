/*
 * iommu-emul fuzz target: the device's migration stream
 *
 * The destination of a migration checks iommu-emul's state like guest
 * input (docs/specs/iommu-emul.rst, "Migration"). This target loads the
 * input as the device's section of a migration stream (what
 * vmstate_save_state() writes for it) into the running device: the PCI
 * and MSI-X state, registers, rings, pending faults, and the domains with
 * their mappings, which are pinned again. After a load that succeeds, it
 * uses the device as a guest would: registers, a command through the
 * loaded ring, DMA of the two edu through the loaded mappings, and a
 * reset, which must release every pin.
 *
 * With QEMU_ZC_FUZZ_SEED_DIR=DIR set, it first writes the streams of a
 * few device states (rings on, mappings of both edu, a ring error) to
 * DIR as seeds.
 *
 * The stream layout is the one of the device on qemu-zc's main branch
 * (vmstate "iommu-emul" version 2, with its optional subsection of a
 * DETACH in progress); seeds must be made again when it
 * changes.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "hw/qdev-core.h"
#include "hw/pci/pci_device.h"
#include "io/channel-buffer.h"
#include "migration/vmstate.h"
#include "migration/qemu-file.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/libqos/pci.h"
#include "tests/qtest/libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "hw/iommu-emul/iommu-emul-regs.h"
#include "fuzz.h"
#include "iommu_emul_fuzz.h"

typedef struct IMFuzz {
    QTestState *s;
    QPCIBus *bus;
    QPCIDevice *iommu;
    QPCIDevice *edu[2];
    QPCIBar regs;
    QPCIBar edu_bar[2];
} IMFuzz;

static DeviceState *im_dev;
/*
 * Loading the PCI state stores the stream's version_id in PCIDevice,
 * where the next load compares against it: a failed load would fail
 * every later one. A reset does not restore it; the target does.
 */
static int32_t im_pci_version_id;

static void im_pci_start(IMFuzz *f)
{
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
}

static void im_pci_stop(IMFuzz *f)
{
    g_free(f->edu[0]);
    g_free(f->edu[1]);
    g_free(f->iommu);
    qpci_free_pc(f->bus);
}

/* Write a command at the ring's tail and ring the doorbell */
static void im_cmd(IMFuzz *f, uint16_t op, uint16_t flags, uint16_t rid,
                   uint64_t addr, uint64_t len)
{
    uint64_t base = qpci_io_readq(f->iommu, f->regs, A_CMDQ_BASE);
    uint32_t log2 = qpci_io_readl(f->iommu, f->regs, A_CMDQ_SIZE);
    uint32_t tail = qpci_io_readl(f->iommu, f->regs, A_CMDQ_TAIL);
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };

    if (log2 == 0 || log2 > 15) {
        return;
    }
    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, op);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, rid);
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, addr);
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, len);
    qtest_memwrite(f->s, base + (uint64_t)tail * IOMMU_EMUL_CMD_SIZE, e,
                   sizeof(e));
    qpci_io_writel(f->iommu, f->regs, A_CMDQ_TAIL, (tail + 1) % (1u << log2));
}

/* Two commands of edu0 (the second without arguments), one doorbell */
static void im_cmd_batch(IMFuzz *f, uint16_t op, uint16_t flags,
                         uint64_t addr, uint64_t len, uint16_t op2)
{
    uint64_t base = qpci_io_readq(f->iommu, f->regs, A_CMDQ_BASE);
    uint32_t log2 = qpci_io_readl(f->iommu, f->regs, A_CMDQ_SIZE);
    uint32_t tail = qpci_io_readl(f->iommu, f->regs, A_CMDQ_TAIL);
    uint32_t mask = (1u << log2) - 1;
    uint8_t e[IOMMU_EMUL_CMD_SIZE] = { 0 };

    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, op);
    stw_le_p(e + IOMMU_EMUL_CMD_FLAGS, flags);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, IEF_EDU0_DEVFN);
    stq_le_p(e + IOMMU_EMUL_CMD_ADDR, addr);
    stq_le_p(e + IOMMU_EMUL_CMD_LENGTH, len);
    qtest_memwrite(f->s, base + (uint64_t)tail * IOMMU_EMUL_CMD_SIZE, e,
                   sizeof(e));
    memset(e, 0, sizeof(e));
    stw_le_p(e + IOMMU_EMUL_CMD_OPCODE, op2);
    stw_le_p(e + IOMMU_EMUL_CMD_REQUESTER, IEF_EDU0_DEVFN);
    qtest_memwrite(f->s,
                   base + (uint64_t)((tail + 1) & mask) * IOMMU_EMUL_CMD_SIZE,
                   e, sizeof(e));
    qpci_io_writel(f->iommu, f->regs, A_CMDQ_TAIL, (tail + 2) & mask);
}

static void im_edu_dma(IMFuzz *f, int i, bool to_pci, uint64_t bus,
                       uint64_t cnt)
{
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x80, to_pci ? 0x40000 : bus);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x88, to_pci ? bus : 0x40000);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x90, cnt);
    qpci_io_writeq(f->edu[i], f->edu_bar[i], 0x98, 1 | (to_pci ? 2 : 0));
    qtest_clock_step(f->s, 100 * SCALE_MS + 1);
}

/* Use the loaded device as a guest would */
static void im_exercise(IMFuzz *f)
{
    static const uint32_t regs[] = {
        A_CAP, A_CTRL, A_STATUS, A_CMDQ_ERROR, A_FAULTQ_ERROR,
        A_CMDQ_HEAD, A_CMDQ_TAIL, A_FAULTQ_HEAD, A_FAULTQ_TAIL,
        A_FAULT_OVERFLOW,
    };
    unsigned i;

    /*
     * The loaded PCI state may have moved or disabled the BARs and bus
     * mastering: enable and map them again, as a guest driver would.
     */
    im_pci_start(f);
    for (i = 0; i < ARRAY_SIZE(regs); i++) {
        qpci_io_readl(f->iommu, f->regs, regs[i]);
    }
    qpci_io_readq(f->iommu, f->regs, A_PINNED);
    /* DMA through the first IOVAs (where the seeds' mappings are) */
    for (i = 0; i < 2; i++) {
        im_edu_dma(f, i, false, 1 * MiB + 0x10, 64);
        im_edu_dma(f, i, true, 1 * MiB + IOMMU_EMUL_PAGE_SIZE, 64);
    }
    /* Commands through the loaded ring, on the loaded mappings */
    im_cmd(f, IOMMU_EMUL_OP_QUERY, 0, IEF_EDU0_DEVFN, 1 * MiB, 0);
    im_cmd(f, IOMMU_EMUL_OP_UNMAP, 0, IEF_EDU0_DEVFN, 1 * MiB,
           IOMMU_EMUL_PAGE_SIZE);
    im_cmd(f, IOMMU_EMUL_OP_MAP, IOMMU_EMUL_MAP_READ, IEF_EDU1_DEVFN,
           IEF_BUF_BASE, 2 * IOMMU_EMUL_PAGE_SIZE);
    im_cmd(f, IOMMU_EMUL_OP_DETACH, 0, IEF_EDU1_DEVFN, 0, 0);
    qpci_io_writel(f->iommu, f->regs, A_CMDQ_ERROR, 0);
    qpci_io_writel(f->iommu, f->regs, A_FAULTQ_HEAD,
                   qpci_io_readl(f->iommu, f->regs, A_FAULTQ_TAIL));
    flush_events(f->s);
    im_pci_stop(f);
}

static void iommu_emul_migration_fuzz(QTestState *s,
                                      const unsigned char *data, size_t size)
{
    const VMStateDescription *vmsd = DEVICE_GET_CLASS(im_dev)->vmsd;
    QIOChannelBuffer *bioc = qio_channel_buffer_new(size);
    IMFuzz f = { .s = s };
    QEMUFile *file;
    int ret;

    PCI_DEVICE(im_dev)->version_id = im_pci_version_id;
    if (size) {
        memcpy(bioc->data, data, size);
        bioc->usage = size;
    }
    file = qemu_file_new_input(QIO_CHANNEL(bioc));
    ret = vmstate_load_state(file, vmsd, im_dev, vmsd->version_id);
    /*
     * The stream's INTx levels go to PCIDevice.irq_state, and the PCI
     * bus's own section (not loaded here) brings the matching count of
     * asserted interrupts; without it, a reset would find the two out of
     * step (an assertion in the PCI core). iommu-emul has no INTx: keep
     * the levels as they were, as a consistent bus section would.
     */
    PCI_DEVICE(im_dev)->irq_state = 0;
    qemu_fclose(file);
    object_unref(OBJECT(bioc));
    if (ret == 0) {
        im_exercise(&f);
    }
    fuzz_reset(s);
}

/* ---- seeds ------------------------------------------------------------- */

static void im_save(const char *dir, const char *name)
{
    const VMStateDescription *vmsd = DEVICE_GET_CLASS(im_dev)->vmsd;
    QIOChannelBuffer *bioc = qio_channel_buffer_new(4096);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) err = NULL;
    QEMUFile *file = qemu_file_new_output(QIO_CHANNEL(bioc));

    g_assert_cmpint(vmstate_save_state(file, vmsd, im_dev, NULL), ==, 0);
    qemu_fflush(file);
    if (!g_file_set_contents(path, (char *)bioc->data, bioc->usage, &err)) {
        fprintf(stderr, "%s\n", err->message);
        exit(1);
    }
    printf("seed %s: %zu bytes\n", path, bioc->usage);
    qemu_fclose(file);
    object_unref(OBJECT(bioc));
}

static void im_rings(IMFuzz *f, uint32_t cmdq_log2, uint32_t faultq_log2)
{
    qpci_io_writeq(f->iommu, f->regs, A_CMDQ_BASE, IEF_CMDQ_BASE);
    qpci_io_writel(f->iommu, f->regs, A_CMDQ_SIZE, cmdq_log2);
    qpci_io_writeq(f->iommu, f->regs, A_FAULTQ_BASE, IEF_FAULTQ_BASE);
    qpci_io_writel(f->iommu, f->regs, A_FAULTQ_SIZE, faultq_log2);
    qpci_io_writel(f->iommu, f->regs, A_CTRL,
                   R_CTRL_CMDQ_EN_MASK | R_CTRL_FAULTQ_EN_MASK);
}

static void im_make_seeds(QTestState *s, const char *dir)
{
    IMFuzz f = { .s = s };
    int i;

    g_mkdir_with_parents(dir, 0755);
    fuzz_reset(s);
    im_save(dir, "reset");

    im_pci_start(&f);
    im_rings(&f, 4, 3);
    im_save(dir, "rings-on");

    /* edu0: 4 pages RW and 1 page RO, translating; edu1: 2 pages RO */
    im_cmd(&f, IOMMU_EMUL_OP_MAP, 3, IEF_EDU0_DEVFN, IEF_BUF_BASE,
           4 * IOMMU_EMUL_PAGE_SIZE);
    im_cmd(&f, IOMMU_EMUL_OP_MAP, 1, IEF_EDU0_DEVFN,
           IEF_BUF_BASE + 2 * IOMMU_EMUL_PAGE_SIZE, IOMMU_EMUL_PAGE_SIZE);
    im_cmd(&f, IOMMU_EMUL_OP_SET_MODE, IOMMU_EMUL_MODE_TRANSLATE,
           IEF_EDU0_DEVFN, 0, 0);
    im_cmd(&f, IOMMU_EMUL_OP_MAP, 1, IEF_EDU1_DEVFN, IEF_BUF_BASE,
           2 * IOMMU_EMUL_PAGE_SIZE);
    im_save(dir, "mappings");

    /* faults recorded on the fault ring, a full ring and overflows */
    for (i = 0; i < 10; i++) {
        im_edu_dma(&f, 0, true, 64 * MiB + i * IOMMU_EMUL_PAGE_SIZE, 16);
    }
    flush_events(s);
    im_save(dir, "faults");

    /* a command ring error (DMA, bus mastering off) to be cleared */
    qpci_config_writew(f.iommu, PCI_COMMAND, PCI_COMMAND_MEMORY);
    im_cmd(&f, IOMMU_EMUL_OP_SYNC, 0, 0, 0, 0);
    im_save(dir, "cmdq-error");
    qpci_device_enable(f.iommu);
    qpci_io_writel(f.iommu, f.regs, A_CMDQ_ERROR, 0);

    /* many mappings sharing pins, on both requesters */
    im_rings(&f, 8, 8);
    for (i = 0; i < 24; i++) {
        im_cmd(&f, IOMMU_EMUL_OP_MAP, i % 3 + 1,
               i & 1 ? IEF_EDU1_DEVFN : IEF_EDU0_DEVFN,
               IEF_BUF_BASE + (i % 7) * IOMMU_EMUL_PAGE_SIZE,
               (i % 5 + 1) * IOMMU_EMUL_PAGE_SIZE);
    }
    im_cmd(&f, IOMMU_EMUL_OP_SET_MODE, IOMMU_EMUL_MODE_TRANSLATE,
           IEF_EDU1_DEVFN, 0, 0);
    im_save(dir, "many-mappings");

    /*
     * A DETACH over the execution budget (2^18 pages), partly done: the
     * optional subsection. 63 mappings of 16 MiB, then one batch of a
     * 64th MAP (4097 units) and the DETACH, which stops after 63 of
     * them. The virtual clock stands still, so nothing runs it further.
     */
    im_cmd(&f, IOMMU_EMUL_OP_DETACH, 0, IEF_EDU0_DEVFN, 0, 0);
    im_cmd(&f, IOMMU_EMUL_OP_DETACH, 0, IEF_EDU1_DEVFN, 0, 0);
    for (i = 0; i < 63; i++) {
        im_cmd(&f, IOMMU_EMUL_OP_MAP, 3, IEF_EDU0_DEVFN, IEF_BUF_BASE,
               16 * MiB);
    }
    im_cmd_batch(&f, IOMMU_EMUL_OP_MAP, 3, IEF_BUF_BASE, 16 * MiB,
                 IOMMU_EMUL_OP_DETACH);
    im_save(dir, "detach-in-progress");

    im_pci_stop(&f);
    fuzz_reset(s);
}

static void iommu_emul_migration_pre_fuzz(QTestState *s)
{
    const char *dir = getenv("QEMU_ZC_FUZZ_SEED_DIR");

    im_dev = DEVICE(object_resolve_path_type("", "iommu-emul", NULL));
    g_assert(im_dev);
    im_pci_version_id = PCI_DEVICE(im_dev)->version_id;
    if (dir) {
        im_make_seeds(s, dir);
    }
}

static GString *iommu_emul_migration_cmdline(FuzzTarget *t)
{
    GString *cmd = g_string_new(TARGET_NAME);

    g_string_append(cmd, iommu_emul_fuzz_cmdline);
    return cmd;
}

static void register_iommu_emul_migration_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "qemu-zc-iommu-emul-migration-fuzz",
        .description = "Load fuzzed migration streams into iommu-emul",
        .get_init_cmdline = iommu_emul_migration_cmdline,
        .pre_fuzz = iommu_emul_migration_pre_fuzz,
        .fuzz = iommu_emul_migration_fuzz,
    });
}

fuzz_target_init(register_iommu_emul_migration_fuzz_targets);
