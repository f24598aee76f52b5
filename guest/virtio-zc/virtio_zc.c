// SPDX-License-Identifier: GPL-2.0
/*
 * virtio-zc guest driver: zero-copy transmitter (virtio device ID 61).
 *
 * Written from docs/specs/virtio-zc.rst only.  Each device gets a misc
 * character device /dev/virtio-zcN; user space mmap()s the driver's buffer
 * pool, posts requests whose data descriptors point at pool pages
 * (VZC_IOC_SEND) and collects every completion exactly once (VZC_IOC_WAIT).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/miscdevice.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/ktime.h>
#include <linux/uaccess.h>
#include <linux/scatterlist.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/version.h>

#include "virtio_zc_user.h"

#define VIRTIO_ID_ZC		61	/* provisional, see the spec */
#define VIRTIO_ZC_F_TIMEOUT	0

struct virtio_zc_config {
	__le32 max_inflight;
	__le32 max_segments;
	__le32 max_data_len;
	__le32 default_timeout_ms;
	__le32 max_timeout_ms;
	__le32 dest_state;
};

struct virtio_zc_req_hdr {
	__le32 flags;
	__le32 timeout_ms;
	__le64 tag;
};

#define VZC_STATUS_UNSET	0xff	/* never a device status */
#define VZC_POOL_CHUNK_ORDER	4
#define VZC_MAX_SEGMENTS	254	/* the spec's largest max_segments */

static unsigned int pool_kb = 4096;
module_param(pool_kb, uint, 0444);
MODULE_PARM_DESC(pool_kb, "Buffer pool per device in KiB (default 4096)");

static bool allow_malformed;
module_param(allow_malformed, bool, 0444);
MODULE_PARM_DESC(allow_malformed,
		 "Accept VZC_SEND_F_* flags that post malformed requests (testing)");

struct vzc_req {
	struct list_head node;
	struct virtio_zc_req_hdr hdr;	/* device-readable */
	u8 status[2];			/* device-writable: status[0] */
	struct vzc_completion c;
	ktime_t posted;
	unsigned int nsegs;
	struct scatterlist sg[];
};

struct vzc_dev {
	struct kref ref;
	struct virtio_device *vdev;	/* holds a reference until release */
	struct virtqueue *vq;		/* NULL while reset or after remove */
	struct miscdevice misc;
	char name[24];
	int index;
	bool registered;

	struct mutex lock;		/* vq pointer, dead, config cache */
	spinlock_t qlock;		/* vq operations, lists, counters */
	struct list_head inflight;
	struct list_head done;
	wait_queue_head_t wq;
	bool dead;
	struct work_struct config_work;

	struct virtio_zc_config cfg;	/* CPU-endian copy */
	bool has_timeout;
	u64 next_id;
	u64 posted, completed, in_flight, undelivered, resets;
	u64 status_count[6];

	struct page **pages;
	unsigned int npages;
};

static DEFINE_IDA(vzc_ida);

static void vzc_free_pool(struct vzc_dev *vzc)
{
	unsigned int i;

	if (!vzc->pages)
		return;
	for (i = 0; i < vzc->npages; i++)
		if (vzc->pages[i])
			__free_page(vzc->pages[i]);
	kvfree(vzc->pages);
	vzc->pages = NULL;
}

static int vzc_alloc_pool(struct vzc_dev *vzc)
{
	unsigned int i = 0, n = DIV_ROUND_UP(pool_kb, PAGE_SIZE / 1024);

	if (!n)
		return -EINVAL;
	vzc->pages = kvcalloc(n, sizeof(*vzc->pages), GFP_KERNEL);
	if (!vzc->pages)
		return -ENOMEM;
	vzc->npages = n;
	/* Chunks keep neighbouring pages contiguous: fewer data segments. */
	while (i < n) {
		unsigned int order = VZC_POOL_CHUNK_ORDER, j;
		struct page *page = NULL;

		while (order && (1u << order) > n - i)
			order--;
		for (; !page; order--) {
			gfp_t gfp = GFP_KERNEL | __GFP_ZERO;

			if (order)
				gfp |= __GFP_NORETRY | __GFP_NOWARN;
			page = alloc_pages(gfp, order);
			if (page || !order)
				break;
		}
		if (!page)
			return -ENOMEM;
		if (order)
			split_page(page, order);
		for (j = 0; j < (1u << order); j++)
			vzc->pages[i++] = page + j;
	}
	return 0;
}

