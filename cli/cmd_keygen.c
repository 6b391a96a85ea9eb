/*
 * cmd_keygen.c - `trellis keygen NAME [--dir DIR]`: a CURVE key pair for the
 * worker port (the scheduler's, or a worker's), written as DIR/NAME.key
 * (mode 0600, the secret) and DIR/NAME.pub (the public key to hand out).
 */
#include <stddef.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "lib/wire/curve.h"

struct keygen_opts
{
    char *dir;
};

static const struct tr_flag keygen_flags[] = {
    {"dir", 0, TR_FLAG_STR, .off = offsetof(struct keygen_opts, dir), .dflt = ".", .arg = "DIR",
     .help = "where to write the files"},
};

static int keygen(struct tr_cli *cli, const char *dir, const char *name);

int tr_cmd_keygen(struct tr_cli *cli, int argc, char **argv)
{
    struct keygen_opts o = {0};
    int code = tr_cli_parse(cli, argc, argv, keygen_flags, TR_ARRAY_LEN(keygen_flags), &o, 1, 1,
                            "NAME", NULL);
    if (code < 0)
        code = keygen(cli, o.dir, argv[1]);
    tr_cli_flags_release(keygen_flags, TR_ARRAY_LEN(keygen_flags), &o);
    return code;
}

static int keygen(struct tr_cli *cli, const char *dir, const char *name)
{
    if (*name == '\0' || strchr(name, '/') != NULL)
        return tr_cli_usage_error(cli, "keygen: NAME must be a plain file name");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        tr_cli_error("cannot create '%s': %s", dir, strerror(errno));
        return TR_EXIT_FAILED;
    }
    struct tr_error err;
    tr_error_init(&err);
    if (tr_curve_keygen(dir, name, &err) < 0) {
        tr_cli_error("%s", err.msg);
        return TR_EXIT_FAILED;
    }
    printf("%s/%s.key  key pair (keep it secret: --curve-key)\n", dir, name);
    printf("%s/%s.pub  public key (scheduler: --curve-allow; workers: --curve-server)\n", dir,
           name);
    return 0;
}
