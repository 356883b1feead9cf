/* systemd's readiness notification (sd_notify, without libsystemd) and the
 * pid file. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <twine/error.h>

#include "twined/twined.h"

int twined_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0])
        return 0;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sun.sun_path || (path[0] != '/' && path[0] != '@'))
        return TW_EINVAL;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* the abstract namespace */
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen) < 0)
        rc = -errno;
    close(fd);
    if (rc < 0)
        tw_log_warn(TWINED_NS, "cannot notify systemd (%s): %s", path, tw_strerror(rc));
    return rc;
}

int twined_pidfile_write(const char *path)
{
    FILE *f = fopen(path, "re");
    if (f) {
        long pid = 0;
        int n = fscanf(f, "%ld", &pid);
        fclose(f);
        if (n == 1 && pid > 0 && pid != (long)getpid() &&
            (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
            twined_complain("--pidfile: '%s' names a running process (pid %ld)", path, pid);
            return TW_EEXIST;
        }
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = -errno;
        twined_complain("--pidfile: cannot write '%s': %s", path, tw_strerror(rc));
        return rc;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    int rc = write(fd, buf, (size_t)n) == n ? 0 : (errno ? -errno : TW_EINVAL);
    close(fd);
    if (rc < 0) {
        twined_complain("--pidfile: cannot write '%s': %s", path, tw_strerror(rc));
        unlink(path);
    }
    return rc;
}

void twined_pidfile_remove(const char *path)
{
    if (path)
        unlink(path);
}
