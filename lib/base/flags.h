/*
 * flags.h - command-line flags and TRELLIS_* environment variables from one
 * table per program.
 *
 * A program describes each flag once (name, type, bounds, where the value
 * goes, default, help); tr_flags_parse() then applies the defaults, the
 * environment and the command line, in that order, so a flag overrides its
 * variable. Every flag --some-name is also the variable TRELLIS_SOME_NAME
 * (the set's prefix plus the name in capitals, '-' as '_') unless its entry
 * names another variable or none. The same table prints --help, one line per
 * flag with its variable and its default, so the help cannot drift from the
 * parser.
 *
 * Numbers are strict: decimal digits only (a leading '-' for signed ones),
 * no hexadecimal, no spaces, no trailing text, range-checked, so
 * "--slots 0x10" and TRELLIS_SLOTS=12abc are errors that name both the flag
 * and the variable. An empty variable counts as unset (deployment templates
 * set empty ones). Long flags are matched whole, never by abbreviation, so a
 * flag added later cannot change what an old command line means; an unknown
 * flag is refused with the nearest known name as a suggestion.
 *
 * Single-threaded: the environment is read with getenv().
 */
#ifndef TR_BASE_FLAGS_H
#define TR_BASE_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/base/base.h"
#include "lib/base/error.h"

enum tr_flag_type
{
    TR_FLAG_STR,    /* char *, a copy (tr_free'd by tr_flags_release) */
    TR_FLAG_UINT,   /* uint32_t in [min, max] */
    TR_FLAG_INT,    /* long in [min, max] */
    TR_FLAG_DOUBLE, /* double in [dmin, dmax], decimal notation only */
    TR_FLAG_BOOL,   /* bool; "--name" alone is true, else 1/0, true/false, yes/no */
    TR_FLAG_LIST,   /* struct tr_flag_list; repeatable, the variable is comma-separated */
    TR_FLAG_ENUM,   /* int: the index of the value in choices */
};

/* A repeatable flag's values, in the order given. Zero-initialise. */
struct tr_flag_list
{
    char **items; /* tr_strdup'd copies */
    size_t n;
    size_t cap;
};

/*
 * Checks a string or list value before it is stored: NULL when it is fine,
 * else the reason ("not HOST:PORT"), shown after the flag's name.
 */
typedef const char *(*tr_flag_check_fn)(const char *value);

/* The variable name for entries that have none (the flag is command line only). */
#define TR_FLAG_NO_ENV ""

/* One flag. Unused fields stay zero; the table is usually static const. */
struct tr_flag
{
    const char *name;        /* "heartbeat-ms": --heartbeat-ms */
    char short_name;         /* 'p' for -p, or 0 */
    enum tr_flag_type type;
    void *var;               /* where the value goes, or NULL: the set's base + off */
    size_t off;              /* offsetof() into the set's base when var is NULL */
    const char *dflt;        /* the default as it would be written, or NULL for none */
    const char *arg;         /* the value's name in --help ("N", "FILE"); not for BOOL */
    const char *help;        /* one line */
    long min, max;           /* UINT and INT bounds (both 0: the type's whole range) */
    double dmin, dmax;       /* DOUBLE bounds (both 0: any finite number) */
    const char *const *choices; /* ENUM names, NULL-terminated */
    size_t max_items;        /* LIST: at most this many values (0: no limit) */
    tr_flag_check_fn check;  /* STR and LIST: validates each value, or NULL */
    const char *env;         /* NULL: derived from the name; TR_FLAG_NO_ENV: none */
};

/* Where a flag's value came from. */
enum tr_flag_source
{
    TR_FLAG_FROM_DEFAULT = 0,
    TR_FLAG_FROM_ENV = 1,
    TR_FLAG_FROM_ARGV = 2,
};

/* A table and the struct its offsets point into. */
struct tr_flag_set
{
    const struct tr_flag *flags;
    size_t n;
    void *base;               /* for entries with var == NULL; may be NULL otherwise */
    const char *env_prefix;   /* "TRELLIS_"; NULL: only entries that name a variable have one */
    uint8_t *source;          /* n entries of enum tr_flag_source, filled in; or NULL */
};

enum tr_flags_mode
{
    /* The first operand and everything after it are left unparsed (a subcommand's line). */
    TR_FLAGS_STOP_AT_OPERAND = 1 << 0,
};

#define TR_FLAGS_MAX_SETS 3

/* What tr_flags_parse reads. --help / -h is always understood. */
struct tr_flags
{
    const char *prog;                          /* "trellis-worker", in messages */
    struct tr_flag_set sets[TR_FLAGS_MAX_SETS]; /* searched in order; unused ones zero */
    unsigned mode;                             /* enum tr_flags_mode */
};

/* tr_flags_parse's answer when --help was given (nothing else is applied after it). */
#define TR_FLAGS_HELP 1

/*
 * Applies every default, then every set variable, then argv[1..argc) (with
 * argv[0] the program). "--name=value", "--name value", "-x value", "-xvalue",
 * and "--" (all that follows is operands) are understood; operands are moved,
 * in order, to argv[1..*n_operands] (n_operands may be NULL only when the
 * program takes none: an operand is then an error). Repeated flags overwrite,
 * except lists, which collect; a list given on the command line replaces the
 * one from the environment.
 *
 * Returns 0, TR_FLAGS_HELP, TR_ENOMEM, or TR_EINVAL with err's message naming
 * the flag, its variable and the reason. Values stored before a failure stay
 * stored: tr_flags_release() frees them either way.
 */
int tr_flags_parse(const struct tr_flags *f, int argc, char **argv, int *n_operands,
                   struct tr_error *err) TR_MUST_CHECK;

/*
 * Frees the strings and lists that tr_flags_parse stored for f, and NULLs
 * them. Safe on values never set (zero).
 */
void tr_flags_release(const struct tr_flags *f);

/* The same for one set. */
void tr_flag_set_release(const struct tr_flag_set *s);

/*
 * Prints one line per flag of every set: the flag, its value's name, the
 * help text, the variable and the default.
 */
void tr_flags_help(const struct tr_flags *f, FILE *out);

/* The same for one set (for help pages that print sets under headings). */
void tr_flags_help_set(const struct tr_flag_set *s, FILE *out);

/*
 * The variable of flag fl in a set with prefix into out: "TRELLIS_SLOTS".
 * Empty when the flag has none. Always NUL-terminated.
 */
void tr_flag_env_name(const struct tr_flag *fl, const char *prefix, char *out, size_t size);

/* Frees a list's values and empties it. */
void tr_flag_list_release(struct tr_flag_list *l);

/*
 * Parses a decimal integer strictly (digits only, '-' first for negative
 * ones, nothing else) in [min, max]. 0, or TR_EINVAL (not a number, or out
 * of range).
 */
int tr_parse_long(const char *s, long min, long max, long *out) TR_MUST_CHECK;

/* The same for uint32_t. */
int tr_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out) TR_MUST_CHECK;

/* ZeroMQ routing ids are at most 255 bytes; so are the ids of daemons. */
#define TR_ID_MAX 255

/*
 * The default name of a daemon instance: prefix, the host name and the
 * process id ("w-node7-4242"), at most TR_ID_MAX bytes (the host name is
 * cut to fit; "localhost" when it cannot be read). tr_free it; NULL when out
 * of memory.
 */
char *tr_default_id(const char *prefix) TR_MUST_CHECK;

#endif
