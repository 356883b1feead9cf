/* Plugins (plugin.h): the registry, option parsing with every error, usage
 * text, and the RFC 862-867 plugins' protocols driven through their
 * factories (memory reactor and string transports). */
#include <stdarg.h>
#include <string.h>

#include <twine/plugin.h>
#include <twine/service.h>

#include "twtest.h"

static const tw_plugin_option opts[] = {
    {"listen", 'l', "ENDPOINT", "Where.", "tcp:8000", true},
    {"quote", 'q', "TEXT", "What.", NULL, false},
    {"verbose", 'v', NULL, "Say more.", NULL, false},
    {0},
};

static int make_nothing(tw_reactor *r, const tw_plugin_args *a, tw_service **out, tw_failure **f)
{
    return TW_ENOTSUP;
}

static const tw_plugin test_plugin = {
    .name = "zz-test", .description = "A test.", .options = opts, .make_service = make_nothing};

static int parse(tw_plugin_args **a, tw_failure **f, int argc, ...)
{
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    /* Values point into argv: keep the words alive (they are literals). */
    return tw_plugin_args_parse(&test_plugin, argc, argv, a, f);
}

TW_TEST(plugin, long_short_and_equals_forms)
{
    tw_plugin_args *a;
    cr_assert_eq(
        parse(&a, NULL, 7, "--listen", "tcp:1", "--listen=tcp:2", "-ltcp:3", "-l", "tcp:4", "-v"),
        0);
    cr_assert_eq(tw_plugin_arg_count(a, "listen"), 4);
    cr_assert_str_eq(tw_plugin_arg_at(a, "listen", 0), "tcp:1");
    cr_assert_str_eq(tw_plugin_arg_at(a, "listen", 1), "tcp:2");
    cr_assert_str_eq(tw_plugin_arg_at(a, "listen", 2), "tcp:3");
    cr_assert_str_eq(tw_plugin_arg_at(a, "listen", 3), "tcp:4");
    cr_assert_null(tw_plugin_arg_at(a, "listen", 4));
    cr_assert_str_eq(tw_plugin_arg(a, "listen"), "tcp:4", "the last one");
    cr_assert(tw_plugin_flag(a, "verbose"));
    cr_assert(!tw_plugin_flag(a, "quote"));
    cr_assert_null(tw_plugin_arg(a, "quote"));
    cr_assert_eq(tw_plugin_arg_count(a, "quote"), 0);
    cr_assert_eq(tw_plugin_arg_count(a, "nope"), 0);
    cr_assert_null(tw_plugin_arg(a, "nope"));
    tw_plugin_args_free(a);
}

TW_TEST(plugin, defaults_and_last_value_wins)
{
    tw_plugin_args *a;
    cr_assert_eq(parse(&a, NULL, 4, "--quote", "one", "-q", "two"), 0);
    cr_assert_str_eq(tw_plugin_arg(a, "quote"), "two");
    cr_assert_eq(tw_plugin_arg_count(a, "quote"), 1, "not repeatable: one value kept");
    cr_assert_eq(tw_plugin_arg_count(a, "listen"), 1, "the default");
    cr_assert_str_eq(tw_plugin_arg_at(a, "listen", 0), "tcp:8000");
    cr_assert_str_eq(tw_plugin_arg(a, "listen"), "tcp:8000");
    cr_assert(!tw_plugin_flag(a, "verbose"));
    tw_plugin_args_free(a);
    cr_assert_eq(parse(&a, NULL, 2, "--quote=", "--verbose"), 0);
    cr_assert_str_eq(tw_plugin_arg(a, "quote"), "", "an empty value is a value");
    tw_plugin_args_free(a);
    cr_assert_eq(parse(&a, NULL, 0), 0);
    tw_plugin_args_free(a);
}

static void refused(const char *why, int argc, char *w0, char *w1)
{
    tw_plugin_args *a = (void *)1;
    tw_failure *f = NULL;
    cr_assert_eq(parse(&a, &f, argc, w0, w1), TW_EINVAL, "%s", why);
    cr_assert_null(a);
    cr_assert_not_null(f);
    cr_assert_str_eq(tw_failure_message(f), why);
    tw_failure_unref(f);
}

