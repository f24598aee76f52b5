/*
 * virtio-zc: zero-copy transmit with reclaim by page offlining
 *
 * The guest posts requests (header, data, status byte). The device sends
 * each request's data as one framed message on a TCP stream with
 * MSG_ZEROCOPY, straight from the guest's pages, and completes the
 * request when the kernel no longer references them. A request whose
 * timeout expires first gets its pages offlined (fresh pages with the
 * same contents replace them; the kernel keeps the old ones) and
 * completes as reclaimed. See docs/specs/virtio-zc.rst.
 *
 * Everything runs in the main loop under the BQL.
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/qdev-properties.h"
#include "hw/virtio/virtio.h"
#include "hw/virtio-zc/virtio-zc.h"
#include "migration/misc.h"
#include "migration/vmstate.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/bswap.h"
#include "qemu/iov.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "system/ram-offline.h"
#include "system/runstate.h"
#include "standard-headers/linux/virtio_ring.h"
#include "trace.h"

#ifdef CONFIG_LINUX
#include <linux/errqueue.h>
#include <netinet/tcp.h>
#endif

#if defined(CONFIG_LINUX) && defined(SO_ZEROCOPY) && defined(MSG_ZEROCOPY)
#define VIRTIO_ZC_HAVE_MSG_ZEROCOPY 1
#else
#define VIRTIO_ZC_HAVE_MSG_ZEROCOPY 0
#define MSG_ZEROCOPY 0
#endif

#define VIRTIO_ZC_QUEUE_SIZE        256
#define VIRTIO_ZC_MAX_TIMEOUT_MS    3600000u    /* one hour */
#define VIRTIO_ZC_MAX_DATA_LEN      (64u << 20)
#define VIRTIO_ZC_SPARE_POOL        (8ull << 20)   /* default spare-pool */
#define VIRTIO_ZC_MAX_SPARE_POOL    (512ull << 20)
#define VIRTIO_ZC_RETRY_MS          100         /* after a refused offline */

/* The device status bits without which no request is taken */
#define VIRTIO_ZC_STARTED \
    (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK)

/*
 * One message of the destination stream. It belongs to a request (elem
 * set) or, after the request was reclaimed mid-message, it is an orphan
 * tail that owns a copy of the bytes still to send (bounce set).
 */
struct VirtIOZCReq {
    VirtIOZCQueue *q;
    VirtQueueElement *elem;
    struct virtio_zc_frame_hdr frame;   /* little-endian */
    struct iovec *iov;                  /* data: guest RAM or bounce */
    unsigned int iov_cnt;
    size_t data_len;
    size_t sent;                        /* frame + data bytes written */
    char *bounce;
    QEMUTimer *timer;
    uint32_t zc_pending;                /* MSG_ZEROCOPY sendmsgs in flight */
    bool zc;                            /* data goes with MSG_ZEROCOPY */
    bool copied;                        /* part of it went by copy */
    bool queued;                        /* on sendq */
    bool started;                       /* frame sequence number taken */
    bool expired;                       /* timed out, reclaim pending */
    bool offline_done;                  /* offline_ret is for the reclaim */
    int offline_ret;                    /* of virtio_zc_offline_batch() */
    QTAILQ_ENTRY(VirtIOZCReq) link;     /* on reqs (requests only) */
    QTAILQ_ENTRY(VirtIOZCReq) sendq_link;
};

/*
 * Shared guest RAM (memfd, share=on) that a reclaim mapped privately: it
 * is mapped shared again once every send that referenced its old pages
 * has been released (ram_offline_host_needs_reshare()).
 */
struct VirtIOZCReshare {
    struct iovec *iov;
    unsigned int iov_cnt;
    uint32_t pending;                   /* sends still holding the pages */
    QLIST_ENTRY(VirtIOZCReshare) link;  /* on VirtIOZC.reshares */
};

/* One successful MSG_ZEROCOPY sendmsg */
typedef struct VirtIOZCSend {
    uint32_t id;
    VirtIOZCReq *req;                   /* NULL once reclaimed */
    VirtIOZCReshare *reshare;           /* released pages to share again */
} VirtIOZCSend;

static void virtio_zc_flush(VirtIOZCQueue *q);
static void virtio_zc_listen_update(VirtIOZC *s);
static void virtio_zc_disconnect(VirtIOZCQueue *q, const char *why,
                                 bool detach);

static size_t virtio_zc_msg_len(VirtIOZCReq *req)
{
    return sizeof(req->frame) + req->data_len;
}

static void virtio_zc_req_free(VirtIOZCReq *req)
{
    if (req->timer) {
        timer_free(req->timer);
    }
    g_free(req->iov);
    g_free(req->bounce);
    g_free(req);
}

static void virtio_zc_sendq_remove(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    if (req->queued) {
        QTAILQ_REMOVE(&q->sendq, req, sendq_link);
        req->queued = false;
    }
}

/* Forget the zero-copy sendmsgs of @req: their completions are ignored */
static void virtio_zc_forget_sends(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    GList *l;

    for (l = q->zc_sends.head; l && req->zc_pending; l = l->next) {
        VirtIOZCSend *snd = l->data;

        if (snd->req == req) {
            snd->req = NULL;
            req->zc_pending--;
        }
    }
    req->zc_pending = 0;
}

/* Whether @a and @b touch a common host page */
static bool virtio_zc_pages_overlap(const struct iovec *a, const struct iovec *b)
{
    size_t psize = qemu_real_host_page_size();
    uintptr_t a0 = ROUND_DOWN((uintptr_t)a->iov_base, psize);
    uintptr_t a1 = ROUND_UP((uintptr_t)a->iov_base + a->iov_len, psize);
    uintptr_t b0 = ROUND_DOWN((uintptr_t)b->iov_base, psize);
    uintptr_t b1 = ROUND_UP((uintptr_t)b->iov_base + b->iov_len, psize);

    return a0 < b1 && b0 < a1;
}

/*
 * A send that referenced pages of @rs was released; the last one maps
 * them shared again. @replace: the pages may still be referenced (the
 * send was not released, but its holder is going away).
 */
static void virtio_zc_reshare_put(VirtIOZCQueue *q, VirtIOZCReshare *rs,
                                  bool replace)
{
    VirtIOZC *s = q->s;
    VirtIOZCReshare *o;
    unsigned int i, j;

    if (!rs || --rs->pending) {
        return;
    }
    QLIST_REMOVE(rs, link);
    if (!replace) {
        /*
         * A page that another reclaim's sends still hold (two buffers on
         * one page) must stay private until those are released too: its
         * old page is in the file and in their socket. Hand the ranges
         * over to the first such holder.
         */
        QLIST_FOREACH(o, &s->reshares, link) {
            for (i = 0; i < rs->iov_cnt; i++) {
                for (j = 0; j < o->iov_cnt; j++) {
                    if (virtio_zc_pages_overlap(&rs->iov[i], &o->iov[j])) {
                        goto hand_over;
                    }
                }
            }
        }
    }
    if (!ram_offline_host_reshare(rs->iov, rs->iov_cnt, replace)) {
        s->stat_reshared_bytes += iov_size(rs->iov, rs->iov_cnt);
    }
    g_free(rs->iov);
    g_free(rs);
    return;

hand_over:
    o->iov = g_renew(struct iovec, o->iov, o->iov_cnt + rs->iov_cnt);
    memcpy(o->iov + o->iov_cnt, rs->iov, rs->iov_cnt * sizeof(*rs->iov));
    o->iov_cnt += rs->iov_cnt;
    g_free(rs->iov);
    g_free(rs);
}

/*
 * @req was just reclaimed with sends still pending: if its pages lie in
 * shared RAM, the offline mapped them privately, and they are to be
 * mapped shared again once those sends are released.
 */
