/*
 * QTest testcase for virtio-zc
 *
 * The destination is a TCP receiver that the test runs itself on
 * loopback: a listening socket exists before QEMU starts, the device
 * connects to it at realize, and the test accepts the connection. To
 * stall the destination, the receiver has a tiny SO_RCVBUF and does not
 * read, while the device's SO_SNDBUF holds everything in flight.
 * See docs/specs/virtio-zc.rst.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/syscall.h>
#include "libqtest.h"
#include "qemu/bswap.h"
#include "qemu/timer.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "libqos/malloc-pc.h"
#include "libqos/virtio.h"
#include "libqos/virtio-pci.h"
#include "libqos/iommu-emul.h"
#include "libqos/qemu-zc-migrate.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_pci.h"
#include "standard-headers/linux/virtio_ring.h"
#include "hw/virtio-zc/virtio-zc-abi.h"
#include "hw/iommu-emul/iommu-emul-regs.h"

#define VIRTIO_ZC_DEVFN     QPCI_DEVFN(6, 0)
#define ZC_QOM              "/machine/peripheral/zc/virtio-backend"
#define WAIT_US             (30 * G_USEC_PER_SEC)   /* liveness only */
#define STALL_SNDBUF        (8 << 20)
#define MAX_DESC            16
#define ZC_MAXQ             4

typedef struct ZC {
    QTestState *qts;
    QGuestAllocator alloc;
    QPCIBus *bus;
    QVirtioPCIDevice *dev;
    QVirtQueue *vq;         /* transmitq0 */
    int lfd;                /* listening socket of the first destination */
    int rfd;                /* the receiver's end of transmitq0's stream */
    /* With num-queues > 1: [0] is unused, see vq, lfd and rfd */
    int nq;
    QVirtQueue *vqs[ZC_MAXQ];
    int lfds[ZC_MAXQ];      /* listening socket of destination i */
    int rfds[ZC_MAXQ];      /* the receiver's end of transmitq i's stream */
} ZC;

typedef struct Desc {
    uint64_t addr;
    uint32_t len;
    bool write;
} Desc;

/* ---- receiver ---------------------------------------------------------- */

static int zc_listen(int rcvbuf, int *port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t salen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    g_assert_cmpint(fd, >=, 0);
    if (rcvbuf) {
        /* Before listen(): the window scale is fixed at the handshake */
        g_assert(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                            sizeof(rcvbuf)) == 0);
    }
    g_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    g_assert(listen(fd, ZC_MAXQ) == 0);
    g_assert(getsockname(fd, (struct sockaddr *)&sa, &salen) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A loopback port nobody listens on (until QEMU does) */
static int zc_free_port(void)
{
    int port;

    close(zc_listen(0, &port));
    return port;
}

/* Connect to a listening device as its receiver */
static int zc_connect_receiver(int port, int rcvbuf)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        .sin_port = htons(port),
    };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    g_assert_cmpint(fd, >=, 0);
    if (rcvbuf) {
        g_assert(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                            sizeof(rcvbuf)) == 0);
    }
    g_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    return fd;
}

static void recv_full(int fd, void *buf, size_t len)
{
    size_t off = 0;
    ssize_t n;

    while (off < len) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        g_assert_cmpint(poll(&pfd, 1, WAIT_US / 1000), ==, 1);
        n = recv(fd, (char *)buf + off, len - off, 0);
        g_assert_cmpint(n, >, 0);
        off += n;
    }
}

/* True if the receiver has nothing more to read right now */
static bool recv_idle(int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    return poll(&pfd, 1, ms) == 0;
}

/* Receive one message: checks the frame and returns its payload */
static uint8_t *recv_msg_fd(int fd, uint64_t seq, uint64_t tag, size_t len)
{
    struct virtio_zc_frame_hdr fh;
    uint8_t *buf = g_malloc(len);

    recv_full(fd, &fh, sizeof(fh));
    g_assert_cmphex(le32_to_cpu(fh.magic), ==, VIRTIO_ZC_FRAME_MAGIC);
    g_assert_cmpuint(le32_to_cpu(fh.len), ==, len);
    g_assert_cmpuint(le64_to_cpu(fh.seq), ==, seq);
    g_assert_cmphex(le64_to_cpu(fh.tag), ==, tag);
    recv_full(fd, buf, len);
    return buf;
}

static uint8_t *recv_msg(ZC *t, uint64_t seq, uint64_t tag, size_t len)
{
    return recv_msg_fd(t->rfd, seq, tag, len);
}

/* ---- device ------------------------------------------------------------ */

/* Features the next zc_start() accepts besides its own */
static uint64_t zc_more_features;

/* The machine of every device test; the memfd test changes it */
static const char *zc_machine = "-machine pc -m 256M";

/*
 * Start QEMU with virtio-zc (num-queues=@nq) and @ndest receivers: the
 * device's dest lists them, so transmitq i streams to receiver i % ndest.
 * @rcvbuf[i] (if @rcvbuf) is receiver i's SO_RCVBUF, small to stall it.
 */
static void zc_start_ex(ZC *t, int nq, int ndest, const int *rcvbuf,
                        bool feature_timeout, bool driver_ok,
                        const char *extra)
{
    g_autoptr(GString) opts = g_string_new("virtio-zc-pci,id=zc,addr=06.0");
    QPCIAddress addr = { .devfn = VIRTIO_ZC_DEVFN };
    uint64_t features;
    int i, port;

    g_assert(nq >= 1 && nq <= ZC_MAXQ && ndest <= nq);
    memset(t, 0, sizeof(*t));
    t->nq = nq;
    for (i = 0; i < ZC_MAXQ; i++) {
        t->lfds[i] = t->rfds[i] = -1;
    }
    for (i = 0; i < ndest; i++) {
        t->lfds[i] = zc_listen(rcvbuf ? rcvbuf[i] : 0, &port);
        /* ';' needs no escaping on -device, unlike ',' (",,") */
        g_string_append_printf(opts, "%s127.0.0.1:%d", i ? ";" : ",dest=",
                               port);
    }
    if (nq > 1) {
        g_string_append_printf(opts, ",num-queues=%d", nq);
    }
    if (*extra) {
        g_string_append_printf(opts, ",%s", extra);
    }
    /* Quoted: the command line goes through sh, and ';' is special there */
    t->qts = qtest_initf("%s -device '%s'", zc_machine, opts->str);
    /* The device connects queue by queue, in order */
    for (i = 0; ndest && i < nq; i++) {
        t->rfds[i] = accept(t->lfds[i % ndest], NULL, NULL);
        g_assert_cmpint(t->rfds[i], >=, 0);
    }
    t->lfd = t->lfds[0];
    t->rfd = t->rfds[0];
    t->lfds[0] = t->rfds[0] = -1;
    pc_alloc_init(&t->alloc, t->qts, ALLOC_NO_FLAGS);
    t->bus = qpci_new_pc(t->qts, NULL);
    t->dev = virtio_pci_new(t->bus, &addr);
    g_assert_nonnull(t->dev);
    g_assert_cmphex(t->dev->vdev.device_type, ==, VIRTIO_ID_ZC);
    qvirtio_pci_device_enable(t->dev);
    qvirtio_start_device(&t->dev->vdev);
    features = qvirtio_get_features(&t->dev->vdev);
    g_assert(features & (1ull << VIRTIO_ZC_F_TIMEOUT));
    features &= (1ull << VIRTIO_F_VERSION_1) | zc_more_features |
                (feature_timeout ? 1ull << VIRTIO_ZC_F_TIMEOUT : 0);
    qvirtio_set_features(&t->dev->vdev, features);
    t->vq = qvirtqueue_setup(&t->dev->vdev, &t->alloc, VIRTIO_ZC_TXQ);
    for (i = 1; i < nq; i++) {
        t->vqs[i] = qvirtqueue_setup(&t->dev->vdev, &t->alloc, i);
    }
    if (driver_ok) {
        qvirtio_set_driver_ok(&t->dev->vdev);
    }
}

static void zc_start_mq(ZC *t, int nq, int ndest, const int *rcvbuf,
                        bool feature_timeout, const char *extra)
{
    zc_start_ex(t, nq, ndest, rcvbuf, feature_timeout, true, extra);
}

static void zc_start(ZC *t, bool with_dest, int rcvbuf, bool feature_timeout,
                     const char *fmt, ...) G_GNUC_PRINTF(5, 6);

static void zc_start(ZC *t, bool with_dest, int rcvbuf, bool feature_timeout,
                     const char *fmt, ...)
{
    g_autofree char *extra = NULL;
    va_list ap;

    va_start(ap, fmt);
    extra = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    zc_start_mq(t, 1, with_dest, &rcvbuf, feature_timeout, extra);
}

static void zc_stop(ZC *t)
{
    int i;

    for (i = 1; i < t->nq; i++) {
        qvirtqueue_cleanup(t->dev->vdev.bus, t->vqs[i], &t->alloc);
    }
    qvirtqueue_cleanup(t->dev->vdev.bus, t->vq, &t->alloc);
    qvirtio_pci_device_disable(t->dev);
    g_free(t->dev->pdev);
    g_free(t->dev);
    qpci_free_pc(t->bus);
    alloc_destroy(&t->alloc);
    qtest_quit(t->qts);
    if (t->rfd >= 0) {
        close(t->rfd);
    }
    if (t->lfd >= 0) {
        close(t->lfd);
    }
    for (i = 1; i < ZC_MAXQ; i++) {
        if (t->rfds[i] >= 0) {
            close(t->rfds[i]);
        }
        if (t->lfds[i] >= 0) {
            close(t->lfds[i]);
        }
    }
}

static uint64_t zc_counter_qts(QTestState *qts, const char *name)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': "
                           "{'path': %s, 'property': %s}}", ZC_QOM, name);
    uint64_t v;

    g_assert(qdict_haskey(rsp, "return"));
    v = qdict_get_int(rsp, "return");
    qobject_unref(rsp);
    return v;
}

static uint64_t zc_counter(ZC *t, const char *name)
{
    return zc_counter_qts(t->qts, name);
}

/* Counters change in QEMU's main loop: wait for a value */
static void zc_wait_counter(ZC *t, const char *name, uint64_t want)
{
    gint64 start = g_get_monotonic_time();

    while (zc_counter(t, name) != want) {
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(1000);
    }
}

static uint32_t zc_post_vq(ZC *t, QVirtQueue *vq, const Desc *d, int n)
{
    uint32_t head = 0;
    int i;

    for (i = 0; i < n; i++) {
        uint32_t idx = qvirtqueue_add(t->qts, vq, d[i].addr, d[i].len,
                                      d[i].write, i < n - 1);

        if (i == 0) {
            head = idx;
        }
    }
    qvirtqueue_kick(t->qts, &t->dev->vdev, vq, head);
    return head;
}

static uint32_t zc_post(ZC *t, const Desc *d, int n)
{
    return zc_post_vq(t, t->vq, d, n);
}

static uint64_t zc_hdr(ZC *t, uint32_t flags, uint32_t timeout_ms,
                       uint64_t tag)
{
    struct virtio_zc_req_hdr h = {
        .flags = cpu_to_le32(flags),
        .timeout_ms = cpu_to_le32(timeout_ms),
        .tag = cpu_to_le64(tag),
    };
    uint64_t a = guest_alloc(&t->alloc, sizeof(h));

    qtest_memwrite(t->qts, a, &h, sizeof(h));
    return a;
}

static uint64_t zc_status_buf(ZC *t)
{
    uint64_t a = guest_alloc(&t->alloc, 1);

    qtest_writeb(t->qts, a, 0xff);
    return a;
}

static uint64_t zc_data(ZC *t, size_t len, unsigned seed)
{
    g_autofree uint8_t *buf = g_malloc(len);
    uint64_t a = guest_alloc(&t->alloc, len);
    size_t i;

    for (i = 0; i < len; i++) {
        buf[i] = seed + i * 13 + (i >> 8);
    }
    qtest_memwrite(t->qts, a, buf, len);
    return a;
}

static uint8_t *guest_bytes(ZC *t, uint64_t a, size_t len)
{
    uint8_t *buf = g_malloc(len);

    qtest_memread(t->qts, a, buf, len);
    return buf;
}

/* Wait for the next used element; returns its head and used length */
static uint32_t zc_wait_used_vq(QTestState *qts, QVirtQueue *vq,
                                uint32_t *len)
{
    gint64 start = g_get_monotonic_time();
    uint32_t head;

    while (!qvirtqueue_get_buf(qts, vq, &head, len)) {
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(200);
    }
    return head;
}

static uint32_t zc_wait_used(ZC *t, uint32_t *len)
{
    return zc_wait_used_vq(t->qts, t->vq, len);
}

/* Post header + one data buffer + status, wait, return the status */
static uint8_t zc_simple(ZC *t, uint64_t hdr, uint64_t data, uint32_t len)
{
    uint64_t st = zc_status_buf(t);
    Desc d[] = {
        { hdr, sizeof(struct virtio_zc_req_hdr), false },
        { data, len, false },
        { st, 1, true },
    };
    uint32_t head = zc_post(t, d, 3);
    uint32_t used;

    g_assert_cmpuint(zc_wait_used(t, &used), ==, head);
    g_assert_cmpuint(used, ==, 1);
    return qtest_readb(t->qts, st);
}

/* Post header + data + status on @vq; returns the status address */
static uint64_t zc_post_req(ZC *t, QVirtQueue *vq, uint64_t tag,
                            uint64_t data, uint32_t len)
{
    uint64_t hdr = zc_hdr(t, 0, 0, tag);
    uint64_t st = zc_status_buf(t);

    zc_post_vq(t, vq, (Desc[]) { { hdr, 16, false }, { data, len, false },
                                 { st, 1, true } }, 3);
    return st;
}

static uint8_t zc_status(ZC *t)
{
    return t->dev->vdev.bus->get_status(&t->dev->vdev);
}