static void vzc_release(struct kref *ref)
{
	struct vzc_dev *vzc = container_of(ref, struct vzc_dev, ref);
	struct vzc_req *req, *tmp;

	list_for_each_entry_safe(req, tmp, &vzc->done, node)
		kfree(req);
	/* Pages still mapped by user space live on through their refcount. */
	vzc_free_pool(vzc);
	put_device(&vzc->vdev->dev);
	ida_free(&vzc_ida, vzc->index);
	kfree(vzc);
}

/* Called with qlock held: move a finished request to the done list. */
static void vzc_finish(struct vzc_dev *vzc, struct vzc_req *req,
		       u32 used_len, u32 flags)
{
	u32 status;

	if (flags) {
		/* Not used through the ring: the status byte is all we have. */
		status = req->status[0] == VZC_STATUS_UNSET ?
			 VZC_ST_CANCELED : req->status[0];
	} else if (used_len == 0) {
		status = VZC_ST_NO_STATUS;
	} else {
		status = req->status[0];
	}
	req->c.status = status;
	req->c.used_len = used_len;
	req->c.flags = flags;
	req->c.elapsed_ns = ktime_to_ns(ktime_sub(ktime_get(), req->posted));
	vzc->status_count[min_t(u32, status, 5)]++;
	vzc->in_flight--;
	vzc->completed++;
	vzc->undelivered++;
	list_move_tail(&req->node, &vzc->done);
}

static void vzc_vq_done(struct virtqueue *vq)
{
	struct vzc_dev *vzc = vq->vdev->priv;
	struct vzc_req *req;
	unsigned long irqflags;
	unsigned int len;
	bool any = false;

	spin_lock_irqsave(&vzc->qlock, irqflags);
	do {
		virtqueue_disable_cb(vq);
		while ((req = virtqueue_get_buf(vq, &len))) {
			vzc_finish(vzc, req, len, 0);
			any = true;
		}
	} while (!virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&vzc->qlock, irqflags);
	/* Also wakes senders waiting for ring space. */
	if (any)
		wake_up_all(&vzc->wq);
}

/*
 * After a device reset: requests the device used are on the used ring; the
 * ones it held got their status byte written but were not used (spec,
 * "Device reset and queue reset"); the ones it never took keep the unset
 * status.  Every one of them completes here, once.  Called with lock held.
 */
static void vzc_drain_after_reset(struct vzc_dev *vzc, u32 flags)
{
	struct virtqueue *vq = vzc->vq;
	struct vzc_req *req;
	unsigned int len;

	spin_lock_irq(&vzc->qlock);
	while ((req = virtqueue_get_buf(vq, &len)))
		vzc_finish(vzc, req, len, 0);
	while ((req = virtqueue_detach_unused_buf(vq)))
		vzc_finish(vzc, req, 0, flags);
	WARN_ON(!list_empty(&vzc->inflight));
	spin_unlock_irq(&vzc->qlock);
	wake_up_all(&vzc->wq);
}

static void vzc_read_config(struct vzc_dev *vzc)
{
	struct virtio_device *vdev = vzc->vdev;
	struct virtio_zc_config *c = &vzc->cfg;

	virtio_cread_le(vdev, struct virtio_zc_config, max_inflight,
			&c->max_inflight);
	virtio_cread_le(vdev, struct virtio_zc_config, max_segments,
			&c->max_segments);
	virtio_cread_le(vdev, struct virtio_zc_config, max_data_len,
			&c->max_data_len);
	virtio_cread_le(vdev, struct virtio_zc_config, default_timeout_ms,
			&c->default_timeout_ms);
	virtio_cread_le(vdev, struct virtio_zc_config, max_timeout_ms,
			&c->max_timeout_ms);
	virtio_cread_le(vdev, struct virtio_zc_config, dest_state,
			&c->dest_state);
}

