"""restorable: prove that Litestream backups of SQLite databases restore."""
