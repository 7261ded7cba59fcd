// SPDX-License-Identifier: Apache-2.0
/*
 * nestio: the socket helper of the nested-KVM harness (tests/nested), built static
 * (`gcc -static`) and run in L2 (vsock) and in L1 (Unix sockets): busybox has no vsock tool
 * and its nc has no Unix sockets. Each mode prints one `nestio: ...` line and exits 0 on
 * success, 1 on a failure (with the reason).
 *
 *   nestio vsock-connect CID PORT BYTES   connect to CID:PORT, send BYTES of a fixed pattern,
 *                                         expect the same bytes echoed back
 *   nestio vsock-listen PORT BYTES        listen on port PORT (any CID), accept one connection,
 *                                         echo what arrives until EOF; BYTES is how many must
 *                                         have passed
 *   nestio unix-echo PATH                 listen on the Unix socket PATH, echo every connection
 *                                         (one at a time) until killed
 *   nestio unix-connect PATH PORT BYTES SECS
 *                                         sevm's hybrid vsock from the host: connect to PATH,
 *                                         write `CONNECT PORT\n`, expect `OK ...\n`, then the
 *                                         echo exchange; retried for up to SECS seconds while
 *                                         the guest has no listener yet
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static unsigned char pattern_byte(unsigned long long i)
{
	return (unsigned char)((i * 131u + (i >> 9) * 7u + 13u) & 0xff);
}

static int fail(const char *what)
{
	printf("nestio: FAIL %s: %s\n", what, errno ? strerror(errno) : "-");
	fflush(stdout);
	return 1;
}

/* Sends n pattern bytes on fd and reads n bytes back, comparing them; both directions at
 * once (poll) so a full socket buffer never deadlocks. */
static int exchange(int fd, unsigned long long n, const char *mode)
{
	unsigned long long sent = 0, got = 0;
	unsigned char buf[65536];

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (sent < n)
			p.events |= POLLOUT;
		if (poll(&p, 1, 30000) <= 0) {
			printf("nestio: FAIL %s: no progress for 30 s (sent %llu, echoed %llu of %llu)\n",
			       mode, sent, got, n);
			return 1;
		}
		if ((p.revents & POLLOUT) && sent < n) {
			size_t len = sizeof(buf);
			if (n - sent < len)
				len = (size_t)(n - sent);
			for (size_t i = 0; i < len; i++)
				buf[i] = pattern_byte(sent + i);
			ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				return fail("send");
			if (w > 0)
				sent += (unsigned long long)w;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				return fail("recv");
			if (r == 0) {
				printf("nestio: FAIL %s: connection closed after %llu of %llu echoed bytes\n",
				       mode, got, n);
				return 1;
			}
			for (ssize_t i = 0; i < r; i++) {
				if (buf[i] != pattern_byte(got + (unsigned long long)i)) {
					printf("nestio: FAIL %s: echoed byte %llu differs\n", mode,
					       got + (unsigned long long)i);
					return 1;
				}
			}
			if (r > 0)
				got += (unsigned long long)r;
		}
	}
	printf("nestio: %s ok bytes=%llu\n", mode, got);
	return 0;
}

/* Echoes until EOF; returns the byte count, or -1. */
static long long echo(int fd)
{
	unsigned char buf[65536];
	long long total = 0;

	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return total;
		for (ssize_t off = 0; off < r;) {
			ssize_t w = send(fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -1;
			off += w;
		}
		total += r;
	}
}

static int unix_addr(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path)) {
		printf("nestio: FAIL socket path too long: %s\n", path);
		return -1;
	}
	strcpy(a->sun_path, path);
	return 0;
}

static int vsock_connect(unsigned int cid, unsigned int port, unsigned long long n)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("socket(AF_VSOCK)");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return fail("vsock connect");
	int rc = exchange(fd, n, "vsock-connect");
	close(fd);
	return rc;
}