TW_TEST(plugin, every_error_names_the_word)
{
    refused("unknown option '--lisen'", 2, "--lisen", "x");
    refused("unknown option '--lisen'", 1, "--lisen=x", NULL);
    refused("unknown option '-x'", 1, "-x", NULL);
    refused("--listen needs a value", 1, "--listen", NULL);
    refused("--listen needs a value", 1, "-l", NULL);
    refused("--verbose takes no value", 1, "--verbose=yes", NULL);
    refused("--verbose takes no value", 1, "-vx", NULL);
    refused("unexpected argument 'extra'", 1, "extra", NULL);
    refused("unexpected argument '-'", 1, "-", NULL);
    refused("unexpected argument '--'", 2, "--", "x");
    tw_plugin_args *a;
    tw_failure *f = NULL;
    cr_assert_eq(parse(&a, &f, 2, "--listen", "x"), 0);
    tw_plugin_args_free(a);
    cr_assert_eq(parse(&a, &f, 2, "--quote", "x"), 0);
    tw_plugin_args_free(a);
    cr_assert_eq(tw_plugin_args_parse(&test_plugin, 0, NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_plugin_args_parse(NULL, 0, NULL, &a, NULL), TW_EINVAL);
}

TW_TEST(plugin, help_is_built_in)
{
    tw_plugin_args *a = (void *)1;
    cr_assert_eq(parse(&a, NULL, 3, "--listen", "x", "--help"), TW_EAGAIN);
    cr_assert_null(a);
    char buf[2048];
    size_t n = tw_plugin_usage(&test_plugin, buf, sizeof buf);
    cr_assert_eq(n, strlen(buf));
    cr_assert(strstr(buf, "Usage: twined [options] zz-test [zz-test options]\n"), "%s", buf);
    cr_assert(strstr(buf, "A test.\n"));
    cr_assert(strstr(buf, "-l, --listen ENDPOINT"), "%s", buf);
    cr_assert(strstr(buf, "Repeatable. [default: tcp:8000]"), "%s", buf);
    cr_assert(strstr(buf, "-v, --verbose "), "%s", buf);
    cr_assert(strstr(buf, "--help"));
    /* Truncated: still NUL-terminated, and the full length is told. */
    char small[16];
    cr_assert_eq(tw_plugin_usage(&test_plugin, small, sizeof small), n);
    cr_assert_eq(strlen(small), sizeof small - 1);
}

TW_TEST(plugin, registry)
{
    size_t before = tw_plugin_count();
    cr_assert_geq(before, 5);
    cr_assert_not_null(tw_plugin_find("echo"));
    cr_assert_null(tw_plugin_find("zz-test"));
    cr_assert_null(tw_plugin_find(NULL));
    cr_assert_eq(tw_plugin_register(&test_plugin), 0);
    cr_assert_eq(tw_plugin_register(&test_plugin), TW_EEXIST);
    const tw_plugin echo_again = {.name = "echo", .make_service = make_nothing};
    cr_assert_eq(tw_plugin_register(&echo_again), TW_EEXIST, "a built-in name");
    const tw_plugin nameless = {.name = "", .make_service = make_nothing};
    const tw_plugin maker_less = {.name = "x"};
    cr_assert_eq(tw_plugin_register(&nameless), TW_EINVAL);
    cr_assert_eq(tw_plugin_register(&maker_less), TW_EINVAL);
    cr_assert_eq(tw_plugin_register(NULL), TW_EINVAL);
    cr_assert_eq(tw_plugin_count(), before + 1);
    cr_assert_eq(tw_plugin_find("zz-test"), &test_plugin);
    /* Listed by name, the registered one among the built-ins. */
    for (size_t i = 1; i < tw_plugin_count(); i++)
        cr_assert_lt(strcmp(tw_plugin_at(i - 1)->name, tw_plugin_at(i)->name), 0);
    cr_assert_eq(tw_plugin_at(tw_plugin_count() - 1), &test_plugin);
    cr_assert_null(tw_plugin_at(tw_plugin_count()));
    static const char *const basics[] = {"chargen", "daytime", "discard", "echo", "qotd"};
    for (size_t i = 0; i < 5; i++) {
        const tw_plugin *p = tw_plugin_find(basics[i]);
        cr_assert_not_null(p, "%s", basics[i]);
        cr_assert_not_null(p->description);
        cr_assert_not_null(p->make_service);
    }
}

TW_TEST(plugin, parse_allocation_failure)
{
    for (long n = 0;; n++) {
        tw_plugin_args *a = NULL;
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = parse(&a, &f, 8, "-l", "1", "-l", "2", "-l", "3", "--quote", "q");
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            cr_assert_eq(tw_plugin_arg_count(a, "listen"), 3);
            tw_plugin_args_free(a);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_null(a);
        cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
        tw_failure_unref(f);
        cr_assert_lt(n, 100);
    }
}

/* ---- The basic plugins, through the memory reactor */

struct built {
    tw_reactor *mr;
    tw_service *tree;
    tw_plugin_args *args;
};

static struct built make(const char *plugin, int argc, char **argv)
{
    struct built b = {0};
    cr_assert_eq(tw_testing_memory_reactor_new(&b.mr), 0);
    const tw_plugin *p = tw_plugin_find(plugin);
    cr_assert_not_null(p);
    cr_assert_eq(tw_plugin_args_parse(p, argc, argv, &b.args, NULL), 0);
    tw_failure *f = NULL;
    cr_assert_eq(p->make_service(b.mr, b.args, &b.tree, &f), 0, "%s",
                 f ? tw_failure_message(f) : "");
    cr_assert_eq(tw_service_privileged_start(b.tree, NULL), 0);
    cr_assert_eq(tw_service_start(b.tree, NULL), 0);
    return b;
}

static void unmake(struct built *b)
{
    tw_deferred_unref(tw_service_stop(b->tree));
    tw_service_release(b->tree);
    tw_plugin_args_free(b->args);
    tw_testing_memory_reactor_free(b->mr);
}

/* Connects a protocol of the i-th listen's factory to a new string
 * transport. */
static tw_string_transport *connect_one(struct built *b, size_t i)
{
    const tw_testing_listen *l = tw_testing_memory_reactor_listen(b->mr, i);
    cr_assert_not_null(l);
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    tw_protocol *p = tw_factory_build_protocol(l->factory, &st->peer);
    cr_assert_not_null(p);
    cr_assert_eq(tw_string_transport_connect(st, p), 0);
    return st;
}

TW_TEST(plugin, defaults_listen_on_the_rfc_port_plus_8000)
{
    static const struct {
        const char *name;
        unsigned port;
    } ports[] = {
        {"echo", 8007}, {"discard", 8009}, {"daytime", 8013}, {"qotd", 8017}, {"chargen", 8019}};
    for (size_t i = 0; i < 5; i++) {
        struct built b = make(ports[i].name, 0, NULL);
        cr_assert_eq(tw_testing_memory_reactor_listens(b.mr), 1);
        cr_assert_eq(tw_address_port(&tw_testing_memory_reactor_listen(b.mr, 0)->addr),
                     ports[i].port, "%s", ports[i].name);
        cr_assert_str_eq(b.tree->name, ports[i].name);
        unmake(&b);
    }
}

TW_TEST(plugin, listen_is_repeatable_and_checked)
{
    char *argv[] = {"--listen", "tcp:1", "-l", "tcp:2:interface=127.0.0.1"};
    struct built b = make("echo", 4, argv);
    cr_assert_eq(tw_testing_memory_reactor_listens(b.mr), 2);
    cr_assert_eq(tw_multi_service_count(tw_service_as_multi(b.tree)), 2);
    cr_assert_not_null(tw_multi_service_get(tw_service_as_multi(b.tree), "tcp:1"));
    unmake(&b);

    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    const tw_plugin *echo = tw_plugin_find("echo");
    static char *bad[][2] = {{"--listen", "tpc:1"}, {"--listen", "tcp:x"}};
    for (size_t i = 0; i < 2; i++) {
        tw_plugin_args *a;
        cr_assert_eq(tw_plugin_args_parse(echo, 2, bad[i], &a, NULL), 0);
        tw_service *tree = (void *)1;
        tw_failure *f = NULL;
        cr_assert_eq(echo->make_service(mr, a, &tree, &f), TW_EINVAL);
        cr_assert(strncmp(tw_failure_message(f), "--listen: ", 10) == 0, "%s",
                  tw_failure_message(f));
        tw_failure_unref(f);
        tw_plugin_args_free(a);
    }
    char *twice[] = {"-l", "tcp:1", "-l", "tcp:1"};
    tw_plugin_args *a;
    cr_assert_eq(tw_plugin_args_parse(echo, 4, twice, &a, NULL), 0);
    tw_service *tree;
    tw_failure *f = NULL;
    cr_assert_eq(echo->make_service(mr, a, &tree, &f), TW_EINVAL);
    cr_assert_str_eq(tw_failure_message(f), "--listen: 'tcp:1' given twice");
    tw_failure_unref(f);
    tw_plugin_args_free(a);
    tw_testing_memory_reactor_free(mr);
}

TW_TEST(plugin, echo_echoes_and_holds_back_a_slow_reader)
{
    struct built b = make("echo", 0, NULL);
    tw_string_transport *st = connect_one(&b, 0);
    tw_string_transport_feed(st, "hello", 5);
    tw_string_transport_feed(st, " world", 6);
    size_t n;
    const char *out = tw_string_transport_value(st, &n);
    cr_assert_eq(n, 11);
    cr_assert_str_eq(out, "hello world");
    /* The echoes back up: the transport stops reading from the client. */
    cr_assert(!st->paused);
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_HIGH_WATER + 1);
    cr_assert(st->paused, "reading paused while the echoes wait");
    tw_string_transport_set_buffer_size(st, 0);
    cr_assert(!st->paused, "and resumed once they drained");
    tw_string_transport_lose(st, TW_ECONNDONE);
    tw_string_transport_free(st);
    unmake(&b);
}

