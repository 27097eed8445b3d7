"""Core: atomic files (:mod:`.files`), settings (:mod:`.settings`), the config (:mod:`.config`),
DuckDB (:mod:`.sql`), the torch device (:mod:`.device`) and the one error type (:mod:`.errors`)."""