static int vsock_listen(unsigned int port, unsigned long long n)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("socket(AF_VSOCK)");
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0)
		return fail("vsock bind/listen");
	printf("nestio: vsock-listen listening port=%u\n", port);
	fflush(stdout);
	struct sockaddr_vm peer;
	socklen_t pl = sizeof(peer);
	int c = accept(fd, (struct sockaddr *)&peer, &pl);
	if (c < 0)
		return fail("vsock accept");
	long long t = echo(c);
	close(c);
	close(fd);
	if (t < 0)
		return fail("vsock echo");
	if ((unsigned long long)t != n) {
		printf("nestio: FAIL vsock-listen: echoed %lld bytes, expected %llu (peer cid %u)\n", t, n,
		       peer.svm_cid);
		return 1;
	}
	printf("nestio: vsock-listen ok bytes=%lld peer_cid=%u\n", t, peer.svm_cid);
	return 0;
}

static int unix_echo(const char *path)
{
	struct sockaddr_un a;
	if (unix_addr(path, &a))
		return 1;
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0)
		return fail("unix bind/listen");
	printf("nestio: unix-echo listening %s\n", path);
	fflush(stdout);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			return fail("unix accept");
		}
		long long t = echo(c);
		close(c);
		printf("nestio: unix-echo connection done bytes=%lld\n", t);
		fflush(stdout);
	}
}

/* One try: 0 ok, 1 failed for good, 2 the guest refused (no listener yet): retry. */
static int unix_connect_once(const char *path, unsigned int port, unsigned long long n)
{
	struct sockaddr_un a;
	char line[64];
	size_t len = 0;

	if (unix_addr(path, &a))
		return 1;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("socket(AF_UNIX)");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return 2;
	}
	int m = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (write(fd, line, (size_t)m) != m) {
		close(fd);
		return 2;
	}
	/* The reply line, byte by byte so nothing of the stream after it is consumed. */
	while (len < sizeof(line) - 1) {
		ssize_t r = read(fd, line + len, 1);
		if (r <= 0) {
			close(fd);
			return 2;
		}
		if (line[len++] == '\n')
			break;
	}
	line[len] = 0;
	if (strncmp(line, "OK ", 3) != 0) {
		printf("nestio: FAIL unix-connect: reply '%s' is not 'OK <port>'\n", line);
		close(fd);
		return 1;
	}
	line[len - 1] = 0;
	printf("nestio: unix-connect reply '%s'\n", line);
	int rc = exchange(fd, n, "unix-connect");
	close(fd);
	return rc;
}

static int unix_connect(const char *path, unsigned int port, unsigned long long n, int secs)
{
	time_t end = time(NULL) + secs;
	int tries = 0;
	for (;;) {
		tries++;
		int rc = unix_connect_once(path, port, n);
		if (rc != 2)
			return rc;
		if (time(NULL) >= end) {
			printf("nestio: FAIL unix-connect: no connection to guest port %u through %s in %d s (%d tries)\n",
			       port, path, secs, tries);
			return 1;
		}
		usleep(500000);
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && !strcmp(argv[1], "vsock-connect"))
		return vsock_connect((unsigned)strtoul(argv[2], NULL, 0), (unsigned)strtoul(argv[3], NULL, 0),
				     strtoull(argv[4], NULL, 0));
	if (argc == 4 && !strcmp(argv[1], "vsock-listen"))
		return vsock_listen((unsigned)strtoul(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
	if (argc == 3 && !strcmp(argv[1], "unix-echo"))
		return unix_echo(argv[2]);
	if (argc == 6 && !strcmp(argv[1], "unix-connect"))
		return unix_connect(argv[2], (unsigned)strtoul(argv[3], NULL, 0), strtoull(argv[4], NULL, 0),
				    atoi(argv[5]));
	fprintf(stderr, "usage: nestio vsock-connect CID PORT BYTES | vsock-listen PORT BYTES | "
			"unix-echo PATH | unix-connect PATH PORT BYTES SECS\n");
	return 2;
}
