// SPDX-License-Identifier: GPL-2.0
/*
 * vzc-tool: drive /dev/virtio-zcN from a shell script.
 *
 *   vzc-tool [-d DEV] CMD ARGS [, CMD ARGS]...
 *
 * Commands run in order in one process; the pool lives in the driver, so
 * separate invocations see the same bytes.  Exit status 0 only if every
 * command succeeded (a failed verify or an unexpected status fails).
 * Numbers are decimal or 0x-hex.  Run without arguments for the list.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "virtio_zc_user.h"

static const char *dev_path = "/dev/virtio-zc0";
static int fd = -1;
static uint8_t *pool;
static uint64_t pool_size;

static void usage(void)
{
	fprintf(stderr,
"usage: vzc-tool [-d DEV] CMD ARGS [, CMD ARGS]...\n"
"  info                              config and counters\n"
"  fill OFF LEN SEED                 write the pattern of SEED\n"
"  fillbyte OFF LEN BYTE             write one byte value\n"
"  verify OFF LEN SEED               check the pattern of SEED\n"
"  verifybyte OFF LEN BYTE           check one byte value\n"
"  send OFF LEN TAG [TMO [SEGMAX [FLAGS]]]  post a request (TMO ms, 0 =\n"
"                                    default; FLAGS: VZC_SEND_F_* bits)\n"
"  wait TAG|any [TMO [STATUS]]       wait for a completion (TMO ms, -1\n"
"                                    forever); fail unless STATUS (name or\n"
"                                    number) if given\n"
"  reset                             device reset (VZC_IOC_RESET)\n"
"  sendmany OFF LEN TAG0 COUNT [TMO] COUNT requests, tags TAG0.., data at\n"
"                                    OFF, OFF+LEN, ... (pattern of each tag\n"
"                                    must be filled by the caller)\n"
"  collect TAG0 COUNT TMO ALLOWED [MAX]  wait for the COUNT completions of\n"
"                                    tags TAG0.., each exactly once, with a\n"
"                                    status in ALLOWED (a,b,...); at most\n"
"                                    MAX of the first one\n"
"  fillmany OFF LEN TAG0 COUNT       fill the pattern of each tag\n"
"  waitdest STATE TMO                poll until dest_state is STATE (0 or 1)\n"
"  sleep MS\n"
"  pattern SEED LEN                  print the pattern as hex\n"
"pattern: byte i of SEED is byte i%%8 (little-endian) of the (i/8+1)-th\n"
"output of splitmix64 started at SEED * 0x9e3779b97f4a7c15 ^ %s\n",
		"0x5a17c0def00dba5e");
	exit(2);
}

static uint64_t num(const char *s)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || !*s || *end) {
		fprintf(stderr, "vzc-tool: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

/* The pattern: splitmix64, seeded per tag (see usage). */
static uint64_t pat_state(uint64_t seed)
{
	return seed * 0x9e3779b97f4a7c15ULL ^ 0x5a17c0def00dba5eULL;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void pattern(uint8_t *dst, uint64_t len, uint64_t seed)
{
	uint64_t s = pat_state(seed), i, w = 0;

	for (i = 0; i < len; i++) {
		if (!(i & 7))
			w = splitmix64(&s);
		dst[i] = w >> (8 * (i & 7));
	}
}

static const char *const st_names[] = {
	"OK", "RECLAIMED", "COPIED", "DEST_ERROR", "BAD_REQUEST",
};

static const char *st_name(uint32_t st)
{
	if (st < 5)
		return st_names[st];
	if (st == VZC_ST_CANCELED)
		return "CANCELED";
	if (st == VZC_ST_NO_STATUS)
		return "NO_STATUS";
	return "UNKNOWN";
}

static uint32_t st_parse(const char *s)
{
	uint32_t i;

	for (i = 0; i < 5; i++)
		if (!strcasecmp(s, st_names[i]))
			return i;
	if (!strcasecmp(s, "CANCELED"))
		return VZC_ST_CANCELED;
	if (!strcasecmp(s, "NO_STATUS"))
		return VZC_ST_NO_STATUS;
	return num(s);
}

static void open_dev(void)
{
	struct vzc_info info;

	if (fd >= 0)
		return;
	fd = open(dev_path, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "vzc-tool: %s: %s\n", dev_path, strerror(errno));
		exit(1);
	}
	if (ioctl(fd, VZC_IOC_INFO, &info)) {
		perror("vzc-tool: VZC_IOC_INFO");
		exit(1);
	}
	pool_size = info.pool_size;
	pool = mmap(NULL, pool_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (pool == MAP_FAILED) {
		perror("vzc-tool: mmap");
		exit(1);
	}
}

static uint8_t *range(uint64_t off, uint64_t len)
{
	open_dev();
	if (off > pool_size || len > pool_size - off) {
		fprintf(stderr, "vzc-tool: range %" PRIu64 "+%" PRIu64
			" outside the pool (%" PRIu64 " bytes)\n",
			off, len, pool_size);
		exit(2);
	}
	return pool + off;
}

static int cmd_info(void)
{
	struct vzc_info i;

	open_dev();
	if (ioctl(fd, VZC_IOC_INFO, &i)) {
		perror("vzc-tool: VZC_IOC_INFO");
		return 1;
	}
	printf("info: max_inflight=%u max_segments=%u max_data_len=%u "
	       "default_timeout_ms=%u max_timeout_ms=%u dest_state=%u "
	       "features=0x%" PRIx64 " pool=%" PRIu64 " vq_size=%u "
	       "needs_reset=%u\n",
	       i.max_inflight, i.max_segments, i.max_data_len,
	       i.default_timeout_ms, i.max_timeout_ms, i.dest_state,
	       (uint64_t)i.features, (uint64_t)i.pool_size, i.vq_size,
	       i.needs_reset);
	printf("info: posted=%llu completed=%llu in_flight=%llu "
	       "undelivered=%llu ok=%llu reclaimed=%llu copied=%llu "
	       "dest_error=%llu bad=%llu other=%llu resets=%llu\n",
	       i.posted, i.completed, i.in_flight, i.undelivered,
	       i.status_count[0], i.status_count[1], i.status_count[2],
	       i.status_count[3], i.status_count[4], i.status_count[5],
	       i.resets);
	return 0;
}

static int cmd_waitdest(uint64_t state, uint64_t tmo)
{
	struct vzc_info i;
	uint64_t waited = 0;

	open_dev();
	for (;;) {
		if (ioctl(fd, VZC_IOC_INFO, &i)) {
			perror("vzc-tool: VZC_IOC_INFO");
			return 1;
		}
		if (i.dest_state == state) {
			printf("waitdest: dest_state=%u after %" PRIu64 " ms\n",
			       i.dest_state, waited);
			return 0;
		}
		if (waited >= tmo) {
			printf("waitdest: FAIL dest_state=%u after %" PRIu64
			       " ms\n", i.dest_state, waited);
			return 1;
		}
		usleep(50000);
		waited += 50;
	}
}

static int cmd_collect(uint64_t tag0, uint64_t count, int64_t tmo,
		       char *allowed, int64_t max_first)
{
	uint32_t ok_st[8];
	uint64_t seen_n[8] = { 0 }, got = 0, i;
	unsigned int n_ok = 0, k;
	uint8_t *seen = calloc(count ? count : 1, 1);
	char *tok, *save = NULL;
	int rc = 0;

	if (!seen)
		return 1;
	for (tok = strtok_r(allowed, ",", &save); tok && n_ok < 8;
	     tok = strtok_r(NULL, ",", &save))
		ok_st[n_ok++] = st_parse(tok);
	open_dev();
	while (got < count) {
		struct vzc_wait w = { .timeout_ms = tmo };

		if (ioctl(fd, VZC_IOC_WAIT, &w)) {
			printf("collect: FAIL after %" PRIu64 " of %" PRIu64
			       ": %s\n", got, count, strerror(errno));
			rc = 1;
			break;
		}
		got++;
		if (w.c.tag < tag0 || w.c.tag - tag0 >= count ||
		    seen[w.c.tag - tag0]++) {
			printf("collect: FAIL tag %llu unexpected or twice\n",
			       w.c.tag);
			rc = 1;
			continue;
		}
		for (k = 0; k < n_ok && ok_st[k] != w.c.status; k++)
			;
		if (k == n_ok) {
			printf("collect: FAIL tag %llu status %s\n", w.c.tag,
			       st_name(w.c.status));
			rc = 1;
			continue;
		}
		seen_n[k]++;
	}
	for (i = 0; i < count; i++)
		if (!seen[i]) {
			printf("collect: FAIL no completion for tag %" PRIu64
			       "\n", tag0 + i);
			rc = 1;
		}
	printf("collect: %" PRIu64 " completions:", got);
	for (k = 0; k < n_ok; k++)
		printf(" %s=%" PRIu64, st_name(ok_st[k]), seen_n[k]);
	printf("\n");
	if (max_first >= 0 && n_ok && seen_n[0] > (uint64_t)max_first) {
		printf("collect: FAIL more than %" PRId64 " %s\n", max_first,
		       st_name(ok_st[0]));
		rc = 1;
	}
	free(seen);
	return rc;
}

static int cmd_verify(uint64_t off, uint64_t len, const uint8_t *want,
		      const char *what)
{
	const uint8_t *p = range(off, len);
	uint64_t i, bad = 0, first = 0;

	for (i = 0; i < len; i++) {
		if (p[i] != want[i]) {
			if (!bad++)
				first = i;
		}
	}
	if (bad) {
		printf("verify: FAIL %s: %" PRIu64 " of %" PRIu64
		       " bytes differ, first at +%" PRIu64
		       " (0x%02x, want 0x%02x)\n",
		       what, bad, len, first, p[first], want[first]);
		return 1;
	}
	printf("verify: ok %s (%" PRIu64 " bytes at %" PRIu64 ")\n",
	       what, len, off);
	return 0;
}

static int cmd_send(uint64_t off, uint64_t len, uint64_t tag,
		    uint64_t tmo, uint64_t seg_max, uint64_t flags)
{
	struct vzc_send s = {
		.offset = off, .length = len, .timeout_ms = tmo, .tag = tag,
		.seg_max = seg_max, .flags = flags,
	};

	open_dev();
	if (ioctl(fd, VZC_IOC_SEND, &s)) {
		printf("send: tag=%" PRIu64 " FAILED: %s\n", tag, strerror(errno));
		return 1;
	}
	printf("send: tag=%" PRIu64 " id=%llu offset=%" PRIu64
	       " length=%" PRIu64 " segments=%u timeout_ms=%" PRIu64 "\n",
	       tag, s.id, off, len, s.nsegs, tmo);
	return 0;
}

static int cmd_wait(const char *tag, int64_t tmo, const char *expect)
{
	struct vzc_wait w = { .timeout_ms = tmo };

	open_dev();
	if (strcmp(tag, "any")) {
		w.flags = VZC_WAIT_TAG;
		w.tag = num(tag);
	}
	if (ioctl(fd, VZC_IOC_WAIT, &w)) {
		printf("wait: tag=%s FAILED: %s\n", tag, strerror(errno));
		return 1;
	}
	printf("wait: tag=%llu id=%llu status=%s (%u) used_len=%u flags=0x%x "
	       "elapsed_ms=%.1f\n", w.c.tag, w.c.id, st_name(w.c.status),
	       w.c.status, w.c.used_len, w.c.flags, w.c.elapsed_ns / 1e6);
	if (expect && w.c.status != st_parse(expect)) {
		printf("wait: FAIL tag=%llu: status %s, expected %s\n",
		       w.c.tag, st_name(w.c.status), expect);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1, rc = 0;

	if (i + 1 < argc && !strcmp(argv[i], "-d")) {
		dev_path = argv[i + 1];
		i += 2;
	}
	if (i >= argc)
		usage();
	while (i < argc) {
		const char *cmd = argv[i];
		char *a[6] = { NULL };
		int n = 0;
		uint8_t *buf;

		for (i++; i < argc && strcmp(argv[i], ","); i++) {
			if (n == 6)
				usage();
			a[n++] = argv[i];
		}
		i++;			/* skip "," */
		if (!strcmp(cmd, "info") && n == 0) {
			rc |= cmd_info();
		} else if ((!strcmp(cmd, "fill") || !strcmp(cmd, "fillbyte")) &&
			   n == 3) {
			uint64_t len = num(a[1]);
			uint8_t *p = range(num(a[0]), len);

			if (cmd[4])
				memset(p, num(a[2]), len);
			else
				pattern(p, len, num(a[2]));
			printf("%s: %" PRIu64 " bytes at %s, %s\n", cmd, len,
			       a[0], a[2]);
		} else if ((!strcmp(cmd, "verify") ||
			    !strcmp(cmd, "verifybyte")) && n == 3) {
			uint64_t len = num(a[1]);
			char what[64];

			buf = malloc(len ? len : 1);
			if (!buf)
				return 1;
			if (cmd[6])
				memset(buf, num(a[2]), len);
			else
				pattern(buf, len, num(a[2]));
			snprintf(what, sizeof(what), "%s %s", cmd[6] ?
				 "byte" : "seed", a[2]);
			rc |= cmd_verify(num(a[0]), len, buf, what);
			free(buf);
		} else if (!strcmp(cmd, "send") && n >= 3 && n <= 6) {
			rc |= cmd_send(num(a[0]), num(a[1]), num(a[2]),
				       n > 3 ? num(a[3]) : 0,
				       n > 4 ? num(a[4]) : 0,
				       n > 5 ? num(a[5]) : 0);
		} else if (!strcmp(cmd, "wait") && n >= 1 && n <= 3) {
			rc |= cmd_wait(a[0], n > 1 ? strtoll(a[1], NULL, 0) : -1,
				       n > 2 ? a[2] : NULL);
		} else if (!strcmp(cmd, "reset") && n == 0) {
			open_dev();
			if (ioctl(fd, VZC_IOC_RESET)) {
				printf("reset: FAILED: %s\n", strerror(errno));
				rc = 1;
			} else {
				printf("reset: done\n");
			}
		} else if (!strcmp(cmd, "pattern") && n == 2) {
			uint64_t len = num(a[1]), k;

			buf = malloc(len ? len : 1);
			if (!buf)
				return 1;
			pattern(buf, len, num(a[0]));
			for (k = 0; k < len; k++)
				printf("%02x", buf[k]);
			printf("\n");
			free(buf);
		} else if (!strcmp(cmd, "sendmany") && (n == 4 || n == 5)) {
			uint64_t off = num(a[0]), len = num(a[1]), k;

			for (k = 0; k < num(a[3]); k++)
				rc |= cmd_send(off + k * len, len, num(a[2]) + k,
					       n > 4 ? num(a[4]) : 0, 0, 0);
		} else if (!strcmp(cmd, "fillmany") && n == 4) {
			uint64_t off = num(a[0]), len = num(a[1]), k;

			for (k = 0; k < num(a[3]); k++)
				pattern(range(off + k * len, len), len,
					num(a[2]) + k);
			printf("fillmany: %s x %s bytes at %s\n", a[3], a[1],
			       a[0]);
		} else if (!strcmp(cmd, "collect") && (n == 4 || n == 5)) {
			rc |= cmd_collect(num(a[0]), num(a[1]),
					  strtoll(a[2], NULL, 0), a[3],
					  n > 4 ? (int64_t)num(a[4]) : -1);
		} else if (!strcmp(cmd, "waitdest") && n == 2) {
			rc |= cmd_waitdest(num(a[0]), num(a[1]));
		} else if (!strcmp(cmd, "sleep") && n == 1) {
			usleep(num(a[0]) * 1000);
		} else {
			usage();
		}
		fflush(stdout);
	}
	return rc;
}