TW_TEST(plugin, discard_answers_nothing)
{
    struct built b = make("discard", 0, NULL);
    tw_string_transport *st = connect_one(&b, 0);
    tw_string_transport_feed(st, "hello", 5);
    size_t n;
    tw_string_transport_value(st, &n);
    cr_assert_eq(n, 0);
    cr_assert_eq(st->lose_calls, 0);
    tw_string_transport_free(st);
    unmake(&b);
}

TW_TEST(plugin, chargen_produces_as_the_reader_reads)
{
    struct built b = make("chargen", 0, NULL);
    tw_string_transport *st = connect_one(&b, 0);
    cr_assert_not_null(st->producer, "a producer, not a loop");
    cr_assert(!st->streaming, "a pull producer");
    size_t n;
    const char *out = tw_string_transport_value(st, &n);
    cr_assert_gt(n, 0);
    cr_assert_eq(n % 74, 0, "whole lines of 72 characters and CRLF");
    size_t first = n;
    /* RFC 864's pattern: each line starts one character further along. */
    cr_assert(strncmp(out, " !\"#$%&'()*+,-./0123456789", 26) == 0, "%.30s", out);
    cr_assert_eq(out[72], '\r');
    cr_assert_eq(out[73], '\n');
    cr_assert_eq(out[74], '!');
    for (size_t line = 0; line < n / 74; line++) {
        for (size_t i = 0; i < 72; i++)
            cr_assert_eq(out[line * 74 + i], ' ' + (char)((line + i) % 95));
    }
    /* Nothing more until the reader drains what is there. */
    tw_string_transport_value(st, &n);
    cr_assert_eq(n, first);
    tw_string_transport_set_buffer_size(st, 0);
    tw_string_transport_value(st, &n);
    cr_assert_eq(n, 2 * first, "one more chunk per drain");
    tw_string_transport_feed(st, "ignored", 7);
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(st->producer_stops, 1);
    tw_string_transport_free(st);
    unmake(&b);
}

