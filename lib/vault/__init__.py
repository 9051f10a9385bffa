"""The vault: verified copies of restored databases kept beyond Litestream's window, pruned grandfather-father-son."""