static int vzc_setup_vq(struct vzc_dev *vzc)
{
	struct virtqueue *vq;

	vq = virtio_find_single_vq(vzc->vdev, vzc_vq_done, "transmitq");
	if (IS_ERR(vq))
		return PTR_ERR(vq);
	/* The device processes nothing before DRIVER_OK: set it first. */
	virtio_device_ready(vzc->vdev);
	mutex_lock(&vzc->lock);
	vzc_read_config(vzc);
	spin_lock_irq(&vzc->qlock);
	vzc->vq = vq;
	spin_unlock_irq(&vzc->qlock);
	mutex_unlock(&vzc->lock);
	wake_up_all(&vzc->wq);
	return 0;
}

/* Reset the device and complete everything posted.  Called with lock held. */
static void vzc_quiesce(struct vzc_dev *vzc, u32 flags)
{
	if (!vzc->vq)
		return;
	virtio_reset_device(vzc->vdev);
	vzc_drain_after_reset(vzc, flags);
	spin_lock_irq(&vzc->qlock);
	vzc->vq = NULL;
	vzc->resets++;
	spin_unlock_irq(&vzc->qlock);
	vzc->vdev->config->del_vqs(vzc->vdev);
}

static void vzc_config_work(struct work_struct *work)
{
	struct vzc_dev *vzc = container_of(work, struct vzc_dev, config_work);
	bool needs_reset;
	u32 old, state;

	mutex_lock(&vzc->lock);
	if (vzc->dead || !vzc->vq) {
		mutex_unlock(&vzc->lock);
		return;
	}
	old = vzc->cfg.dest_state;
	virtio_cread_le(vzc->vdev, struct virtio_zc_config, dest_state,
			&state);
	vzc->cfg.dest_state = state;
	needs_reset = vzc->vdev->config->get_status(vzc->vdev) &
		      VIRTIO_CONFIG_S_NEEDS_RESET;
	mutex_unlock(&vzc->lock);
	if (old != state)
		dev_info(&vzc->vdev->dev, "destination %s\n",
			 state == 1 ? "connected" : "disconnected");
	/* Requests may never complete now: user space decides to reset. */
	if (needs_reset)
		dev_warn(&vzc->vdev->dev,
			 "device needs reset (VZC_IOC_RESET)\n");
	wake_up_all(&vzc->wq);
}

static void vzc_config_changed(struct virtio_device *vdev)
{
	struct vzc_dev *vzc = vdev->priv;

	schedule_work(&vzc->config_work);
}

/* ---- character device ---- */

static int vzc_open(struct inode *inode, struct file *file)
{
	struct vzc_dev *vzc = container_of(file->private_data,
					   struct vzc_dev, misc);

	/* misc_open() holds misc_mtx: remove cannot have dropped its ref. */
	kref_get(&vzc->ref);
	file->private_data = vzc;
	return nonseekable_open(inode, file);
}

static int vzc_close(struct inode *inode, struct file *file)
{
	struct vzc_dev *vzc = file->private_data;

	kref_put(&vzc->ref, vzc_release);
	return 0;
}

static int vzc_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vzc_dev *vzc = file->private_data;

	/* A private mapping would copy on write: user writes must land. */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP;
#endif
	return vm_map_pages(vma, vzc->pages, vzc->npages);
}

static __poll_t vzc_poll(struct file *file, poll_table *wait)
{
	struct vzc_dev *vzc = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &vzc->wq, wait);
	spin_lock_irq(&vzc->qlock);
	if (!list_empty(&vzc->done))
		mask |= EPOLLIN | EPOLLRDNORM;
	else if (vzc->dead)
		mask |= EPOLLHUP;
	spin_unlock_irq(&vzc->qlock);
	return mask;
}

/*
 * Data segments of [offset, offset + length) in the pool: one per run of
 * physically contiguous pages, each at most seg_max bytes (0: no limit).
 * With sg NULL, only counts them.
 */