TW_TEST(plugin, daytime_and_qotd_answer_and_close)
{
    struct built b = make("daytime", 0, NULL);
    tw_string_transport *st = connect_one(&b, 0);
    size_t n;
    const char *out = tw_string_transport_value(st, &n);
    cr_assert_eq(n, 26, "%s", out); /* "Mon Nov 23 00:40:01 2026\r\n" */
    cr_assert_eq(out[24], '\r');
    cr_assert_eq(st->lose_calls, 1);
    tw_string_transport_free(st);
    unmake(&b);

    b = make("qotd", 0, NULL);
    st = connect_one(&b, 0);
    cr_assert_str_eq(tw_string_transport_value(st, NULL),
                     "An apple a day keeps the doctor away.\r\n");
    cr_assert_eq(st->lose_calls, 1);
    tw_string_transport_free(st);
    unmake(&b);

    char *argv[] = {"--quote", "Hello, world"};
    b = make("qotd", 2, argv);
    st = connect_one(&b, 0);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "Hello, world\r\n");
    tw_string_transport_free(st);
    unmake(&b);
}

TW_TEST(plugin, make_service_allocation_failure)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    const tw_plugin *qotd = tw_plugin_find("qotd");
    char *argv[] = {"-l", "tcp:1", "-l", "tcp:2", "-q", "hi"};
    tw_plugin_args *a;
    cr_assert_eq(tw_plugin_args_parse(qotd, 6, argv, &a, NULL), 0);
    for (long n = 0;; n++) {
        tw_service *tree = NULL;
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = qotd->make_service(mr, a, &tree, &f);
        if (rc == 0)
            rc = tw_service_start(tree, &f);
        tw_testing_fail_alloc_off();
        if (tree) {
            tw_deferred_unref(tw_service_stop(tree));
            tw_service_release(tree);
        }
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, f ? tw_failure_message(f) : "");
        tw_failure_unref(f);
        cr_assert_lt(n, 1000);
    }
    tw_plugin_args_free(a);
    tw_testing_memory_reactor_free(mr);
}