/* Reset the device and set transmitq0 up again (num-queues=1 only) */
static void zc_reinit(ZC *t)
{
    g_assert_cmpint(t->nq, ==, 1);
    qvirtqueue_cleanup(t->dev->vdev.bus, t->vq, &t->alloc);
    qvirtio_start_device(&t->dev->vdev);
    qvirtio_set_features(&t->dev->vdev, 1ull << VIRTIO_F_VERSION_1);
    t->vq = qvirtqueue_setup(&t->dev->vdev, &t->alloc, VIRTIO_ZC_TXQ);
    qvirtio_set_driver_ok(&t->dev->vdev);
}

/* ---- tests ------------------------------------------------------------- */

static void test_pci_identity(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;

    /* The short name is an alias of virtio-zc-pci */
    qts = qtest_initf("-machine %s -device virtio-zc,addr=06.0", machine);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, VIRTIO_ZC_DEVFN);
    g_assert_nonnull(dev);

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1af4);
    /* Modern-only: the device ID is 0x1040 + the virtio device ID */
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                    VIRTIO_ZC_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readw(dev, PCI_SUBSYSTEM_VENDOR_ID), ==,
                    0x1af4);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/*
 * Modern-only: asking for a legacy device still gives a modern one (the
 * proxy forces virtio 1, as virtio-nsm-pci does), with the modern device
 * ID and no legacy I/O BAR.
 */
static void test_modern_only(const void *data)
{
    const char *machine = data;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;

    qts = qtest_initf("-machine %s -device virtio-zc-pci,addr=06.0,"
                      "disable-modern=on,disable-legacy=off", machine);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, VIRTIO_ZC_DEVFN);
    g_assert_nonnull(dev);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                    VIRTIO_ZC_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readl(dev, PCI_BASE_ADDRESS_0), ==, 0);
    g_assert(qpci_config_readw(dev, PCI_STATUS) & PCI_STATUS_CAP_LIST);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* Bad property values fail realize with an error, not a crash */
static void test_bad_properties(void)
{
    static const struct {
        const char *name;
        int64_t value;
    } bad[] = {
        { "max-inflight", 0 }, { "max-inflight", 257 },
        { "max-segments", 0 }, { "max-segments", 255 },
        { "timeout-ms", 0 }, { "timeout-ms", 70000 },
        { "max-timeout-ms", 0 }, { "max-timeout-ms", 3600001 },
        { "max-data-len", 0 }, { "max-data-len", 0x4000001 },
        { "num-queues", 0 }, { "num-queues", 33 },
        { "spare-pool", 0x20000001 },
    };
    QTestState *qts = qtest_init("-machine pc");
    QDict *resp, *err;
    int i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                         " {'driver': 'virtio-zc-pci', %s: %" PRId64 "}}",
                         bad[i].name, bad[i].value);
        err = qdict_get_qdict(resp, "error");
        g_assert_nonnull(err);
        g_assert_nonnull(strstr(qdict_get_str(err, "desc"), bad[i].name));
        qobject_unref(resp);
    }
    /* Nobody listens on port 1 */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'dest': '127.0.0.1:1'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci',"
                     "  'x-offline-method': 'mremap'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'dest': 'unix:/x'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    /* listen and dest together; listen not on TCP */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'dest': '127.0.0.1:1',"
                     "  'listen': '127.0.0.1:0'}}");
    err = qdict_get_qdict(resp, "error");
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), "listen"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'listen': 'unix:/x'}}");
    err = qdict_get_qdict(resp, "error");
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), "listen"));
    qobject_unref(resp);
    /* More destinations than queues; an empty entry */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'num-queues': 2,"
                     "  'dest': '127.0.0.1:1;127.0.0.1:2;127.0.0.1:3'}}");
    err = qdict_get_qdict(resp, "error");
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), "num-queues"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                     " {'driver': 'virtio-zc-pci', 'num-queues': 2,"
                     "  'dest': '127.0.0.1:1;'}}");
    err = qdict_get_qdict(resp, "error");
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), "empty"));
    qobject_unref(resp);
    qtest_quit(qts);
}

/* Add the names of @type's properties (qom-list-properties) to @names */
static void zc_add_prop_names(QTestState *qts, const char *type,
                              GHashTable *names)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-list-properties',"
                           " 'arguments': {'typename': %s}}", type);
    const QListEntry *e;

    g_assert(qdict_haskey(rsp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *prop = qobject_to(QDict, qlist_entry_obj(e));

        g_hash_table_add(names, g_strdup(qdict_get_str(prop, "name")));
    }
    qobject_unref(rsp);
}

/*
 * Every property that virtio-zc adds, counters included, has a
 * description, which -device virtio-zc,help prints: device-list-properties
 * returns it. The properties of the virtio and PCI base types are not
 * the device's own.
 */
static void test_property_descriptions(void)
{
    static const char *types[] = { "virtio-zc-device", "virtio-zc-pci" };
    QTestState *qts = qtest_init("-machine none");
    int i;

    for (i = 0; i < ARRAY_SIZE(types); i++) {
        g_autoptr(GHashTable) base = g_hash_table_new_full(g_str_hash,
                                                           g_str_equal,
                                                           g_free, NULL);
        QDict *rsp;
        const QListEntry *e;
        int own = 0;

        zc_add_prop_names(qts, "virtio-device", base);
        zc_add_prop_names(qts, "virtio-pci", base);
        /* The child, and what every generic virtio PCI device has */
        g_hash_table_add(base, g_strdup("virtio-backend"));
        g_hash_table_add(base, g_strdup("disable-legacy"));
        g_hash_table_add(base, g_strdup("disable-modern"));
        rsp = qtest_qmp(qts, "{'execute': 'device-list-properties',"
                        " 'arguments': {'typename': %s}}", types[i]);
        g_assert(qdict_haskey(rsp, "return"));
        QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
            QDict *prop = qobject_to(QDict, qlist_entry_obj(e));
            const char *name = qdict_get_str(prop, "name");
            const char *desc = qdict_get_try_str(prop, "description");

            if (g_hash_table_contains(base, name)) {
                continue;
            }
            if (!desc || strlen(desc) < 16) {
                g_test_message("%s: property %s has no description",
                               types[i], name);
                g_test_fail();
            }
            own++;
        }
        qobject_unref(rsp);
        /* 12 properties, and the device's 14 counters */
        g_assert_cmpint(own, ==, i ? 12 : 26);
    }
    qtest_quit(qts);
}

/* Config space reflects the properties and the destination state */
static void test_config(void)
{
    QVirtioDevice *vd;
    uint64_t hdr, data;
    ZC t;

    zc_start(&t, true, 0, true, "max-inflight=7,timeout-ms=1234,"
             "max-segments=9,max-data-len=65536,max-timeout-ms=5000");
    vd = &t.dev->vdev;
    g_assert_cmpuint(qvirtio_config_readl(vd, 0), ==, 7);
    g_assert_cmpuint(qvirtio_config_readl(vd, 4), ==, 9);
    g_assert_cmpuint(qvirtio_config_readl(vd, 8), ==, 65536);
    g_assert_cmpuint(qvirtio_config_readl(vd, 12), ==, 1234);
    g_assert_cmpuint(qvirtio_config_readl(vd, 16), ==, 5000);
    g_assert_cmpuint(qvirtio_config_readl(vd, 20), ==,
                     VIRTIO_ZC_DEST_CONNECTED);
    zc_stop(&t);

    /* No destination: requests complete with DEST_ERROR */
    zc_start(&t, false, 0, true, "%s", "");
    g_assert_cmpuint(qvirtio_config_readl(&t.dev->vdev, 20), ==,
                     VIRTIO_ZC_DEST_DISCONNECTED);
    hdr = zc_hdr(&t, 0, 0, 1);
    data = zc_data(&t, 100, 1);
    g_assert_cmpuint(zc_simple(&t, hdr, data, 100), ==,
                     VIRTIO_ZC_S_DEST_ERROR);
    g_assert_cmpuint(zc_counter(&t, "dest-errors"), ==, 1);
    zc_stop(&t);
}

/* One request, one data descriptor: exact bytes, status OK */
static void test_send_single(void)
{
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *got = NULL;
    size_t len = 3 * 4096 + 123;
    uint64_t hdr, data;
    ZC t;

    zc_start(&t, true, 0, false, "%s", "");
    hdr = zc_hdr(&t, 0, 0, 0x1122334455667788ull);
    data = zc_data(&t, len, 7);
    want = guest_bytes(&t, data, len);
    g_assert_cmpuint(zc_simple(&t, hdr, data, len), ==, VIRTIO_ZC_S_OK);
    got = recv_msg(&t, 0, 0x1122334455667788ull, len);
    g_assert(memcmp(want, got, len) == 0);
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "bytes"), ==, len);
    g_assert_cmpuint(zc_counter(&t, "copied"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    zc_stop(&t);
}

/*
 * Several requests whose data is scattered over descriptors of odd sizes
 * (one shares its descriptor with the header): exact bytes, in order.
 */
static void test_send_multi(void)
{
    static const uint32_t seg[] = { 1, 4095, 4097, 77, 20000 };
    size_t total = 0;
    uint64_t addr[ARRAY_SIZE(seg)];
    Desc d[MAX_DESC];
    uint32_t heads[3], used;
    g_autofree uint8_t *want = NULL;
    int i, r, n;
    ZC t;

    zc_start(&t, true, 0, false, "%s", "");
    for (i = 0; i < ARRAY_SIZE(seg); i++) {
        total += seg[i];
    }
    want = g_malloc(total);
    for (r = 0; r < 3; r++) {
        uint64_t st = zc_status_buf(&t);
        size_t off = 0;

        n = 0;
        d[n++] = (Desc) { zc_hdr(&t, 0, 0, 100 + r), 16, false };
        for (i = 0; i < ARRAY_SIZE(seg); i++) {
            addr[i] = zc_data(&t, seg[i], r * 31 + i);
            d[n++] = (Desc) { addr[i], seg[i], false };
        }
        d[n++] = (Desc) { st, 1, true };
        heads[r] = zc_post(&t, d, n);
        g_assert_cmpuint(zc_wait_used(&t, &used), ==, heads[r]);
        g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
        for (i = 0; i < ARRAY_SIZE(seg); i++) {
            qtest_memread(t.qts, addr[i], want + off, seg[i]);
            off += seg[i];
        }
        {
            g_autofree uint8_t *got = recv_msg(&t, r, 100 + r, total);

            g_assert(memcmp(want, got, total) == 0);
        }
    }

    /* Header and data in one descriptor */
    {
        struct virtio_zc_req_hdr h = { .tag = cpu_to_le64(7) };
        uint64_t a = zc_data(&t, 16 + 500, 9);
        uint64_t st = zc_status_buf(&t);
        g_autofree uint8_t *got = NULL;

        qtest_memwrite(t.qts, a, &h, sizeof(h));
        qtest_memread(t.qts, a + 16, want, 500);
        d[0] = (Desc) { a, 16 + 500, false };
        d[1] = (Desc) { st, 1, true };
        zc_post(&t, d, 2);
        zc_wait_used(&t, &used);
        g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
        got = recv_msg(&t, 3, 7, 500);
        g_assert(memcmp(want, got, 500) == 0);
    }
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 4);
    zc_stop(&t);
}