static void virtio_zc_reshare_later(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    VirtIOZCReshare *rs = NULL;
    GList *l;
    unsigned int i;

    for (i = 0; i < req->iov_cnt; i++) {
        if (ram_offline_host_needs_reshare(req->iov[i].iov_base,
                                           req->iov[i].iov_len)) {
            break;
        }
    }
    if (i == req->iov_cnt) {
        return;
    }
    for (l = q->zc_sends.head; l; l = l->next) {
        VirtIOZCSend *snd = l->data;

        if (snd->req != req) {
            continue;
        }
        if (!rs) {
            rs = g_new0(VirtIOZCReshare, 1);
            rs->iov = g_memdup2(req->iov, req->iov_cnt * sizeof(*req->iov));
            rs->iov_cnt = req->iov_cnt;
            QLIST_INSERT_HEAD(&q->s->reshares, rs, link);
        }
        /* A send of an earlier reclaim over the same pages keeps its own */
        if (!snd->reshare) {
            snd->reshare = rs;
            rs->pending++;
        }
    }
    if (rs && !rs->pending) {
        QLIST_REMOVE(rs, link);
        g_free(rs->iov);
        g_free(rs);
    }
}

/*
 * Map every page that a reclaim on @q made private shared again now,
 * taking pages the destination still holds out of the file: before the
 * device state is saved, so that whoever reads guest RAM through the
 * file (x-ignore-shared, a vhost-user back end on the destination) finds
 * the guest's bytes there. The vCPUs are stopped.
 */
static void virtio_zc_reshare_now(VirtIOZCQueue *q)
{
    GList *l;

    for (l = q->zc_sends.head; l; l = l->next) {
        VirtIOZCSend *snd = l->data;

        virtio_zc_reshare_put(q, snd->reshare, true);
        snd->reshare = NULL;
    }
}

/* Release the record of a send: its pages are no longer referenced */
static void virtio_zc_send_free(VirtIOZCQueue *q, VirtIOZCSend *snd,
                                bool replace)
{
    virtio_zc_reshare_put(q, snd->reshare, replace);
    g_free(snd);
}

/*
 * Return a request to the driver with @status, exactly once. @detach is
 * for reset, when the rings are about to be reset: the status byte is
 * written but nothing goes on the used ring.
 */
static void virtio_zc_complete(VirtIOZCQueue *q, VirtIOZCReq *req,
                               uint8_t status, bool detach)
{
    VirtIOZC *s = q->s;
    VirtIODevice *vdev = VIRTIO_DEVICE(s);
    VirtQueueElement *elem = req->elem;

    virtio_zc_sendq_remove(q, req);
    virtio_zc_forget_sends(q, req);
    QTAILQ_REMOVE(&q->reqs, req, link);
    q->inflight--;
    s->stat_inflight--;
    s->stat_completed++;
    switch (status) {
    case VIRTIO_ZC_S_RECLAIMED:
        s->stat_reclaimed++;
        break;
    case VIRTIO_ZC_S_COPIED:
        s->stat_copied++;
        break;
    case VIRTIO_ZC_S_DEST_ERROR:
        s->stat_dest_errors++;
        break;
    }
    trace_virtio_zc_complete(q->index, req, le64_to_cpu(req->frame.tag),
                             status, detach);

    iov_from_buf(elem->in_sg, elem->in_num, 0, &status, 1);
    if (detach) {
        virtqueue_detach_element(q->vq, elem, 1);
    } else {
        virtqueue_push(q->vq, elem, 1);
        virtio_notify(vdev, q->vq);
        /* Room for one more request */
        qemu_bh_schedule(s->bh);
    }
    g_free(elem);
    virtio_zc_req_free(req);
}

/* A request whose message is fully written may be done */
static void virtio_zc_maybe_complete(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    if (req->queued || req->zc_pending) {
        return;
    }
    if (!req->elem) {
        virtio_zc_req_free(req);
        return;
    }
    virtio_zc_complete(q, req, req->copied ? VIRTIO_ZC_S_COPIED :
                       VIRTIO_ZC_S_OK, false);
}

/*
 * Offline, in one pass, the pages of every request that the kernel may
 * still reference: of queue @only, or of every queue if @only is NULL;
 * with @expired_only, only of requests whose timeout expired. Each
 * request gets its result for virtio_zc_reclaim(). A reset, a timeout
 * sweep or a migration reclaims many requests at once, and one pass
 * registers guest RAM once, offlines shared pages once and replaces a
 * huge page that the buffers cover together whole.
 */
static void virtio_zc_offline_batch(VirtIOZC *s, VirtIOZCQueue *only,
                                    bool expired_only)
{
    PageOfflineMethod used = PAGE_OFFLINE_AUTO;
    g_autofree struct iovec *iov = NULL;
    g_autofree VirtIOZCReq **owner = NULL;
    g_autofree int *res = NULL;
    unsigned int i, n = 0, nreq = 0, first, last;
    VirtIOZCReq *req;
    int ret;

    for (i = 0; i < s->num_queues; i++) {
        if (only && only != &s->queues[i]) {
            continue;
        }
        QTAILQ_FOREACH(req, &s->queues[i].reqs, link) {
            if (req->zc_pending && !req->offline_done &&
                (!expired_only || req->expired)) {
                n += req->iov_cnt;
            }
        }
    }
    if (!n) {
        return;
    }
    iov = g_new(struct iovec, n);
    owner = g_new(VirtIOZCReq *, n);
    res = g_new(int, n);
    n = 0;
    for (i = 0; i < s->num_queues; i++) {
        if (only && only != &s->queues[i]) {
            continue;
        }
        QTAILQ_FOREACH(req, &s->queues[i].reqs, link) {
            if (req->zc_pending && !req->offline_done &&
                (!expired_only || req->expired)) {
                memcpy(iov + n, req->iov, req->iov_cnt * sizeof(*iov));
                for (first = n; n < first + req->iov_cnt; n++) {
                    owner[n] = req;
                }
                nreq++;
            }
        }
    }
    ret = ram_offline_host_ranges(iov, n, s->offline_method, &used, res);
    trace_virtio_zc_offline_batch(nreq, n, page_offline_method_name(used),
                                  ret);
    for (first = 0; first < n; first = last) {
        req = owner[first];
        req->offline_done = true;
        req->offline_ret = 0;
        for (last = first; last < n && owner[last] == req; last++) {
            if (res[last] && !req->offline_ret) {
                req->offline_ret = res[last];
                trace_virtio_zc_offline_error(req, last - first, res[last]);
            }
        }
        if (req->offline_ret == -EBUSY) {
            s->stat_offline_refused++;
        } else if (req->offline_ret) {
            s->stat_offline_failed++;
        } else {
            s->stat_offlined_bytes += req->data_len;
            trace_virtio_zc_offline(req, req->data_len,
                                    page_offline_method_name(used));
        }
    }
}

/*
 * Offline the guest pages under a request's data, unless a batch did:
 * then its result. Returns 0, -EBUSY if refused for now, or another
 * negative errno.
 */
static int virtio_zc_offline(VirtIOZC *s, VirtIOZCReq *req)
{
    PageOfflineMethod used = PAGE_OFFLINE_AUTO;
    unsigned int i;
    int ret;

    if (req->offline_done) {
        req->offline_done = false;
        return req->offline_ret;
    }
    for (i = 0; i < req->iov_cnt; i++) {
        ret = ram_offline_host_range(req->iov[i].iov_base,
                                     req->iov[i].iov_len, s->offline_method,
                                     &used);
        if (ret) {
            if (ret == -EBUSY) {
                s->stat_offline_refused++;
            } else {
                s->stat_offline_failed++;
            }
            trace_virtio_zc_offline_error(req, i, ret);
            return ret;
        }
        s->stat_offlined_bytes += req->iov[i].iov_len;
    }
    trace_virtio_zc_offline(req, req->data_len,
                            page_offline_method_name(used));
    return 0;
}

/*
 * Turn the unsent rest of a started message into an orphan tail that owns
 * a copy of those bytes, so that the stream stays well-framed and carries
 * the bytes the message had at this moment.
 */
