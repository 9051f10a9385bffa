"""What to verify and how: litestream.yml, replica URLs, the environment, restorable.yml, --print-config."""
