/* TLS against plain TCP, with the echo-server example as the server (a child
 * process, so its CPU is measured apart from the client's: getrusage of the
 * reaped child) and a Twine client in this process.
 *
 *   echo       50 connections, closed loop, 64-byte messages, for SECONDS
 *              after a warm-up that includes the handshakes: round trips
 *              per second and the server's CPU per round trip (from
 *              /proc/PID/stat over that window),
 *              tcp: against ssl: (TLS 1.3, P-256 ECDSA certificate)
 *   idle       2,000 connections, each after one round trip (so the TLS
 *              handshake is done), left idle: the server's resident memory
 *              growth per connection, tcp: against ssl: (and nginx's, master
 *              and worker, for TLS connections that made one HTTP request).
 *              Connections open IDLE_IN_FLIGHT at a time, as clients arrive,
 *              so the figure is what an idle connection holds; ssl: is also
 *              measured with all 2,000 opened at once (tls_idle_burst_bytes):
 *              2,000 handshakes at the same time grow the heap by tens of MB,
 *              and what the allocator keeps of it after they end counts too
 *   handshake  16 connections at a time, each closed once its handshake
 *              completes (full handshakes: no resumption), for SECONDS:
 *              handshakes per second and the server's CPU per handshake,
 *              echo-server ssl: against nginx (Debian's, one worker) with
 *              the same certificate, when nginx is installed
 *
 * TLS 1.3 servers run the record layer themselves after the handshake
 * (src/tls/record.c). echo and idle also measure the TLS server with that
 * switched on and off (tw__tls_set_own_record_layer), each served by
 * `bench-tls --serve` as echo-server serves, with the same library
 * (echo-server itself runs the default, on): tls_own_* against
 * tls_openssl_*.
 *
 * Certificates are made with the openssl command in a temporary directory.
 * Best of REPS runs each. Prints one JSON line. `bench-tls [echo] [idle]
 * [handshake]` runs only the measures named; BENCH_TLS_WRAP="perf record
 * -o FILE --" runs the echo server under a profiler. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/reactor.h>
#include <twine/tls.h>

#include "tls/tls-internal.h"

#include "../examples/serve.h"

#define ECHO_CONNS      50
#define IDLE_CONNS      2000
#define IDLE_IN_FLIGHT  64
#define HANDSHAKE_CONNS 16
#define SECONDS         2.0
#define REPS            3
#define MSG             64

static char certs[64];
static char bindir[4096];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double children_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- Servers */

struct server {
    pid_t pid;
    unsigned port;
    double cpu_before;
};

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0)
        exit(1);
    close(s);
    return ntohs(a.sin_port);
}

