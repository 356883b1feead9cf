/* examples/deferred-hello prints exactly the seeds' line and exits 0. */
#include "twtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

TW_TEST(example, deferred_hello_prints_the_callbacks_message)
{
    const char *dir = getenv("TWINE_EXAMPLES_DIR");
    cr_assert_not_null(dir, "TWINE_EXAMPLES_DIR is set by CTest");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/deferred-hello'", dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char out[256];
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "exited normally");
    cr_assert_eq(WEXITSTATUS(status), 0);
    cr_assert_str_eq(out, "Callback received: Hello, Deferred!\n");
}
