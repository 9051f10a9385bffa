"""Many databases: tenants of Litestream ``dir:`` entries, shards, samples and the run digest."""