static unsigned int vzc_build_sg(struct vzc_dev *vzc, struct scatterlist *sg,
				 u64 offset, u32 length, u32 seg_max)
{
	unsigned long prev_pfn = 0;
	bool can_grow = false;
	unsigned int n = 0;
	u32 cur = 0;

	while (length) {
		unsigned int pi = offset >> PAGE_SHIFT;
		unsigned int po = offset & ~PAGE_MASK;
		unsigned long pfn = page_to_pfn(vzc->pages[pi]);
		u32 chunk = min_t(u32, length, PAGE_SIZE - po);
		bool merge = can_grow && po == 0 && pfn == prev_pfn + 1 &&
			     (!seg_max || cur < seg_max);

		if (seg_max)
			chunk = min(chunk, merge ? seg_max - cur : seg_max);
		if (merge) {
			cur += chunk;
			if (sg)
				sg[n - 1].length += chunk;
		} else {
			if (sg)
				sg_set_page(&sg[n], vzc->pages[pi], chunk, po);
			n++;
			cur = chunk;
		}
		/* Only a segment that ends on a page boundary can grow. */
		can_grow = po + chunk == PAGE_SIZE;
		prev_pfn = pfn;
		offset += chunk;
		length -= chunk;
	}
	return n;
}

/* Ring space may have appeared (or the queue went away). */
static bool vzc_send_wakeup(struct vzc_dev *vzc, u64 completed)
{
	bool r;

	spin_lock_irq(&vzc->qlock);
	r = vzc->dead || !vzc->vq || vzc->completed != completed;
	spin_unlock_irq(&vzc->qlock);
	return r;
}