/* zerocopy=off: the copy path, counted, same bytes, status COPIED */
static void test_copy_fallback(void)
{
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *got = NULL;
    uint64_t hdr, data;
    ZC t;

    zc_start(&t, true, 0, false, "zerocopy=off");
    hdr = zc_hdr(&t, 0, 0, 5);
    data = zc_data(&t, 10000, 3);
    want = guest_bytes(&t, data, 10000);
    g_assert_cmpuint(zc_simple(&t, hdr, data, 10000), ==,
                     VIRTIO_ZC_S_COPIED);
    got = recv_msg(&t, 0, 5, 10000);
    g_assert(memcmp(want, got, 10000) == 0);
    g_assert_cmpuint(zc_counter(&t, "copied"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 1);
    zc_stop(&t);
}

static bool have_userfaultfd(void);

/* Guest RAM of a reclaim test, and what the test can see of it */
typedef struct RamCase {
    const char *name;
    const char *machine;    /* %s: the file of memory-backend-file */
    bool shared;            /* offlined by a private remap */
    bool file;              /* the test maps the file too, as a peer */
} RamCase;

static const RamCase ram_cases[] = {
    /* QEMU madvises guest RAM MADV_HUGEPAGE: 2 MiB-aligned data is THP */
    { "thp", "-machine pc -m 256M", false, false },
    { "memfd", "-object memory-backend-memfd,id=mem,size=256M,share=on "
      "-machine pc,memory-backend=mem -m 256M", true, false },
    { "shared", "-object memory-backend-ram,id=mem,size=256M,share=on "
      "-machine pc,memory-backend=mem -m 256M", true, false },
    { "file", "-object memory-backend-file,id=mem,size=256M,share=on,"
      "mem-path=%s -machine pc,memory-backend=mem -m 256M", true, true },
};

/*
 * Stalled requests on each kind of guest RAM are reclaimed (RECLAIMED,
 * never COPIED), each exactly once: the guest keeps its bytes and may
 * rewrite them at once, and the receiver drains only the original
 * bytes. Shared RAM is offlined by mapping it privately: until the
 * receiver has released the old pages, a request over them is copied,
 * and another mapper of the file (a vhost-user back end) sees the bytes
 * of the reclaim; once they are released, the guest's bytes reach the
 * file, the pages are shared again and go with zero copy again.
 */
static void test_reclaim_ram(const void *opaque)
{
    enum { N = 4, LEN = 64 * 1024 };
    const RamCase *rc = opaque;
    const char *machine = zc_machine;
    g_autofree char *path = NULL;
    g_autofree char *mach = NULL;
    g_autofree uint8_t *want = g_malloc((size_t)N * LEN);
    g_autofree uint8_t *mark = g_malloc(LEN);
    g_autofree bool *seen = g_new0(bool, N);
    uint8_t *peer = NULL;
    uint64_t region, data[N], st[N], head[N], s2;
    uint32_t used, h;
    int i, j, fd = -1;
    ZC t;

    if (!have_userfaultfd() && !rc->shared) {
        g_test_skip("no userfaultfd for kernel faults");
        return;
    }
    if (rc->file) {
        path = g_strdup("/dev/shm/qemu-zc-test-XXXXXX");
        fd = g_mkstemp(path);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, 256 << 20), ==, 0);
        peer = mmap(NULL, 256 << 20, PROT_READ, MAP_SHARED, fd, 0);
        g_assert(peer != MAP_FAILED);
        mach = g_strdup_printf(rc->machine, path);
    } else {
        mach = g_strdup(rc->machine);
    }
    zc_machine = mach;
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=500",
             STALL_SNDBUF);
    zc_machine = machine;

    region = ROUND_UP(guest_alloc(&t.alloc, N * LEN + (2 << 20)), 2 << 20);
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *buf = g_malloc(LEN);
        uint64_t hdr = zc_hdr(&t, 0, 0, 100 + i);

        data[i] = region + (uint64_t)i * LEN;
        for (j = 0; j < LEN; j++) {
            buf[j] = i * 31 + j * 3 + (j >> 10);
        }
        qtest_bufwrite(t.qts, data[i], buf, LEN);
        memcpy(want + (size_t)i * LEN, buf, LEN);
        st[i] = zc_status_buf(&t);
        head[i] = zc_post(&t, (Desc[]) { { hdr, 16, false },
                                         { data[i], LEN, false },
                                         { st[i], 1, true } }, 3);
    }
    zc_wait_counter(&t, "sent", N);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N);

    /* The timeouts reclaim every request, each once */
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    for (i = 0; i < N; i++) {
        h = zc_wait_used(&t, &used);
        g_assert_cmpuint(used, ==, 1);
        for (j = 0; j < N && head[j] != h; j++) {
            /* find the slot */
        }
        g_assert_cmpint(j, <, N);
        g_assert_false(seen[j]);
        seen[j] = true;
        g_assert_cmpuint(qtest_readb(t.qts, st[j]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
    }
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, N);
    g_assert_cmpuint(zc_counter(&t, "copied"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "offline-failed"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "offlined-bytes"), ==, N * LEN);
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *now = g_malloc(LEN);

        qtest_bufread(t.qts, data[i], now, LEN);
        g_assert(memcmp(now, want + (size_t)i * LEN, LEN) == 0);
    }

    /* The guest reuses its buffers at once */
    memset(mark, 0x5a, LEN);
    for (i = 0; i < N; i++) {
        qtest_bufwrite(t.qts, data[i], mark, LEN);
    }
    if (peer) {
        /* Private now: the file has the bytes of the reclaim */
        g_assert(memcmp(peer + region, want, (size_t)N * LEN) == 0);
    }
    /*
     * A request over pages that are still private is copied (shared
     * RAM); on private RAM it goes with zero copy
     */
    qvirtqueue_reset_pool(t.vq);
    s2 = zc_post_req(&t, t.vq, 200, data[0], LEN);
    if (rc->shared) {
        zc_wait_used(&t, &used);
        g_assert_cmpuint(qtest_readb(t.qts, s2), ==, VIRTIO_ZC_S_COPIED);
    }

    /* The receiver drains: the original bytes, then the new message */
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *got = recv_msg(&t, i, 100 + i, LEN);

        g_assert(memcmp(want + (size_t)i * LEN, got, LEN) == 0);
    }
    g_free(recv_msg(&t, N, 200, LEN));
    if (!rc->shared) {
        zc_wait_used(&t, &used);
        g_assert_cmpuint(qtest_readb(t.qts, s2), ==, VIRTIO_ZC_S_OK);
        g_assert_cmpuint(zc_counter(&t, "reshared-bytes"), ==, 0);
        goto out;
    }

    /* Released: the pages are shared again, with the guest's bytes */
    zc_wait_counter(&t, "reshared-bytes", N * LEN);
    if (peer) {
        for (i = 0; i < N; i++) {
            g_assert(memcmp(peer + data[i], mark, LEN) == 0);
        }
    }
    s2 = zc_post_req(&t, t.vq, 201, data[1], LEN);
    g_free(recv_msg(&t, N + 1, 201, LEN));
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, s2), ==, VIRTIO_ZC_S_OK);
    if (peer) {
        /* Shared again: the guest's next write reaches the file */
        qtest_writeb(t.qts, data[2] + 5, 0x77);
        g_assert_cmpuint(peer[data[2] + 5], ==, 0x77);
    }

out:
    zc_stop(&t);
    if (peer) {
        munmap(peer, 256 << 20);
        close(fd);
        unlink(path);
    }
}

/*
 * Two reclaimed requests on shared RAM share a page. The receiver takes
 * the first message: its sends are released, but the page must stay
 * private, its old page in the file, while the second request's sends
 * still hold it; else the guest's later writes to the second buffer
 * would reach the receiver. Once both are released, the pages are shared
 * again with the guest's bytes.
 */
static void test_reclaim_shared_page(void)
{
    enum { LEN = 64 * 1024 };
    const char *machine = zc_machine;
    g_autofree char *path = g_strdup("/dev/shm/qemu-zc-test-XXXXXX");
    g_autofree char *mach = NULL;
    g_autofree uint8_t *want = g_malloc(2 * LEN);
    g_autofree uint8_t *got = NULL;
    uint64_t region, data[2], st[2];
    uint8_t *peer;
    uint32_t used;
    int i, j, fd;
    ZC t;

    fd = g_mkstemp(path);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 256 << 20), ==, 0);
    peer = mmap(NULL, 256 << 20, PROT_READ, MAP_SHARED, fd, 0);
    g_assert(peer != MAP_FAILED);
    mach = g_strdup_printf(ram_cases[3].machine, path);
    zc_machine = mach;
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=500",
             STALL_SNDBUF);
    zc_machine = machine;

    /* Back to back, not page-aligned: the buffers share a page */
    region = ROUND_UP(guest_alloc(&t.alloc, 2 * LEN + 8192), 4096) + 100;
    for (i = 0; i < 2; i++) {
        data[i] = region + i * LEN;
        for (j = 0; j < LEN; j++) {
            want[i * LEN + j] = i * 77 + j * 5 + (j >> 11);
        }
        qtest_bufwrite(t.qts, data[i], want + i * LEN, LEN);
        st[i] = zc_post_req(&t, t.vq, 300 + i, data[i], LEN);
    }
    zc_wait_counter(&t, "sent", 2);
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    for (i = 0; i < 2; i++) {
        zc_wait_used(&t, &used);
    }
    for (i = 0; i < 2; i++) {
        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
    }
    /* The guest rewrites both buffers at once */
    qtest_memset(t.qts, region, 0x5a, 2 * LEN);

    /* The first message: its sends are released, the page stays private */
    got = recv_msg(&t, 0, 300, LEN);
    g_assert(memcmp(want, got, LEN) == 0);
    g_usleep(100 * 1000);
    g_assert_cmpuint(zc_counter(&t, "reshared-bytes"), ==, 0);
    g_assert_cmpuint(peer[data[1]], ==, want[LEN]);

    /* The second message still has only the original bytes */
    g_free(got);
    got = recv_msg(&t, 1, 301, LEN);
    g_assert(memcmp(want + LEN, got, LEN) == 0);

    /* Both released: shared again, with the guest's bytes */
    zc_wait_counter(&t, "reshared-bytes", 2 * LEN);
    for (i = 0; i < 2 * LEN; i += 4096) {
        g_assert_cmpuint(peer[region + i], ==, 0x5a);
    }
    zc_stop(&t);
    munmap(peer, 256 << 20);
    close(fd);
    unlink(path);
}

/*
 * The receiver stalls; the timeout expires: the request completes as
 * RECLAIMED, the guest's bytes are unchanged, the guest overwrites them,
 * and the receiver still drains only the original bytes. The pages stay
 * usable afterwards.
 */
/*
 * Whether this process (hence QEMU, started by it) may create a
 * userfaultfd that handles kernel faults too
 */
static bool have_userfaultfd(void)
{
#ifdef SYS_userfaultfd
    int fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

    if (fd >= 0) {
        close(fd);
        return true;
    }
    fd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return true;
    }
#endif
    return false;
}

static void test_stall_reclaim(const void *opaque)
{
    const char *method = opaque;
    size_t len = 64 * 1024;
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *now = NULL;
    g_autofree uint8_t *got = NULL;
    g_autofree uint8_t *marker = g_malloc(len);
    uint64_t hdr, data, st;
    uint32_t used;
    ZC t;

    if (g_str_has_prefix(method, "uffd") && !have_userfaultfd()) {
        g_test_skip("no userfaultfd for kernel faults");
        return;
    }
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=500,"
             "x-offline-method=%s", STALL_SNDBUF, method);
    hdr = zc_hdr(&t, 0, 0, 42);
    data = zc_data(&t, len, 77);
    want = guest_bytes(&t, data, len);
    st = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, len, false },
                           { st, 1, true } }, 3);

    /* Stalled: still in flight, whatever the wall clock does */
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 1);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);

    /* Past the timeout */
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    now = guest_bytes(&t, data, len);
    g_assert(memcmp(want, now, len) == 0);
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "offlined-bytes"), >=, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    /*
     * Neither refused (no postcopy, snapshot or pin) nor failed: a forced
     * method that cannot do it (UFFDIO_MOVE on a referenced huge page)
     * falls back to one that can
     */
    g_assert_cmpuint(zc_counter(&t, "offline-refused"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "offline-failed"), ==, 0);

    /* The guest reuses its buffer at once */
    memset(marker, 0x5a, len);
    qtest_memwrite(t.qts, data, marker, len);

    /* The receiver drains: the original bytes, never the marker */
    got = recv_msg(&t, 0, 42, len);
    g_assert(memcmp(want, got, len) == 0);
    g_assert(recv_idle(t.rfd, 50));

    /* The reclaimed pages are ordinary guest memory: send them again */
    g_free(now);
    now = guest_bytes(&t, data, len);
    g_assert(memcmp(marker, now, len) == 0);
    qvirtqueue_reset_pool(t.vq);
    hdr = zc_hdr(&t, 0, 0, 43);
    st = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, len, false },
                           { st, 1, true } }, 3);
    /* The receiver reads this time, so the send completes */
    g_free(got);
    got = recv_msg(&t, 1, 43, len);
    g_assert(memcmp(marker, got, len) == 0);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
    zc_stop(&t);
}

/*
 * Skip a test that needs what only a privileged run has. With
 * QEMU_ZC_TEST_PRIVILEGED set (CI runs as root) it fails instead.
 */
static void zc_skip_unprivileged(const char *why)
{
    if (getenv("QEMU_ZC_TEST_PRIVILEGED")) {
        g_test_message("QEMU_ZC_TEST_PRIVILEGED is set, but %s", why);
        g_test_fail();
        return;
    }
    g_test_skip(why);
}

/* Whether QEMU, run by us, can start iommu-emul with bus-addr=hpa */
static bool zc_hpa_skip(void)
{
    g_autofree char *dis = NULL;
    g_autofree uint64_t *page = g_malloc0(4096);
    uint64_t ent = 0;
    int fd;

#ifndef CONFIG_LINUX_IO_URING
    zc_skip_unprivileged("QEMU is built without io_uring");
    return true;
#endif
    if (g_file_get_contents("/proc/sys/kernel/io_uring_disabled", &dis,
                            NULL, NULL) && atoi(dis) == 2) {
        zc_skip_unprivileged("io_uring is disabled on this host");
        return true;
    }
    page[0] = 1;
    fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0 || pread(fd, &ent, sizeof(ent),
                        ((uintptr_t)page / 4096) * 8) != sizeof(ent) ||
        !(ent & ((1ULL << 55) - 1))) {
        zc_skip_unprivileged("reading PFNs needs CAP_SYS_ADMIN (root)");
        if (fd >= 0) {
            close(fd);
        }
        return true;
    }
    close(fd);
    return false;
}

/* kB of QEMU's memory that is locked (smaps_rollup "Locked:") */
static uint64_t zc_locked_kb(ZC *t)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps_rollup",
                                            (int)qtest_pid(t->qts));
    g_autofree char *text = NULL;
    char *l;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    l = strstr(text, "\nLocked:");
    g_assert_nonnull(l);
    return g_ascii_strtoull(l + strlen("\nLocked:"), NULL, 10);
}

static uint64_t zc_iommu_counter(ZC *t, const char *name)
{
    QDict *rsp = qtest_qmp(t->qts, "{'execute': 'qom-get', 'arguments': "
                           "{'path': '/machine/peripheral/iommu', "
                           "'property': %s}}", name);
    uint64_t v;

    g_assert(qdict_haskey(rsp, "return"));
    v = qdict_get_int(rsp, "return");
    qobject_unref(rsp);
    return v;
}

/* The guest's DMA mappings of one test: page by page, as hpa needs */
typedef struct ZCMaps {
    QIOMMUEmulRing ring;
    uint16_t rid;
    int n;
    uint64_t gpa[64];
    uint64_t bus[64];
} ZCMaps;

/* Map [@gpa, @gpa + @len) (page-aligned) for the device, page by page */
static void zc_dma_map(ZCMaps *m, uint64_t gpa, uint64_t len, uint16_t perm)
{
    QIOMMUEmulCmdOut out;
    uint64_t off;

    g_assert_cmphex(gpa & 4095, ==, 0);
    for (off = 0; off < len; off += 4096) {
        g_assert_cmpint(m->n, <, ARRAY_SIZE(m->gpa));
        g_assert_cmphex(qiommu_emul_cmd(&m->ring, &(QIOMMUEmulCmd) {
                            .opcode = IOMMU_EMUL_OP_MAP, .flags = perm,
                            .requester = m->rid, .addr = gpa + off,
                            .length = 4096,
                        }, &out), ==, IOMMU_EMUL_ST_OK);
        m->gpa[m->n] = gpa + off;
        m->bus[m->n++] = out.addr;
    }
}