static void virtio_zc_orphan_tail(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    VirtIOZCReq *tail = g_new0(VirtIOZCReq, 1);
    size_t total = virtio_zc_msg_len(req);
    size_t rest = total - req->sent;
    size_t hdr_sent = MIN(req->sent, sizeof(req->frame));
    size_t data_off = req->sent - hdr_sent;
    size_t n = sizeof(req->frame) - hdr_sent;

    tail->q = q;
    tail->bounce = g_malloc(rest);
    memcpy(tail->bounce, (char *)&req->frame + hdr_sent, n);
    iov_to_buf(req->iov, req->iov_cnt, data_off, tail->bounce + n, rest - n);
    /* An orphan is all data: its "frame" is already fully sent */
    tail->sent = sizeof(tail->frame);
    tail->started = true;
    tail->data_len = rest;
    tail->iov = g_new(struct iovec, 1);
    tail->iov[0].iov_base = tail->bounce;
    tail->iov[0].iov_len = rest;
    tail->iov_cnt = 1;
    tail->queued = true;
    QTAILQ_INSERT_AFTER(&q->sendq, req, tail, sendq_link);
    trace_virtio_zc_orphan_tail(req, rest);
}

/*
 * Take a request back from the destination. Its pages are offlined if the
 * kernel may still reference them. Returns 0 once the request completed
 * with @status, or a negative errno (-EBUSY: refused for now) with the
 * request untouched.
 */
static int virtio_zc_reclaim(VirtIOZCQueue *q, VirtIOZCReq *req,
                             uint8_t status, bool detach)
{
    int ret;

    if (req->zc_pending) {
        ret = virtio_zc_offline(q->s, req);
        if (ret) {
            return ret;
        }
        virtio_zc_reshare_later(q, req);
    }
    if (req->queued && req->started) {
        if (req->sent == 0) {
            /*
             * Numbered but not one byte written: it is the last message
             * that took a sequence number, so give the number back and
             * send nothing.
             */
            q->seq--;
        } else if (req->sent < virtio_zc_msg_len(req)) {
            virtio_zc_orphan_tail(q, req);
        }
    }
    virtio_zc_complete(q, req, status, detach);
    return 0;
}

/*
 * The timer only marks the request: the reclaim runs from the bottom
 * half, because offlining may pause the vCPUs, which cannot be done from
 * a QEMU_CLOCK_VIRTUAL timer callback.
 */
static void virtio_zc_timeout(void *opaque)
{
    VirtIOZCReq *req = opaque;

    trace_virtio_zc_timeout(req, req->zc_pending, req->sent);
    req->expired = true;
    qemu_bh_schedule(req->q->s->bh);
}

static void virtio_zc_reclaim_expired(VirtIOZCQueue *q)
{
    VirtIOZCReq *req, *tmp;
    int ret;

    if (q->fd >= 0) {
        virtio_zc_offline_batch(q->s, q, true);
    }
    QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
        if (!req->expired) {
            continue;
        }
        req->expired = false;
        if (q->fd < 0) {
            /* Listening mode: no receiver came in time; nothing was sent */
            virtio_zc_complete(q, req, VIRTIO_ZC_S_DEST_ERROR, false);
            continue;
        }
        ret = virtio_zc_reclaim(q, req, VIRTIO_ZC_S_RECLAIMED, false);
        if (ret == -EBUSY) {
            /* Refused for now (postcopy, snapshot, pinned): it waits */
            timer_mod(req->timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
                      VIRTIO_ZC_RETRY_MS);
        } else if (ret) {
            /*
             * The pages cannot be offlined: give up on the destination
             * rather than on the guest's memory.
             */
            virtio_zc_disconnect(q, "offline failed", false);
            break;
        }
    }
    virtio_zc_flush(q);
}

/* Zero-copy completions [lo, hi] arrived */
static void virtio_zc_zc_done(VirtIOZCQueue *q, uint32_t lo, uint32_t hi,
                              bool copied)
{
    GList *l, *next;

    trace_virtio_zc_zc_done(q->index, lo, hi, copied);
    if (copied) {
        q->s->stat_kernel_copied++;
    }
    for (l = q->zc_sends.head; l; l = next) {
        VirtIOZCSend *snd = l->data;
        VirtIOZCReq *req = snd->req;

        next = l->next;
        if ((uint32_t)(snd->id - lo) > (uint32_t)(hi - lo)) {
            continue;
        }
        g_queue_delete_link(&q->zc_sends, l);
        virtio_zc_send_free(q, snd, false);
        if (req) {
            req->zc_pending--;
            virtio_zc_maybe_complete(q, req);
        }
    }
}

#if VIRTIO_ZC_HAVE_MSG_ZEROCOPY
static void virtio_zc_reap(VirtIOZCQueue *q)
{
    char control[CMSG_SPACE(sizeof(struct sock_extended_err)) + 64];
    struct msghdr msg;
    struct cmsghdr *cm;
    int ret;

    while (q->fd >= 0) {
        memset(&msg, 0, sizeof(msg));
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        ret = recvmsg(q->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (ret < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            struct sock_extended_err serr;

            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                  (cm->cmsg_level == SOL_IPV6 &&
                   cm->cmsg_type == IPV6_RECVERR))) {
                continue;
            }
            memcpy(&serr, CMSG_DATA(cm), sizeof(serr));
            if (serr.ee_origin != SO_EE_ORIGIN_ZEROCOPY || serr.ee_errno) {
                continue;
            }
            virtio_zc_zc_done(q, serr.ee_info, serr.ee_data,
                              serr.ee_code & SO_EE_CODE_ZEROCOPY_COPIED);
        }
    }
}
#else
static void virtio_zc_reap(VirtIOZCQueue *q)
{
}
#endif

static void virtio_zc_fd_write(void *opaque)
{
    VirtIOZCQueue *q = opaque;

    virtio_zc_flush(q);
}

static void virtio_zc_fd_read(void *opaque);

static void virtio_zc_set_fd_handlers(VirtIOZCQueue *q)
{
    qemu_set_fd_handler(q->fd, virtio_zc_fd_read,
                        q->want_write ? virtio_zc_fd_write : NULL, q);
}

static void virtio_zc_update_handlers(VirtIOZCQueue *q, bool want_write)
{
    if (q->fd >= 0 && want_write != q->want_write) {
        q->want_write = want_write;
        virtio_zc_set_fd_handlers(q);
    }
}

/*
 * The destination never sends: drain and drop what it does, and notice
 * end-of-stream and errors. Also runs on G_IO_ERR, i.e. when zero-copy
 * completions wait on the error queue.
 *
 * Errors are checked before completions: a reset connection frees the
 * unsent buffers, which produces zero-copy completions for data that
 * never reached the destination; those requests must complete with
 * DEST_ERROR, not OK.
 */
static void virtio_zc_fd_read(void *opaque)
{
    VirtIOZCQueue *q = opaque;
    char buf[512];
    ssize_t n;

    while (q->fd >= 0) {
        n = recv(q->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            continue;
        }
        if (n == 0) {
            virtio_zc_disconnect(q, "end of stream", false);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            virtio_zc_disconnect(q, strerror(errno), false);
        }
        break;
    }
    virtio_zc_reap(q);
    virtio_zc_flush(q);
}

