/*
 * sys.c - the system side of the CLI: sleeping, finding sibling binaries,
 * free ports, directories, the environment and exit statuses of children,
 * and log tails. Used by `trellis dev` and the wait loop.
 */
#include <arpa/inet.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"

#define LOG_TAIL_LINES 12

/* Sleeps up to ms milliseconds; a signal ends it early, which is what we want. */
void tr_cli_nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ====================================================================== */
/* {=== binaries, ports, directories */

static bool executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/*
 * The path of a sibling binary: next to this executable, then where a build
 * tree puts it (../scheduler, ../worker), then on PATH. NULL when not found.
 */
char *tr_cli_find_binary(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    struct tr_buf b;
    tr_buf_init(&b, PATH_MAX);
    if (n > 0) {
        self[n] = '\0';
        const char *dir = dirname(self);
        static const char *const rel[] = {"", "../scheduler/", "../worker/"};
        for (size_t i = 0; i < TR_ARRAY_LEN(rel); i++) {
            tr_buf_reset(&b);
            if (tr_buf_addf(&b, "%s/%s%s", dir, rel[i], name) == 0 && executable(b.buf))
                return tr_buf_detach(&b, NULL);
        }
    }
    const char *path = getenv("PATH");
    while (path != NULL && *path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        tr_buf_reset(&b);
        if (len > 0 && tr_buf_addf(&b, "%.*s/%s", (int)len, path, name) == 0 &&
            executable(b.buf))
            return tr_buf_detach(&b, NULL);
        path = colon ? colon + 1 : NULL;
    }
    tr_buf_release(&b);
    return NULL;
}

/* A TCP port on 127.0.0.1 that is free right now, or -1 with errno set. */
int tr_cli_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    int saved = errno;
    close(fd);
    errno = saved;
    return port;
}


/* mkdir -p. Prints why not. */
bool tr_cli_make_dirs(const char *dir)
{
    char *p = tr_strdup(dir);
    if (p == NULL) {
        tr_cli_error("out of memory");
        return false;
    }
    bool ok = true;
    for (char *s = p + 1; ok; s++) {
        bool end = *s == '\0';
        if (*s == '/' || end) {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                tr_cli_error("cannot create directory '%s': %s", p, strerror(errno));
                ok = false;
            }
            if (end)
                break;
            *s = '/';
        }
    }
    tr_free(p);
    struct stat st;
    if (ok && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        tr_cli_error("cannot use '%s' as the data directory: not a directory", dir);
        ok = false;
    }
    return ok;
}

/* ====================================================================== */
/* {=== children */

extern char **environ;

/*
 * The daemons read TRELLIS_<FLAG> from the environment, and TRELLIS_API
 * means a URL to the CLI but HOST:PORT to the scheduler: the children get
 * our environment without it (their --api comes from the command line).
 * Built before any fork, so the children need not allocate.
 */
char **tr_cli_child_environment(void)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = tr_calloc(n + 1, sizeof(*envp));
    if (envp == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "TRELLIS_API=", 12) != 0)
            envp[k++] = environ[i];
    }
    envp[k] = NULL;
    return envp;
}


void tr_cli_describe_status(int status, char *out, size_t n)
{
    if (WIFEXITED(status))
        snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, n, "stopped (status 0x%x)", (unsigned)status);
}

/* Prints the last lines of a log, indented, on stderr. */
void tr_cli_print_log_tail(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    char buf[8192];
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    long from = size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0;
    size_t n = 0;
    if (size >= 0 && fseek(f, from, SEEK_SET) == 0)
        n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    const char *start = buf;
    int lines = 0;
    for (size_t i = n; i > 0; i--) {
        if (buf[i - 1] == '\n' && ++lines == LOG_TAIL_LINES) {
            start = buf + i;
            break;
        }
    }
    if (n == 0) {
        fprintf(stderr, "    (the log is empty)\n");
        return;
    }
    for (const char *p = start; *p;) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        fprintf(stderr, "    %.*s\n", len, p);
        p += len + (nl ? 1 : 0);
    }
}