static long vzc_send(struct vzc_dev *vzc, struct vzc_send __user *uarg)
{
	struct scatterlist hdr_sg, status_sg, *sgs[3];
	struct vzc_send a;
	struct vzc_req *req;
	unsigned int nsegs, limit;
	bool unchecked;
	int err;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if ((a.flags & ~VZC_SEND_F_ALL) || a.reserved)
		return -EINVAL;
	if (a.flags && !allow_malformed)
		return -EPERM;
	unchecked = a.flags & VZC_SEND_F_UNCHECKED;
	if (!a.length || a.offset >= (u64)vzc->npages << PAGE_SHIFT ||
	    a.length > ((u64)vzc->npages << PAGE_SHIFT) - a.offset)
		return -EINVAL;
	/* Early limits (checked again under the lock) bound the allocation. */
	limit = unchecked ? VZC_MAX_SEGMENTS * 4 : VZC_MAX_SEGMENTS;
	if ((!unchecked && a.length > READ_ONCE(vzc->cfg.max_data_len)) ||
	    (a.seg_max && a.length / a.seg_max > limit))
		return -E2BIG;
	nsegs = vzc_build_sg(vzc, NULL, a.offset, a.length, a.seg_max);
	if (nsegs > limit)
		return -E2BIG;
	req = kzalloc(struct_size(req, sg, nsegs), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	sg_init_table(req->sg, nsegs);
	vzc_build_sg(vzc, req->sg, a.offset, a.length, a.seg_max);
	req->nsegs = nsegs;
	req->hdr.flags = cpu_to_le32(a.flags & VZC_SEND_F_BAD_FLAGS ? 1 : 0);
	req->hdr.timeout_ms = cpu_to_le32(a.timeout_ms);
	req->hdr.tag = cpu_to_le64(a.tag);
	req->status[0] = VZC_STATUS_UNSET;
	req->status[1] = VZC_STATUS_UNSET;
	req->c.tag = a.tag;
	sg_init_one(&hdr_sg, &req->hdr, sizeof(req->hdr));
	sg_init_one(&status_sg, req->status,
		    a.flags & VZC_SEND_F_TWO_STATUS ? 2 : 1);
	sgs[0] = &hdr_sg;
	sgs[1] = req->sg;
	sgs[2] = &status_sg;

retry:
	mutex_lock(&vzc->lock);
	err = -ENODEV;
	if (vzc->dead)
		goto out_unlock;
	err = -EAGAIN;			/* being reset */
	if (!vzc->vq)
		goto out_unlock;
	/* The spec's driver requirements, checked against the config. */
	err = -E2BIG;
	if (!unchecked && a.length > vzc->cfg.max_data_len)
		goto out_unlock;
	limit = unchecked ? nsegs : vzc->cfg.max_segments;
	if (!virtio_has_feature(vzc->vdev, VIRTIO_RING_F_INDIRECT_DESC))
		limit = min(limit, virtqueue_get_vring_size(vzc->vq) - 2);
	if (nsegs > limit)
		goto out_unlock;
	if (a.timeout_ms && !unchecked) {
		err = -EOPNOTSUPP;
		if (!vzc->has_timeout)
			goto out_unlock;
		err = -ERANGE;
		if (a.timeout_ms > vzc->cfg.max_timeout_ms)
			goto out_unlock;
	}

	spin_lock_irq(&vzc->qlock);
	err = virtqueue_add_sgs(vzc->vq, sgs, 2,
				a.flags & VZC_SEND_F_NO_STATUS ? 0 : 1, req,
				GFP_ATOMIC);
	if (err == -ENOSPC && vzc->in_flight) {
		/* Wait for a completion to free descriptors, then retry. */
		u64 completed = vzc->completed;

		spin_unlock_irq(&vzc->qlock);
		mutex_unlock(&vzc->lock);
		err = wait_event_interruptible(vzc->wq,
				vzc_send_wakeup(vzc, completed));
		if (err)
			goto out_free;
		goto retry;
	}
	if (err == -ENOSPC)
		err = -E2BIG;		/* can never fit in the ring */
	if (err) {
		spin_unlock_irq(&vzc->qlock);
		goto out_unlock;
	}
	req->c.id = ++vzc->next_id;
	req->posted = ktime_get();
	list_add_tail(&req->node, &vzc->inflight);
	vzc->posted++;
	vzc->in_flight++;
	a.id = req->c.id;
	a.nsegs = nsegs;
	virtqueue_kick(vzc->vq);
	spin_unlock_irq(&vzc->qlock);
	mutex_unlock(&vzc->lock);
	/* Posted: the completion reaches WAIT whatever happens here. */
	if (copy_to_user(uarg, &a, sizeof(a)))
		return -EFAULT;
	return 0;

out_unlock:
	mutex_unlock(&vzc->lock);
out_free:
	kfree(req);
	return err;
}

/* Called with qlock held. */
static struct vzc_req *vzc_match(struct vzc_dev *vzc, const struct vzc_wait *w)
{
	struct vzc_req *req;

	list_for_each_entry(req, &vzc->done, node) {
		if ((w->flags & VZC_WAIT_TAG) && req->c.tag != w->tag)
			continue;
		if ((w->flags & VZC_WAIT_ID) && req->c.id != w->id)
			continue;
		return req;
	}
	return NULL;
}

static bool vzc_wait_ready(struct vzc_dev *vzc, const struct vzc_wait *w)
{
	bool ready;

	spin_lock_irq(&vzc->qlock);
	ready = vzc->dead || vzc_match(vzc, w);
	spin_unlock_irq(&vzc->qlock);
	return ready;
}

static long vzc_wait(struct vzc_dev *vzc, struct vzc_wait __user *uarg)
{
	struct vzc_wait w;
	struct vzc_req *req;
	bool dead;
	long left;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.flags & ~(VZC_WAIT_TAG | VZC_WAIT_ID))
		return -EINVAL;
	left = w.timeout_ms < 0 ? MAX_SCHEDULE_TIMEOUT :
	       msecs_to_jiffies(w.timeout_ms);
	for (;;) {
		spin_lock_irq(&vzc->qlock);
		req = vzc_match(vzc, &w);
		if (req) {
			list_del(&req->node);
			vzc->undelivered--;
		}
		dead = vzc->dead;
		spin_unlock_irq(&vzc->qlock);
		if (req)
			break;
		if (dead)
			return -ENODEV;
		if (!w.timeout_ms)
			return -EAGAIN;
		if (!left)
			return -ETIMEDOUT;
		left = wait_event_interruptible_timeout(vzc->wq,
					vzc_wait_ready(vzc, &w), left);
		if (left < 0)
			return left;
	}
	w.c = req->c;
	if (copy_to_user(uarg, &w, sizeof(w))) {
		/* Not delivered: put it back so that it is not lost. */
		spin_lock_irq(&vzc->qlock);
		list_add(&req->node, &vzc->done);
		vzc->undelivered++;
		spin_unlock_irq(&vzc->qlock);
		wake_up_all(&vzc->wq);
		return -EFAULT;
	}
	kfree(req);
	return 0;
}