/* Write as much of the send queue as the socket takes */
static void virtio_zc_flush(VirtIOZCQueue *q)
{
    VirtIOZC *s = q->s;
    struct iovec iov[VIRTQUEUE_MAX_SIZE + 1];
    VirtIOZCReq *req;
    struct msghdr msg;
    unsigned int cnt;
    size_t off;
    ssize_t n;
    int flags;

    while (q->fd >= 0 && (req = QTAILQ_FIRST(&q->sendq))) {
        if (!req->started) {
            req->frame.seq = cpu_to_le64(q->seq++);
            req->started = true;
            if (req->elem && !req->copied) {
                /* In listening mode the connection came after the request */
                req->zc = s->zerocopy && q->zc_enabled;
                req->copied = !req->zc;
            }
        }
        memset(&msg, 0, sizeof(msg));
        flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        if (req->sent < sizeof(req->frame)) {
            /*
             * The frame header is never sent with zero copy: it lives in
             * device memory that is freed when the request completes.
             */
            iov[0].iov_base = (char *)&req->frame + req->sent;
            iov[0].iov_len = sizeof(req->frame) - req->sent;
            cnt = 1;
            if (!req->zc) {
                cnt += iov_copy(iov + 1, ARRAY_SIZE(iov) - 1, req->iov,
                                req->iov_cnt, 0, req->data_len);
            }
        } else {
            off = req->sent - sizeof(req->frame);
            cnt = iov_copy(iov, ARRAY_SIZE(iov), req->iov, req->iov_cnt,
                           off, req->data_len - off);
            if (req->zc) {
                flags |= MSG_ZEROCOPY;
            }
        }
        msg.msg_iov = iov;
        msg.msg_iovlen = cnt;
        n = sendmsg(q->fd, &msg, flags);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                virtio_zc_update_handlers(q, true);
                return;
            }
            if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
                /* optmem or RLIMIT_MEMLOCK exhausted: copy the rest */
                trace_virtio_zc_zc_refused(req, errno);
                req->zc = false;
                req->copied = true;
                continue;
            }
            virtio_zc_disconnect(q, strerror(errno), false);
            return;
        }
        if ((flags & MSG_ZEROCOPY) && n > 0) {
            VirtIOZCSend *snd = g_new0(VirtIOZCSend, 1);

            snd->id = q->zc_next_id++;
            snd->req = req;
            g_queue_push_tail(&q->zc_sends, snd);
            req->zc_pending++;
        }
        off = req->sent;
        req->sent += n;
        if (req->sent > sizeof(req->frame)) {
            s->stat_bytes += req->sent - MAX(off, sizeof(req->frame));
        }
        trace_virtio_zc_sendmsg(req, n, !!(flags & MSG_ZEROCOPY), req->sent);
        if (req->sent == virtio_zc_msg_len(req)) {
            virtio_zc_sendq_remove(q, req);
            if (req->elem) {
                s->stat_sent++;
            }
            virtio_zc_maybe_complete(q, req);
        }
    }
    virtio_zc_update_handlers(q, false);
}

/*
 * The destination of @q is gone (or had to be given up): every request
 * the queue holds completes with DEST_ERROR, after its pages are offlined
 * if the kernel may still reference them. Other queues are not affected.
 */
static void virtio_zc_disconnect(VirtIOZCQueue *q, const char *why,
                                 bool detach)
{
    VirtIOZCReq *req, *tmp;
    VirtIODevice *vdev = VIRTIO_DEVICE(q->s);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    VirtIOZCSend *snd;

    if (q->fd < 0) {
        return;
    }
    trace_virtio_zc_disconnect(q->index, why);
    /* Best effort: the socket is aborted right after */
    virtio_zc_offline_batch(q->s, q, false);
    QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
        if (req->zc_pending && !req->offline_done) {
            /* Refused or failed as part of another batch: try again */
            virtio_zc_offline(q->s, req);
        }
        req->offline_done = false;
    }
    qemu_set_fd_handler(q->fd, NULL, NULL, NULL);
    /* Abortive close: drop unsent data instead of lingering with it */
    setsockopt(q->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(q->fd);
    q->fd = -1;
    q->want_write = false;
    /* The abortive close dropped the unsent data: nothing is referenced */
    while ((snd = g_queue_pop_head(&q->zc_sends))) {
        virtio_zc_send_free(q, snd, false);
    }
    QTAILQ_FOREACH_SAFE(req, &q->sendq, sendq_link, tmp) {
        if (!req->elem) {
            virtio_zc_sendq_remove(q, req);
            virtio_zc_req_free(req);
        }
    }
    QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
        req->zc_pending = 0;
        virtio_zc_complete(q, req, VIRTIO_ZC_S_DEST_ERROR, detach);
    }
    virtio_notify_config(vdev);
    /* Listening mode: the next receiver that connects takes this queue */
    virtio_zc_listen_update(q->s);
}

static bool virtio_zc_data_offlinable(VirtIOZCReq *req)
{
    unsigned int i;

    for (i = 0; i < req->iov_cnt; i++) {
        if (ram_offline_host_support(req->iov[i].iov_base,
                                     req->iov[i].iov_len) != RAM_OFFLINE_OK) {
            return false;
        }
    }
    return true;
}

/* Validate a request; returns the status to complete it with, or -1 */
static int virtio_zc_parse(VirtIOZCQueue *q, VirtIOZCReq *req)
{
    VirtIOZC *s = q->s;
    VirtIODevice *vdev = VIRTIO_DEVICE(s);
    VirtQueueElement *elem = req->elem;
    struct virtio_zc_req_hdr hdr;
    size_t out_len = iov_size(elem->out_sg, elem->out_num);
    size_t in_len = iov_size(elem->in_sg, elem->in_num);
    uint32_t flags, timeout;
    unsigned int nseg;

    if (in_len != 1) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: %zu device-writable bytes, "
                      "expected 1 status byte\n", __func__, in_len);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    if (out_len < sizeof(hdr)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: short header (%zu bytes)\n",
                      __func__, out_len);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    iov_to_buf(elem->out_sg, elem->out_num, 0, &hdr, sizeof(hdr));
    flags = le32_to_cpu(hdr.flags);
    timeout = le32_to_cpu(hdr.timeout_ms);
    req->frame.tag = hdr.tag;
    if (flags) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: unknown flags 0x%" PRIx32 "\n",
                      __func__, flags);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    if (timeout && !virtio_vdev_has_feature(vdev, VIRTIO_ZC_F_TIMEOUT)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: timeout without "
                      "VIRTIO_ZC_F_TIMEOUT\n", __func__);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    if (timeout > s->max_timeout_ms) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: timeout %" PRIu32 " ms above "
                      "the maximum %" PRIu32 " ms\n", __func__, timeout,
                      s->max_timeout_ms);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    req->data_len = out_len - sizeof(hdr);
    if (req->data_len == 0 || req->data_len > s->max_data_len) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: data length %zu not in 1..%"
                      PRIu32 "\n", __func__, req->data_len, s->max_data_len);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    req->iov = g_new(struct iovec, elem->out_num);
    nseg = iov_copy(req->iov, elem->out_num, elem->out_sg, elem->out_num,
                    sizeof(hdr), req->data_len);
    req->iov_cnt = nseg;
    if (nseg > s->max_segments) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: %u data segments, maximum %"
                      PRIu32 "\n", __func__, nseg, s->max_segments);
        return VIRTIO_ZC_S_BAD_REQUEST;
    }
    if (q->fd < 0 && s->listen_fd < 0) {
        return VIRTIO_ZC_S_DEST_ERROR;
    }
    /*
     * Not connected yet (listening mode): the request waits for a
     * receiver, at most until its timeout. zc is decided again when the
     * message starts, on the connection it goes to.
     */
    req->zc = s->zerocopy && virtio_zc_data_offlinable(req);
    req->copied = !req->zc;
    req->timer = timer_new_ms(QEMU_CLOCK_VIRTUAL, virtio_zc_timeout, req);
    timer_mod(req->timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
              (timeout ? timeout : s->timeout_ms));
    return -1;
}

/*
 * Whether the driver's avail.idx is at most the queue size ahead of the
 * next request the device takes; if not, the device needs a reset. The
 * virtio core checks this only when its cached copy of avail.idx is used
 * up, so a driver that moves the index while requests wait behind
 * max-inflight would have the device take stale chains, possibly the
 * same chain again and again. Read avail.idx afresh before each request.
 */