/* The bus address of guest-physical @gpa (mapped) */
static uint64_t zc_bus(ZCMaps *m, uint64_t gpa)
{
    int i;

    for (i = 0; i < m->n; i++) {
        if (m->gpa[i] == (gpa & ~4095ULL)) {
            return m->bus[i] + (gpa & 4095);
        }
    }
    g_assert_not_reached();
}

/* Unmap the mappings of [@gpa, @gpa + @len) */
static void zc_dma_unmap(ZCMaps *m, uint64_t gpa, uint64_t len)
{
    int i;

    for (i = 0; i < m->n; i++) {
        if (m->gpa[i] >= gpa && m->gpa[i] < gpa + len) {
            g_assert_cmphex(qiommu_emul_cmd(&m->ring, &(QIOMMUEmulCmd) {
                                .opcode = IOMMU_EMUL_OP_UNMAP,
                                .requester = m->rid, .addr = m->bus[i],
                                .length = 4096,
                            }, NULL), ==, IOMMU_EMUL_ST_OK);
            m->gpa[i] = UINT64_MAX;
        }
    }
}

/*
 * Descriptors for the mapped buffer [@gpa, @gpa + @len): one per run of
 * consecutive bus addresses (hpa: physical contiguity decides)
 */
static int zc_dma_descs(ZCMaps *m, uint64_t gpa, uint32_t len, Desc *d,
                        int max)
{
    uint64_t off;
    int n = 0;

    for (off = 0; off < len; off += 4096) {
        uint64_t bus = zc_bus(m, gpa + off);

        if (n && d[n - 1].addr + d[n - 1].len == bus) {
            d[n - 1].len += 4096;
            continue;
        }
        g_assert_cmpint(n, <, max);
        d[n++] = (Desc) { bus, 4096, false };
    }
    return n;
}

/* Point transmitq0 of the device at the bus addresses of its ring */
static void zc_dma_ring(ZC *t, ZCMaps *m)
{
    QVirtioPCIDevice *dev = t->dev;
    uint64_t cfg = dev->common_cfg_offset;
    uint64_t addr[3] = {
        zc_bus(m, t->vq->desc), zc_bus(m, t->vq->avail),
        zc_bus(m, t->vq->used),
    };
    int i;

    /* Each of the three parts lies within one page of the ring */
    g_assert_cmphex(t->vq->desc & 4095, ==, 0);
    g_assert_cmphex(t->vq->avail & 4095, ==, 0);
    g_assert_cmphex(t->vq->used & 4095, ==, 0);
    qpci_io_writew(dev->pdev, dev->bar, cfg +
                   offsetof(struct virtio_pci_common_cfg, queue_select),
                   VIRTIO_ZC_TXQ);
    for (i = 0; i < 3; i++) {
        uint64_t lo = offsetof(struct virtio_pci_common_cfg, queue_desc_lo) +
                      i * 8;

        qpci_io_writel(dev->pdev, dev->bar, cfg + lo, addr[i]);
        qpci_io_writel(dev->pdev, dev->bar, cfg + lo + 4, addr[i] >> 32);
    }
    qpci_io_writew(dev->pdev, dev->bar, cfg +
                   offsetof(struct virtio_pci_common_cfg, queue_enable), 1);
}

/*
 * virtio-zc with iommu_platform=on behind iommu-emul: the driver maps
 * the ring and every buffer through iommu-emul's command ring, switches
 * the device to translation and gives it bus addresses. A stalled
 * request is then reclaimed in iova and gpa modes, also on memfd RAM:
 * QEMU reaches mapped pages through their host address, so offlining
 * them keeps the translation right, and the pins follow the new pages
 * (QEMU's locked memory is the same before and after, and drops back
 * once everything is unmapped). In hpa mode the host-physical pages are
 * exposed: the offline is refused, the request waits past its timeout
 * (offline-refused) and is reclaimed once the guest unmaps its data;
 * at a device reset, which cannot wait, it completes with DEST_ERROR.
 * The receiver gets the original bytes in every mode.
 */
static void test_iommu_mapped(const void *opaque)
{
    const char *mode = opaque;
    bool hpa = g_str_equal(mode, "hpa");
    bool memfd = g_str_has_suffix(mode, "-memfd");
    const char *machine = zc_machine;
    enum { LEN = 64 * 1024 };
    g_autofree char *mach = NULL;
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *now = NULL;
    g_autofree uint8_t *got = NULL;
    uint64_t hdr, data, st, ring_end, locked, locked0, refused;
    Desc d[20];
    QPCIDevice *iommu;
    ZCMaps *m = g_new0(ZCMaps, 1);
    uint32_t used;
    int n;
    ZC t;

    if (!have_userfaultfd()) {
        g_test_skip("no userfaultfd for kernel faults");
        return;
    }
    if (hpa && zc_hpa_skip()) {
        return;
    }
    mach = g_strdup_printf("%s -m 256M -device iommu-emul,id=iommu,"
                           "addr=05.0,bus-addr=%s",
                           memfd ? "-object memory-backend-memfd,id=mem,"
                           "size=256M,share=on "
                           "-machine pc,memory-backend=mem" :
                           "-machine pc", memfd ? "iova" : mode);
    zc_machine = mach;
    zc_more_features = 1ull << VIRTIO_F_ACCESS_PLATFORM;
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=500,"
             "iommu_platform=on", STALL_SNDBUF);
    zc_more_features = 0;
    zc_machine = machine;
    locked0 = zc_locked_kb(&t);

    iommu = qpci_device_find(t.bus, QPCI_DEVFN(5, 0));
    g_assert_nonnull(iommu);
    qpci_device_enable(iommu);
    qiommu_emul_cmdq_start(&m->ring, iommu,
                           qpci_iomap(iommu, IOMMU_EMUL_REGS_BAR, NULL),
                           guest_alloc(&t.alloc, 4 * IOMMU_EMUL_CMD_SIZE),
                           2, 0);
    m->rid = VIRTIO_ZC_DEVFN;   /* bus 0 */

    /* The ring, then translation on, then the ring at its bus address */
    ring_end = ROUND_UP(t.vq->used + 6 + 8 * t.vq->size, 4096);
    zc_dma_map(m, t.vq->desc, ring_end - t.vq->desc,
               IOMMU_EMUL_MAP_READ | IOMMU_EMUL_MAP_WRITE);
    g_assert_cmphex(qiommu_emul_cmd(&m->ring, &(QIOMMUEmulCmd) {
                        .opcode = IOMMU_EMUL_OP_SET_MODE,
                        .flags = IOMMU_EMUL_MODE_TRANSLATE,
                        .requester = m->rid,
                    }, NULL), ==, IOMMU_EMUL_ST_OK);
    zc_dma_ring(&t, m);

    /* A stalled request: every buffer mapped, bus addresses only */
    hdr = zc_hdr(&t, 0, 0, 11);
    data = ROUND_UP(guest_alloc(&t.alloc, LEN + (2 << 20)), 2 << 20);
    {
        g_autofree uint8_t *buf = g_malloc(LEN);
        int j;

        for (j = 0; j < LEN; j++) {
            buf[j] = 17 + j * 7 + (j >> 9);
        }
        qtest_bufwrite(t.qts, data, buf, LEN);
    }
    want = guest_bytes(&t, data, LEN);
    st = zc_status_buf(&t);
    zc_dma_map(m, hdr, 4096, IOMMU_EMUL_MAP_READ);
    zc_dma_map(m, data, LEN, IOMMU_EMUL_MAP_READ);
    zc_dma_map(m, st, 4096, IOMMU_EMUL_MAP_WRITE);
    d[0] = (Desc) { zc_bus(m, hdr), 16, false };
    n = 1 + zc_dma_descs(m, data, LEN, d + 1, ARRAY_SIZE(d) - 2);
    d[n++] = (Desc) { zc_bus(m, st), 1, true };
    zc_post(&t, d, n);
    zc_wait_counter(&t, "sent", 1);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    g_assert_cmpuint(zc_iommu_counter(&t, "pinned-pages"), ==, m->n);
    g_assert_cmpuint(zc_iommu_counter(&t, "faults"), ==, 0);
    locked = zc_locked_kb(&t);
    g_assert_cmpuint(locked, >=, locked0 + m->n * 4);

    /* Past the timeout */
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    if (hpa) {
        /* Host-physical pages handed out: refused, the request waits */
        zc_wait_counter(&t, "offline-refused", 1);
        qtest_clock_step(t.qts, 250 * SCALE_MS);
        g_assert_cmpuint(zc_counter(&t, "offline-refused"), >=, 2);
        g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
        g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);
        g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
        g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, 0);

        /* The guest unmaps the data: the next retry reclaims it */
        zc_dma_unmap(m, data, LEN);
        qtest_clock_step(t.qts, 250 * SCALE_MS);
    }
    zc_wait_used(&t, &used);
    g_assert_cmpuint(used, ==, 1);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "offline-failed"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "offlined-bytes"), >=, LEN);
    if (!hpa) {
        g_assert_cmpuint(zc_counter(&t, "offline-refused"), ==, 0);
        /* The pins followed the new pages: as much locked as before */
        g_assert_cmpuint(zc_locked_kb(&t), ==, locked);
        g_assert_cmpuint(zc_iommu_counter(&t, "pinned-pages"), ==, m->n);
    }
    now = guest_bytes(&t, data, LEN);
    g_assert(memcmp(want, now, LEN) == 0);
    g_assert_cmpuint(zc_iommu_counter(&t, "faults"), ==, 0);

    /* The guest rewrites its buffer; the receiver gets the original */
    memset(now, 0x5a, LEN);
    qtest_bufwrite(t.qts, data, now, LEN);
    got = recv_msg(&t, 0, 11, LEN);
    g_assert(memcmp(want, got, LEN) == 0);

    if (hpa) {
        /*
         * A device reset cannot wait for the guest to unmap: the
         * offline is refused, the transmitq's connection is aborted and
         * the request completes with DEST_ERROR (status written, not
         * used: the ring is being reset)
         */
        uint64_t st2 = zc_status_buf(&t);

        zc_dma_map(m, data, LEN, IOMMU_EMUL_MAP_READ);
        zc_dma_map(m, st2, 4096, IOMMU_EMUL_MAP_WRITE);
        d[0] = (Desc) { zc_bus(m, hdr), 16, false };
        n = 1 + zc_dma_descs(m, data, LEN, d + 1, ARRAY_SIZE(d) - 2);
        d[n++] = (Desc) { zc_bus(m, st2), 1, true };
        zc_post(&t, d, n);
        zc_wait_counter(&t, "sent", 2);
        g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
        refused = zc_counter(&t, "offline-refused");
        qvirtio_reset(&t.dev->vdev);
        g_assert_cmpuint(qtest_readb(t.qts, st2), ==,
                         VIRTIO_ZC_S_DEST_ERROR);
        g_assert_cmpuint(zc_counter(&t, "offline-refused"), >, refused);
        g_assert_cmpuint(zc_counter(&t, "dest-errors"), ==, 1);
        g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    }

    /* Every pin is released once: nothing stays locked */
    zc_dma_unmap(m, 0, UINT64_MAX);
    g_assert_cmpuint(zc_iommu_counter(&t, "pinned-pages"), ==, 0);
    g_assert_cmpuint(zc_locked_kb(&t), <=, locked0);

    g_free(iommu);
    g_free(m);
    zc_stop(&t);
}

/* The guest's per-request timeout overrides the default */
static void test_guest_timeout(void)
{
    uint64_t hdr, data, st;
    uint32_t used;
    ZC t;

    zc_start(&t, true, 4096, true, "sndbuf=%d,timeout-ms=60000",
             STALL_SNDBUF);
    hdr = zc_hdr(&t, 0, 20, 1);
    data = zc_data(&t, 64 * 1024, 1);
    st = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, 64 * 1024, false },
                           { st, 1, true } }, 3);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    qtest_clock_step(t.qts, 30 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    zc_stop(&t);
}

/*
 * Reset with 64 stalled 64 KiB buffers: every one comes back at once,
 * exactly once, unchanged; the receiver then drains only whole messages
 * with the original bytes; the device works again after re-init.
 */
static void test_reset_stalled(void)
{
    enum { N = 64, LEN = 64 * 1024 };
    uint64_t data[N], st[N];
    g_autofree uint8_t *want = g_malloc((size_t)N * LEN);
    uint64_t sent;
    gint64 t0;
    size_t got_msgs = 0;
    int i;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d,max-inflight=%d",
             STALL_SNDBUF, N);
    for (i = 0; i < N; i++) {
        uint64_t hdr = zc_hdr(&t, 0, 0, 1000 + i);

        data[i] = zc_data(&t, LEN, i);
        qtest_memread(t.qts, data[i], want + (size_t)i * LEN, LEN);
        st[i] = zc_status_buf(&t);
        zc_post(&t, (Desc[]) { { hdr, 16, false }, { data[i], LEN, false },
                               { st[i], 1, true } }, 3);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N);
    sent = zc_counter(&t, "sent");

    /* Reported, never asserted: timings depend on the machine */
    t0 = g_get_monotonic_time();
    qvirtio_reset(&t.dev->vdev);
    g_test_message("reset with %d stalled %d KiB buffers (%" PRIu64
                   " fully written): %" PRId64 " us wall, including the"
                   " qtest round trips", N, LEN / 1024, sent,
                   g_get_monotonic_time() - t0);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N);
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, N);
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *now = guest_bytes(&t, data[i], LEN);

        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
        g_assert(memcmp(want + (size_t)i * LEN, now, LEN) == 0);
        /* The guest reuses the memory */
        qtest_memset(t.qts, data[i], 0xa5, LEN);
    }

    /*
     * Whole messages only, original bytes only, in order: every message
     * the device had fully written, plus at most one whose unsent tail the
     * device finished from a copy.
     */
    while (got_msgs < sent || (got_msgs == sent && got_msgs < N &&
                               !recv_idle(t.rfd, 500))) {
        g_autofree uint8_t *got = recv_msg(&t, got_msgs, 1000 + got_msgs,
                                           LEN);

        g_assert(memcmp(want + got_msgs * LEN, got, LEN) == 0);
        got_msgs++;
    }
    g_assert(recv_idle(t.rfd, 100));
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N);

    /* Re-initialise and send again */
    zc_reinit(&t);
    {
        uint64_t hdr = zc_hdr(&t, 0, 0, 9);
        uint64_t s0 = zc_status_buf(&t);
        g_autofree uint8_t *now = guest_bytes(&t, data[0], LEN);
        g_autofree uint8_t *got = NULL;
        uint32_t used;

        zc_post(&t, (Desc[]) { { hdr, 16, false }, { data[0], LEN, false },
                               { s0, 1, true } }, 3);
        got = recv_msg(&t, got_msgs, 9, LEN);
        g_assert(memcmp(now, got, LEN) == 0);
        zc_wait_used(&t, &used);
        g_assert_cmpuint(qtest_readb(t.qts, s0), ==, VIRTIO_ZC_S_OK);
    }
    zc_stop(&t);
}