static bool accepts(unsigned port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

static void inproc_data(tw_protocol *p, const char *data, size_t len)
{
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops inproc_ops = {.data_received = inproc_data};

/* echo-server DESCRIPTION --quiet, or (inproc 0 / 1) the same served by
 * `bench-tls --serve DESCRIPTION off|on` (the own TLS 1.3 record layer off /
 * on); its first line says the port. */
static void start_server(struct server *s, bool tls, int inproc)
{
    char desc[512], exe[4200];
    if (tls)
        snprintf(desc, sizeof desc,
                 "ssl:0:privateKey=%s/key.pem:certKey=%s/cert.pem:interface=127.0.0.1", certs,
                 certs);
    else
        snprintf(desc, sizeof desc, "tcp:0:interface=127.0.0.1");
    snprintf(exe, sizeof exe, "%s/echo-server", bindir);
    int fds[2];
    if (pipe(fds) < 0)
        exit(1);
    s->cpu_before = children_cpu();
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        if (inproc >= 0) {
            /* A fresh process (a forked one would carry this one's heap). */
            char self[4200];
            snprintf(self, sizeof self, "%s/bench-tls", bindir);
            execl(self, self, "--serve", desc, inproc ? "on" : "off", (char *)NULL);
            _exit(127);
        }
        /* BENCH_TLS_WRAP runs the server under a profiler, say "perf record -o F --". */
        const char *wrap = getenv("BENCH_TLS_WRAP");
        if (wrap && *wrap) {
            char line[8192];
            snprintf(line, sizeof line, "exec %s %s '%s' --quiet", wrap, exe, desc);
            execl("/bin/sh", "sh", "-c", line, (char *)NULL);
        }
        execl(exe, exe, desc, "--quiet", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[256];
    if (!fgets(line, sizeof line, f) || !strstr(line, "Listening on ")) {
        fprintf(stderr, "bench-tls: %s did not start\n", exe);
        exit(1);
    }
    fclose(f);
    s->port = (unsigned)atoi(strrchr(line, ':') + 1);
}

static void start_nginx(struct server *s)
{
    char conf[256], cmd[4096];
    s->port = (unsigned)free_port();
    snprintf(conf, sizeof conf, "%s/nginx.conf", certs);
    FILE *f = fopen(conf, "w");
    fprintf(f,
            "worker_processes 1;\ndaemon off;\nerror_log %s/nginx-error.log;\npid %s/nginx.pid;\n"
            "events { worker_connections 8192; }\n"
            "http {\n  access_log off;\n  ssl_session_cache off;\n  ssl_session_tickets off;\n"
            "  server {\n    listen 127.0.0.1:%u ssl;\n    ssl_certificate %s/cert.pem;\n"
            "    ssl_certificate_key %s/key.pem;\n    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    location / { return 200 \"hi\\n\"; }\n  }\n}\n",
            certs, certs, s->port, certs, certs);
    fclose(f);
    (void)cmd;
    s->cpu_before = children_cpu();
    s->pid = fork();
    if (s->pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("nginx", "nginx", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !accepts(s->port); i++)
        usleep(10000);
}

/* CPU seconds the process has spent so far (while it runs, unlike getrusage). */
static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return 0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Stops it; returns the CPU seconds it (and its children) spent. */
static double stop_server(struct server *s)
{
    kill(s->pid, SIGTERM);
    int status;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    return children_cpu() - s->cpu_before;
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* The process and its children (nginx's master and worker). */
static long rss_tree_kib(pid_t pid)
{
    char path[96];
    long kib = rss_kib(pid);
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    int child;
    while (f && fscanf(f, "%d", &child) == 1)
        kib += rss_kib(child);
    if (f)
        fclose(f);
    return kib;
}

/* ---- The client */

enum mode { ECHO_LOOP, ONE_ROUND, HANDSHAKE };

struct run {
    tw_reactor *r;
    tw_endpoint *ep;
    tw_factory factory;
    enum mode mode;
    long rounds, handshakes, failures;
    long idle_ready; /* ONE_ROUND: connections that made their round trip */
    bool stopping;
    struct conn *live[IDLE_CONNS + 64]; /* every connection made and not yet lost */
    size_t nlive;
    long inflight; /* connects started, neither made nor failed yet */
    bool http;     /* the server is nginx: a request instead of an echo */
    char desc[512];
};

struct conn {
    tw_protocol base;
    size_t got;
    size_t slot; /* in run->live */
};

static char msg[MSG];

static void start_one(struct run *run);

static void c_made(tw_protocol *p)
{
    struct run *run = p->factory->data;
    struct conn *c = (struct conn *)p;
    run->inflight--;
    c->slot = run->nlive;
    run->live[run->nlive++] = c;
    static const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if (run->http && run->mode != HANDSHAKE)
        tw_transport_write(p->transport, request, sizeof request - 1);
    else if (run->mode != HANDSHAKE)
        tw_transport_write(p->transport, msg, MSG);
}

static void c_handshake(tw_protocol *p)
{
    struct run *run = p->factory->data;
    if (run->mode == HANDSHAKE) {
        run->handshakes++;
        tw_transport_lose_connection(p->transport);
    }
}

static void c_data(tw_protocol *p, const char *data, size_t len)
{
    struct conn *c = (struct conn *)p;
    struct run *run = p->factory->data;
    (void)data;
    if (run->http) { /* nginx's answer: the first bytes of it will do */
        if (c->got == 0 && run->mode == ONE_ROUND)
            run->idle_ready++;
        c->got += len;
        return;
    }
    c->got += len;
    while (c->got >= MSG) {
        c->got -= MSG;
        if (run->mode == ONE_ROUND) {
            run->idle_ready++;
            return;
        }
        run->rounds++;
        if (!run->stopping)
            tw_transport_write(p->transport, msg, MSG);
    }
}

static void c_lost(tw_protocol *p, tw_failure *reason)
{
    struct run *run = p->factory->data;
    struct conn *c = (struct conn *)p;
    run->live[c->slot] = run->live[--run->nlive];
    run->live[c->slot]->slot = c->slot;
    int code = tw_failure_code(reason);
    if (code != TW_ECONNDONE && !run->stopping)
        run->failures++;
    if (run->mode == HANDSHAKE && !run->stopping)
        start_one(run);
}

static const tw_protocol_ops conn_ops = {.connection_made = c_made,
                                         .handshake_completed = c_handshake,
                                         .data_received = c_data,
                                         .connection_lost = c_lost};

static tw_result connect_failed(tw_result res, void *arg)
{
    struct run *run = arg;
    run->inflight--;
    run->failures++;
    if (run->failures < 3)
        fprintf(stderr, "bench-tls: %s\n", tw_failure_message(res.failure));
    tw_result_release(&res);
    return tw_result_ok(NULL, NULL);
}

static void start_one(struct run *run)
{
    run->inflight++;
    /* A tls: endpoint keeps its context, and the context the server's last
     * session: handshakes are measured full, each with an endpoint of its own. */
    tw_endpoint *fresh = NULL;
    if (run->mode == HANDSHAKE &&
        tw_endpoint_client_from_string(run->r, run->desc, &fresh, NULL) < 0)
        exit(1);
    tw_deferred *d = tw_endpoint_connect(fresh ? fresh : run->ep, &run->factory);
    tw_endpoint_free(fresh);
    tw_deferred_add_errback(d, connect_failed, run);
    tw_deferred_unref(d);
}

static void run_init(struct run *run, tw_reactor *r, unsigned port, bool tls, enum mode mode)
{
    memset(run, 0, sizeof *run);
    char *desc = run->desc;
    run->r = r;
    run->mode = mode;
    if (tls)
        snprintf(desc, sizeof run->desc, "tls:127.0.0.1:%u:trustRoots=%s/ca.pem", port, certs);
    else
        snprintf(desc, sizeof run->desc, "tcp:127.0.0.1:%u", port);
    tw_failure *f;
    if (tw_endpoint_client_from_string(r, desc, &run->ep, &f) < 0) {
        fprintf(stderr, "bench-tls: %s\n", tw_failure_message(f));
        exit(1);
    }
    tw_factory_init(&run->factory, NULL, &conn_ops, sizeof(struct conn), run);
}

static void spin(tw_reactor *r, double seconds)
{
    double end = now() + seconds;
    while (now() < end)
        tw_reactor_iterate(r, 0.01);
}

/* Lets every connection of the run end. */
static void run_end(struct run *run)
{
    run->stopping = true;
    for (size_t i = 0; i < run->nlive; i++)
        tw_transport_abort_connection(run->live[i]->base.transport);
    double end = now() + 10;
    while ((run->nlive > 0 || run->inflight > 0) && now() < end) {
        tw_reactor_iterate(run->r, 0.01);
        for (size_t i = 0; i < run->nlive; i++) /* made since */
            tw_transport_abort_connection(run->live[i]->base.transport);
    }
    if (run->nlive > 0)
        fprintf(stderr, "bench-tls: %zu connections still open\n", run->nlive);
    tw_endpoint_free(run->ep);
}

/* ---- The measures */

struct echo_figures {
    double rps, cpu_us; /* round trips per second; server CPU µs per round trip */
};

static void start_echo_server(struct server *s, bool tls)
{
    start_server(s, tls, -1);
}

static struct echo_figures echo_run(tw_reactor *r, bool tls, int inproc)
{
    struct server s;
    struct run run;
    start_server(&s, tls, inproc);
    run_init(&run, r, s.port, tls, ECHO_LOOP);
    for (int i = 0; i < ECHO_CONNS; i++)
        start_one(&run);
    spin(r, 0.5); /* handshakes and warm-up outside the measure */
    /* The steady state only: the server's CPU over the measured window. */
    long r0 = run.rounds;
    double cpu0 = proc_cpu(s.pid);
    double t0 = now();
    spin(r, SECONDS);
    double dt = now() - t0;
    double cpu = proc_cpu(s.pid) - cpu0;
    long rounds = run.rounds - r0;
    run_end(&run);
    stop_server(&s);
    if (run.failures)
        fprintf(stderr, "bench-tls: %ld failures\n", run.failures);
    return (struct echo_figures){rounds / dt, cpu / (double)(rounds ? rounds : 1) * 1e6};
}

/* Best of the repetitions: the highest rate and the lowest CPU, each on its
 * own (a noisy run spoils one figure, not the other). */
static void keep_best(struct echo_figures *best, struct echo_figures run)
{
    if (run.rps > best->rps)
        best->rps = run.rps;
    if (run.cpu_us < best->cpu_us)
        best->cpu_us = run.cpu_us;
}

/* kind: 0 echo-server tcp:, 1 echo-server ssl:, 2 nginx (TLS), 3 / 4 the
 * in-process TLS server with the own record layer off / on */
static double idle_run(tw_reactor *r, int kind, bool burst)
{
    struct server s;
    struct run run;
    if (kind == 2)
        start_nginx(&s);
    else if (kind >= 3)
        start_server(&s, true, kind - 3);
    else
        start_echo_server(&s, kind == 1);
    run_init(&run, r, s.port, kind != 0, ONE_ROUND);
    run.http = kind == 2;
    /* One connection first, so the server's one-off allocations (OpenSSL's
     * tables, the first buffers) are not counted per connection. */
    start_one(&run);
    while (run.idle_ready < 1)
        tw_reactor_iterate(r, 0.01);
    spin(r, 0.2);
    long before = rss_tree_kib(s.pid);
    for (int i = 1; i < IDLE_CONNS; i++) {
        while (!burst && i - run.idle_ready >= IDLE_IN_FLIGHT && run.failures == 0)
            tw_reactor_iterate(r, 0.01);
        start_one(&run);
        if (i % 100 == 0)
            tw_reactor_iterate(r, 0);
    }
    double end = now() + 30;
    while (run.idle_ready < IDLE_CONNS && now() < end && run.failures == 0)
        tw_reactor_iterate(r, 0.01);
    /* Long enough for Twine's idle connections to release OpenSSL's buffers
     * (after a second without traffic). */
    spin(r, 2.5);
    long after = rss_tree_kib(s.pid);
    long ready = run.idle_ready;
    run_end(&run);
    stop_server(&s);
    if (ready < IDLE_CONNS)
        fprintf(stderr, "bench-tls: only %ld idle connections made\n", ready);
    return (double)(after - before) * 1024.0 / (double)(ready - 1);
}

struct hs_figures {
    double hps, cpu_us; /* handshakes per second; server CPU µs per handshake */
};

static struct hs_figures handshake_run(tw_reactor *r, bool nginx)
{
    struct server s;
    struct run run;
    if (nginx)
        start_nginx(&s);
    else
        start_echo_server(&s, true);
    run_init(&run, r, s.port, true, HANDSHAKE);
    double t0 = now();
    for (int i = 0; i < HANDSHAKE_CONNS; i++)
        start_one(&run);
    spin(r, SECONDS);
    double dt = now() - t0;
    long n = run.handshakes;
    run_end(&run);
    double cpu = stop_server(&s);
    if (run.failures)
        fprintf(stderr, "bench-tls: %ld handshake failures (%s)\n", run.failures,
                nginx ? "nginx" : "twine");
    return (struct hs_figures){n / dt, cpu / (double)(n ? n : 1) * 1e6};
}

static bool have_nginx(void)
{
    return system("command -v nginx >/dev/null 2>&1") == 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "--serve") == 0) {
        tw__tls_set_own_record_layer(strcmp(argv[3], "on") == 0);
        tw_factory factory;
        tw_factory_init(&factory, NULL, &inproc_ops, 0, NULL);
        return serve("bench-tls", argv[2], &factory);
    }
    ssize_t n = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
    if (n <= 0)
        return 1;
    bindir[n] = '\0';
    *strrchr(bindir, '/') = '\0';
    /* Which measures: any of echo, idle, handshake (all when none given). */
    bool want_echo = argc < 2, want_idle = argc < 2, want_hs = argc < 2;
    for (int i = 1; i < argc; i++) {
        want_echo |= strcmp(argv[i], "echo") == 0;
        want_idle |= strcmp(argv[i], "idle") == 0;
        want_hs |= strcmp(argv[i], "handshake") == 0;
    }
    memset(msg, 'x', sizeof msg);
    strcpy(certs, "/tmp/twine-bench-tls-XXXXXX");
    if (!mkdtemp(certs))
        return 1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && exec >/dev/null 2>&1 && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout ca.key -out ca.pem -days 2 -subj /CN=BenchCA && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
             "-out s.csr -subj /CN=localhost && "
             "printf 'basicConstraints=CA:FALSE\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' "
             "> ext.cnf && openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -out cert.pem -days 2 -extfile ext.cnf",
             certs);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench-tls: openssl could not make the certificates\n");
        return 1;
    }
    tw_reactor *r;
    if (tw_reactor_new(&r, NULL) < 0)
        return 1;

    struct echo_figures tcp = {0, 1e9}, tls = {0, 1e9}, own = {0, 1e9}, ossl = {0, 1e9};
    for (int i = 0; want_echo && i < REPS; i++) {
        struct echo_figures a = echo_run(r, false, -1), b = echo_run(r, true, -1);
        struct echo_figures c = echo_run(r, true, 1), d = echo_run(r, true, 0);
        keep_best(&tcp, a);
        keep_best(&tls, b);
        keep_best(&own, c);
        keep_best(&ossl, d);
    }
    bool nginx = have_nginx();
    double idle_tcp = 1e18, idle_tls = 1e18, idle_nginx = 1e18, idle_own = 1e18, idle_ossl = 1e18;
    double idle_burst = 1e18;
    for (int i = 0; want_idle && i < 2; i++) {
        double a = idle_run(r, 0, false), b = idle_run(r, 1, false);
        double c = nginx ? idle_run(r, 2, false) : 0;
        double d = idle_run(r, 4, false), e = idle_run(r, 3, false), f = idle_run(r, 1, true);
        if (f < idle_burst)
            idle_burst = f;
        if (d < idle_own)
            idle_own = d;
        if (e < idle_ossl)
            idle_ossl = e;
        if (a < idle_tcp)
            idle_tcp = a;
        if (b < idle_tls)
            idle_tls = b;
        if (c < idle_nginx)
            idle_nginx = c;
    }
    struct hs_figures hs_tw = {0, 1e9}, hs_nginx = {0, 1e9};
    for (int i = 0; want_hs && i < REPS; i++) {
        struct hs_figures a = handshake_run(r, false);
        if (a.hps > hs_tw.hps)
            hs_tw.hps = a.hps;
        if (a.cpu_us < hs_tw.cpu_us)
            hs_tw.cpu_us = a.cpu_us;
        if (nginx) {
            struct hs_figures b = handshake_run(r, true);
            if (b.hps > hs_nginx.hps)
                hs_nginx.hps = b.hps;
            if (b.cpu_us < hs_nginx.cpu_us)
                hs_nginx.cpu_us = b.cpu_us;
        }
    }
    tw_reactor_free(r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    if (system(cmd) != 0)
        return 1;

    printf("{\"bench\":\"tls\",\"echo_conns\":%d,\"tcp_rps\":%.0f,\"tls_rps\":%.0f,"
           "\"tcp_server_cpu_us\":%.2f,\"tls_server_cpu_us\":%.2f,\"cpu_ratio\":%.2f,"
           "\"idle_conns\":%d,\"tcp_idle_bytes\":%.0f,\"tls_idle_bytes\":%.0f,"
           "\"handshake_conns\":%d,\"twine_handshakes_s\":%.0f,\"twine_handshake_cpu_us\":%.1f",
           ECHO_CONNS, tcp.rps, tls.rps, tcp.cpu_us, tls.cpu_us, tls.cpu_us / tcp.cpu_us,
           IDLE_CONNS, idle_tcp, idle_tls, HANDSHAKE_CONNS, hs_tw.hps, hs_tw.cpu_us);
    printf(",\"tls_own_rps\":%.0f,\"tls_own_server_cpu_us\":%.2f,\"tls_openssl_rps\":%.0f,"
           "\"tls_openssl_server_cpu_us\":%.2f,\"own_cpu_ratio\":%.2f,\"openssl_cpu_ratio\":%.2f,"
           "\"tls_own_idle_bytes\":%.0f,\"tls_openssl_idle_bytes\":%.0f,"
           "\"idle_in_flight\":%d,\"tls_idle_burst_bytes\":%.0f",
           own.rps, own.cpu_us, ossl.rps, ossl.cpu_us, own.cpu_us / tcp.cpu_us,
           ossl.cpu_us / tcp.cpu_us, idle_own, idle_ossl, IDLE_IN_FLIGHT, idle_burst);
    if (nginx)
        printf(",\"nginx_handshakes_s\":%.0f,\"nginx_handshake_cpu_us\":%.1f,"
               "\"handshake_cpu_ratio\":%.2f,\"nginx_tls_idle_bytes\":%.0f",
               hs_nginx.hps, hs_nginx.cpu_us, hs_tw.cpu_us / hs_nginx.cpu_us, idle_nginx);
    printf("}\n");
    return 0;
}
