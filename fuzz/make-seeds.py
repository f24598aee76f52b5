#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write the seed corpus of the qemu-zc fuzz targets (wrapper/fuzz.sh seeds).
#
# Each seed replays, in its target's input format, a scenario of the
# project's qtests: tests/qtest/iommu-emul-test.c (map, DMA both ways,
# faults, read-only, unmap, detach, refcounts, bad commands and rings,
# batches, MSI-X, reset) and tests/qtest/virtio-zc-test.c (single and
# multi-segment sends, stall and reclaim, reset with stalled requests,
# disconnect and reconnect, bad headers and layouts, avail jumps, two
# queues). The input formats are described in the targets' sources,
# tests/qtest/fuzz/{iommu_emul,virtio_zc}_fuzz.c and generic_fuzz.c.
# The migration target writes its own seeds (device states it sets up).

import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# ---- qemu-zc-iommu-emul-fuzz ----------------------------------------------

(IE_CMD, IE_CMD_BATCH, IE_RAW_CMD, IE_EDU_DMA, IE_REG_WRITE, IE_REG_READ,
 IE_FAULTQ_CONSUME, IE_CMDQ_ERROR_CLEAR, IE_CTRL, IE_PCI_COMMAND, IE_CLOCK,
 IE_RESET) = range(12)
SET_MODE, MAP, UNMAP, DETACH, SYNC, QUERY = range(1, 7)
EDU0, EDU1, HOST, LPC, SELF = range(5)


def ie_addr_buf(page):
    return [0, page]


def ie_addr_bus(i=0):
    return [4, i]


def ie_addr_raw(v):
    return [7] + list(struct.pack("<Q", v))


def ie_cmd_fields(op, flags, rid, addr, pages=1):
    return [op - 1, flags, rid] + addr + [pages - 1, 0, 0]


def ie_cmd(*a, **k):
    return [IE_CMD] + ie_cmd_fields(*a, **k)


def ie_dma(edu, to_pci, addr, cnt16=16, local=0):
    return ([IE_EDU_DMA, edu | (2 if to_pci else 0)] + addr + [0, 0] +
            [0, cnt16] + [local])