static bool virtio_zc_avail_ok(VirtIOZCQueue *q)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(q->s);
    hwaddr pa = virtio_queue_get_avail_addr(vdev, q->index);
    int num = virtio_queue_get_num(vdev, q->index);
    uint16_t avail, last;
    MemTxResult res;

    /* A packed ring has no index; an absent ring has nothing to take */
    if (virtio_vdev_has_feature(vdev, VIRTIO_F_RING_PACKED) || !pa) {
        return true;
    }
    avail = address_space_lduw_le(vdev->dma_as,
                                  pa + offsetof(struct vring_avail, idx),
                                  MEMTXATTRS_UNSPECIFIED, &res);
    last = virtio_queue_get_last_avail_idx(vdev, q->index);
    if (res != MEMTX_OK) {
        virtio_error(vdev, "virtio-zc: transmitq%u: cannot read avail.idx",
                     q->index);
        return false;
    }
    if ((uint16_t)(avail - last) > num) {
        virtio_error(vdev, "virtio-zc: transmitq%u: guest moved avail.idx "
                     "to %u, %u entries ahead of the device (queue size %d)",
                     q->index, avail, (uint16_t)(avail - last), num);
        return false;
    }
    return true;
}

/* Take requests from @q's ring, up to max-inflight held by this queue */
static void virtio_zc_process(VirtIOZCQueue *q)
{
    VirtIOZC *s = q->s;
    VirtIODevice *vdev = VIRTIO_DEVICE(s);
    VirtQueueElement *elem;
    VirtIOZCReq *req;
    int status;

    /*
     * Nothing before DRIVER_OK (virtio_device_started() would also be
     * true after a notification that came before it) or without
     * FEATURES_OK (which needs VIRTIO_F_VERSION_1), nor while the VM is
     * stopped; a device that needs a reset takes nothing more.
     */
    if ((vdev->status & VIRTIO_ZC_STARTED) != VIRTIO_ZC_STARTED ||
        !vdev->vm_running || virtio_device_disabled(vdev)) {
        return;
    }
    while (q->inflight < s->max_inflight && virtio_zc_avail_ok(q) &&
           (elem = virtqueue_pop(q->vq, sizeof(VirtQueueElement)))) {
        trace_virtio_zc_handle_tx(q->index, elem->out_num, elem->in_num);
        s->stat_requests++;
        if (iov_size(elem->in_sg, elem->in_num) == 0) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: request without a status "
                          "byte, returned unprocessed\n", __func__);
            s->stat_bad_requests++;
            s->stat_completed++;
            virtqueue_push(q->vq, elem, 0);
            virtio_notify(vdev, q->vq);
            g_free(elem);
            continue;
        }
        req = g_new0(VirtIOZCReq, 1);
        req->q = q;
        req->elem = elem;
        req->frame.magic = cpu_to_le32(VIRTIO_ZC_FRAME_MAGIC);
        QTAILQ_INSERT_TAIL(&q->reqs, req, link);
        q->inflight++;
        s->stat_inflight++;
        status = virtio_zc_parse(q, req);
        if (status >= 0) {
            if (status == VIRTIO_ZC_S_BAD_REQUEST) {
                s->stat_bad_requests++;
            }
            virtio_zc_complete(q, req, status, false);
            continue;
        }
        req->frame.len = cpu_to_le32(req->data_len);
        req->queued = true;
        QTAILQ_INSERT_TAIL(&q->sendq, req, sendq_link);
        trace_virtio_zc_request(q->index, req, le64_to_cpu(req->frame.tag),
                                req->data_len, req->iov_cnt, req->zc);
    }
    virtio_zc_flush(q);
}

static void virtio_zc_handle_tx(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtIOZC *s = VIRTIO_ZC(vdev);
    unsigned int i = virtio_get_queue_index(vq);

    if (i < s->num_queues) {
        virtio_zc_process(&s->queues[i]);
    }
}

static void virtio_zc_bh(void *opaque)
{
    VirtIOZC *s = opaque;
    unsigned int i;

    for (i = 0; i < s->num_queues; i++) {
        virtio_zc_reclaim_expired(&s->queues[i]);
        virtio_zc_process(&s->queues[i]);
    }
}

/*
 * Before the device state is saved for a migration or snapshot, every
 * request the device holds is taken back and used (status RECLAIMED),
 * while guest RAM is still to be sent: the used ring and status bytes
 * then reach the destination with the rest of RAM. A request whose pages
 * cannot be offlined now (postcopy, pinned) costs its queue the
 * destination: the connection is aborted and its requests complete with
 * DEST_ERROR. Either way nothing is left in flight.
 */
static void virtio_zc_reclaim_for_migration(VirtIOZC *s, const char *why)
{
    unsigned int i;

    trace_virtio_zc_migration_reclaim(why, s->stat_inflight);
    virtio_zc_offline_batch(s, NULL, false);
    for (i = 0; i < s->num_queues; i++) {
        VirtIOZCQueue *q = &s->queues[i];
        VirtIOZCReq *req, *tmp;

        QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
            if (virtio_zc_reclaim(q, req, VIRTIO_ZC_S_RECLAIMED, false)) {
                virtio_zc_disconnect(q, "offline refused before migration",
                                     false);
                break;
            }
        }
        virtio_zc_flush(q);
        virtio_zc_reshare_now(q);
    }
}

/*
 * No request is taken from a ring while the VM is stopped; when it runs
 * again, take what waits in the rings. When it stops for the end of a
 * migration or for a snapshot, reclaim everything in flight.
 */
static void virtio_zc_vm_state_change(void *opaque, bool running,
                                      RunState state)
{
    VirtIOZC *s = opaque;

    if (running) {
        qemu_bh_schedule(s->bh);
    } else if (state == RUN_STATE_FINISH_MIGRATE ||
               state == RUN_STATE_SAVE_VM) {
        virtio_zc_reclaim_for_migration(s, RunState_str(state));
    }
}

/*
 * A VM that is already stopped when a migration starts does not stop
 * again at its end: reclaim at the start, before RAM is sent.
 */
static int virtio_zc_migration_notify(NotifierWithReturn *notifier,
                                      MigrationEvent *e, Error **errp)
{
    VirtIOZC *s = container_of(notifier, VirtIOZC, migration_notifier);

    if (e->type == MIG_EVENT_PRECOPY_SETUP && !runstate_is_running()) {
        virtio_zc_reclaim_for_migration(s, "migration of a stopped VM");
    }
    return 0;
}

/*
 * Reset: every request the queue holds completes now, reclaimed. The
 * destination is never waited for. If an offline is refused or fails, the
 * destination is given up (abortive close) so that no guest page stays
 * referenced, and the remaining requests complete with DEST_ERROR.
 */
static void virtio_zc_reclaim_all(VirtIOZCQueue *q, bool detach)
{
    VirtIOZCReq *req, *tmp;

    virtio_zc_offline_batch(q->s, q, false);
    QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
        if (virtio_zc_reclaim(q, req, VIRTIO_ZC_S_RECLAIMED, detach)) {
            virtio_zc_disconnect(q, "offline refused during reset", detach);
            break;
        }
    }
    /* With the destination gone the rest were completed by disconnect */
    QTAILQ_FOREACH_SAFE(req, &q->reqs, link, tmp) {
        virtio_zc_complete(q, req, VIRTIO_ZC_S_DEST_ERROR, detach);
    }
}

static void virtio_zc_reset(VirtIODevice *vdev)
{
    VirtIOZC *s = VIRTIO_ZC(vdev);
    unsigned int i;

    trace_virtio_zc_reset(s->stat_inflight);
    qemu_bh_cancel(s->bh);
    /* Every queue's requests in one pass */
    virtio_zc_offline_batch(s, NULL, false);
    for (i = 0; i < s->num_queues; i++) {
        virtio_zc_reclaim_all(&s->queues[i], true);
        virtio_zc_flush(&s->queues[i]);
    }
}

