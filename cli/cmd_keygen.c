/*
 * cmd_keygen.c - `trellis keygen NAME [--dir DIR]`: a CURVE key pair for the
 * worker port (the scheduler's, or a worker's), written as DIR/NAME.key
 * (mode 0600, the secret) and DIR/NAME.pub (the public key to hand out).
 */
#include <getopt.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "lib/wire/curve.h"

int tr_cmd_keygen(struct tr_cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, TR_OPT_FIRST_LOCAL},
        {NULL, 0, NULL, 0},
    };
    const char *dir = ".";
    for (;;) {
        int c = tr_cli_getopt(cli, argc, argv, "", opts);
        if (c == -1)
            break;
        if (c == TR_OPT_EXIT)
            return cli->exit_code;
        if (c == TR_OPT_FIRST_LOCAL)
            dir = optarg;
    }
    if (argc - optind != 1)
        return tr_cli_usage_error(cli, "keygen: give one NAME");
    const char *name = argv[optind];
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
