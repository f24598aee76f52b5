/*
 * libqos: migrate a qtest QEMU to a second one
 *
 * Copyright (c) 2026 qemu-zc developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef LIBQOS_QEMU_ZC_MIGRATE_H
#define LIBQOS_QEMU_ZC_MIGRATE_H

#include "../libqtest.h"

/*
 * Start a destination QEMU with the command line @args plus -incoming on
 * a private UNIX socket, migrate @from to it, wait until the migration
 * has completed and the destination runs, and return the destination.
 * @from stays alive (stopped, "postmigrate"); the caller quits both.
 * A migration that fails fails the test, with QEMU's error message.
 */
QTestState *qzc_migrate(QTestState *from, const char *args);

#endif