static void virtio_zc_queue_reset(VirtIODevice *vdev, uint32_t queue_index)
{
    VirtIOZC *s = VIRTIO_ZC(vdev);

    if (queue_index < s->num_queues) {
        VirtIOZCQueue *q = &s->queues[queue_index];

        trace_virtio_zc_queue_reset(queue_index, q->inflight);
        virtio_zc_reclaim_all(q, true);
        virtio_zc_flush(q);
    }
}

/*
 * Requests made available before DRIVER_OK are taken once it is set (by
 * the bottom half: vdev->status is updated after this hook), without
 * waiting for another notification.
 */
static void virtio_zc_set_status(VirtIODevice *vdev, uint8_t status)
{
    VirtIOZC *s = VIRTIO_ZC(vdev);

    if ((status & VIRTIO_CONFIG_S_DRIVER_OK) &&
        !(vdev->status & VIRTIO_CONFIG_S_DRIVER_OK)) {
        if (!(status & VIRTIO_CONFIG_S_FEATURES_OK)) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s: DRIVER_OK without "
                          "FEATURES_OK: no request will be taken\n",
                          __func__);
        }
        qemu_bh_schedule(s->bh);
    }
}

/* VIRTIO_F_VERSION_1 is required: without it FEATURES_OK does not stick */
static int virtio_zc_validate_features(VirtIODevice *vdev)
{
    if (!virtio_vdev_has_feature(vdev, VIRTIO_F_VERSION_1)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: FEATURES_OK refused: the driver "
                      "did not accept VIRTIO_F_VERSION_1\n", __func__);
        return -EINVAL;
    }
    return 0;
}

static void virtio_zc_get_config(VirtIODevice *vdev, uint8_t *config)
{
    VirtIOZC *s = VIRTIO_ZC(vdev);
    uint32_t mask = 0;
    unsigned int i;
    struct virtio_zc_config cfg;

    for (i = 0; i < s->num_queues; i++) {
        if (s->queues[i].fd >= 0) {
            mask |= 1u << i;
        }
    }
    cfg = (struct virtio_zc_config) {
        .max_inflight = cpu_to_le32(s->max_inflight),
        .max_segments = cpu_to_le32(s->max_segments),
        .max_data_len = cpu_to_le32(s->max_data_len),
        .default_timeout_ms = cpu_to_le32(s->timeout_ms),
        .max_timeout_ms = cpu_to_le32(s->max_timeout_ms),
        .dest_state = cpu_to_le32(s->num_queues &&
                                  mask == MAKE_64BIT_MASK(0, s->num_queues) ?
                                  VIRTIO_ZC_DEST_CONNECTED :
                                  VIRTIO_ZC_DEST_DISCONNECTED),
        .num_queues = cpu_to_le32(s->num_queues),
        .dest_mask = cpu_to_le32(mask),
    };
    memcpy(config, &cfg, sizeof(cfg));
}

static uint64_t virtio_zc_get_features(VirtIODevice *vdev, uint64_t features,
                                       Error **errp)
{
    /* Modern-only: a legacy transport (virtio-mmio by default) won't do */
    if (!virtio_has_feature(features, VIRTIO_F_VERSION_1)) {
        error_setg(errp, "virtio-zc needs a virtio 1.0 transport (for "
                   "virtio-mmio, set force-legacy=false)");
        return features;
    }
    virtio_add_feature(&features, VIRTIO_ZC_F_TIMEOUT);
    return features;
}

/* Make the connected socket @fd the destination of @q */
static bool virtio_zc_attach(VirtIOZCQueue *q, int fd, const char *peer,
                             Error **errp)
{
    VirtIOZC *s = q->s;
    int one = 1;

    qemu_socket_set_nonblock(fd);
#ifdef CONFIG_LINUX
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
#endif
    if (s->sndbuf &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf, sizeof(s->sndbuf))) {
        error_setg_errno(errp, errno, "virtio-zc: cannot set SO_SNDBUF");
        close(fd);
        return false;
    }
    q->zc_enabled = false;
#if VIRTIO_ZC_HAVE_MSG_ZEROCOPY
    if (s->zerocopy &&
        setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0) {
        q->zc_enabled = true;
    }
#endif
    q->fd = fd;
    q->want_write = false;
    /* A new stream: frames and zero-copy ids start from 0 again */
    q->seq = 0;
    q->zc_next_id = 0;
    virtio_zc_set_fd_handlers(q);
    trace_virtio_zc_connect(q->index, peer, q->zc_enabled);
    return true;
}

static SocketAddress *virtio_zc_parse_inet(const char *str, const char *prop,
                                           Error **errp)
{
    SocketAddress *addr = socket_parse(str, errp);

    if (addr && addr->type != SOCKET_ADDRESS_TYPE_INET) {
        error_setg(errp, "virtio-zc: %s must be host:port", prop);
        qapi_free_SocketAddress(addr);
        return NULL;
    }
    return addr;
}

static bool virtio_zc_connect(VirtIOZCQueue *q, Error **errp)
{
    SocketAddress *addr;
    int fd;

    addr = virtio_zc_parse_inet(q->dest, "dest", errp);
    if (!addr) {
        return false;
    }
    fd = socket_connect(addr, errp);
    qapi_free_SocketAddress(addr);
    if (fd < 0) {
        return false;
    }
    return virtio_zc_attach(q, fd, q->dest, errp);
}

/* Listening mode: the first transmitq without a receiver, or NULL */
static VirtIOZCQueue *virtio_zc_free_queue(VirtIOZC *s)
{
    unsigned int i;

    for (i = 0; i < s->num_queues; i++) {
        if (s->queues[i].fd < 0) {
            return &s->queues[i];
        }
    }
    return NULL;
}

/* A receiver connects: it takes the first transmitq without one */
static void virtio_zc_accept(void *opaque)
{
    VirtIOZC *s = opaque;
    VirtIOZCQueue *q = virtio_zc_free_queue(s);
    Error *err = NULL;
    int fd;

    if (!q) {
        virtio_zc_listen_update(s);
        return;
    }
    fd = qemu_accept(s->listen_fd, NULL, NULL);
    if (fd < 0) {
        return;
    }
    if (!virtio_zc_attach(q, fd, s->listen, &err)) {
        warn_report_err(err);
        return;
    }
    virtio_notify_config(VIRTIO_DEVICE(s));
    virtio_zc_listen_update(s);
    virtio_zc_flush(q);
}

/* Accept connections while a transmitq has no receiver */
static void virtio_zc_listen_update(VirtIOZC *s)
{
    if (s->listen_fd >= 0) {
        qemu_set_fd_handler(s->listen_fd, virtio_zc_free_queue(s) ?
                            virtio_zc_accept : NULL, NULL, s);
    }
}

/* Split dest into its destinations: "a;b" or "a,b" (",," on -device) */
static bool virtio_zc_parse_dests(VirtIOZC *s, Error **errp)
{
    unsigned int i, n;

    s->dests = NULL;
    if (!s->dest || !*s->dest) {
        return true;
    }
    s->dests = g_strsplit_set(s->dest, ";,", -1);
    n = g_strv_length(s->dests);
    for (i = 0; i < n; i++) {
        g_strstrip(s->dests[i]);
        if (!*s->dests[i]) {
            error_setg(errp, "virtio-zc: dest has an empty entry");
            return false;
        }
    }
    if (n > s->num_queues) {
        error_setg(errp, "virtio-zc: dest names %u destinations for %"
                   PRIu32 " queues (num-queues)", n, s->num_queues);
        return false;
    }
    return true;
}

