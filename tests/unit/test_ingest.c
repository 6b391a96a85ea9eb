/*
 * test_ingest.c - normalisation, HTML text extraction, the structural
 * chunker (headings, paragraphs, size, overlap, offsets) and the file
 * functions confined to a root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "worker/ingest.h"

/* ---- fixture: a scratch folder for the file tests ---- */

struct fx
{
    char dir[256];
};

static void write_file(const char *dir, const char *rel, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    struct fx *f = tr_calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/trellis-ingest-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    const char *files[] = {"a.md", "sub/b.txt", "sub/c.md", ".hidden", "link", "sub"};
    for (size_t i = 0; i < TR_ARRAY_LEN(files); i++) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", f->dir, files[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    rmdir(f->dir);
    tr_free(f);
    return 0;
}

static void expect_normal(const char *in, size_t len, const char *want)
{
    struct tr_buf b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_ingest_normalize(in, len, &b), 0);
    assert_string_equal(b.buf, want);
    tr_buf_release(&b);
}

/* ---- normalisation ---- */

static void test_normalize(void **state)
{
    /* CRLF, tabs, NBSP, a zero-width space, blank lines, an invalid byte, trailing spaces. */
    const char in[] = "  a\r\nb\t\tc\xc2\xa0" "d\xe2\x80\x8b" "e  \n\n\n\nf \xff g  ";
    expect_normal(in, sizeof(in) - 1, "a\nb c de\n\nf \xef\xbf\xbd g");
    /* A lone CR is a line break; U+3000 and U+2009 are spaces; a BOM goes. */
    expect_normal("\xef\xbb\xbfx\ry\xe3\x80\x80z\xe2\x80\x89w", 14, "x\ny z w");
    /* Valid multi-byte text is kept byte for byte; an overlong form is replaced. */
    expect_normal("caf\xc3\xa9 \xc0\x80!", 9, "caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd!");
    /* A NUL and other controls are removed, not turned into spaces. */
    expect_normal("a\0b\x01" "c", 5, "abc");
    expect_normal(" \n\t ", 4, "");
    /* NFC: e + combining acute (U+0301) becomes U+00E9, as does Angstrom sign
     * U+212B become A-ring U+00C5; already composed text is unchanged. */
    expect_normal("cafe\xcc\x81 \xe2\x84\xab", 10, "caf\xc3\xa9 \xc3\x85");
    expect_normal("caf\xc3\xa9", 5, "caf\xc3\xa9");
    /* Appending keeps what the buffer already held. */
    struct tr_buf b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_buf_addstr(&b, "x: "), 0);
    assert_int_equal(tr_ingest_normalize("e\xcc\x81", 3, &b), 0);
    assert_string_equal(b.buf, "x: \xc3\xa9");
    tr_buf_release(&b);
}

/* ---- HTML ---- */

static void test_html_text(void **state)
{
    const char *html =
        "<html><head><title>T &amp; C</title><style>p{color:red}</style>"
        "<script>var x = \"<p>no</p>\";</script></head>\n"
        "<body><h2 class=\"x\">Install\n guide</h2><p>Run &lt;make&gt; &#8212; then&nbsp;test."
        "</p><!-- hidden <p>x</p> --><ul><li>one</li><li>two &#x41;</li></ul>"
        "<p title='a>b'>5 < 6 &unknown; end</p><SCRIPT>gone()</SCRIPT></body></html>";
    struct tr_buf raw, norm;
    tr_buf_init(&raw, 0);
    tr_buf_init(&norm, 0);
    assert_int_equal(tr_ingest_html_text(html, strlen(html), &raw), 0);
    assert_int_equal(tr_ingest_normalize(raw.buf, raw.len, &norm), 0);
    assert_string_equal(norm.buf, "T & C\n\n## Install guide\n\nRun <make> \xe2\x80\x94 then test."
                                  "\n\none\ntwo A\n\n5 < 6 &unknown; end");
    tr_buf_release(&raw);
    tr_buf_release(&norm);

    /* Truncated input: an open comment, tag and entity end the text safely. */
    const char *cut[] = {"a<!-- b", "a<p class=\"x", "a &#12", "a<script>x", "a</"};
    for (size_t i = 0; i < TR_ARRAY_LEN(cut); i++) {
        tr_buf_init(&raw, 0);
        assert_int_equal(tr_ingest_html_text(cut[i], strlen(cut[i]), &raw), 0);
        assert_true(raw.len >= 1 && raw.buf[0] == 'a');
        tr_buf_release(&raw);
    }
}

/* ---- chunking ---- */

static const char md[] = "# Title\n"
                         "\n"
                         "Intro paragraph one.\n"
                         "\n"
                         "## Install\n"
                         "\n"
                         "Step one is here.\n"
                         "Step two follows.\n"
                         "\n"
                         "```sh\n"
                         "a\n"
                         "\n"
                         "## not a heading\n"
                         "```\n"
                         "\n"
                         "## Usage ##\n"
                         "\n"
                         "Para A.\n"
                         "\n"
                         "Para B.\n";

