/*
 * libqos: migrate a qtest QEMU to a second one
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qobject/qdict.h"
#include "qemu-zc-migrate.h"

/* A guard against a hung migration, not a timing expectation */
#define QZC_MIGRATE_POLL_US     (10 * 1000)
#define QZC_MIGRATE_MAX_POLLS   (120 * 1000 * 1000 / QZC_MIGRATE_POLL_US)

/* Poll QMP command @cmd on @qts until its "status" is @want; fail on @bad */
static void qzc_wait_status(QTestState *qts, const char *cmd,
                            const char *want, const char *bad)
{
    int i;

    for (i = 0; i < QZC_MIGRATE_MAX_POLLS; i++) {
        QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                                   "{'execute': %s}", cmd);
        const char *status = qdict_get_try_str(rsp, "status");

        if (status && !strcmp(status, want)) {
            qobject_unref(rsp);
            return;
        }
        if (status && bad && strstr(bad, status)) {
            g_test_message("migration %s: %s", status,
                           qdict_haskey(rsp, "error-desc") ?
                           qdict_get_str(rsp, "error-desc") : "(no reason)");
            qobject_unref(rsp);
            g_assert_not_reached();
        }
        qobject_unref(rsp);
        g_usleep(QZC_MIGRATE_POLL_US);
    }
    g_test_message("gave up waiting for status '%s'", want);
    g_assert_not_reached();
}

QTestState *qzc_migrate(QTestState *from, const char *args)
{
    g_autofree char *dir = g_dir_make_tmp("qemu-zc-migrate-XXXXXX", NULL);
    g_autofree char *path = NULL;
    g_autofree char *uri = NULL;
    QTestState *to;

    g_assert(dir);
    path = g_build_filename(dir, "sock", NULL);
    uri = g_strdup_printf("unix:%s", path);
    to = qtest_initf("%s -incoming %s", args, uri);

    qtest_qmp_assert_success(from, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    qzc_wait_status(from, "query-migrate", "completed",
                    "failed cancelled");
    qzc_wait_status(to, "query-status", "running", NULL);

    unlink(path);
    rmdir(dir);
    return to;
}
