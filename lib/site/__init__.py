"""The static status page: history in the bucket -> index.html, status.json and badges."""