static void virtio_zc_queues_free(VirtIOZC *s)
{
    VirtIOZCReq *req, *tmp;
    VirtIOZCSend *snd;
    unsigned int i;

    for (i = 0; s->queues && i < s->num_queues; i++) {
        VirtIOZCQueue *q = &s->queues[i];

        QTAILQ_FOREACH_SAFE(req, &q->sendq, sendq_link, tmp) {
            virtio_zc_sendq_remove(q, req);
            virtio_zc_req_free(req);
        }
        /*
         * The socket is closed below and may still send: pages it
         * references are taken out of the file before it is shared again
         */
        while ((snd = g_queue_pop_head(&q->zc_sends))) {
            virtio_zc_send_free(q, snd, true);
        }
        if (q->fd >= 0) {
            qemu_set_fd_handler(q->fd, NULL, NULL, NULL);
            close(q->fd);
            q->fd = -1;
        }
    }
    if (s->listen_fd >= 0) {
        qemu_set_fd_handler(s->listen_fd, NULL, NULL, NULL);
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    g_free(s->queues);
    s->queues = NULL;
    g_strfreev(s->dests);
    s->dests = NULL;
}

static void virtio_zc_realize(DeviceState *dev, Error **errp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOZC *s = VIRTIO_ZC(dev);
    unsigned int i, ndests;

    if (s->num_queues < 1 || s->num_queues > VIRTIO_ZC_MAX_QUEUES) {
        error_setg(errp, "virtio-zc: num-queues must be in 1..%d",
                   VIRTIO_ZC_MAX_QUEUES);
        return;
    }
    if (s->max_inflight < 1 || s->max_inflight > VIRTIO_ZC_QUEUE_SIZE) {
        error_setg(errp, "virtio-zc: max-inflight must be in 1..%d",
                   VIRTIO_ZC_QUEUE_SIZE);
        return;
    }
    if (s->max_segments < 1 || s->max_segments > VIRTIO_ZC_QUEUE_SIZE - 2) {
        error_setg(errp, "virtio-zc: max-segments must be in 1..%d",
                   VIRTIO_ZC_QUEUE_SIZE - 2);
        return;
    }
    if (s->max_data_len < 1 || s->max_data_len > VIRTIO_ZC_MAX_DATA_LEN) {
        error_setg(errp, "virtio-zc: max-data-len must be in 1..%u",
                   VIRTIO_ZC_MAX_DATA_LEN);
        return;
    }
    if (s->spare_pool > VIRTIO_ZC_MAX_SPARE_POOL) {
        error_setg(errp, "virtio-zc: spare-pool must be at most 512 MiB");
        return;
    }
    if (s->max_timeout_ms < 1 || s->max_timeout_ms > VIRTIO_ZC_MAX_TIMEOUT_MS) {
        error_setg(errp, "virtio-zc: max-timeout-ms must be in 1..%u",
                   VIRTIO_ZC_MAX_TIMEOUT_MS);
        return;
    }
    if (s->timeout_ms < 1 || s->timeout_ms > s->max_timeout_ms) {
        error_setg(errp, "virtio-zc: timeout-ms must be in 1..%" PRIu32
                   " (max-timeout-ms)", s->max_timeout_ms);
        return;
    }
    if (s->sndbuf > INT_MAX) {
        error_setg(errp, "virtio-zc: sndbuf too large");
        return;
    }
    s->offline_method = PAGE_OFFLINE_AUTO;
    if (s->offline_method_str) {
        int m;

        for (m = 0; m < PAGE_OFFLINE__MAX; m++) {
            if (!strcmp(s->offline_method_str, page_offline_method_name(m))) {
                break;
            }
        }
        if (m == PAGE_OFFLINE__MAX) {
            error_setg(errp, "virtio-zc: x-offline-method must be auto, "
                       "uffd-move, uffd-splice, uffd-wp or copy");
            return;
        }
        s->offline_method = m;
    }
    if (s->listen && *s->listen && s->dest && *s->dest) {
        error_setg(errp, "virtio-zc: listen and dest exclude each other");
        return;
    }
    if (!virtio_zc_parse_dests(s, errp)) {
        g_strfreev(s->dests);
        s->dests = NULL;
        return;
    }
    ndests = s->dests ? g_strv_length(s->dests) : 0;
    s->queues = g_new0(VirtIOZCQueue, s->num_queues);
    for (i = 0; i < s->num_queues; i++) {
        VirtIOZCQueue *q = &s->queues[i];

        q->s = s;
        q->index = i;
        q->fd = -1;
        QTAILQ_INIT(&q->reqs);
        QTAILQ_INIT(&q->sendq);
        g_queue_init(&q->zc_sends);
        q->dest = ndests ? s->dests[i % ndests] : NULL;
    }
    for (i = 0; i < s->num_queues; i++) {
        if (s->queues[i].dest && !virtio_zc_connect(&s->queues[i], errp)) {
            error_prepend(errp, "transmitq%u: ", i);
            virtio_zc_queues_free(s);
            return;
        }
    }
    if (s->listen && *s->listen) {
        SocketAddress *addr = virtio_zc_parse_inet(s->listen, "listen", errp);

        if (addr) {
            s->listen_fd = socket_listen(addr, s->num_queues, errp);
            qapi_free_SocketAddress(addr);
        }
        if (s->listen_fd < 0) {
            virtio_zc_queues_free(s);
            return;
        }
        qemu_socket_set_nonblock(s->listen_fd);
        virtio_zc_listen_update(s);
    }

    virtio_init(vdev, VIRTIO_ID_ZC, sizeof(struct virtio_zc_config));
    for (i = 0; i < s->num_queues; i++) {
        s->queues[i].vq = virtio_add_queue(vdev, VIRTIO_ZC_QUEUE_SIZE,
                                           virtio_zc_handle_tx);
    }
    s->bh = qemu_bh_new_guarded(virtio_zc_bh, s, &dev->mem_reentrancy_guard);
    s->vmstate_entry =
        qdev_add_vm_change_state_handler(dev, virtio_zc_vm_state_change, s);
    migration_add_notifier(&s->migration_notifier, virtio_zc_migration_notify);
    /*
     * The engine keeps spare-pool bytes of spares faulted in, and grows
     * them on demand to what one reclaim could need (every request of
     * every queue at max-data-len), then faults them in now, not during
     * a reclaim
     */
    s->spare_pool_most = MAX((int64_t)s->spare_pool,
                             (int64_t)s->max_inflight * s->num_queues *
                             s->max_data_len);
    page_offline_pool_reserve(s->spare_pool, s->spare_pool_most);
    page_offline_prepare();
}

static void virtio_zc_unrealize(DeviceState *dev)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOZC *s = VIRTIO_ZC(dev);
    unsigned int i;

    virtio_zc_offline_batch(s, NULL, false);
    for (i = 0; i < s->num_queues; i++) {
        virtio_zc_reclaim_all(&s->queues[i], true);
    }
    migration_remove_notifier(&s->migration_notifier);
    qemu_del_vm_change_state_handler(s->vmstate_entry);
    page_offline_pool_reserve(-(int64_t)s->spare_pool, -s->spare_pool_most);
    virtio_zc_queues_free(s);
    qemu_bh_delete(s->bh);
    for (i = 0; i < s->num_queues; i++) {
        virtio_del_queue(vdev, i);
    }
    virtio_cleanup(vdev);
}

