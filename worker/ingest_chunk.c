/*
 * ingest_chunk.c - the structural chunker and the root-confined file access
 * of worker/ingest.h.
 *
 * The chunker works in three passes over byte ranges of the input, never
 * copying text: blocks (paragraphs, headings, fences) -> pieces (blocks cut
 * to the target size) -> chunks (pieces packed within a section, plus the
 * overlap). So offsets point at the input by construction.
 */
#include "worker/ingest.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"

#define CHUNK_SIZE_DEFAULT 1000
#define LIST_DEPTH_MAX 32

/* A byte range and the section it belongs to. */
struct piece
{
    size_t start, end; /* byte range in the input, blanks trimmed */
    size_t section;    /* index into the sections array */
};

struct section
{
    size_t start;      /* where the section begins in the input */
    size_t head_start; /* its heading text (offset) */
    size_t head_len;   /* and length, 0 without heading */
    unsigned level;    /* heading level 1..6, 0 without heading */
};

struct chunker
{
    const char *p;         /* the input */
    size_t len;            /* its length */
    size_t size;           /* target chunk size */
    struct piece *pieces;  /* pieces in input order */
    size_t npieces, cap;   /* used and allocated */
    struct section *secs;  /* sections in input order; secs[0] has no heading */
    size_t nsecs, seccap;  /* used and allocated */
};

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static int push_piece(struct chunker *c, size_t s, size_t e)
{
    while (e > s && blank(c->p[e - 1]))
        e--;
    while (s < e && blank(c->p[s]))
        s++;
    if (s == e)
        return 0;
    return TR_VEC_PUSH(c->pieces, c->npieces, c->cap, ((struct piece){s, e, c->nsecs - 1}));
}

/* Where to cut a block [s, e) longer than the size: after a line, a sentence or a word. */
static size_t cut_point(const struct chunker *c, size_t s)
{
    const char *p = c->p;
    size_t lim = s + c->size, half = s + c->size / 2;
    for (size_t i = lim; i > half; i--)
        if (p[i - 1] == '\n')
            return i;
    for (size_t i = lim; i > half + 1; i--)
        if (p[i - 1] == ' ' && (p[i - 2] == '.' || p[i - 2] == '!' || p[i - 2] == '?'))
            return i;
    for (size_t i = lim; i > half; i--)
        if (p[i - 1] == ' ' || p[i - 1] == '\t')
            return i;
    size_t i = lim;
    while (i > s + 1 && ((unsigned char)p[i] & 0xC0) == 0x80)
        i--; /* never inside a UTF-8 sequence */
    return i;
}

/* Adds block [s, e) as pieces of at most size bytes. */
static int add_block(struct chunker *c, size_t s, size_t e)
{
    while (e - s > c->size) {
        size_t cut = cut_point(c, s);
        int rc = push_piece(c, s, cut);
        if (rc < 0)
            return rc;
        s = cut;
        while (s < e && blank(c->p[s]))
            s++;
    }
    return push_piece(c, s, e);
}

static int new_section(struct chunker *c, size_t start, size_t hs, size_t hl, unsigned level)
{
    return TR_VEC_PUSH(c->secs, c->nsecs, c->seccap, ((struct section){start, hs, hl, level}));
}

/* Up to three spaces of indent, as CommonMark allows; returns the index after them. */
static size_t indent(const char *p, size_t ls, size_t le)
{
    size_t i = ls;
    while (i < le && i - ls < 3 && p[i] == ' ')
        i++;
    return i;
}

/* A heading line "#... text": its level (0 if none), and the text range. */
static unsigned heading(const char *p, size_t ls, size_t le, size_t *hs, size_t *hl)
{
    size_t i = indent(p, ls, le);
    unsigned level = 0;
    while (i < le && p[i] == '#' && level < 7) {
        level++;
        i++;
    }
    if (level == 0 || level > 6 || (i < le && p[i] != ' ' && p[i] != '\t'))
        return 0;
    while (i < le && blank(p[i]))
        i++;
    size_t e = le;
    while (e > i && (blank(p[e - 1]) || p[e - 1] == '#'))
        e--;
    *hs = i;
    *hl = e - i;
    return level;
}

static bool fence(const char *p, size_t ls, size_t le)
{
    size_t i = indent(p, ls, le);
    return le - i >= 3 && (memcmp(p + i, "```", 3) == 0 || memcmp(p + i, "~~~", 3) == 0);
}

static bool blank_line(const char *p, size_t ls, size_t le)
{
    for (size_t i = ls; i < le; i++)
        if (!blank(p[i]))
            return false;
    return true;
}