/*
 * Hot-unplug with stalled buffers: unrealize takes every buffer back
 * (offlining its pages) and does not wait for the destination; the
 * receiver still drains only whole messages with the original bytes.
 */
static void test_unplug_stalled(void)
{
    enum { N = 8, LEN = 64 * 1024 };
    g_autofree uint8_t *want = g_malloc((size_t)N * LEN);
    uint64_t data[N];
    QDict *rsp;
    uint64_t sent;
    size_t got_msgs = 0;
    int i;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d", STALL_SNDBUF);
    for (i = 0; i < N; i++) {
        uint64_t hdr = zc_hdr(&t, 0, 0, i);
        uint64_t st = zc_status_buf(&t);

        data[i] = zc_data(&t, LEN, 50 + i);
        qtest_memread(t.qts, data[i], want + (size_t)i * LEN, LEN);
        zc_post(&t, (Desc[]) { { hdr, 16, false }, { data[i], LEN, false },
                               { st, 1, true } }, 3);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N);
    sent = zc_counter(&t, "sent");

    qpci_unplug_acpi_device_test(t.qts, "zc", 6);
    rsp = qtest_qmp(t.qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);

    /* The guest rewrites its memory; the receiver sees the old bytes */
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *now = guest_bytes(&t, data[i], LEN);

        g_assert(memcmp(want + (size_t)i * LEN, now, LEN) == 0);
        qtest_memset(t.qts, data[i], 0xee, LEN);
    }
    while (got_msgs < sent || (got_msgs == sent && got_msgs < N &&
                               !recv_idle(t.rfd, 500))) {
        g_autofree uint8_t *got = recv_msg(&t, got_msgs, got_msgs, LEN);

        g_assert(memcmp(want + got_msgs * LEN, got, LEN) == 0);
        got_msgs++;
    }
    /* The device is gone: the connection closes after the last message */
    qvirtqueue_cleanup(t.dev->vdev.bus, t.vq, &t.alloc);
    g_free(t.dev->pdev);
    g_free(t.dev);
    qpci_free_pc(t.bus);
    alloc_destroy(&t.alloc);
    qtest_quit(t.qts);
    close(t.rfd);
    close(t.lfd);
}

/* The receiver goes away mid-flight: DEST_ERROR, then DEST_ERROR again */
static void test_disconnect(void)
{
    size_t len = 64 * 1024;
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *now = NULL;
    uint64_t hdr, data, st;
    uint32_t used;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d", STALL_SNDBUF);
    hdr = zc_hdr(&t, 0, 0, 1);
    data = zc_data(&t, len, 1);
    want = guest_bytes(&t, data, len);
    st = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, len, false },
                           { st, 1, true } }, 3);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);

    /* Unread data makes this an abortive close (RST) */
    close(t.rfd);
    t.rfd = -1;
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_DEST_ERROR);
    now = guest_bytes(&t, data, len);
    g_assert(memcmp(want, now, len) == 0);
    g_assert_cmpuint(zc_counter(&t, "dest-errors"), ==, 1);
    g_assert_cmpuint(qvirtio_config_readl(&t.dev->vdev, 20), ==,
                     VIRTIO_ZC_DEST_DISCONNECTED);

    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 2), data, len), ==,
                     VIRTIO_ZC_S_DEST_ERROR);
    g_assert_cmpuint(zc_counter(&t, "dest-errors"), ==, 2);
    zc_stop(&t);
}

/* max-inflight bounds the requests the device takes from the ring */
static void test_max_inflight(void)
{
    uint64_t st[4];
    uint32_t used;
    int i;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d,max-inflight=2,"
             "timeout-ms=100", STALL_SNDBUF);
    for (i = 0; i < 4; i++) {
        uint64_t hdr = zc_hdr(&t, 0, 0, i);
        uint64_t data = zc_data(&t, 64 * 1024, i);

        st[i] = zc_status_buf(&t);
        zc_post(&t, (Desc[]) { { hdr, 16, false },
                               { data, 64 * 1024, false },
                               { st[i], 1, true } }, 3);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 2);
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 2);
    /* The first two time out; the next two are taken */
    qtest_clock_step(t.qts, 150 * SCALE_MS);
    zc_wait_used(&t, &used);
    zc_wait_used(&t, &used);
    zc_wait_counter(&t, "requests", 4);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 2);
    qtest_clock_step(t.qts, 150 * SCALE_MS);
    zc_wait_used(&t, &used);
    zc_wait_used(&t, &used);
    for (i = 0; i < 4; i++) {
        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
    }
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 4);
    zc_stop(&t);
}

/* Move transmitq0's avail.idx @by entries forward, and notify */
static void zc_avail_jump(ZC *t, uint16_t by)
{
    uint16_t idx = qtest_readw(t->qts, t->vq->avail + 2);

    qtest_writew(t->qts, t->vq->avail + 2, idx + by);
    t->dev->vdev.bus->virtqueue_kick(&t->dev->vdev, t->vq);
}

/* Wait until the device asks for a reset */
static void zc_wait_needs_reset(ZC *t)
{
    gint64 start = g_get_monotonic_time();

    while (!(zc_status(t) & VIRTIO_CONFIG_S_NEEDS_RESET)) {
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(1000);
    }
}

/*
 * The driver moves avail.idx more than the queue size ahead of the
 * device: DEVICE_NEEDS_RESET, and the device takes no chain it was not
 * given. First while a request waits behind max-inflight (the device
 * resumes such requests when one completes), then with none waiting.
 */
static void test_avail_jump(void)
{
    size_t len = 64 * 1024;
    uint64_t data, st[2];
    uint32_t used;
    int i;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d,max-inflight=1,"
             "timeout-ms=100", STALL_SNDBUF);
    data = zc_data(&t, len, 4);
    for (i = 0; i < 2; i++) {
        st[i] = zc_post_req(&t, t.vq, i, data, len);
    }
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 1);
    zc_avail_jump(&t, t.vq->size + 190);

    /*
     * The request in flight times out and completes as usual; before it
     * takes the next one, the device finds the jump. It takes nothing
     * more, not even the request that waited.
     */
    qtest_clock_step(t.qts, 150 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st[0]), ==, VIRTIO_ZC_S_RECLAIMED);
    zc_wait_needs_reset(&t);
    for (i = 0; i < 3; i++) {
        qtest_clock_step(t.qts, 150 * SCALE_MS);
    }
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 1);
    g_assert_cmpuint(zc_counter(&t, "sent"), <=, 1);
    g_assert_cmpuint(qtest_readb(t.qts, st[1]), ==, 0xff);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));

    /* The same jump with no request waiting */
    zc_reinit(&t);
    zc_avail_jump(&t, t.vq->size + 190);
    zc_wait_needs_reset(&t);
    qtest_clock_step(t.qts, 150 * SCALE_MS);
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 1);

    /* After a reset the device works */
    zc_reinit(&t);
    qvirtqueue_reset_pool(t.vq);
    st[0] = zc_post_req(&t, t.vq, 9, data, len);
    qtest_clock_step(t.qts, 150 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st[0]), ==, VIRTIO_ZC_S_RECLAIMED);
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 2);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 2);
    zc_stop(&t);
}

/*
 * Requests that the driver makes available, and notifies, before it sets
 * DRIVER_OK are not taken then, but as soon as DRIVER_OK is set, without
 * a second notification.
 */
static void test_before_driver_ok(void)
{
    size_t len = 5000;
    g_autofree uint8_t *want = NULL;
    uint64_t data, st[2];
    uint32_t used;
    int i;
    ZC t;

    zc_start_ex(&t, 1, 1, NULL, false, false, "");
    data = zc_data(&t, len, 6);
    want = guest_bytes(&t, data, len);
    for (i = 0; i < 2; i++) {
        st[i] = zc_post_req(&t, t.vq, 30 + i, data, len);
    }
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 0);
    g_assert(recv_idle(t.rfd, 50));
    g_assert_cmpuint(qtest_readb(t.qts, st[0]), ==, 0xff);

    qvirtio_set_driver_ok(&t.dev->vdev);
    for (i = 0; i < 2; i++) {
        g_autofree uint8_t *got = recv_msg(&t, i, 30 + i, len);

        g_assert(memcmp(want, got, len) == 0);
    }
    for (i = 0; i < 2; i++) {
        zc_wait_used(&t, &used);
        g_assert_cmpuint(used, ==, 1);
    }
    for (i = 0; i < 2; i++) {
        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==, VIRTIO_ZC_S_OK);
    }
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 2);
    zc_stop(&t);
}

/* Write the driver's features as they are, and nothing else */
static void zc_write_features(ZC *t, uint64_t features)
{
    QVirtioPCIDevice *dev = t->dev;
    uint64_t sel = dev->common_cfg_offset +
                   offsetof(struct virtio_pci_common_cfg,
                            guest_feature_select);
    uint64_t val = dev->common_cfg_offset +
                   offsetof(struct virtio_pci_common_cfg, guest_feature);

    qpci_io_writel(dev->pdev, dev->bar, sel, 0);
    qpci_io_writel(dev->pdev, dev->bar, val, features);
    qpci_io_writel(dev->pdev, dev->bar, sel, 1);
    qpci_io_writel(dev->pdev, dev->bar, val, features >> 32);
    dev->vdev.features = features;
    dev->vdev.features_negotiated = true;
}

/*
 * VIRTIO_F_VERSION_1 is required: without it FEATURES_OK does not stick,
 * and a driver that sets DRIVER_OK all the same gets no request taken.
 */
static void test_version_1(void)
{
    QVirtioDevice *vd;
    uint64_t data, st;
    uint8_t status;
    ZC t;

    zc_start(&t, true, 0, false, "%s", "");
    vd = &t.dev->vdev;
    data = zc_data(&t, 100, 2);

    /*
     * Start again, accepting VIRTIO_ZC_F_TIMEOUT but not VERSION_1 (which
     * libqos would refuse to do: write the registers here)
     */
    qvirtqueue_cleanup(vd->bus, t.vq, &t.alloc);
    qvirtio_start_device(vd);
    g_assert(qvirtio_get_features(vd) & (1ull << VIRTIO_F_VERSION_1));
    zc_write_features(&t, 1ull << VIRTIO_ZC_F_TIMEOUT);
    status = vd->bus->get_status(vd);
    vd->bus->set_status(vd, status | VIRTIO_CONFIG_S_FEATURES_OK);
    g_assert_cmphex(vd->bus->get_status(vd), ==, status);

    t.vq = qvirtqueue_setup(vd, &t.alloc, VIRTIO_ZC_TXQ);
    qvirtio_set_driver_ok(vd);
    st = zc_post_req(&t, t.vq, 1, data, 100);
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 0);
    g_assert(recv_idle(t.rfd, 50));
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);

    /* With VERSION_1 the same device works */
    zc_reinit(&t);
    g_assert(vd->bus->get_status(vd) & VIRTIO_CONFIG_S_FEATURES_OK);
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 2), data, 100), ==,
                     VIRTIO_ZC_S_OK);
    g_free(recv_msg(&t, 0, 2, 100));
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 1);
    zc_stop(&t);
}

/*
 * virtio-zc is modern-only: on a legacy transport (virtio-mmio, as
 * microvm creates it by default) QEMU refuses to start, with a message.
 */
static void test_legacy_transport(void)
{
    g_autofree char *cmd = g_strdup_printf(
        "timeout %d %s -machine microvm -display none -nodefaults -S "
        "-device virtio-zc-device", (int)(WAIT_US / G_USEC_PER_SEC),
        g_getenv("QTEST_QEMU_BINARY"));
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    int wstatus;

    g_assert(g_spawn_command_line_sync(cmd, &out, &err, &wstatus, NULL));
    g_assert(WIFEXITED(wstatus));
    g_assert_cmpint(WEXITSTATUS(wstatus), ==, 1);
    g_assert_nonnull(strstr(err, "virtio 1.0 transport"));
}