def ie_seeds():
    t = "qemu-zc-iommu-emul-fuzz"
    setup = [0x83]          # MSI-X on, 16-entry command ring, fault ring on
    write(t, "map-dma", setup +
          ie_cmd(MAP, 3, EDU0, ie_addr_buf(0)) +
          ie_cmd(SET_MODE, 1, EDU0, ie_addr_buf(0)) +
          ie_dma(EDU0, False, ie_addr_bus(0)) +
          ie_dma(EDU0, True, ie_addr_bus(0)) +
          ie_cmd(QUERY, 0, EDU0, ie_addr_bus(0)) +
          ie_cmd(UNMAP, 0, EDU0, ie_addr_bus(0)))
    write(t, "fault-unmapped", setup +
          ie_cmd(SET_MODE, 1, EDU1, ie_addr_buf(0)) +
          ie_dma(EDU1, True, ie_addr_raw(0x200000)) +
          ie_dma(EDU1, False, ie_addr_raw(0x300000)) +
          [IE_REG_READ, 0x34 // 4, IE_FAULTQ_CONSUME, 0])
    write(t, "readonly", setup +
          ie_cmd(MAP, 1, EDU0, ie_addr_buf(3), 2) +
          ie_cmd(SET_MODE, 1, EDU0, ie_addr_buf(0)) +
          ie_dma(EDU0, True, ie_addr_bus(0)) +
          ie_dma(EDU0, False, ie_addr_bus(0)))
    write(t, "refcount-detach", setup +
          ie_cmd(MAP, 3, EDU0, ie_addr_buf(5), 4) +
          ie_cmd(MAP, 3, EDU1, ie_addr_buf(6), 2) +
          ie_cmd(MAP, 2, EDU0, ie_addr_buf(5), 1) +
          ie_cmd(DETACH, 0, EDU0, ie_addr_buf(0)) +
          ie_cmd(QUERY, 0, EDU1, ie_addr_bus(1)) +
          [IE_REG_READ, 0x80 | 3])
    write(t, "bad-commands", setup +
          [IE_CMD, 0xf0, 0x34, 0x12, 0, EDU0] + ie_addr_buf(0) + [0, 0, 0] +
          ie_cmd(MAP, 0, EDU0, ie_addr_buf(0)) +
          ie_cmd(MAP, 3, 0xf0 - 1, ie_addr_buf(0)) +
          [IE_CMD, MAP - 1, 3, 0xf5, 0x33, 0x00] + ie_addr_buf(0) + [0, 0, 0] +
          ie_cmd(MAP, 3, EDU0, ie_addr_raw(0x123)) +
          ie_cmd(MAP, 3, EDU0, [6, 0x00, 0xee, 0x0f, 0]) +
          ie_cmd(UNMAP, 0, EDU0, ie_addr_raw(0x5000)) +
          ie_cmd(SYNC, 1, HOST, ie_addr_buf(0)))
    write(t, "bad-rings", setup +
          [IE_REG_WRITE, 0x48 // 4] + list(struct.pack("<Q", 20)) +
          [IE_CTRL, 0, IE_CTRL, 3, IE_REG_READ, 0x38 // 4] +
          [IE_REG_WRITE, 0x80 | (0x40 // 4)] +
          list(struct.pack("<Q", 0x1fffffc0)) +
          [IE_CTRL, 1, IE_REG_WRITE, 0x54 // 4] +
          list(struct.pack("<Q", 99)) +
          [IE_CMDQ_ERROR_CLEAR, IE_PCI_COMMAND, 12] +
          ie_cmd(SYNC, 0, HOST, ie_addr_buf(0)) +
          [IE_CMDQ_ERROR_CLEAR])
    write(t, "batch", setup +
          [IE_CMD_BATCH, 5] +
          ie_cmd_fields(MAP, 3, EDU0, ie_addr_buf(8), 2) +
          ie_cmd_fields(MAP, 3, EDU1, ie_addr_buf(9), 3) +
          ie_cmd_fields(SET_MODE, 1, EDU0, ie_addr_buf(0)) +
          ie_cmd_fields(SET_MODE, 1, EDU1, ie_addr_buf(0)) +
          ie_cmd_fields(SYNC, 1, HOST, ie_addr_buf(0)) +
          ie_cmd_fields(QUERY, 0, EDU1, ie_addr_bus(1)) +
          ie_dma(EDU1, True, ie_addr_bus(1)) +
          [IE_RESET, 0x01] +
          ie_cmd(MAP, 3, EDU0, ie_addr_buf(8), 16))
    write(t, "fault-ring-full", [0x80 | 0x00] +
          ie_cmd(SET_MODE, 1, EDU0, ie_addr_buf(0)) +
          sum((ie_dma(EDU0, True, ie_addr_raw(0x400000 + i * 0x1000))
               for i in range(6)), []) +
          [IE_REG_READ, 0x78 // 4, IE_FAULTQ_CONSUME, 0,
           IE_REG_READ, 0x74 // 4])


# ---- qemu-zc-virtio-zc-fuzz -----------------------------------------------

(VZ_REQ, VZ_RAW_CHAIN, VZ_KICK, VZ_AVAIL_IDX, VZ_CLOCK, VZ_RECV,
 VZ_DEV_RESET, VZ_STATUS, VZ_CONFIG, VZ_REWRITE) = range(10)


def vz_buf(off64):
    return [0] + list(struct.pack("<H", off64))


def vz_len(ln):
    if ln % 16 == 0 and ln <= 0xc0 * 16:
        return [ln // 16 - 1]
    return [0xc0] + list(struct.pack("<H", ln - 1))


def vz_req(q=0, lens=(64,), timeout=0, flags=None, tag=1, split=False,
           status_first=False, indirect=False, kick=True, off=0):
    k = q | ((len(lens) % 5) << 1)
    if split:
        k |= 0x10
    if status_first:
        k |= 0x60
    if indirect:
        k |= 0x80
    d = [VZ_REQ, k]
    d += [0 if flags is None else 0xf0]
    if timeout <= 0x70:
        d += [0 if not timeout else 0x7f + timeout]
    else:
        d += [0xf0]
    if flags is not None:
        d += list(struct.pack("<I", flags))
    if timeout > 0x70:
        d += list(struct.pack("<I", timeout))
    d += [tag] + vz_buf(off)
    if status_first:
        d += vz_buf(off + 1)
    for i, ln in enumerate(lens):
        d += vz_len(ln) + vz_buf(off + 2 + i * 64)
    if not status_first:
        d += [0] + vz_buf(off + 1)
    if indirect:
        d += [0]
    d += [0 if kick else 0xff]
    return d


def vz_raw(descs, q=0):
    """descs: (len, next (0xffff: raw index 0xffff), flags)"""
    d = [VZ_RAW_CHAIN, q | ((len(descs) - 1) << 1)]
    for i, (ln, nxt, flags) in enumerate(descs):
        d += vz_len(ln) + vz_buf(i * 64 + 300) + [flags]
        d += [0] if nxt == 0 else [0xc0] + list(struct.pack("<H", nxt))
    return d


def vz_connect(i, small=False):
    return [VZ_RECV, i | (0 << 1) | (0x80 if small else 0)]


def vz_drain(i):
    return [VZ_RECV, i | (1 << 1)]


def vz_close(i, abortive=False):
    return [VZ_RECV, i | (3 << 1) | (0x80 if abortive else 0)]


def vz_seeds():
    t = "qemu-zc-virtio-zc-fuzz"
    feat = 0x03                 # VIRTIO_ZC_F_TIMEOUT, indirect descriptors
    up = [feat] + vz_connect(0) + vz_connect(1)
    write(t, "send-single", up + vz_req(lens=(256,)) + vz_drain(0))
    write(t, "send-multi", up + vz_req(lens=(16, 512, 64, 1024), split=True) +
          vz_req(q=1, lens=(2048,), indirect=True, off=200) +
          vz_drain(0) + vz_drain(1))
    write(t, "stall-reclaim", [feat] + vz_connect(0, small=True) +
          vz_connect(1) +
          sum((vz_req(lens=(3072,), timeout=20, off=i * 8, tag=i)
               for i in range(8)), []) +
          [VZ_CLOCK, 10, VZ_REWRITE, 0x55, 0, 0, VZ_CLOCK, 30] +
          vz_drain(0))
    write(t, "reset-stalled", [feat] + vz_connect(0, small=True) +
          sum((vz_req(lens=(3072, 3072), off=i * 8) for i in range(6)), []) +
          [VZ_DEV_RESET, feat] + vz_connect(1) + vz_req(q=1) + vz_drain(1))
    write(t, "disconnect", up +
          sum((vz_req(lens=(3072,), off=i * 8) for i in range(4)), []) +
          vz_close(0, abortive=True) + vz_req() + vz_connect(0) +
          vz_req(tag=9) + vz_drain(0))
    write(t, "listen-wait-timeout", [feat] + vz_req(timeout=5) +
          [VZ_CLOCK, 3] + vz_connect(0) + vz_req(q=1, timeout=5) +
          [VZ_CLOCK, 2])
    write(t, "bad-header", up + vz_req(flags=1) + vz_req(timeout=200) +
          vz_req(lens=()) + vz_req(status_first=True) +
          vz_raw([(16, 0, 1), (4096, 0, 3), (1, 0xffff, 6)]) +
          [VZ_CONFIG, 5])
    write(t, "no-timeout-feature", [0x00] + vz_connect(0) +
          vz_req(timeout=10) + vz_req() + vz_drain(0))
    write(t, "avail-jump", up + vz_req() +
          [VZ_AVAIL_IDX, 0, 0x00, 0x80] + vz_req() +
          [VZ_DEV_RESET, feat] + vz_req() + vz_drain(0))
    write(t, "before-driver-ok", [0x80 | feat] + vz_connect(0) + vz_req() +
          [VZ_STATUS, 0x0f] + vz_drain(0))
    write(t, "max-inflight", [feat] + vz_connect(0, small=True) +
          sum((vz_req(lens=(4096,), off=i * 4, tag=i) for i in range(20)),
              []) + [VZ_CLOCK, 30] + vz_drain(0))
    write(t, "two-queues", [feat] + vz_connect(0, small=True) +
          vz_connect(1) +
          sum((vz_req(q=i & 1, lens=(4096,), off=i * 8) for i in range(8)),
              []) + vz_drain(1) + [VZ_CLOCK, 10] + vz_drain(0))


# ---- generic-fuzz-* (tests/qtest/fuzz/generic_fuzz.c) ---------------------
#
# Operations separated by "FUZZ"; MMIO regions are chosen by index in
# address order among the fuzzed objects' regions. For iommu-emul (at
# 00:01.0, edu at 00:02.0 and 00:03.0): 0 registers, 1 MSI-X table, 2 PBA,
# 3 and 4 the edu. For virtio-zc: 0 common, 1 ISR, 2 device, 3 notify.
# The device's DMA reads of guest RAM (ring entries, descriptors) get the
# current DMA pattern.

G_WRITE, G_DMA_PATTERN, G_CLEAR_PATTERNS, G_CLOCK, G_READ = 3, 7, 8, 9, 2
SZ_B, SZ_W, SZ_L, SZ_Q = range(4)


def g_write(size, region, off, val):
    return bytes([G_WRITE]) + struct.pack("<BBxxIQ", size, region, off, val)


def g_read(size, region, off):
    return bytes([G_READ]) + struct.pack("<BBxxI", size, region, off)


def g_pattern(data, index=0, stride=0):
    return bytes([G_DMA_PATTERN, index, stride]) + bytes(data)


def g_join(ops):
    return b"FUZZ".join(ops)


def ie_entry(op, flags, rid, addr, length, limit=0):
    e = bytearray(64)
    struct.pack_into("<HHH", e, 0, op, flags, rid)
    struct.pack_into("<QQQ", e, 0x10, addr, length, limit)
    return e


def generic_iommu_seeds():
    t = "generic-fuzz-iommu-emul"
    regs, edu_a, edu_b = 0, 3, 4
    rings = [g_write(SZ_Q, regs, 0x40, 0x1000000),
             g_write(SZ_L, regs, 0x48, 4),
             g_write(SZ_Q, regs, 0x60, 0x1100000),
             g_write(SZ_L, regs, 0x68, 3),
             g_write(SZ_L, regs, 0x30, 3)]

    def cmd(tail, *entry):
        return [bytes([G_CLEAR_PATTERNS]), g_pattern(ie_entry(*entry)),
                g_write(SZ_L, regs, 0x54, tail)]

    def dma(edu, src, dst, cnt, to_pci):
        return [g_write(SZ_Q, edu, 0x80, src), g_write(SZ_Q, edu, 0x88, dst),
                g_write(SZ_Q, edu, 0x90, cnt),
                g_write(SZ_Q, edu, 0x98, 3 if to_pci else 1),
                bytes([G_CLOCK])]

    ops = (rings + cmd(1, MAP, 3, 0x10, 0x2000000, 0x4000) +
           cmd(2, MAP, 1, 0x18, 0x2000000, 0x2000) +
           cmd(3, SET_MODE, 1, 0x10, 0, 0) + cmd(4, SET_MODE, 1, 0x18, 0, 0) +
           [bytes([G_CLEAR_PATTERNS]), g_pattern(b"\xa5")] +
           dma(edu_a, 0x100000, 0x40000, 256, False) +
           dma(edu_a, 0x40000, 0x100000, 256, True) +
           dma(edu_b, 0x40000, 0x100000, 64, True) +
           dma(edu_b, 0x40000, 0x900000, 64, True) +
           [g_read(SZ_L, regs, 0x34), g_read(SZ_L, regs, 0x74)] +
           cmd(5, QUERY, 0, 0x10, 0x100000, 0) +
           cmd(6, UNMAP, 0, 0x10, 0x100000, 0x4000) +
           cmd(7, DETACH, 0, 0x18, 0, 0))
    write(t, "map-dma-fault", g_join(ops))
    ops = (rings + cmd(9, SYNC, 1, 0, 0, 0) +
           [g_write(SZ_L, regs, 0x38, 0)] +
           cmd(1, 0x77, 0, 0x10, 0, 0) +
           [g_write(SZ_L, regs, 0x30, 0), g_write(SZ_L, regs, 0x48, 40),
            g_write(SZ_L, regs, 0x30, 1), g_read(SZ_L, regs, 0x38),
            g_write(SZ_L, 1, 0x0, 0xfee00000), g_write(SZ_L, 1, 0xc, 0)])
    write(t, "bad-rings", g_join(ops))


def generic_virtio_zc_seeds():
    common, notify = 0, 3
    desc, avail, used = 0x100000, 0x104000, 0x105000
    ops = [g_write(SZ_B, common, 0x14, 0),
           g_write(SZ_B, common, 0x14, 1), g_write(SZ_B, common, 0x14, 3),
           g_write(SZ_L, common, 0x08, 1), g_write(SZ_L, common, 0x0c, 1),
           g_write(SZ_L, common, 0x08, 0), g_write(SZ_L, common, 0x0c, 1),
           g_write(SZ_B, common, 0x14, 0xb),
           g_write(SZ_W, common, 0x16, 0), g_write(SZ_W, common, 0x18, 16),
           g_write(SZ_Q, common, 0x20, desc),
           g_write(SZ_Q, common, 0x28, avail),
           g_write(SZ_Q, common, 0x30, used),
           g_write(SZ_W, common, 0x1c, 1),
           g_write(SZ_B, common, 0x14, 0xf)]
    # One pattern for every read: avail index 1, descriptors chained
    # (addr 0x200000, 16 bytes, NEXT), then the header (flags 0)
    pattern = struct.pack("<QIHH", 0x200000, 16, 1, 1)
    ops += [g_pattern(pattern), g_write(SZ_W, notify, 0, 0),
            bytes([G_CLOCK]), g_read(SZ_L, 2, 0x14),
            g_write(SZ_B, common, 0x14, 0)]
    for t in ("generic-fuzz-virtio-zc", "generic-fuzz-virtio-zc-listen"):
        write(t, "start-queue", g_join(ops))


if __name__ == "__main__":
    ie_seeds()
    vz_seeds()
    generic_iommu_seeds()
    generic_virtio_zc_seeds()