static void append(char *dst, size_t cap, const char *s)
{
    size_t l = strlen(dst);
    snprintf(dst + l, cap - l, "%s", s);
}

static bool starts(const char *p, size_t off, const char *s)
{
    return strncmp(p + off, s, strlen(s)) == 0;
}

static void test_chunk_markdown_sections(void **state)
{
    struct tr_chunk_opts o = {.size = 1000, .markdown = true};
    struct tr_chunk *c;
    size_t n;
    assert_int_equal(tr_ingest_chunk(md, sizeof(md) - 1, &o, &c, &n), 0);
    assert_int_equal(n, 3);
    /* One chunk per section; offsets point at the heading line of each. */
    assert_true(starts(md, c[0].start, "# Title\n\nIntro"));
    assert_true(starts(md, c[1].start, "## Install\n"));
    assert_true(starts(md, c[2].start, "## Usage ##"));
    /* The fence stays in the Install chunk: its "## " line is not a heading. */
    assert_int_equal(c[1].end, (size_t)(strstr(md, "```\n\n## Usage") - md) + 3);
    assert_int_equal(c[2].end, sizeof(md) - 2); /* the final newline is not content */
    assert_int_equal(c[0].heading_level, 1);
    assert_int_equal(c[2].heading_level, 2);
    assert_memory_equal(md + c[1].heading_start, "Install", 7);
    assert_int_equal(c[1].heading_len, 7);
    assert_int_equal(c[2].heading_len, 5); /* "Usage", the closing #s dropped */
    tr_free(c);

    /* A bare heading joins the next section: no chunk is only "# Fruit". */
    static const char nested[] = "# Fruit\n\n## Bananas\n\nYellow.\n\n## Apples\n\nRed.\n";
    assert_int_equal(tr_ingest_chunk(nested, sizeof(nested) - 1, &o, &c, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(c[0].start, 0);
    assert_true(starts(nested, c[0].start, "# Fruit\n\n## Bananas\n\nYellow."));
    assert_int_equal(c[0].end, (size_t)(strstr(nested, "Yellow.") - nested) + 7);
    assert_memory_equal(nested + c[0].heading_start, "Bananas", 7);
    assert_true(starts(nested, c[1].start, "## Apples"));
    tr_free(c);

    /* Without Markdown, headings are plain paragraphs: all of it fits one chunk. */
    o.markdown = false;
    assert_int_equal(tr_ingest_chunk(md, sizeof(md) - 1, &o, &c, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(c[0].start, 0);
    assert_int_equal(c[0].heading_len, 0);
    tr_free(c);
}

static void test_chunk_size_overlap_offsets(void **state)
{
    /* Ten paragraphs of 28 bytes, each followed by a blank line: paragraph k is [30k, 30k + 28). */
    char text[400] = "";
    for (int k = 0; k < 10; k++) {
        char p[40];
        snprintf(p, sizeof(p), "Paragraph number %02d is here.%s", k, k < 9 ? "\n\n" : "");
        append(text, sizeof(text), p);
    }
    size_t len = strlen(text);
    assert_int_equal(len, 298);
    struct tr_chunk_opts o = {.size = 100, .overlap = 20};
    struct tr_chunk *c;
    size_t n;
    assert_int_equal(tr_ingest_chunk(text, len, &o, &c, &n), 0);
    /*
     * Packing: paragraphs 0-2 end at 88 <= 100, paragraph 3 would end at 118: [0, 88).
     * Next from 90 to paragraph 5's end 178. Its overlap starts at 88 - 20 = 68, inside
     * "Paragraph" of paragraph 2 (60..69), so moves to the next word start, 70.
     * Then [180, 268) with overlap from 160, and [270, 298) with overlap from 250.
     */
    size_t want[][2] = {{0, 88}, {70, 178}, {160, 268}, {250, 298}};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c[i].start, want[i][0]);
        assert_int_equal(c[i].end, want[i][1]);
    }
    assert_true(starts(text, c[1].start, "number 02 is here.\n\nParagraph number 03"));
    tr_free(c);

    o.overlap = 100;
    assert_int_equal(tr_ingest_chunk(text, len, &o, &c, &n), TR_EINVAL);
}

static void test_chunk_long_blocks(void **state)
{
    /* One 249-byte paragraph of 5-byte words: cut after a space, never inside a word. */
    char words[260] = "";
    for (int k = 0; k < 50; k++)
        append(words, sizeof(words), k ? " word" : "wordy");
    size_t len = strlen(words);
    struct tr_chunk_opts o = {.size = 100};
    struct tr_chunk *c;
    size_t n;
    assert_int_equal(tr_ingest_chunk(words, len, &o, &c, &n), 0);
    assert_int_equal(n, 3);
    size_t covered = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(c[i].end - c[i].start <= 100);
        assert_true(c[i].start == 0 || words[c[i].start - 1] == ' ');
        assert_true(c[i].end == len || words[c[i].end] == ' ');
        covered += c[i].end - c[i].start;
    }
    /* Every byte but the two spaces at the cuts is in exactly one chunk. */
    assert_int_equal(covered, len - 2);
    tr_free(c);

    /* 150 two-byte characters, no space: hard cuts land on character boundaries. */
    char e[301] = "";
    for (int k = 0; k < 150; k++)
        append(e, sizeof(e), "\xc3\xa9");
    o.size = 101;
    assert_int_equal(tr_ingest_chunk(e, 300, &o, &c, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c[i].start % 2, 0);
        assert_int_equal(c[i].end % 2, 0);
    }
    assert_int_equal(c[2].end, 300);
    tr_free(c);

    /* Nothing but blanks gives no chunk. */
    assert_int_equal(tr_ingest_chunk(" \n\n \n", 5, &o, &c, &n), 0);
    assert_int_equal(n, 0);
    tr_free(c);
}

/* ---- out of memory: the only failure, and nothing leaks (ASan checks) ---- */

static void test_out_of_memory(void **state)
{
    struct tr_chunk_opts o = {.size = 40, .overlap = 10, .markdown = true};
    long n;
    for (n = 1;; n++) {
        struct tr_chunk *c;
        size_t k;
        tr_alloc_fail_at(n, true);
        int rc = tr_ingest_chunk(md, sizeof(md) - 1, &o, &c, &k);
        tr_alloc_fail_at(0, false);
        if (rc == 0) {
            assert_true(k > 3);
            tr_free(c);
            break;
        }
        assert_int_equal(rc, TR_ENOMEM);
    }
    assert_true(n > 1);
    const char *html = "<h1>a &amp; b</h1><p>text\r\n\xc2\xa0more</p>";
    for (n = 1;; n++) {
        struct tr_buf raw, norm;
        tr_buf_init(&raw, 0);
        tr_buf_init(&norm, 0);
        tr_alloc_fail_at(n, true);
        int rc = tr_ingest_html_text(html, strlen(html), &raw);
        if (rc == 0)
            rc = tr_ingest_normalize(raw.buf, raw.len, &norm);
        tr_alloc_fail_at(0, false);
        bool done = rc == 0;
        if (done)
            assert_string_equal(norm.buf, "# a & b\n\ntext\nmore");
        else
            assert_int_equal(rc, TR_ENOMEM);
        tr_buf_release(&raw);
        tr_buf_release(&norm);
        if (done)
            break;
    }
}

/* ---- files ---- */

static void test_files_in_root(void **state)
{
    struct fx *f = *state;
    char p[512];
    write_file(f->dir, "a.md", "# A\n\nalpha\n");
    snprintf(p, sizeof(p), "%s/sub", f->dir);
    assert_int_equal(mkdir(p, 0700), 0);
    write_file(f->dir, "sub/b.txt", "bravo");
    write_file(f->dir, "sub/c.md", "charlie");
    write_file(f->dir, ".hidden", "secret");
    snprintf(p, sizeof(p), "%s/link", f->dir);
    assert_int_equal(symlink("/etc/hostname", p), 0);

    char **v;
    size_t n;
    assert_int_equal(tr_ingest_list(f->dir, "*.md", &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0], "a.md");
    assert_string_equal(v[1], "sub/c.md");
    for (size_t i = 0; i < n; i++)
        tr_free(v[i]);
    tr_free(v);
    assert_int_equal(tr_ingest_list(f->dir, NULL, &v, &n), 0);
    assert_int_equal(n, 3); /* no .hidden, no symbolic link */
    assert_string_equal(v[1], "sub/b.txt");
    for (size_t i = 0; i < n; i++)
        tr_free(v[i]);
    tr_free(v);

    struct tr_buf b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_ingest_resolve(f->dir, "../etc/passwd", &b), TR_EACCES);
    assert_int_equal(tr_ingest_resolve(f->dir, "sub/../a.md", &b), TR_EACCES);
    assert_int_equal(tr_ingest_resolve(f->dir, "/etc/passwd", &b), TR_EACCES);
    assert_int_equal(tr_ingest_resolve(f->dir, "link", &b), TR_EACCES); /* leads outside */
    assert_int_equal(tr_ingest_resolve(f->dir, "nope.md", &b), TR_ENOENT);
    assert_int_equal(tr_ingest_resolve(f->dir, "sub/b.txt", &b), 0);
    assert_non_null(strstr(b.buf, "/sub/b.txt"));

    int64_t mtime, size;
    assert_int_equal(tr_ingest_resolve(f->dir, "a.md", &b), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s", b.buf);
    assert_int_equal(tr_ingest_read_file(path, &b, &mtime, &size), 0);
    assert_string_equal(b.buf, "# A\n\nalpha\n");
    assert_int_equal(size, 11);
    assert_true(mtime > 0);
    int64_t m2, s2;
    assert_int_equal(tr_ingest_stat(path, &m2, &s2), 0);
    assert_int_equal(m2, mtime);
    assert_int_equal(s2, 11);
    assert_int_equal(tr_ingest_stat(f->dir, &m2, &s2), TR_EACCES); /* a folder */
    tr_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_html_text),
        cmocka_unit_test(test_chunk_markdown_sections),
        cmocka_unit_test(test_chunk_size_overlap_offsets),
        cmocka_unit_test(test_chunk_long_blocks),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test_setup_teardown(test_files_in_root, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