/* Malformed headers: each completes with BAD_REQUEST, nothing is sent */
static void test_bad_header(void)
{
    struct {
        uint32_t flags, timeout;
        uint32_t hdr_len, data_len;
    } cases[] = {
        { 0, 0, 8, 0 },             /* short header, no data */
        { 0, 0, 15, 0 },            /* short header */
        { 1, 0, 16, 100 },          /* unknown flag */
        { 0x80000000, 0, 16, 100 }, /* unknown flag */
        { 0, 0, 16, 0 },            /* zero-length data */
        { 0, 5001, 16, 100 },       /* above max-timeout-ms */
        { 0, 0xffffffff, 16, 100 }, /* huge timeout */
        { 0, 0, 16, 70000 },        /* above max-data-len */
    };
    uint64_t data, hdr, st;
    uint32_t used;
    Desc d[3];
    int i, n;
    ZC t;

    zc_start(&t, true, 0, true, "max-timeout-ms=5000,max-data-len=65536");
    data = zc_data(&t, 70000, 1);
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        hdr = zc_hdr(&t, cases[i].flags, cases[i].timeout, i);
        st = zc_status_buf(&t);
        n = 0;
        d[n++] = (Desc) { hdr, cases[i].hdr_len, false };
        if (cases[i].data_len) {
            d[n++] = (Desc) { data, cases[i].data_len, false };
        }
        d[n++] = (Desc) { st, 1, true };
        zc_post(&t, d, n);
        zc_wait_used(&t, &used);
        g_assert_cmpuint(used, ==, 1);
        g_assert_cmpuint(qtest_readb(t.qts, st), ==,
                         VIRTIO_ZC_S_BAD_REQUEST);
    }
    g_assert_cmpuint(zc_counter(&t, "bad-requests"), ==, ARRAY_SIZE(cases));
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 0);

    /* A timeout of 0 means the default: accepted and sent */
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 99), data, 100), ==,
                     VIRTIO_ZC_S_OK);
    g_free(recv_msg(&t, 0, 99, 100));
    zc_stop(&t);

    /* Without VIRTIO_ZC_F_TIMEOUT, a non-zero timeout is a bad request */
    zc_start(&t, true, 0, false, "%s", "");
    data = zc_data(&t, 100, 1);
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 10, 1), data, 100), ==,
                     VIRTIO_ZC_S_BAD_REQUEST);
    zc_stop(&t);
}

/* Descriptors in the wrong place, or too many of them */
static void test_bad_layout(void)
{
    uint64_t hdr, data, st, st2;
    uint32_t used, head;
    Desc d[MAX_DESC];
    int i, n;
    ZC t;

    zc_start(&t, true, 0, false, "max-segments=4");
    hdr = zc_hdr(&t, 0, 0, 1);
    data = zc_data(&t, 4096, 1);

    /* No device-writable byte: returned with used length 0 */
    head = zc_post(&t, (Desc[]) { { hdr, 16, false },
                                  { data, 100, false } }, 2);
    g_assert_cmpuint(zc_wait_used(&t, &used), ==, head);
    g_assert_cmpuint(used, ==, 0);

    /*
     * Data in a device-writable descriptor: the status goes to the first
     * device-writable byte, here the first data byte
     */
    st = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, 100, true },
                           { st, 1, true } }, 3);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(used, ==, 1);
    g_assert_cmpuint(qtest_readb(t.qts, data), ==, VIRTIO_ZC_S_BAD_REQUEST);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);

    /* Header in a device-writable descriptor */
    st = zc_status_buf(&t);
    hdr = zc_hdr(&t, 0, 0, 1);
    zc_post(&t, (Desc[]) { { hdr, 16, true }, { st, 1, true } }, 2);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, hdr), ==, VIRTIO_ZC_S_BAD_REQUEST);
    hdr = zc_hdr(&t, 0, 0, 1);

    /* Two status bytes */
    st = zc_status_buf(&t);
    st2 = zc_status_buf(&t);
    zc_post(&t, (Desc[]) { { hdr, 16, false }, { data, 100, false },
                           { st, 1, true }, { st2, 1, true } }, 4);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_BAD_REQUEST);

    /* Over-long chain: more data segments than max-segments */
    st = zc_status_buf(&t);
    n = 0;
    d[n++] = (Desc) { hdr, 16, false };
    for (i = 0; i < 6; i++) {
        d[n++] = (Desc) { data + i * 8, 8, false };
    }
    d[n++] = (Desc) { st, 1, true };
    zc_post(&t, d, n);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_BAD_REQUEST);

    g_assert_cmpuint(zc_counter(&t, "bad-requests"), ==, 5);
    g_assert_cmpuint(zc_counter(&t, "sent"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    /* Each one completed once, the one without a status byte too */
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, 5);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 5);

    /* Still works */
    qvirtqueue_reset_pool(t.vq);
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 2), data, 100), ==,
                     VIRTIO_ZC_S_OK);
    g_free(recv_msg(&t, 0, 2, 100));
    zc_stop(&t);
}

/*
 * Post a chain the transport rejects: the device needs a reset and takes
 * nothing. Then reset and set the device up again.
 */
static void zc_post_rejected(ZC *t, const Desc *d, int n)
{
    uint64_t requests = zc_counter(t, "requests");

    zc_post(t, d, n);
    zc_wait_needs_reset(t);
    g_assert_cmpuint(zc_counter(t, "requests"), ==, requests);
    g_assert(!qvirtqueue_get_buf(t->qts, t->vq, NULL, NULL));
    zc_reinit(t);
}

/*
 * Chains the transport rejects, before the device sees the request:
 * a descriptor of length 0 (data, header or status), and a descriptor
 * that runs past guest RAM (0xffffffff bytes). A descriptor that is too
 * long but lies in RAM is mapped, and the device completes the request
 * with BAD_REQUEST.
 */
static void test_transport_rejects(void)
{
    size_t big = 2 << 20;
    uint64_t hdr, data, huge, st;
    ZC t;

    zc_start(&t, true, 0, false, "max-data-len=65536");
    hdr = zc_hdr(&t, 0, 0, 1);
    data = zc_data(&t, 100, 1);
    huge = guest_alloc(&t.alloc, big);
    st = zc_status_buf(&t);

    zc_post_rejected(&t, (Desc[]) { { hdr, 16, false }, { data, 0, false },
                                    { data, 100, false }, { st, 1, true } },
                     4);
    zc_post_rejected(&t, (Desc[]) { { hdr, 0, false }, { hdr, 16, false },
                                    { data, 100, false }, { st, 1, true } },
                     4);
    zc_post_rejected(&t, (Desc[]) { { hdr, 16, false }, { data, 100, false },
                                    { st, 0, true }, { st, 1, true } }, 4);
    zc_post_rejected(&t, (Desc[]) { { hdr, 16, false },
                                    { data, 0xffffffff, false },
                                    { st, 1, true } }, 3);

    /* Too long for max-data-len, but mapped: a bad request */
    g_assert_cmpuint(zc_simple(&t, hdr, huge, big), ==,
                     VIRTIO_ZC_S_BAD_REQUEST);
    g_assert_cmpuint(zc_counter(&t, "bad-requests"), ==, 1);
    g_assert(!(zc_status(&t) & VIRTIO_CONFIG_S_NEEDS_RESET));

    /* Nothing was sent; the device works */
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 2), data, 100), ==,
                     VIRTIO_ZC_S_OK);
    g_free(recv_msg(&t, 0, 2, 100));
    g_assert(recv_idle(t.rfd, 50));
    zc_stop(&t);
}

/*
 * Data outside guest RAM goes through the transport's bounce buffer,
 * 4096 bytes per device, and is sent by copying; a descriptor beyond
 * that cannot be mapped (NEEDS_RESET). A reset recovers.
 */
static void test_outside_ram(void)
{
    uint64_t far = 0x4000000000ull;   /* 256 GiB: nothing there */
    uint64_t hdr, data, st;
    ZC t;

    zc_start(&t, true, 0, false, "%s", "");
    hdr = zc_hdr(&t, 0, 0, 1);
    g_assert_cmpuint(zc_simple(&t, hdr, far, 64), ==, VIRTIO_ZC_S_COPIED);
    g_free(recv_msg(&t, 0, 1, 64));
    g_assert_cmpuint(zc_simple(&t, hdr, far, 4096), ==, VIRTIO_ZC_S_COPIED);
    g_free(recv_msg(&t, 1, 1, 4096));

    st = zc_status_buf(&t);
    zc_post_rejected(&t, (Desc[]) { { hdr, 16, false }, { far, 4097, false },
                                    { st, 1, true } }, 3);

    /* QEMU is alive and the device recovers after a reset */
    data = zc_data(&t, 100, 1);
    g_assert_cmpuint(zc_simple(&t, zc_hdr(&t, 0, 0, 2), data, 100), ==,
                     VIRTIO_ZC_S_OK);
    g_free(recv_msg(&t, 2, 2, 100));
    zc_stop(&t);
}

/*
 * The bounce buffer is shared by the requests the device holds: with one
 * request of 3000 bytes outside RAM waiting (listening mode, no receiver
 * yet), a second one does not fit. The reset completes the first; its
 * bounce space is free again afterwards.
 */
static void test_outside_ram_shared(void)
{
    uint64_t far = 0x4000000000ull;
    int port = zc_free_port();
    uint64_t st, hdr;
    uint32_t used;
    ZC t;

    zc_start(&t, false, 0, false, "listen=127.0.0.1:%d", port);
    st = zc_post_req(&t, t.vq, 1, far, 3000);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    hdr = zc_hdr(&t, 0, 0, 2);
    zc_post_rejected(&t, (Desc[]) { { hdr, 16, false }, { far, 3000, false },
                                    { zc_status_buf(&t), 1, true } }, 3);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);

    t.rfd = zc_connect_receiver(port, 0);
    st = zc_post_req(&t, t.vq, 3, far, 3000);
    g_free(recv_msg(&t, 0, 3, 3000));
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_COPIED);
    zc_stop(&t);
}

/*
 * Two queues, two destinations. Receiver A (transmitq0) stalls; receiver
 * B (transmitq1) reads. transmitq1's requests complete, and arrive at B
 * intact, while transmitq0's are in flight, even with more of them than
 * max-inflight: the bound is per queue. Then transmitq0's timeouts
 * reclaim its requests, and A drains only the original bytes.
 */