/* Pass 1 and 2: blocks, cut into pieces, with their sections. */
static int split(struct chunker *c, bool markdown)
{
    const char *p = c->p;
    int rc = new_section(c, 0, 0, 0, 0);
    size_t bstart = SIZE_MAX, bend = 0;
    bool in_fence = false;
    for (size_t ls = 0; ls < c->len && rc == 0;) {
        const char *nl = memchr(p + ls, '\n', c->len - ls);
        size_t le = nl ? (size_t)(nl - p) : c->len;
        size_t next = nl ? le + 1 : c->len;
        size_t hs = 0, hl = 0;
        unsigned level = 0;
        if (in_fence) {
            bend = le;
            if (fence(p, ls, le)) {
                in_fence = false;
                rc = add_block(c, bstart, bend);
                bstart = SIZE_MAX;
            }
        } else if (markdown && (level = heading(p, ls, le, &hs, &hl)) > 0) {
            if (bstart != SIZE_MAX)
                rc = add_block(c, bstart, bend);
            bstart = SIZE_MAX;
            /* A section holding nothing but its heading ("# Guide" right
             * before "## Install") joins the next one, so that no chunk is a
             * bare heading and the outer heading stays as context. */
            size_t prev = c->nsecs - 1;
            bool bare = c->secs[prev].level > 0 && c->npieces > 0 &&
                        c->pieces[c->npieces - 1].section == prev &&
                        (c->npieces == 1 || c->pieces[c->npieces - 2].section != prev);
            size_t start = bare ? c->secs[prev].start : ls;
            if (rc == 0)
                rc = new_section(c, start, hs, hl, level);
            if (rc == 0 && bare)
                c->pieces[c->npieces - 1].section = c->nsecs - 1;
            if (rc == 0)
                rc = add_block(c, ls, le);
        } else if (blank_line(p, ls, le)) {
            if (bstart != SIZE_MAX)
                rc = add_block(c, bstart, bend);
            bstart = SIZE_MAX;
        } else if (markdown && fence(p, ls, le)) {
            if (bstart != SIZE_MAX)
                rc = add_block(c, bstart, bend);
            bstart = ls;
            bend = le;
            in_fence = true;
        } else {
            if (bstart == SIZE_MAX)
                bstart = ls;
            bend = le;
        }
        ls = next;
    }
    if (rc == 0 && bstart != SIZE_MAX)
        rc = add_block(c, bstart, in_fence ? c->len : bend);
    return rc;
}

/* The first word start at or after o (and before lim), or lim. */
static size_t word_start(const char *p, size_t o, size_t lim)
{
    while (o < lim && !(o == 0 || blank(p[o - 1])))
        o++;
    while (o < lim && blank(p[o]))
        o++;
    return o;
}

int tr_ingest_chunk(const char *p, size_t len, const struct tr_chunk_opts *opts,
                    struct tr_chunk **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct chunker c = {.p = p, .len = len};
    c.size = opts->size ? opts->size : CHUNK_SIZE_DEFAULT;
    if (opts->overlap >= c.size)
        return TR_EINVAL;
    int rc = split(&c, opts->markdown);
    struct tr_chunk *chunks = NULL;
    if (rc == 0) {
        chunks = tr_calloc(c.npieces ? c.npieces : 1, sizeof(*chunks));
        if (chunks == NULL)
            rc = TR_ENOMEM;
    }
    size_t nc = 0;
    size_t prev_end = 0;
    for (size_t i = 0; rc == 0 && i < c.npieces;) {
        size_t sec = c.pieces[i].section;
        size_t cstart = c.pieces[i].start, cend = c.pieces[i].end, j = i + 1;
        while (j < c.npieces && c.pieces[j].section == sec && c.pieces[j].end - cstart <= c.size)
            cend = c.pieces[j++].end;
        size_t ostart = cstart;
        if (opts->overlap > 0 && i > 0 && c.pieces[i - 1].section == sec) {
            size_t o = prev_end > opts->overlap ? prev_end - opts->overlap : 0;
            o = TR_MAX(o, c.secs[sec].start);
            ostart = word_start(p, o, cstart);
        }
        const struct section *s = &c.secs[sec];
        chunks[nc++] = (struct tr_chunk){.start = ostart, .end = cend,
                                         .heading_start = s->head_start,
                                         .heading_len = s->head_len,
                                         .heading_level = s->level};
        prev_end = cend;
        i = j;
    }
    tr_free(c.pieces);
    tr_free(c.secs);
    if (rc < 0) {
        tr_free(chunks);
        return rc;
    }
    *out = chunks;
    *n = nc;
    return 0;
}

/* ====================================================================== */
/* Files                                                                  */
/* ====================================================================== */

static int errno_code(int e)
{
    if (e == ENOENT || e == ENOTDIR)
        return TR_ENOENT;
    if (e == EACCES || e == EPERM || e == ELOOP)
        return TR_EACCES;
    if (e == ENOMEM)
        return TR_ENOMEM;
    if (e == ENAMETOOLONG)
        return TR_E2BIG;
    return TR_EIO;
}

