/* Out of descriptors while accepting: the port sheds what it cannot take
 * (peers see the close at once, not a hang), warns once per shortage, and
 * serves again once descriptors are free. RLIMIT_NOFILE is lowered in this
 * test's own process (Criterion runs each test in one) and restored. */
#include <stdlib.h>
#include <sys/resource.h>

#include "net-test.h"

static int max_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int m = -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) > m)
            m = atoi(e->d_name);
    closedir(d);
    return m;
}

static bool sees_close(tw_reactor *r, int fd)
{
    char buf[8];
    return nt_raw_read(r, fd, buf, sizeof buf, 5.0) == -1;
}

TW_REACTOR_TEST(emfile, sheds_then_recovers)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), 0);
    tw_address host;
    tw_listening_port_get_host(port, &host);

    enum { NA = 8, NB = 4, ROOM = 3 };
    int A[NA], B[NB];
    for (int i = 0; i < NA; i++)
        A[i] = nt_raw_connect(&host);
    for (int i = 0; i < NB; i++)
        B[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    struct rlimit old, low;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)max_fd() + 1 + ROOM;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* Exactly ROOM free slots: fill every hole below the limit, then give
     * ROOM back. */
    int filler[64], nfill = 0, fd;
    while (nfill < 64 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        filler[nfill++] = fd;
    cr_assert_eq(errno, EMFILE);
    cr_assert_geq(nfill, ROOM);
    for (int i = 0; i < ROOM; i++)
        close(filler[--nfill]);
    tw_testing_log_capture_start();

    /* Room for ROOM connections; the other NA - ROOM are shed. */
    cr_assert(nt_run_until(r, &f.n.made, ROOM, 5.0));
    nt_spin(r, 0.05);
    cr_assert_eq(f.n.made, ROOM);
    for (int i = ROOM; i < NA; i++)
        cr_assert(sees_close(r, A[i]), "client %d was shed", i);
    cr_assert_eq(tw_testing_log_count("out of file descriptors: shedding connections on"), 1);

    /* Still short: a second wave is shed too, without another warning. */
    for (int i = 0; i < NB; i++)
        connect(B[i], &host.u.sa, host.len);
    for (int i = 0; i < NB; i++)
        cr_assert(sees_close(r, B[i]), "late client %d was shed", i);
    cr_assert_eq(f.n.made, ROOM);
    cr_assert_eq(tw_testing_log_count("out of file descriptors"), 1, "one warning per shortage");

    /* The served ones are fine. */
    cr_assert_eq(write(A[0], "abc", 3), 3);
    char buf[8];
    cr_assert_eq(nt_raw_read(r, A[0], buf, 3, 5.0), 3);

    /* Free descriptors (a client and, once lost, its server side): new
     * connections are accepted and served again. */
    for (int i = ROOM; i < NA; i++)
        close(A[i]);
    for (int i = 0; i < NB; i++)
        close(B[i]);
    close(A[0]);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    int c = nt_raw_connect(&host);
    cr_assert(nt_run_until(r, &f.n.made, ROOM + 1, 5.0));
    cr_assert_eq(write(c, "xyz", 3), 3);
    cr_assert_eq(nt_raw_read(r, c, buf, 3, 5.0), 3);
    cr_assert_eq(memcmp(buf, "xyz", 3), 0);
    cr_assert_eq(tw_testing_log_count("out of file descriptors"), 1);
    cr_assert_eq(tw_testing_log_count("accepting connections again"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    while (nfill > 0)
        close(filler[--nfill]);

    close(c);
    for (int i = 1; i < ROOM; i++)
        close(A[i]);
    cr_assert(nt_run_until(r, &f.n.freed, ROOM + 1, 5.0));
    nt_stop_port(port);
}