static void virtio_zc_instance_init(Object *obj)
{
    /* Read-only counters (docs/system/devices/virtio-zc.rst) */
    static const struct {
        const char *name;
        size_t offset;
        const char *desc;
    } counters[] = {
        { "requests", offsetof(VirtIOZC, stat_requests),
          "Requests taken from the rings (read-only, as all counters; "
          "totals over the transmit queues)" },
        { "completed", offsetof(VirtIOZC, stat_completed),
          "Requests completed, with any status" },
        { "sent", offsetof(VirtIOZC, stat_sent),
          "Requests whose message was written to the destination whole" },
        { "bytes", offsetof(VirtIOZC, stat_bytes),
          "Data bytes written to the destinations" },
        { "reclaimed", offsetof(VirtIOZC, stat_reclaimed),
          "Requests completed with status RECLAIMED" },
        { "copied", offsetof(VirtIOZC, stat_copied),
          "Requests completed with status COPIED" },
        { "kernel-copied", offsetof(VirtIOZC, stat_kernel_copied),
          "Zero-copy completion notifications in which the kernel says "
          "it copied" },
        { "dest-errors", offsetof(VirtIOZC, stat_dest_errors),
          "Requests completed with status DEST_ERROR" },
        { "bad-requests", offsetof(VirtIOZC, stat_bad_requests),
          "Malformed requests (status BAD_REQUEST or no status byte)" },
        { "offline-refused", offsetof(VirtIOZC, stat_offline_refused),
          "Offline attempts refused for now (postcopy, background "
          "snapshot, pinned pages); the request waits" },
        { "offline-failed", offsetof(VirtIOZC, stat_offline_failed),
          "Offline attempts that failed; the destination is given up" },
        { "offlined-bytes", offsetof(VirtIOZC, stat_offlined_bytes),
          "Data bytes whose pages were offlined" },
        { "reshared-bytes", offsetof(VirtIOZC, stat_reshared_bytes),
          "Data bytes of shared guest RAM (memfd, share=on) that an offline "
          "had mapped privately and that are mapped shared again" },
        { "in-flight", offsetof(VirtIOZC, stat_inflight),
          "Requests the device holds now" },
    };
    VirtIOZC *s = VIRTIO_ZC(obj);
    int i;

    s->listen_fd = -1;
    for (i = 0; i < ARRAY_SIZE(counters); i++) {
        object_property_add_uint64_ptr(obj, counters[i].name,
                                       (uint64_t *)((char *)obj +
                                                    counters[i].offset),
                                       OBJ_PROP_FLAG_READ);
        object_property_set_description(obj, counters[i].name,
                                        counters[i].desc);
    }
}

/*
 * The requests were reclaimed when the VM stopped (see
 * virtio_zc_vm_state_change). Anything still in flight now could not be
 * completed on the destination, and a used-ring write now would miss
 * RAM, which has been sent: refuse the migration or snapshot.
 */
static int virtio_zc_pre_save(void *opaque)
{
    VirtIOZC *s = opaque;

    if (s->stat_inflight) {
        error_report("virtio-zc: cannot save the device state with %"
                     PRIu64 " requests in flight: they could not be "
                     "reclaimed (offlining is refused during a background "
                     "snapshot; savevm of a stopped VM does not reclaim)",
                     s->stat_inflight);
        return -EBUSY;
    }
    return 0;
}

/* Device state: the configuration check and the counters */
static const VMStateDescription vmstate_virtio_zc_device = {
    .name = "virtio-zc-device",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = virtio_zc_pre_save,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32_EQUAL(num_queues, VirtIOZC, NULL),
        VMSTATE_UINT64(stat_requests, VirtIOZC),
        VMSTATE_UINT64(stat_completed, VirtIOZC),
        VMSTATE_UINT64(stat_sent, VirtIOZC),
        VMSTATE_UINT64(stat_bytes, VirtIOZC),
        VMSTATE_UINT64(stat_reclaimed, VirtIOZC),
        VMSTATE_UINT64(stat_copied, VirtIOZC),
        VMSTATE_UINT64(stat_kernel_copied, VirtIOZC),
        VMSTATE_UINT64(stat_dest_errors, VirtIOZC),
        VMSTATE_UINT64(stat_bad_requests, VirtIOZC),
        VMSTATE_UINT64(stat_offline_refused, VirtIOZC),
        VMSTATE_UINT64(stat_offline_failed, VirtIOZC),
        VMSTATE_UINT64(stat_offlined_bytes, VirtIOZC),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_virtio_zc = {
    .name = "virtio-zc",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_VIRTIO_DEVICE,
        VMSTATE_END_OF_LIST()
    },
};

static const Property virtio_zc_properties[] = {
    DEFINE_PROP_STRING("dest", VirtIOZC, dest),
    DEFINE_PROP_STRING("listen", VirtIOZC, listen),
    DEFINE_PROP_UINT32("num-queues", VirtIOZC, num_queues, 1),
    DEFINE_PROP_UINT32("max-inflight", VirtIOZC, max_inflight, 64),
    DEFINE_PROP_UINT32("max-segments", VirtIOZC, max_segments, 64),
    DEFINE_PROP_UINT32("max-data-len", VirtIOZC, max_data_len, 1 << 20),
    DEFINE_PROP_UINT32("timeout-ms", VirtIOZC, timeout_ms, 1000),
    DEFINE_PROP_UINT32("max-timeout-ms", VirtIOZC, max_timeout_ms, 60000),
    DEFINE_PROP_UINT32("sndbuf", VirtIOZC, sndbuf, 0),
    DEFINE_PROP_BOOL("zerocopy", VirtIOZC, zerocopy, true),
    DEFINE_PROP_SIZE("spare-pool", VirtIOZC, spare_pool,
                     VIRTIO_ZC_SPARE_POOL),
    DEFINE_PROP_STRING("x-offline-method", VirtIOZC, offline_method_str),
};

static void virtio_zc_class_init(ObjectClass *klass, void *data)
{
    /* What -device virtio-zc,help prints for each property */
    static const struct {
        const char *name;
        const char *desc;
    } descs[] = {
        { "dest", "TCP destinations host:port[;host:port...]: transmitq i "
          "connects to entry i mod n of the n listed" },
        { "listen", "host:port to listen on instead of dest: each receiver "
          "that connects takes the lowest transmitq without one" },
        { "num-queues", "Number of transmit queues, 1 to 32, each with its "
          "own connection, in-flight bound and timeouts" },
        { "max-inflight", "Requests the device holds at once per transmit "
          "queue, 1 to 256" },
        { "max-segments", "Data segments (descriptors) per request, "
          "1 to 254" },
        { "max-data-len", "Data bytes per request, 1 to 64 MiB" },
        { "timeout-ms", "Reclaim timeout of a request that sets none, in "
          "ms of guest time, 1 to max-timeout-ms" },
        { "max-timeout-ms", "Largest timeout a request may set, in ms, "
          "1 to 3600000" },
        { "sndbuf", "SO_SNDBUF of each connection in bytes; 0 keeps the "
          "system's default" },
        { "zerocopy", "on/off: send with MSG_ZEROCOPY; off copies every "
          "request (status COPIED)" },
        { "spare-pool", "Bytes of spare pages kept faulted in (QEMU memory) "
          "for reclaims, up to 512 MiB; a reclaim that finds too few grows "
          "them, up to max-inflight x num-queues x max-data-len" },
        { "x-offline-method", "Offline method tried first, for debugging: "
          "auto, uffd-move, uffd-splice, uffd-wp or copy (vCPUs paused); "
          "auto follows if it fails" },
    };
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioDeviceClass *vdc = VIRTIO_DEVICE_CLASS(klass);
    int i;

    dc->desc = "Zero-copy transmit with reclaim by page offlining";
    dc->vmsd = &vmstate_virtio_zc;
    device_class_set_props(dc, virtio_zc_properties);
    for (i = 0; i < ARRAY_SIZE(descs); i++) {
        object_class_property_set_description(klass, descs[i].name,
                                              descs[i].desc);
    }
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    vdc->realize = virtio_zc_realize;
    vdc->unrealize = virtio_zc_unrealize;
    vdc->get_features = virtio_zc_get_features;
    vdc->get_config = virtio_zc_get_config;
    vdc->set_status = virtio_zc_set_status;
    vdc->validate_features = virtio_zc_validate_features;
    vdc->reset = virtio_zc_reset;
    vdc->queue_reset = virtio_zc_queue_reset;
    vdc->vmsd = &vmstate_virtio_zc_device;
}

static const TypeInfo virtio_zc_types[] = {
    {
        .name = TYPE_VIRTIO_ZC,
        .parent = TYPE_VIRTIO_DEVICE,
        .instance_size = sizeof(VirtIOZC),
        .instance_init = virtio_zc_instance_init,
        .class_init = virtio_zc_class_init,
    },
};

DEFINE_TYPES(virtio_zc_types)
