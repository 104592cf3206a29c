"""
socs' suprsync database, as the SupRsync agent sees it: register a file the
way a recorder hands one over, and read back every row.

Run with the Python of the SO venv::

    .venv-so/bin/python tests/so/suprsync_rows.py add DB LOCAL REMOTE ARCHIVE
    .venv-so/bin/python tests/so/suprsync_rows.py rows DB

``add`` calls ``SupRsyncFilesManager.add_file(local_path, remote_path,
archive_name)`` (the md5 is computed there) on a database it creates if
need be; ``rows`` prints the rows of the files table as JSON, in the order
they were added.
"""

import argparse
import json
import os

import txaio

txaio.use_twisted()

from socs.db.suprsync import SupRsyncFile, SupRsyncFilesManager  # noqa: E402

#: The columns a recorder's registration decides.
COLUMNS = ("id", "local_path", "remote_path", "archive_name",
           "local_md5sum", "timestamp", "deletable", "ignore")


def register(db_path, local_path, remote_path, archive_name):
    """
    Add one file, as socs' own agents do.
    """
    manager = SupRsyncFilesManager(db_path, create_all=True)
    manager.add_file(local_path, remote_path, archive_name)


def rows(db_path):
    """
    Every row of the files table, oldest first, as dicts of L{COLUMNS}.

    Opened without creating anything: a database that does not exist is an
    error, not an empty list.
    """
    if not os.path.exists(db_path):
        raise FileNotFoundError(db_path)
    manager = SupRsyncFilesManager(db_path, create_all=False)
    with manager.Session() as session:
        found = session.query(SupRsyncFile).order_by(SupRsyncFile.id).all()
        return [{c: getattr(f, c) for c in COLUMNS} for f in found]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="register one file")
    for name in ("db", "local_path", "remote_path", "archive_name"):
        add.add_argument(name)
    read = commands.add_parser("rows", help="print every row as JSON")
    read.add_argument("db")
    args = parser.parse_args()
    if args.command == "add":
        register(args.db, args.local_path, args.remote_path,
                 args.archive_name)
    else:
        print(json.dumps(rows(args.db), indent=1))


if __name__ == "__main__":
    main()
