/*
 * Helpers shared by the qemu-zc fuzz targets (iommu-emul, virtio-zc)
 *
 * The targets read their input as a stream of fields; reading past the
 * end yields zeros, so every input is valid and short inputs stay
 * meaningful.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QEMU_ZC_FUZZ_H
#define QEMU_ZC_FUZZ_H

typedef struct ZCFuzzInput {
    const uint8_t *p;
    size_t n;
} ZCFuzzInput;

static inline uint8_t zcf_u8(ZCFuzzInput *in)
{
    if (!in->n) {
        return 0;
    }
    in->n--;
    return *in->p++;
}

static inline uint16_t zcf_u16(ZCFuzzInput *in)
{
    uint16_t v = zcf_u8(in);

    return v | (uint16_t)zcf_u8(in) << 8;
}

static inline uint32_t zcf_u32(ZCFuzzInput *in)
{
    uint32_t v = zcf_u16(in);

    return v | (uint32_t)zcf_u16(in) << 16;
}

static inline uint64_t zcf_u64(ZCFuzzInput *in)
{
    uint64_t v = zcf_u32(in);

    return v | (uint64_t)zcf_u32(in) << 32;
}

/* Copy up to @len input bytes to @buf, zero-fill the rest */
static inline void zcf_bytes(ZCFuzzInput *in, void *buf, size_t len)
{
    size_t n = MIN(len, in->n);

    memcpy(buf, in->p, n);
    memset((uint8_t *)buf + n, 0, len - n);
    in->p += n;
    in->n -= n;
}

#endif
