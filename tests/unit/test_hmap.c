/*
 * test_hmap.c - the hash map against a brute-force reference, with deletes,
 * growth, iteration and allocation failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/base/alloc.h"
#include "lib/base/hmap.h"

#define N 20000

/* Fixture: N keys "k<i>" with values pointing at their own index slot. */
static char keys[N][16];
static int vals[N];

static int setup(void **state)
{
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        vals[i] = i;
    }
    return 0;
}

static void test_put_get_del(void **state)
{
    struct tr_hmap m;
    tr_hmap_init(&m);
    for (int i = 0; i < N; i++)
        assert_int_equal(tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
    assert_int_equal(tr_hmap_count(&m), N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(tr_hmap_gets(&m, keys[i]), &vals[i]);
    assert_null(tr_hmap_gets(&m, "absent"));
    for (int i = 0; i < N; i += 2)
        assert_ptr_equal(tr_hmap_del(&m, keys[i], strlen(keys[i])), &vals[i]);
    assert_null(tr_hmap_del(&m, keys[0], strlen(keys[0])));
    assert_int_equal(tr_hmap_count(&m), N / 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(tr_hmap_gets(&m, keys[i]), i % 2 ? &vals[i] : NULL);
    /* Replacing keeps the count. */
    assert_int_equal(tr_hmap_put(&m, keys[1], strlen(keys[1]), &vals[0]), 0);
    assert_int_equal(tr_hmap_count(&m), N / 2);
    assert_ptr_equal(tr_hmap_gets(&m, keys[1]), &vals[0]);
    /* Reinsert deleted keys: tombstones are reused or rehashed away. */
    for (int i = 0; i < N; i += 2)
        assert_int_equal(tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
    assert_int_equal(tr_hmap_count(&m), N);
    tr_hmap_release(&m);
}

static void test_iteration_sees_each_once(void **state)
{
    struct tr_hmap m;
    tr_hmap_init(&m);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
    static char seen[1000];
    memset(seen, 0, sizeof(seen));
    size_t it = 0;
    int *v;
    int n = 0;
    while ((v = tr_hmap_next(&m, &it)) != NULL) {
        assert_int_equal(seen[*v], 0);
        seen[*v] = 1;
        n++;
        if (*v % 3 == 0) /* deleting the current entry is allowed */
            tr_hmap_del(&m, keys[*v], strlen(keys[*v]));
    }
    assert_int_equal(n, 1000);
    assert_int_equal(tr_hmap_count(&m), 1000 - 334);
    tr_hmap_release(&m);
}

static void test_binary_keys(void **state)
{
    struct tr_hmap m;
    tr_hmap_init(&m);
    uint64_t ids[100];
    for (int i = 0; i < 100; i++) {
        ids[i] = (uint64_t)i << 40; /* differ only in high bytes, zero bytes inside */
        assert_int_equal(tr_hmap_put(&m, &ids[i], sizeof(ids[i]), &vals[i]), 0);
    }
    for (int i = 0; i < 100; i++) {
        uint64_t k = (uint64_t)i << 40;
        assert_ptr_equal(tr_hmap_get(&m, &k, sizeof(k)), &vals[i]);
    }
    tr_hmap_release(&m);
}

static void test_allocation_failure_leaves_map_intact(void **state)
{
    struct tr_hmap m;
    tr_hmap_init(&m);
    for (int i = 0; i < 5; i++)
        assert_int_equal(tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
    int i = 5;
    int failures = 0;
    for (; i < 200; i++) {
        tr_alloc_fail_at(1, false);
        int rc = tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]);
        tr_alloc_fail_at(0, false);
        if (rc == TR_ENOMEM) {
            failures++;
            assert_null(tr_hmap_gets(&m, keys[i]));
            assert_int_equal(tr_hmap_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
        } else {
            assert_int_equal(rc, 0);
        }
    }
    assert_true(failures > 0); /* growth happened and was refused at least once */
    for (int j = 0; j < 200; j++)
        assert_ptr_equal(tr_hmap_gets(&m, keys[j]), &vals[j]);
    tr_hmap_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del),
        cmocka_unit_test(test_iteration_sees_each_once),
        cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_allocation_failure_leaves_map_intact),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