static long vzc_info(struct vzc_dev *vzc, struct vzc_info __user *uarg)
{
	struct vzc_info info = {};
	unsigned int i;

	mutex_lock(&vzc->lock);
	info.max_inflight = vzc->cfg.max_inflight;
	info.max_segments = vzc->cfg.max_segments;
	info.max_data_len = vzc->cfg.max_data_len;
	info.default_timeout_ms = vzc->cfg.default_timeout_ms;
	info.max_timeout_ms = vzc->cfg.max_timeout_ms;
	info.dest_state = vzc->cfg.dest_state;
	info.features = vzc->vdev->features;
	info.pool_size = (u64)vzc->npages << PAGE_SHIFT;
	if (vzc->vq)
		info.vq_size = virtqueue_get_vring_size(vzc->vq);
	if (!vzc->dead)
		info.needs_reset = !!(vzc->vdev->config->get_status(vzc->vdev) &
				      VIRTIO_CONFIG_S_NEEDS_RESET);
	spin_lock_irq(&vzc->qlock);
	info.posted = vzc->posted;
	info.completed = vzc->completed;
	info.in_flight = vzc->in_flight;
	info.undelivered = vzc->undelivered;
	for (i = 0; i < ARRAY_SIZE(info.status_count); i++)
		info.status_count[i] = vzc->status_count[i];
	info.resets = vzc->resets;
	spin_unlock_irq(&vzc->qlock);
	mutex_unlock(&vzc->lock);
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long vzc_reset(struct vzc_dev *vzc)
{
	struct device *dev = &vzc->vdev->dev;
	int err = -ENODEV;

	if (!IS_ENABLED(CONFIG_PM_SLEEP))
		return -EOPNOTSUPP;
	/* The device lock orders us against remove and system sleep. */
	device_lock(dev);
	if (!READ_ONCE(vzc->dead)) {
		err = virtio_device_freeze(vzc->vdev);
		if (!err)
			err = virtio_device_restore(vzc->vdev);
	}
	device_unlock(dev);
	return err;
}

static long vzc_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vzc_dev *vzc = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case VZC_IOC_INFO:
		return vzc_info(vzc, uarg);
	case VZC_IOC_SEND:
		return vzc_send(vzc, uarg);
	case VZC_IOC_WAIT:
		return vzc_wait(vzc, uarg);
	case VZC_IOC_RESET:
		return vzc_reset(vzc);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations vzc_fops = {
	.owner = THIS_MODULE,
	.open = vzc_open,
	.release = vzc_close,
	.mmap = vzc_mmap,
	.poll = vzc_poll,
	.unlocked_ioctl = vzc_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	/* no .llseek: lseek() fails with ESPIPE (no_llseek is gone in 6.12) */
};

/* ---- virtio driver ---- */

static int vzc_probe(struct virtio_device *vdev)
{
	struct vzc_dev *vzc;
	int err;

	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		return -ENODEV;
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config access disabled\n");
		return -EINVAL;
	}
	vzc = kzalloc(sizeof(*vzc), GFP_KERNEL);
	if (!vzc)
		return -ENOMEM;
	kref_init(&vzc->ref);
	mutex_init(&vzc->lock);
	spin_lock_init(&vzc->qlock);
	INIT_LIST_HEAD(&vzc->inflight);
	INIT_LIST_HEAD(&vzc->done);
	init_waitqueue_head(&vzc->wq);
	INIT_WORK(&vzc->config_work, vzc_config_work);
	vzc->index = ida_alloc(&vzc_ida, GFP_KERNEL);
	if (vzc->index < 0) {
		err = vzc->index;
		kfree(vzc);
		return err;
	}
	get_device(&vdev->dev);
	vzc->vdev = vdev;
	vdev->priv = vzc;
	vzc->has_timeout = virtio_has_feature(vdev, VIRTIO_ZC_F_TIMEOUT);

	err = vzc_alloc_pool(vzc);
	if (err)
		goto err_put;
	err = vzc_setup_vq(vzc);
	if (err)
		goto err_put;
	if (!vzc->cfg.max_segments || !vzc->cfg.max_data_len)
		dev_warn(&vdev->dev, "device accepts no data (segments %u, bytes %u)\n",
			 vzc->cfg.max_segments, vzc->cfg.max_data_len);

	snprintf(vzc->name, sizeof(vzc->name), "virtio-zc%d", vzc->index);
	vzc->misc.minor = MISC_DYNAMIC_MINOR;
	vzc->misc.name = vzc->name;
	vzc->misc.fops = &vzc_fops;
	vzc->misc.mode = 0600;
	vzc->misc.parent = &vdev->dev;
	err = misc_register(&vzc->misc);
	if (err)
		goto err_reset;
	vzc->registered = true;
	dev_info(&vdev->dev,
		 "/dev/%s: pool %u KiB, max %u segments, %u bytes, %u in flight, timeout %u ms (max %u)%s, destination %s\n",
		 vzc->name, vzc->npages << (PAGE_SHIFT - 10),
		 vzc->cfg.max_segments, vzc->cfg.max_data_len,
		 vzc->cfg.max_inflight, vzc->cfg.default_timeout_ms,
		 vzc->cfg.max_timeout_ms,
		 vzc->has_timeout ? "" : " (no per-request timeout)",
		 vzc->cfg.dest_state == 1 ? "connected" : "disconnected");
	return 0;

err_reset:
	mutex_lock(&vzc->lock);
	vzc_quiesce(vzc, VZC_CF_REMOVED);
	mutex_unlock(&vzc->lock);
err_put:
	vdev->priv = NULL;
	vzc->dead = true;
	kref_put(&vzc->ref, vzc_release);
	return err;
}