int tr_ingest_resolve(const char *root, const char *rel, struct tr_buf *out)
{
    if (rel[0] == '/')
        return TR_EACCES;
    for (const char *s = rel; *s != '\0';) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.')
            return TR_EACCES;
        s += l + (e != NULL);
    }
    char rroot[PATH_MAX], joined[PATH_MAX], real[PATH_MAX];
    if (realpath(root, rroot) == NULL)
        return errno_code(errno);
    int w = snprintf(joined, sizeof(joined), "%s/%s", rroot, rel);
    if (w < 0 || (size_t)w >= sizeof(joined))
        return TR_E2BIG;
    if (realpath(joined, real) == NULL)
        return errno_code(errno);
    size_t rl = strlen(rroot);
    /* "/" as root: every absolute path is under it. */
    bool under = strcmp(rroot, "/") == 0 ||
                 (strncmp(real, rroot, rl) == 0 && (real[rl] == '\0' || real[rl] == '/'));
    if (!under)
        return TR_EACCES;
    tr_buf_reset(out);
    return tr_buf_addstr(out, real);
}

struct lister
{
    const char *glob; /* fnmatch pattern, or NULL */
    char **v;         /* relative paths found */
    size_t n, cap;    /* used and allocated */
};

static int list_dir(struct lister *l, struct tr_buf *path, size_t root_len, int depth)
{
    if (depth > LIST_DEPTH_MAX)
        return 0;
    DIR *d = opendir(path->buf);
    if (d == NULL)
        return errno_code(errno);
    int rc = 0;
    size_t base = path->len;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        path->len = base;
        path->buf[base] = '\0';
        rc = tr_buf_addch(path, '/');
        if (rc == 0)
            rc = tr_buf_addstr(path, de->d_name);
        if (rc < 0)
            break;
        struct stat st;
        if (lstat(path->buf, &st) != 0)
            continue; /* gone since readdir: not an error of the listing */
        if (S_ISDIR(st.st_mode)) {
            rc = list_dir(l, path, root_len, depth + 1);
            if (rc == TR_EACCES || rc == TR_ENOENT)
                rc = 0; /* an unreadable folder is skipped, like find(1) reports and goes on */
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        const char *rel = path->buf + root_len + 1;
        if (l->glob != NULL && fnmatch(l->glob, rel, 0) != 0)
            continue;
        if (l->n == TR_INGEST_LIST_MAX) {
            rc = TR_E2BIG;
            break;
        }
        if (TR_VEC_RESERVE(l->v, l->cap, l->n + 1) != 0) {
            rc = TR_ENOMEM;
            break;
        }
        l->v[l->n] = tr_strdup(rel);
        if (l->v[l->n] == NULL)
            rc = TR_ENOMEM;
        else
            l->n++;
    }
    closedir(d);
    path->len = base;
    path->buf[base] = '\0';
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int tr_ingest_list(const char *root, const char *glob, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct lister l = {.glob = glob};
    struct tr_buf path;
    tr_buf_init(&path, PATH_MAX);
    int rc = tr_buf_addstr(&path, root);
    while (rc == 0 && path.len > 1 && path.buf[path.len - 1] == '/')
        path.buf[--path.len] = '\0';
    size_t root_len = path.len;
    if (rc == 0)
        rc = list_dir(&l, &path, root_len, 0);
    tr_buf_release(&path);
    if (rc < 0) {
        for (size_t i = 0; i < l.n; i++)
            tr_free(l.v[i]);
        tr_free(l.v);
        return rc;
    }
    if (l.n > 0)
        qsort(l.v, l.n, sizeof(*l.v), cmp_str);
    *out = l.v;
    *n = l.n;
    return 0;
}

int tr_ingest_stat(const char *path, int64_t *mtime, int64_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno_code(errno);
    if (!S_ISREG(st.st_mode))
        return TR_EACCES;
    *mtime = (int64_t)st.st_mtime;
    *size = (int64_t)st.st_size;
    return 0;
}

int tr_ingest_read_file(const char *path, struct tr_buf *out, int64_t *mtime, int64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno_code(errno);
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = errno_code(errno);
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = TR_EACCES;
        goto out_close;
    }
    if ((uint64_t)st.st_size > TR_INGEST_FILE_MAX) {
        rc = TR_E2BIG;
        goto out_close;
    }
    /* Room for the size limit plus one read past it, which detects growth. */
    tr_buf_release(out);
    tr_buf_init(out, TR_INGEST_FILE_MAX + 8192);
    rc = tr_buf_grow(out, (size_t)st.st_size);
    while (rc == 0) {
        if (out->alloc - out->len < 2)
            rc = tr_buf_grow(out, 4096);
        if (rc < 0)
            break;
        ssize_t r = read(fd, out->buf + out->len, out->alloc - out->len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = TR_EIO;
            break;
        }
        if (r == 0)
            break;
        out->len += (size_t)r;
        out->buf[out->len] = '\0';
        if (out->len > TR_INGEST_FILE_MAX)
            rc = TR_E2BIG; /* the file grew while read */
    }
    *mtime = (int64_t)st.st_mtime;
    *size = (int64_t)out->len;

out_close:
    close(fd);
    return rc;
}