static void test_mq_independent(void)
{
    enum { N0 = 4, N1 = 6, LEN = 64 * 1024 };
    static const int rcvbuf[] = { 4096, 0 };
    g_autofree uint8_t *want0 = g_malloc((size_t)(N0 + 1) * LEN);
    g_autofree char *extra = g_strdup_printf("sndbuf=%d,max-inflight=%d,"
                                             "timeout-ms=500", STALL_SNDBUF,
                                             N0);
    uint64_t data0[N0 + 1], st0[N0 + 1], data1[N1], st1[N1];
    uint64_t sent0;
    size_t got_msgs = 0;
    QVirtioDevice *vd;
    uint32_t used;
    int i;
    ZC t;

    zc_start_mq(&t, 2, 2, rcvbuf, false, extra);
    vd = &t.dev->vdev;
    g_assert_cmpuint(qvirtio_config_readl(vd, 20), ==,
                     VIRTIO_ZC_DEST_CONNECTED);
    g_assert_cmpuint(qvirtio_config_readl(vd, 24), ==, 2);
    g_assert_cmphex(qvirtio_config_readl(vd, 28), ==, 0x3);

    /* One more than max-inflight on transmitq0: the last one waits */
    for (i = 0; i < N0 + 1; i++) {
        data0[i] = zc_data(&t, LEN, 10 + i);
        qtest_memread(t.qts, data0[i], want0 + (size_t)i * LEN, LEN);
        st0[i] = zc_post_req(&t, t.vq, 1000 + i, data0[i], LEN);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N0);
    g_assert_cmpuint(zc_counter(&t, "requests"), ==, N0);
    sent0 = zc_counter(&t, "sent");

    /* transmitq1 is not held up by transmitq0, nor by its bound */
    for (i = 0; i < N1; i++) {
        data1[i] = zc_data(&t, LEN, 100 + i);
        st1[i] = zc_post_req(&t, t.vqs[1], 2000 + i, data1[i], LEN);
    }
    for (i = 0; i < N1; i++) {
        g_autofree uint8_t *want = guest_bytes(&t, data1[i], LEN);
        g_autofree uint8_t *got = recv_msg_fd(t.rfds[1], i, 2000 + i, LEN);

        g_assert(memcmp(want, got, LEN) == 0);
    }
    for (i = 0; i < N1; i++) {
        zc_wait_used_vq(t.qts, t.vqs[1], &used);
        g_assert_cmpuint(used, ==, 1);
    }
    for (i = 0; i < N1; i++) {
        g_assert_cmpuint(qtest_readb(t.qts, st1[i]), ==, VIRTIO_ZC_S_OK);
    }
    g_assert(recv_idle(t.rfds[1], 50));

    /* Meanwhile transmitq0 has completed nothing */
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N0);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    for (i = 0; i < N0 + 1; i++) {
        g_assert_cmpuint(qtest_readb(t.qts, st0[i]), ==, 0xff);
    }

    /* Its timeouts reclaim the first N0, then the one that waited */
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    for (i = 0; i < N0; i++) {
        zc_wait_used(&t, &used);
    }
    zc_wait_counter(&t, "requests", N0 + N1 + 1);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, N0 + 1);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N0 + 1 + N1);
    sent0 = zc_counter(&t, "sent") - N1;
    for (i = 0; i < N0 + 1; i++) {
        g_autofree uint8_t *now = guest_bytes(&t, data0[i], LEN);

        g_assert_cmpuint(qtest_readb(t.qts, st0[i]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
        g_assert(memcmp(want0 + (size_t)i * LEN, now, LEN) == 0);
        qtest_memset(t.qts, data0[i], 0x3c, LEN);
    }

    /* A drains whole messages with the original bytes, in order */
    while (got_msgs < sent0 || (got_msgs == sent0 && got_msgs < N0 + 1 &&
                                !recv_idle(t.rfd, 500))) {
        g_autofree uint8_t *got = recv_msg(&t, got_msgs, 1000 + got_msgs,
                                           LEN);

        g_assert(memcmp(want0 + got_msgs * LEN, got, LEN) == 0);
        got_msgs++;
    }
    g_assert(recv_idle(t.rfd, 100));
    g_assert(recv_idle(t.rfds[1], 0));
    zc_stop(&t);
}

/*
 * One destination for two queues: each queue has its own connection to
 * it (its own stream, numbered from 0).
 */
static void test_mq_one_dest(void)
{
    uint64_t data = 0, st;
    uint32_t used;
    int i;
    ZC t;

    zc_start_mq(&t, 2, 1, NULL, false, "");
    g_assert_cmpuint(qvirtio_config_readl(&t.dev->vdev, 24), ==, 2);
    g_assert_cmphex(qvirtio_config_readl(&t.dev->vdev, 28), ==, 0x3);
    for (i = 1; i >= 0; i--) {
        QVirtQueue *vq = i ? t.vqs[1] : t.vq;
        g_autofree uint8_t *want = NULL;
        g_autofree uint8_t *got = NULL;

        data = zc_data(&t, 5000, i);
        want = guest_bytes(&t, data, 5000);
        st = zc_post_req(&t, vq, 50 + i, data, 5000);
        got = recv_msg_fd(i ? t.rfds[1] : t.rfd, 0, 50 + i, 5000);
        g_assert(memcmp(want, got, 5000) == 0);
        zc_wait_used_vq(t.qts, vq, &used);
        g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
    }
    g_assert(recv_idle(t.rfd, 50));
    g_assert(recv_idle(t.rfds[1], 0));
    zc_stop(&t);
}

/*
 * Migration with a stalled destination. The source holds INFL requests
 * that its receiver A does not take, and N - INFL more wait in the ring
 * (max-inflight). The migration reclaims the INFL when the VM stops,
 * before the rest of RAM is sent. On the destination every request is in
 * the used ring exactly once: the INFL RECLAIMED, the others sent by the
 * destination device to its own receiver B, OK; the guest's bytes are
 * unchanged and nothing else completes. A drains only whole messages
 * with the original bytes, and B gets what the guest sends afterwards.
 */
static void test_migrate_stalled(void)
{
    enum { N = 8, INFL = 6, LEN = 64 * 1024 };
    g_autofree uint8_t *want = g_malloc((size_t)N * LEN);
    g_autofree char *args = NULL;
    g_autofree uint8_t *seen = g_malloc0(N);
    uint64_t data[N], st[N], sent, st2;
    uint32_t head[N], h, used;
    QPCIAddress addr = { .devfn = VIRTIO_ZC_DEVFN };
    QTestState *from;
    size_t got_msgs = 0;
    int i, j, lfd2, rfd2, port2;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=60000,"
             "max-inflight=%d", STALL_SNDBUF, INFL);
    for (i = 0; i < N; i++) {
        uint64_t hdr = zc_hdr(&t, 0, 0, 500 + i);

        data[i] = zc_data(&t, LEN, 60 + i);
        qtest_memread(t.qts, data[i], want + (size_t)i * LEN, LEN);
        st[i] = zc_status_buf(&t);
        head[i] = zc_post(&t, (Desc[]) { { hdr, 16, false },
                                         { data[i], LEN, false },
                                         { st[i], 1, true } }, 3);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, INFL);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));

    /* The destination QEMU streams to its own receiver B */
    lfd2 = zc_listen(0, &port2);
    args = g_strdup_printf("%s -device virtio-zc-pci,id=zc,addr=06.0,"
                           "dest=127.0.0.1:%d,sndbuf=%d,timeout-ms=60000,"
                           "max-inflight=%d", zc_machine, port2,
                           STALL_SNDBUF, INFL);
    from = t.qts;
    t.qts = qzc_migrate(from, args);
    rfd2 = accept(lfd2, NULL, NULL);
    g_assert_cmpint(rfd2, >=, 0);

    /* The source reclaimed what it held, and took nothing more */
    g_assert_cmpuint(zc_counter_qts(from, "in-flight"), ==, 0);
    g_assert_cmpuint(zc_counter_qts(from, "reclaimed"), ==, INFL);
    g_assert_cmpuint(zc_counter_qts(from, "requests"), ==, INFL);
    sent = zc_counter_qts(from, "sent");
    g_assert_cmpuint(sent, <=, INFL);

    /* The destination took the rest and sent them to B */
    for (i = INFL; i < N; i++) {
        g_autofree uint8_t *got = recv_msg_fd(rfd2, i - INFL, 500 + i, LEN);

        g_assert(memcmp(want + (size_t)i * LEN, got, LEN) == 0);
    }

    /* The destination's used ring: each request once */
    for (i = 0; i < N; i++) {
        h = zc_wait_used(&t, &used);
        g_assert_cmpuint(used, ==, 1);
        for (j = 0; j < N && head[j] != h; j++) {
            /* find the request */
        }
        g_assert_cmpint(j, <, N);
        g_assert(!seen[j]);
        seen[j] = 1;
    }
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *now = guest_bytes(&t, data[i], LEN);

        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==,
                         i < INFL ? VIRTIO_ZC_S_RECLAIMED : VIRTIO_ZC_S_OK);
        g_assert(memcmp(want + (size_t)i * LEN, now, LEN) == 0);
        /* The guest reuses its memory on the destination */
        qtest_memset(t.qts, data[i], 0x77, LEN);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, INFL);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N);

    /* Nothing more completes, however long the destination runs */
    qtest_clock_step(t.qts, 120 * NANOSECONDS_PER_SECOND);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N);

    /* A: whole messages with the bytes from before the migration */
    while (got_msgs < sent || (got_msgs == sent && got_msgs < INFL &&
                               !recv_idle(t.rfd, 500))) {
        g_autofree uint8_t *got = recv_msg(&t, got_msgs, 500 + got_msgs,
                                           LEN);

        g_assert(memcmp(want + got_msgs * LEN, got, LEN) == 0);
        got_msgs++;
    }
    g_assert(recv_idle(t.rfd, 100));

    /* The destination's device keeps working, towards B */
    g_free(t.dev->pdev);
    g_free(t.dev);
    qpci_free_pc(t.bus);
    t.bus = qpci_new_pc(t.qts, NULL);
    t.dev = virtio_pci_new(t.bus, &addr);
    g_assert_nonnull(t.dev);
    qvirtio_pci_device_enable(t.dev);
    /* The queue was set up through the source's device object */
    t.vq->vdev = &t.dev->vdev;
    qvirtqueue_reset_pool(t.vq);
    st2 = zc_post_req(&t, t.vq, 600, data[0], LEN);
    {
        g_autofree uint8_t *now = guest_bytes(&t, data[0], LEN);
        g_autofree uint8_t *got = recv_msg_fd(rfd2, N - INFL, 600, LEN);

        g_assert(memcmp(now, got, LEN) == 0);
    }
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st2), ==, VIRTIO_ZC_S_OK);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, N + 1);
    g_assert(recv_idle(rfd2, 50));

    qtest_quit(from);
    zc_stop(&t);
    close(rfd2);
    close(lfd2);
}

/*
 * Listening mode. A request posted before any receiver connects waits,
 * and its timeout completes it with DEST_ERROR; one posted before the
 * receiver connects is sent once it does. When the receiver goes away,
 * what it held completes with DEST_ERROR, and the next receiver to
 * connect gets a new stream, numbered from 0.
 */
static void test_listen_reconnect(void)
{
    size_t len = 64 * 1024;
    int port = zc_free_port();
    g_autofree uint8_t *want = NULL;
    uint64_t data, st;
    QVirtioDevice *vd;
    uint32_t used;
    ZC t;

    zc_start(&t, false, 0, false, "listen=127.0.0.1:%d,sndbuf=%d,"
             "timeout-ms=500", port, STALL_SNDBUF);
    vd = &t.dev->vdev;
    g_assert_cmpuint(qvirtio_config_readl(vd, 20), ==,
                     VIRTIO_ZC_DEST_DISCONNECTED);
    g_assert_cmphex(qvirtio_config_readl(vd, 28), ==, 0);
    data = zc_data(&t, len, 5);
    want = guest_bytes(&t, data, len);

    /* Nobody connects: the request waits, then times out */
    st = zc_post_req(&t, t.vq, 1, data, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_DEST_ERROR);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);

    /* A receiver connects after the request was posted: it gets it */
    st = zc_post_req(&t, t.vq, 2, data, len);
    t.rfd = zc_connect_receiver(port, 4096);
    {
        g_autofree uint8_t *got = recv_msg(&t, 0, 2, len);

        g_assert(memcmp(want, got, len) == 0);
    }
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
    g_assert_cmpuint(qvirtio_config_readl(vd, 20), ==,
                     VIRTIO_ZC_DEST_CONNECTED);
    g_assert_cmphex(qvirtio_config_readl(vd, 28), ==, 1);

    /* It stalls and goes away: DEST_ERROR, guest bytes unchanged */
    st = zc_post_req(&t, t.vq, 3, data, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    close(t.rfd);
    t.rfd = -1;
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_DEST_ERROR);
    {
        g_autofree uint8_t *now = guest_bytes(&t, data, len);

        g_assert(memcmp(want, now, len) == 0);
    }
    g_assert_cmpuint(qvirtio_config_readl(vd, 20), ==,
                     VIRTIO_ZC_DEST_DISCONNECTED);

    /* The next receiver: a new stream */
    st = zc_post_req(&t, t.vq, 4, data, len);
    t.rfd = zc_connect_receiver(port, 0);
    {
        g_autofree uint8_t *got = recv_msg(&t, 0, 4, len);

        g_assert(memcmp(want, got, len) == 0);
    }
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
    g_assert_cmpuint(zc_counter(&t, "dest-errors"), ==, 2);
    g_assert_cmpuint(zc_counter(&t, "completed"), ==, 4);
    zc_stop(&t);
}

/*
 * Migration while iommu-emul (iova mode) maps a page of a stalled
 * request: QEMU reaches that page through its host address only, so it
 * is offlined when the VM stops like any other, and the request
 * completes with RECLAIMED; on the destination it is on the used ring
 * once, with unchanged bytes, and the old receiver gets the original
 * bytes. (An exposed page, bus-addr=hpa, blocks migration anyway.)
 */
static void test_migrate_pinned(void)
{
    const char *machine = zc_machine;
    size_t len = 64 * 1024;
    uint16_t rid = VIRTIO_ZC_DEVFN;   /* bus 0 */
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *now = NULL;
    g_autofree char *args = NULL;
    uint64_t data, st, page;
    QIOMMUEmulCmdOut out;
    QIOMMUEmulRing ring;
    QPCIDevice *iommu;
    QTestState *from;
    uint32_t used;
    int lfd2, rfd2, port2;
    ZC t;

    zc_machine = "-machine pc -m 256M -device iommu-emul,addr=05.0";
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=60000",
             STALL_SNDBUF);
    iommu = qpci_device_find(t.bus, QPCI_DEVFN(5, 0));
    g_assert_nonnull(iommu);
    qpci_device_enable(iommu);
    qiommu_emul_cmdq_start(&ring, iommu,
                           qpci_iomap(iommu, IOMMU_EMUL_REGS_BAR, NULL),
                           guest_alloc(&t.alloc, 4 * IOMMU_EMUL_CMD_SIZE),
                           2, 0);
    data = zc_data(&t, len, 44);
    want = guest_bytes(&t, data, len);
    page = ROUND_UP(data, 4096) + 4096;
    g_assert_cmphex(qiommu_emul_cmd(&ring, &(QIOMMUEmulCmd) {
                        .opcode = IOMMU_EMUL_OP_MAP,
                        .flags = IOMMU_EMUL_MAP_READ,
                        .requester = rid, .addr = page, .length = 4096,
                    }, &out), ==, IOMMU_EMUL_ST_OK);
    st = zc_post_req(&t, t.vq, 9, data, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);

    lfd2 = zc_listen(0, &port2);
    args = g_strdup_printf("%s -device virtio-zc-pci,id=zc,addr=06.0,"
                           "dest=127.0.0.1:%d", zc_machine, port2);
    zc_machine = machine;
    from = t.qts;
    t.qts = qzc_migrate(from, args);
    rfd2 = accept(lfd2, NULL, NULL);
    g_assert_cmpint(rfd2, >=, 0);

    g_assert_cmpuint(zc_counter_qts(from, "offline-refused"), ==, 0);
    g_assert_cmpuint(zc_counter_qts(from, "dest-errors"), ==, 0);
    g_assert_cmpuint(zc_counter_qts(from, "reclaimed"), ==, 1);
    g_assert(qvirtqueue_get_buf(t.qts, t.vq, NULL, &used));
    g_assert_cmpuint(used, ==, 1);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    now = guest_bytes(&t, data, len);
    g_assert(memcmp(want, now, len) == 0);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    /* The source's receiver gets the original bytes */
    g_free(now);
    now = recv_msg(&t, 0, 9, len);
    g_assert(memcmp(want, now, len) == 0);

    g_free(iommu);
    qtest_quit(from);
    zc_stop(&t);
    close(rfd2);
    close(lfd2);
}

/* Poll query-migrate until its status is @want */
static void zc_wait_migration(QTestState *qts, const char *want)
{
    gint64 start = g_get_monotonic_time();

    for (;;) {
        QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                                  "{'execute': 'query-migrate'}");
        const char *status = qdict_get_try_str(rsp, "status");
        bool done = !g_strcmp0(status, want);
        bool failed = !g_strcmp0(status, "failed") && strcmp(want, "failed");

        qobject_unref(rsp);
        if (done) {
            return;
        }
        g_assert(!failed);
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(10 * 1000);
    }
}

/*
 * A migration that has "failed" is cleaned up later, from a bottom half;
 * until then it is still registered with yank, and another "migrate"
 * fails ("duplicate yank instance"). Wait until query-yank no longer
 * lists it.
 */
static void zc_wait_migration_cleaned(QTestState *qts)
{
    gint64 start = g_get_monotonic_time();

    for (;;) {
        QDict *rsp = qtest_qmp(qts, "{'execute': 'query-yank'}");
        QList *list = qdict_get_qlist(rsp, "return");
        const QListEntry *e;
        bool listed = false;

        g_assert(list);
        QLIST_FOREACH_ENTRY(list, e) {
            QDict *inst = qobject_to(QDict, qlist_entry_obj(e));

            listed |= !g_strcmp0(qdict_get_try_str(inst, "type"),
                                 "migration");
        }
        qobject_unref(rsp);
        if (!listed) {
            return;
        }
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(10 * 1000);
    }
}

/* Forget the @event events QEMU has sent so far */
static void zc_drop_events(QTestState *qts, const char *event)
{
    QDict *ev;

    /* A round trip reads every event sent before its reply */
    qtest_qmp_assert_success(qts, "{'execute': 'query-status'}");
    while ((ev = qtest_qmp_event_ref(qts, event))) {
        qobject_unref(ev);
    }
}