static void vzc_remove(struct virtio_device *vdev)
{
	struct vzc_dev *vzc = vdev->priv;

	/* No new opens; open files keep vzc alive and see it dead. */
	misc_deregister(&vzc->misc);
	cancel_work_sync(&vzc->config_work);
	mutex_lock(&vzc->lock);
	/* Completions of requests in flight stay queued for WAIT. */
	vzc_quiesce(vzc, VZC_CF_REMOVED);
	spin_lock_irq(&vzc->qlock);
	vzc->dead = true;
	spin_unlock_irq(&vzc->qlock);
	mutex_unlock(&vzc->lock);
	wake_up_all(&vzc->wq);
	dev_info(&vdev->dev, "/dev/%s removed\n", vzc->name);
	kref_put(&vzc->ref, vzc_release);
}

#ifdef CONFIG_PM_SLEEP
static int vzc_freeze(struct virtio_device *vdev)
{
	struct vzc_dev *vzc = vdev->priv;

	cancel_work_sync(&vzc->config_work);
	mutex_lock(&vzc->lock);
	vzc_quiesce(vzc, VZC_CF_RESET);
	mutex_unlock(&vzc->lock);
	return 0;
}

static int vzc_restore(struct virtio_device *vdev)
{
	return vzc_setup_vq(vdev->priv);
}
#endif

static const struct virtio_device_id vzc_id_table[] = {
	{ VIRTIO_ID_ZC, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static const unsigned int vzc_features[] = {
	VIRTIO_ZC_F_TIMEOUT,
};

static struct virtio_driver vzc_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = vzc_id_table,
	.feature_table = vzc_features,
	.feature_table_size = ARRAY_SIZE(vzc_features),
	.probe = vzc_probe,
	.remove = vzc_remove,
	.config_changed = vzc_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze = vzc_freeze,
	.restore = vzc_restore,
#endif
};

module_virtio_driver(vzc_driver);
MODULE_DEVICE_TABLE(virtio, vzc_id_table);
MODULE_DESCRIPTION("virtio-zc zero-copy transmitter driver");
MODULE_LICENSE("GPL");