/*
 * A background snapshot that is "active" has not necessarily saved the
 * device state yet: it stops the VM, saves the devices (virtio-zc's
 * pre_save fails it if a request is in flight), starts tracking RAM
 * writes and only then lets the VM run again (event RESUME). Wait for
 * that RESUME; the snapshot must not fail meanwhile.
 */
static void zc_wait_snapshot_running(QTestState *qts)
{
    gint64 start = g_get_monotonic_time();

    for (;;) {
        QDict *ev = qtest_qmp_event_ref(qts, "RESUME");
        QDict *rsp;

        if (ev) {
            qobject_unref(ev);
            break;
        }
        rsp = qtest_qmp_assert_success_ref(qts,
                                           "{'execute': 'query-migrate'}");
        g_assert_cmpstr(qdict_get_try_str(rsp, "status"), ==, "active");
        qobject_unref(rsp);
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(10 * 1000);
    }
}

static void zc_ensure_running(QTestState *qts)
{
    QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                              "{'execute': 'query-status'}");

    if (strcmp(qdict_get_str(rsp, "status"), "running")) {
        qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    }
    qobject_unref(rsp);
}

/*
 * Migration of a VM that was stopped before: it does not stop again at
 * the end of the migration, so the device reclaims when the migration
 * starts. The destination (which stays paused, as the source was) finds
 * each request on the used ring once, RECLAIMED, with unchanged bytes.
 */
static void test_migrate_paused(void)
{
    enum { N = 3, LEN = 64 * 1024 };
    g_autofree char *dir = g_dir_make_tmp("virtio-zc-mig-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "sock", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s", path);
    g_autofree uint8_t *want = g_malloc((size_t)N * LEN);
    uint64_t data[N], st[N];
    uint32_t used;
    QTestState *from;
    int i, lfd2, rfd2, port2;
    ZC t;

    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=60000",
             STALL_SNDBUF);
    for (i = 0; i < N; i++) {
        data[i] = zc_data(&t, LEN, 90 + i);
        qtest_memread(t.qts, data[i], want + (size_t)i * LEN, LEN);
        st[i] = zc_post_req(&t, t.vq, 800 + i, data[i], LEN);
    }
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, N);
    qtest_qmp_assert_success(t.qts, "{'execute': 'stop'}");

    lfd2 = zc_listen(0, &port2);
    from = t.qts;
    t.qts = qtest_initf("%s -device virtio-zc-pci,id=zc,addr=06.0,"
                        "dest=127.0.0.1:%d -incoming %s", zc_machine, port2,
                        uri);
    rfd2 = accept(lfd2, NULL, NULL);
    g_assert_cmpint(rfd2, >=, 0);
    qtest_qmp_assert_success(from, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    zc_wait_migration(from, "completed");
    g_assert_cmpuint(zc_counter_qts(from, "in-flight"), ==, 0);
    g_assert_cmpuint(zc_counter_qts(from, "reclaimed"), ==, N);

    /* The destination is paused like the source; its RAM has the ring */
    for (i = 0; i < N; i++) {
        g_autofree uint8_t *now = guest_bytes(&t, data[i], LEN);

        g_assert(qvirtqueue_get_buf(t.qts, t.vq, NULL, &used));
        g_assert_cmpuint(used, ==, 1);
        g_assert_cmpuint(qtest_readb(t.qts, st[i]), ==,
                         VIRTIO_ZC_S_RECLAIMED);
        g_assert(memcmp(want + (size_t)i * LEN, now, LEN) == 0);
    }
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 0);
    zc_ensure_running(t.qts);
    qtest_clock_step(t.qts, 120 * NANOSECONDS_PER_SECOND);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert(recv_idle(rfd2, 50));

    qtest_quit(from);
    zc_stop(&t);
    close(rfd2);
    close(lfd2);
    unlink(path);
    rmdir(dir);
}

/*
 * Background snapshots. One that starts while a request is in flight
 * fails: the device cannot reclaim the request then (offlining is
 * refused) and would lose it, so its pre_save refuses; the request stays
 * in flight and its timeout reclaims it later. While one runs, a request
 * whose timeout expires waits (offline-refused counts the attempts) and
 * is reclaimed once the snapshot has ended.
 */
static void test_bg_snapshot(void)
{
    g_autofree char *dir = g_dir_make_tmp("virtio-zc-snap-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "snap", NULL);
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    g_autofree uint8_t *want = NULL;
    g_autofree uint8_t *now = NULL;
    size_t len = 64 * 1024;
    uint64_t data, st;
    gint64 start;
    uint32_t used;
    ZC t;

    if (!have_userfaultfd()) {
        g_test_skip("no userfaultfd for kernel faults");
        return;
    }
    zc_start(&t, true, 4096, false, "sndbuf=%d,timeout-ms=500",
             STALL_SNDBUF);
    qtest_qmp_assert_success(t.qts, "{'execute': 'migrate-set-capabilities',"
                             " 'arguments': {'capabilities': [{"
                             "  'capability': 'background-snapshot',"
                             "  'state': true}]}}");
    /* Slow enough to still run while the test looks */
    qtest_qmp_assert_success(t.qts, "{'execute': 'migrate-set-parameters',"
                             " 'arguments': {'max-bandwidth': 4096}}");
    data = zc_data(&t, len, 21);
    want = guest_bytes(&t, data, len);

    /* In flight when the snapshot starts: the snapshot fails */
    st = zc_post_req(&t, t.vq, 1, data, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    qtest_qmp_assert_success(t.qts, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    zc_wait_migration(t.qts, "failed");
    zc_wait_migration_cleaned(t.qts);
    zc_ensure_running(t.qts);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    g_assert_cmpuint(zc_counter(&t, "offline-refused"), ==, 0);

    /*
     * A snapshot that runs: the timeout's offline is refused, it waits.
     * The request is posted once the snapshot has saved the device state
     * and resumed the VM; posted before, it would fail the snapshot.
     */
    zc_drop_events(t.qts, "RESUME");
    qtest_qmp_assert_success(t.qts, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    zc_wait_migration(t.qts, "active");
    zc_wait_snapshot_running(t.qts);
    st = zc_post_req(&t, t.vq, 2, data, len);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    qtest_clock_step(t.qts, 600 * SCALE_MS);
    start = g_get_monotonic_time();
    while (zc_counter(&t, "offline-refused") < 1) {
        g_assert(g_get_monotonic_time() - start <= WAIT_US);
        g_usleep(1000);
    }
    qtest_clock_step(t.qts, 250 * SCALE_MS);
    g_assert_cmpuint(zc_counter(&t, "offline-refused"), >=, 2);
    g_assert_cmpuint(zc_counter(&t, "in-flight"), ==, 1);
    g_assert(!qvirtqueue_get_buf(t.qts, t.vq, NULL, NULL));
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, 0xff);

    /* The snapshot ends: the next retry reclaims the request */
    qtest_qmp_assert_success(t.qts, "{'execute': 'migrate_cancel'}");
    zc_wait_migration(t.qts, "cancelled");
    zc_ensure_running(t.qts);
    qtest_clock_step(t.qts, 250 * SCALE_MS);
    zc_wait_used(&t, &used);
    g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_RECLAIMED);
    now = guest_bytes(&t, data, len);
    g_assert(memcmp(want, now, len) == 0);
    g_assert_cmpuint(zc_counter(&t, "reclaimed"), ==, 2);
    zc_stop(&t);
    unlink(path);
    rmdir(dir);
}

/*
 * Listening mode with two queues: the first receiver to connect takes
 * transmitq0, the second transmitq1; each gets only its queue's messages.
 */
static void test_listen_mq(void)
{
    int port = zc_free_port();
    g_autofree char *extra = g_strdup_printf("listen=127.0.0.1:%d", port);
    uint64_t data, st;
    uint32_t used;
    int i;
    ZC t;

    zc_start_mq(&t, 2, 0, NULL, false, extra);
    t.rfd = zc_connect_receiver(port, 0);
    t.rfds[1] = zc_connect_receiver(port, 0);
    data = zc_data(&t, 3000, 8);
    for (i = 1; i >= 0; i--) {
        QVirtQueue *vq = i ? t.vqs[1] : t.vq;
        g_autofree uint8_t *want = guest_bytes(&t, data, 3000);
        g_autofree uint8_t *got = NULL;

        st = zc_post_req(&t, vq, 70 + i, data, 3000);
        got = recv_msg_fd(i ? t.rfds[1] : t.rfd, 0, 70 + i, 3000);
        g_assert(memcmp(want, got, 3000) == 0);
        zc_wait_used_vq(t.qts, vq, &used);
        g_assert_cmpuint(qtest_readb(t.qts, st), ==, VIRTIO_ZC_S_OK);
    }
    g_assert_cmphex(qvirtio_config_readl(&t.dev->vdev, 28), ==, 0x3);
    g_assert_cmpuint(qvirtio_config_readl(&t.dev->vdev, 20), ==,
                     VIRTIO_ZC_DEST_CONNECTED);
    g_assert(recv_idle(t.rfd, 50));
    g_assert(recv_idle(t.rfds[1], 0));
    zc_stop(&t);
}

int main(int argc, char **argv)
{
    static const char *machines[] = { "pc", "q35" };

    g_test_init(&argc, &argv, NULL);
    for (int i = 0; i < ARRAY_SIZE(machines); i++) {
        g_autofree char *p1 = g_strdup_printf("/virtio-zc/%s/pci-identity",
                                              machines[i]);
        g_autofree char *p2 = g_strdup_printf("/virtio-zc/%s/modern-only",
                                              machines[i]);

        qtest_add_data_func(p1, machines[i], test_pci_identity);
        qtest_add_data_func(p2, machines[i], test_modern_only);
    }
    qtest_add_func("/virtio-zc/bad-properties", test_bad_properties);
    qtest_add_func("/virtio-zc/property-descriptions",
                   test_property_descriptions);
    qtest_add_func("/virtio-zc/version-1", test_version_1);
    if (qtest_has_machine("microvm")) {
        qtest_add_func("/virtio-zc/legacy-transport", test_legacy_transport);
    }
    qtest_add_func("/virtio-zc/config", test_config);
    qtest_add_func("/virtio-zc/send/single", test_send_single);
    qtest_add_func("/virtio-zc/send/multi", test_send_multi);
    qtest_add_func("/virtio-zc/send/copy-fallback", test_copy_fallback);
    qtest_add_func("/virtio-zc/send/before-driver-ok",
                   test_before_driver_ok);
    if (qtest_has_machine("pc")) {
        for (int k = 0; k < ARRAY_SIZE(ram_cases); k++) {
            g_autofree char *path = g_strdup_printf("/virtio-zc/stall/"
                                                    "reclaim-ram-%s",
                                                    ram_cases[k].name);

            qtest_add_data_func(path, &ram_cases[k], test_reclaim_ram);
        }
        qtest_add_func("/virtio-zc/stall/reclaim-shared-page",
                       test_reclaim_shared_page);
    }
    /*
     * auto: UFFDIO_MOVE, or the write-protect method where the kernel
     * refuses to move a referenced huge page; uffd-move forced: the same
     * fallback (guest RAM is THP-backed where the host allows it); copy:
     * the fallback without userfaultfd, with the vCPUs paused
     */
    qtest_add_data_func("/virtio-zc/stall/reclaim", "auto",
                        test_stall_reclaim);
    qtest_add_data_func("/virtio-zc/stall/reclaim-uffd-move", "uffd-move",
                        test_stall_reclaim);
    qtest_add_data_func("/virtio-zc/stall/reclaim-uffd-wp", "uffd-wp",
                        test_stall_reclaim);
    qtest_add_data_func("/virtio-zc/stall/reclaim-paused-copy", "copy",
                        test_stall_reclaim);
    qtest_add_func("/virtio-zc/stall/guest-timeout", test_guest_timeout);
    qtest_add_data_func("/virtio-zc/stall/iommu-mapped-iova", "iova",
                        test_iommu_mapped);
    qtest_add_data_func("/virtio-zc/stall/iommu-mapped-gpa", "gpa",
                        test_iommu_mapped);
    qtest_add_data_func("/virtio-zc/stall/iommu-mapped-iova-memfd",
                        "iova-memfd", test_iommu_mapped);
    qtest_add_data_func("/virtio-zc/stall/iommu-mapped-hpa", "hpa",
                        test_iommu_mapped);
    qtest_add_func("/virtio-zc/stall/reset", test_reset_stalled);
    qtest_add_func("/virtio-zc/stall/disconnect", test_disconnect);
    qtest_add_func("/virtio-zc/stall/unplug", test_unplug_stalled);
    qtest_add_func("/virtio-zc/stall/max-inflight", test_max_inflight);
    qtest_add_func("/virtio-zc/bad/avail-jump", test_avail_jump);
    qtest_add_func("/virtio-zc/mq/independent", test_mq_independent);
    qtest_add_func("/virtio-zc/mq/one-dest", test_mq_one_dest);
    qtest_add_func("/virtio-zc/migration/stalled", test_migrate_stalled);
    qtest_add_func("/virtio-zc/migration/paused", test_migrate_paused);
    qtest_add_func("/virtio-zc/migration/pinned", test_migrate_pinned);
    qtest_add_func("/virtio-zc/migration/bg-snapshot", test_bg_snapshot);
    qtest_add_func("/virtio-zc/listen/reconnect", test_listen_reconnect);
    qtest_add_func("/virtio-zc/listen/two-queues", test_listen_mq);
    qtest_add_func("/virtio-zc/bad/header", test_bad_header);
    qtest_add_func("/virtio-zc/bad/layout", test_bad_layout);
    qtest_add_func("/virtio-zc/bad/transport-rejects",
                   test_transport_rejects);
    qtest_add_func("/virtio-zc/bad/outside-ram", test_outside_ram);
    qtest_add_func("/virtio-zc/bad/outside-ram-shared",
                   test_outside_ram_shared);
    return g_test_run();
}
